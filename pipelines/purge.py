"""The room purge job: a deleted room's derived data goes from every store, then its partition.

``room_purge`` is partitioned by room like the refresh and rebuild jobs, so the instance's
one-run-per-room limit (``dagster/partition``) queues it behind a refresh of the same room that
is still running: a purge never races one. The ``graphrag_events`` sensor launches it on a
``room.deleted`` event (after cancelling the room's queued refreshes); running it again is
harmless (nothing left to remove; the partition is already gone).
"""

from dagster import Nothing, OpExecutionContext, Out, in_process_executor, job, op

from knowledge.purge import purge_room
from pipelines.partitions import rooms_partitions
from pipelines.resources import KnowledgeResource

ROOMS = rooms_partitions.name or "rooms"


@op(out=Out(Nothing))
def purge_deleted_room(context: OpExecutionContext, knowledge: KnowledgeResource) -> None:
    """``knowledge.purge.purge_room``, then the room's dynamic partition; the counts of what
    each store lost are the step's output metadata."""
    room_id = context.partition_key
    removed, _ = knowledge.run(lambda platform: purge_room(platform, room_id))
    had_partition = context.instance.has_dynamic_partition(ROOMS, room_id)
    if had_partition:
        context.instance.delete_dynamic_partition(ROOMS, room_id)
    total = sum(removed.values())
    context.log.info("purged room %s: %d rows / nodes / points removed", room_id, total)
    context.add_output_metadata(
        {**removed, "removed_total": total, "partition_removed": had_partition}
    )


@job(
    name="room_purge",
    partitions_def=rooms_partitions,
    executor_def=in_process_executor,
    description="Remove a deleted room's derived data from every store, then its partition.",
)
def room_purge() -> None:
    purge_deleted_room()
