from dagster import AssetSelection, define_asset_job, in_process_executor

from pipelines.partitions import rooms_partitions
from pipelines.purge import room_purge

__all__ = ["REBUILD_RUN_CONFIG", "ROOM_GRAPH", "rebuild_room", "refresh_room", "room_purge"]

ROOM_GRAPH = AssetSelection.groups("room_graph")

#: Incremental: only new chunks are extracted, only changed communities get new reports.
refresh_room = define_asset_job(
    "refresh_room",
    selection=ROOM_GRAPH,
    partitions_def=rooms_partitions,
    executor_def=in_process_executor,
    description="Bring one room's knowledge graph up to date (incremental).",
)

#: The rebuild job's run config (exported so launchers that pass their own config can merge it).
REBUILD_RUN_CONFIG = {"ops": {"chunks": {"config": {"wipe": True}}}}

#: Wipes the room in every store, then re-derives everything; running it twice is a no-op.
rebuild_room = define_asset_job(
    "rebuild_room",
    selection=ROOM_GRAPH,
    partitions_def=rooms_partitions,
    config=REBUILD_RUN_CONFIG,
    executor_def=in_process_executor,
    description="Wipe one room in every store and rebuild its knowledge graph.",
)
