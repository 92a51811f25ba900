from dagster import AssetCheckSpec, AssetExecutionContext, MaterializeResult, asset

from knowledge.indexing import write_reports
from knowledge.invariants import vectors_match_rows
from pipelines.assets._checks import GROUP, LLM_POOL, check_result
from pipelines.partitions import rooms_partitions
from pipelines.resources import KnowledgeResource


@asset(
    partitions_def=rooms_partitions,
    group_name=GROUP,
    deps=["communities"],
    kinds={"postgres"},
    check_specs=[
        AssetCheckSpec("report_vectors_match_rows", asset="community_reports", blocking=True)
    ],
    pool=LLM_POOL,
)
def community_reports(
    context: AssetExecutionContext, knowledge: KnowledgeResource
) -> MaterializeResult:
    """One report per community, regenerated only when its content changed; embedded."""
    room_id = context.partition_key

    async def work(platform):  # type: ignore[no-untyped-def]
        build = await write_reports(platform, room_id)
        return build, await vectors_match_rows(platform, room_id, "communities")

    (build, check), usage = knowledge.run(work)
    return MaterializeResult(
        metadata={
            "mode": build.mode,
            "reports": build.total,
            "communities_hashed": build.touched,
            "regenerated": build.regenerated,
            "deleted": build.deleted,
            "vectors_written": build.vectors.written,
            "seconds": round(build.seconds, 3),
            **usage,
        },
        check_results=[check_result("community_reports", "report_vectors_match_rows", check)],
    )
