"""Read-only access to the Dagster instance for the graph status (blocking calls run in a
worker thread; the instance is created on first use)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from knowledge.settings import Settings

#: Asset keys of the room graph, in lineage order (what ``pipelines.assets`` defines).
ROOM_ASSETS = ("chunks", "entities", "relationships", "communities", "community_reports")
PARTITION_TAG = "dagster/partition"
ROOMS_PARTITIONS = "rooms"


@dataclass
class Materialization:
    asset: str
    timestamp: datetime
    run_id: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunInfo:
    run_id: str
    job_name: str
    status: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


@dataclass
class PartitionStatus:
    registered: bool
    materializations: dict[str, Materialization | None]
    active_runs: list[RunInfo]
    last_run: RunInfo | None


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _metadata(entry: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (getattr(entry, "metadata", None) or {}).items():
        raw = getattr(value, "value", value)
        if isinstance(raw, bool | int | float | str):
            out[key] = raw
    return out


class DagsterGateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._instance: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._instance is None:
                from pipelines.instance import get_instance

                self._instance = get_instance(self.settings)
            return self._instance

    def close(self) -> None:
        with self._lock:
            if self._instance is not None:
                self._instance.dispose()
                self._instance = None

    async def partition_status(self, room_id: str) -> PartitionStatus:
        return await asyncio.to_thread(self._partition_status, room_id)

    async def last_materializations(self, room_id: str) -> dict[str, Materialization | None]:
        return await asyncio.to_thread(self._materializations, self._get(), room_id)

    def _materializations(self, instance: Any, room_id: str) -> dict[str, Materialization | None]:
        from dagster import AssetKey, AssetRecordsFilter

        found: dict[str, Materialization | None] = {}
        for asset in ROOM_ASSETS:
            result = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[room_id]), limit=1
            )
            record = result.records[0] if result.records else None
            if record is None:
                found[asset] = None
                continue
            found[asset] = Materialization(
                asset=asset,
                timestamp=datetime.fromtimestamp(record.timestamp, UTC),
                run_id=record.run_id,
                metadata=_metadata(record.asset_materialization),
            )
        return found

    def _partition_status(self, room_id: str) -> PartitionStatus:
        from dagster import DagsterRunStatus, RunsFilter

        instance = self._get()
        active = [
            DagsterRunStatus.QUEUED,
            DagsterRunStatus.NOT_STARTED,
            DagsterRunStatus.STARTING,
            DagsterRunStatus.STARTED,
            DagsterRunStatus.CANCELING,
        ]
        tags = {PARTITION_TAG: room_id}
        active_runs = instance.get_run_records(
            filters=RunsFilter(tags=tags, statuses=active), limit=50
        )
        last = instance.get_run_records(filters=RunsFilter(tags=tags), limit=1)
        return PartitionStatus(
            registered=instance.has_dynamic_partition(ROOMS_PARTITIONS, room_id),
            materializations=self._materializations(instance, room_id),
            active_runs=[_run_info(r) for r in active_runs],
            last_run=_run_info(last[0]) if last else None,
        )


def _run_info(record: Any) -> RunInfo:
    run = record.dagster_run
    created = record.create_timestamp
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return RunInfo(
        run_id=run.run_id,
        job_name=run.job_name,
        status=run.status.value,
        created_at=created,
        started_at=_ts(record.start_time),
        ended_at=_ts(record.end_time),
    )
