from dagster import AssetCheckSpec, AssetExecutionContext, MaterializeResult, asset

from knowledge.indexing import detect_communities
from knowledge.invariants import entities_in_communities
from pipelines.assets._checks import GROUP, check_result
from pipelines.partitions import rooms_partitions
from pipelines.resources import KnowledgeResource


@asset(
    partitions_def=rooms_partitions,
    group_name=GROUP,
    deps=["entities", "relationships"],
    kinds={"python"},
    check_specs=[AssetCheckSpec("entities_in_communities", asset="communities", blocking=True)],
)
def communities(context: AssetExecutionContext, knowledge: KnowledgeResource) -> MaterializeResult:
    """Hierarchical Leiden communities (seeded, warm-started); small changes place new
    entities into the stored hierarchy without moving others (``mode`` says which)."""
    room_id = context.partition_key

    async def work(platform):  # type: ignore[no-untyped-def]
        build = await detect_communities(platform, room_id)
        return build, await entities_in_communities(platform, room_id)

    (build, check), usage = knowledge.run(work)
    return MaterializeResult(
        metadata={
            "communities": build.total,
            "levels": build.levels,
            "top_level_communities": build.top_level,
            "unchanged": build.unchanged,
            "mode": build.mode,
            "drift": build.drift,
            "relationships_read": build.relationships_read,
            "largest": build.largest,
            "seconds": round(build.seconds, 3),
            **usage,
        },
        check_results=[check_result("communities", "entities_in_communities", check)],
    )
