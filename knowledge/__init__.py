"""Framework-free domain layer of the CoAgent graph platform.

Dagster (``pipelines``) and FastAPI (``serving``) are thin shells around this package.
"""
