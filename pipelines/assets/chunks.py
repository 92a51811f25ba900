from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    asset,
)

from knowledge.indexing import sync_chunks, wipe_room
from knowledge.invariants import vectors_match_rows
from pipelines.assets._checks import GROUP, check_result
from pipelines.partitions import rooms_partitions
from pipelines.resources import KnowledgeResource


class ChunksConfig(Config):
    #: Remove every derived fact of the room from every store first (the rebuild job sets it).
    wipe: bool = False


@asset(
    partitions_def=rooms_partitions,
    group_name=GROUP,
    kinds={"postgres"},
    check_specs=[AssetCheckSpec("chunk_vectors_match_rows", asset="chunks", blocking=True)],
)
def chunks(
    context: AssetExecutionContext, config: ChunksConfig, knowledge: KnowledgeResource
) -> MaterializeResult:
    """Token-bounded chunks of the room's messages and artifacts, embedded into the vector store."""
    room_id = context.partition_key

    async def work(platform):  # type: ignore[no-untyped-def]
        if config.wipe:
            context.log.info("wiping room %s in every store", room_id)
            await wipe_room(platform, room_id)
        result = await sync_chunks(platform, room_id)
        return result, await vectors_match_rows(platform, room_id, "chunks")

    (result, check), usage = knowledge.run(work)
    context.log.info(
        "%s: %d chunks (%d new, %d removed) after reading %d messages and %d chunks%s",
        result.mode,
        result.total,
        result.added,
        result.removed,
        result.messages_read,
        result.chunks_read,
        f" ({result.reason})" if result.reason else "",
    )
    return MaterializeResult(
        metadata={**result.metadata(), "wiped": config.wipe, **usage},
        check_results=[check_result("chunks", "chunk_vectors_match_rows", check)],
    )
