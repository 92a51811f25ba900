"""Dagster definitions: the room knowledge graph as partitioned software-defined assets."""
