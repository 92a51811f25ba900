"""``golden_questions_recall``: after each refresh, the room's golden questions are run through
the evidence ranking and recall@5, recall@10 and MRR@10 are recorded in the check's metadata.

It hangs on ``community_reports``, the last asset of the room jobs, and also depends on
``evidence`` (which nothing else downstream of ``chunks`` waits for), so it runs once every
store retrieval reads — the evidence index, the graph and its aliases, the reports — is
up to date.

The previous value comes from the Dagster instance: the last completed evaluation of this
check for the same room partition (its ``recall_at_10`` metadata). Non-blocking: a drop of more
than ``MAX_RECALL_DROP`` is a failed check of severity WARN, and the run goes on.
"""

import warnings
from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    MetadataValue,
    PreviewWarning,
    asset_check,
)
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
)

from knowledge.evaluation import RoomEvaluation, evaluate_room
from knowledge.platform import Platform
from pipelines.partitions import rooms_partitions
from pipelines.resources import KnowledgeResource

CHECK_NAME = "golden_questions_recall"
CHECKED_ASSET = "community_reports"
CHECK_KEY = AssetCheckKey(AssetKey(CHECKED_ASSET), CHECK_NAME)
#: A recall@10 more than this below the previous evaluation of the room is a warning.
MAX_RECALL_DROP = 0.05
TOP_K = 10
#: Completed evaluations looked at (newest first) for one that had questions.
_HISTORY = 20


def previous_recall(instance: DagsterInstance, room_id: str, run_id: str) -> float | None:
    """recall@10 of the room's last completed evaluation that had questions (not this run's)."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        CHECK_KEY,
        limit=_HISTORY,
        status=set(COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES),
        partition_filter=PartitionKeyFilter(key=room_id),
    )
    for record in records:
        evaluation = record.evaluation
        if record.run_id == run_id or evaluation is None:
            continue
        value = evaluation.metadata.get("recall_at_10")
        if value is not None and isinstance(value.value, int | float):
            return float(value.value)
    return None


def check_result(
    evaluation: RoomEvaluation, previous: float | None, usage: Mapping[str, Any] | None = None
) -> AssetCheckResult:
    if evaluation.questions == 0 or evaluation.recall_at_10 is None:
        return AssetCheckResult(
            passed=True,
            severity=AssetCheckSeverity.WARN,
            description="the room has no golden questions: nothing to evaluate",
            metadata={"questions": 0, "evaluated": False},
        )
    recall = evaluation.recall_at_10
    drop = round(previous - recall, 4) if previous is not None else 0.0
    dropped = drop > MAX_RECALL_DROP
    zero = [r.id for r in evaluation.zero_recall]
    if previous is None:
        description = (
            f"recall@10 {recall:.3f} over {evaluation.questions} questions (no previous evaluation)"
        )
    elif dropped:
        description = (
            f"recall@10 dropped from {previous:.3f} to {recall:.3f} "
            f"(more than {MAX_RECALL_DROP}) over {evaluation.questions} questions"
        )
    else:
        description = (
            f"recall@10 {recall:.3f} over {evaluation.questions} questions "
            f"(previous {previous:.3f})"
        )
    if zero:
        description += f"; {len(zero)} found none of their gold messages"
    return AssetCheckResult(
        passed=not dropped,
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "questions": evaluation.questions,
            "evaluated": True,
            "top_k": evaluation.top_k,
            "recall_at_5": evaluation.recall_at_5,
            "recall_at_10": recall,
            "mrr_at_10": evaluation.mrr,
            "recall_at_10_by_kind": MetadataValue.json(
                {kind: s.recall_at_10 for kind, s in evaluation.by_kind.items()}
            ),
            "questions_by_kind": MetadataValue.json(
                {kind: s.questions for kind, s in evaluation.by_kind.items()}
            ),
            "previous_recall_at_10": previous,
            "recall_at_10_drop": drop,
            "zero_recall_question_ids": MetadataValue.json(zero),
            "seconds": round(evaluation.seconds, 3),
            **(usage or {}),
        },
    )


def _golden_questions_recall(
    context: AssetCheckExecutionContext, knowledge: KnowledgeResource
) -> AssetCheckResult:
    room_id = context.partition_key

    async def work(platform: Platform) -> RoomEvaluation:
        return await evaluate_room(platform, room_id, TOP_K)

    evaluation, usage = knowledge.run(work)
    previous = None
    if evaluation.questions:
        try:
            previous = previous_recall(context.instance, room_id, context.run.run_id)
        except Exception as error:  # the scores stand without the comparison
            context.log.warning("could not read the previous evaluation: %s", error)
    # usage: the embedding calls of the dense signal, on the LLM path
    result = check_result(evaluation, previous, usage)
    context.log.info("golden questions of room %s: %s", room_id, result.description)
    return result


with warnings.catch_warnings():
    # A partitions_def on an asset check is a preview feature in Dagster 1.13; it is what makes
    # each evaluation carry its room partition (the previous-value lookup filters on it).
    warnings.simplefilter("ignore", PreviewWarning)
    golden_questions_recall = asset_check(
        asset=CHECKED_ASSET,
        name=CHECK_NAME,
        additional_deps=["evidence"],
        partitions_def=rooms_partitions,
        blocking=False,
        description=(
            "The room's golden questions through the evidence ranking: recall@5, recall@10 and "
            f"MRR@10; warns when recall@10 drops more than {MAX_RECALL_DROP} below the previous "
            "evaluation of the room."
        ),
    )(_golden_questions_recall)
