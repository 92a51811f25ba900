from dagster import AssetCheckSpec, AssetExecutionContext, MaterializeResult, asset

from knowledge.indexing import sync_evidence
from knowledge.invariants import evidence_indexed
from pipelines.assets._checks import GROUP, check_result
from pipelines.partitions import rooms_partitions
from pipelines.resources import KnowledgeResource


@asset(
    partitions_def=rooms_partitions,
    deps=["chunks"],
    group_name=GROUP,
    kinds={"postgres"},
    check_specs=[AssetCheckSpec("every_message_indexed", asset="evidence", blocking=True)],
)
def evidence(context: AssetExecutionContext, knowledge: KnowledgeResource) -> MaterializeResult:
    """The room's units of evidence — every message and artifact passage — indexed for BM25
    and dense search with speaker and time; only new or edited units are re-indexed."""
    room_id = context.partition_key

    async def work(platform):  # type: ignore[no-untyped-def]
        result = await sync_evidence(platform, room_id)
        return result, await evidence_indexed(platform, room_id)

    (result, check), usage = knowledge.run(work)
    context.log.info(
        "%s: %d messages and %d artifact passages read (%d indexed, %d removed)",
        result.mode,
        result.messages,
        result.passages,
        result.vectors.written,
        result.vectors.deleted,
    )
    return MaterializeResult(
        metadata={**result.metadata(), **usage},
        check_results=[check_result("evidence", "every_message_indexed", check)],
    )
