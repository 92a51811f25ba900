"""Turning domain invariant outcomes into Dagster check results."""

from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey

from knowledge.invariants import CheckOutcome

GROUP = "room_graph"
# The concurrency pool of the steps that call the chat model (extraction, entity summaries
# and resolution, reports): deploy/dagster/pools.yaml bounds them across runs.
LLM_POOL = "llm"


def check_result(asset: str, name: str, outcome: CheckOutcome) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=AssetKey(asset),
        check_name=name,
        passed=outcome.passed,
        severity=AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata={"examples": ", ".join(outcome.examples)} if outcome.examples else {},
    )
