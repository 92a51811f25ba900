from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    MaterializeResult,
    multi_asset,
)

from knowledge.indexing import build_graph
from knowledge.invariants import names_normalized, relationships_have_entities, vectors_match_rows
from pipelines.assets._checks import GROUP, LLM_POOL, check_result
from pipelines.partitions import rooms_partitions
from pipelines.resources import KnowledgeResource


@multi_asset(
    name="entities_and_relationships",
    partitions_def=rooms_partitions,
    specs=[
        AssetSpec(
            "entities",
            deps=["chunks"],
            group_name=GROUP,
            kinds={"postgres"},
            description="Merged, case-normalized entities of the room, embedded for search.",
        ),
        AssetSpec(
            "relationships",
            deps=["chunks"],
            group_name=GROUP,
            kinds={"postgres"},
            description="Undirected relationships per entity pair, weights summed.",
        ),
    ],
    check_specs=[
        AssetCheckSpec("names_normalized", asset="entities", blocking=True),
        AssetCheckSpec("entity_vectors_match_rows", asset="entities", blocking=True),
        # Non-blocking: a chunk the LLM cannot extract is recorded, the run goes on.
        AssetCheckSpec("all_chunks_extracted", asset="entities", blocking=False),
        AssetCheckSpec("relationships_have_entities", asset="relationships", blocking=True),
    ],
    pool=LLM_POOL,
)
def entities_and_relationships(
    context: AssetExecutionContext, knowledge: KnowledgeResource
) -> Iterator[MaterializeResult]:
    """Extract new chunks only (stored per chunk and extractor), then merge the whole room."""
    room_id = context.partition_key

    async def work(platform):  # type: ignore[no-untyped-def]
        build = await build_graph(platform, room_id)
        checks = (
            await names_normalized(platform, room_id),
            await vectors_match_rows(platform, room_id, "entities"),
            await relationships_have_entities(platform, room_id),
        )
        return build, checks

    (build, (normalized, vectors, endpoints)), usage = knowledge.run(work)
    context.log.info(
        "extracted %d of %d chunks: %d entities, %d relationships",
        build.chunks_extracted,
        build.chunks,
        build.entities,
        build.relationships,
    )
    yield MaterializeResult(
        asset_key="entities",
        metadata={
            "entities": build.entities,
            "chunks": build.chunks,
            "chunks_extracted": build.chunks_extracted,
            "entity_types": build.entity_types,
            "vectors_written": build.vectors.written,
            "vectors_deleted": build.vectors.deleted,
            "failed_chunks": len(build.failed_chunks),
            "seconds": round(build.seconds, 3),
            **usage,
        },
        check_results=[
            check_result("entities", "names_normalized", normalized),
            check_result("entities", "entity_vectors_match_rows", vectors),
            AssetCheckResult(
                asset_key=AssetKey("entities"),
                check_name="all_chunks_extracted",
                passed=not build.failed_chunks,
                severity=AssetCheckSeverity.WARN,
                description=(
                    f"{len(build.failed_chunks)} chunks failed extraction and will be tried "
                    "again next run"
                    if build.failed_chunks
                    else "every chunk is extracted"
                ),
                metadata={
                    "failed": "; ".join(f"{c}: {e}" for c, e in build.failed_chunks.items())[:2000]
                }
                if build.failed_chunks
                else {},
            ),
        ],
    )
    yield MaterializeResult(
        asset_key="relationships",
        metadata={
            "relationships": build.relationships,
            "dropped_relationships": build.dropped_relationships,
        },
        check_results=[check_result("relationships", "relationships_have_entities", endpoints)],
    )
