"""``coagent demo``: the sample room built end to end through a real Dagster run."""

from __future__ import annotations

import asyncio
from typing import Any

from coagent.database import prepare_database
from coagent.progress import fail, say, step
from coagent.runs import run_room_job
from knowledge.platform import open_platform, redis_url
from knowledge.sample import DemoRoom, ensure_demo_room
from knowledge.search import Answer, Mode, answer_question
from knowledge.settings import Settings
from knowledge.text import excerpt
from pipelines.instance import get_instance

GLOBAL_QUESTION = "What are the main themes of this conversation?"
LOCAL_QUESTION = "What is said about Aufidius and the Volsces?"


_EVIDENCE_EXCERPT_CHARS = 100


def print_answer(answer: Answer, mode: Mode = Mode.answer, max_evidence: int | None = None) -> None:
    """The route, the answer and its citations, then the ranked evidence, one line each:
    rank, kind and id, speaker, date, the signals that found it (signal#rank), an excerpt.
    In evidence mode there is no answer, and the citations are the evidence."""
    say(f"  route: {answer.route.value}   ({answer.seconds * 1000:.0f} ms)")
    if mode == Mode.answer:
        say(f"  answer: {answer.answer}")
        if answer.citations:
            say("  citations:")
            for c in answer.citations:
                who = f"{c.speaker}: " if c.speaker else ""
                say(f"    [{c.kind} {c.id}] {who}{c.excerpt}")
    evidence = answer.evidence[:max_evidence] if max_evidence is not None else answer.evidence
    if evidence:
        more = len(answer.evidence) - len(evidence)
        say("  evidence:" + (f" (top {len(evidence)}, {more} more)" if more > 0 else ""))
        for rank, e in enumerate(evidence, start=1):
            when = f"{e.time:%Y-%m-%d}" if e.time is not None else "undated"
            signals = " ".join(f"{name}#{position}" for name, position in e.signals.items())
            say(
                f"    {rank:>2}. {e.kind} {e.id} · {e.speaker or '-'} · {when} · "
                f"{signals or '-'} · {excerpt(e.text, _EVIDENCE_EXCERPT_CHARS)}"
            )
    elif mode == Mode.evidence:
        say("  evidence: none")


def run_demo(settings: Settings) -> None:

    say(f"CoAgent demo — data dir {settings.coagent_data_dir}")
    prepare_database(settings)
    if settings.uses_embedded_redis:
        with step("Starting Redis"):
            redis_url(settings)
    with step("Preparing the Dagster instance"):
        instance = get_instance(settings)

    async def prepare() -> DemoRoom:
        async with open_platform(settings) as platform, platform.session() as session:
            return await ensure_demo_room(session, settings.max_message_chars)

    with step("Loading the sample conversation"):
        demo = asyncio.run(prepare())
    room_id = str(demo.room_id)
    say(
        f"Room {room_id}: {demo.messages_total} messages from {demo.users} speakers "
        f"({demo.messages_loaded} loaded now)"
    )
    say("Materializing chunks → entities + relationships → communities → community_reports")
    outcome = run_room_job(instance, "refresh_room", room_id)
    if not outcome.success:
        fail(f"Dagster run {outcome.run_id} failed: {outcome.error or outcome.failed_checks}", 1)
    say(f"Dagster run {outcome.run_id} succeeded in {outcome.seconds:.1f} s")
    _print_summary(settings, room_id, outcome.metadata)


def _print_summary(settings: Settings, room_id: str, metadata: dict[str, dict[str, Any]]) -> None:
    chunks = metadata.get("chunks", {})
    entities = metadata.get("entities", {})
    say("")
    say("Summary")
    say(
        f"  chunks            {chunks.get('chunks')} ({chunks.get('chunks_added')} new, "
        f"{chunks.get('tokens')} tokens)"
    )
    say(
        f"  entities          {entities.get('entities')} "
        f"({entities.get('chunks_extracted')} chunks extracted this run)"
    )
    say(f"  relationships     {metadata.get('relationships', {}).get('relationships')}")
    communities = metadata.get("communities", {})
    say(
        f"  communities       {communities.get('communities')} "
        f"({communities.get('levels')} levels, {communities.get('unchanged')} unchanged)"
    )
    reports = metadata.get("community_reports", {})
    say(f"  community_reports {reports.get('reports')} ({reports.get('regenerated')} regenerated)")
    if settings.uses_llm:
        # Relationships share the entities step: count each step once.
        steps = [metadata.get(k, {}) for k in ("chunks", "entities", "communities")]
        steps.append(reports)

        def total(key: str) -> float:
            return sum(float(step.get(key, 0) or 0) for step in steps)

        say(
            f"  LLM               {total('llm_calls'):.0f} calls, "
            f"{total('llm_cache_hits'):.0f} cache hits, "
            f"{total('llm_prompt_tokens') + total('llm_completion_tokens'):.0f} tokens, "
            f"~${total('llm_cost_usd'):.4f} ({settings.llm_chat_model})"
        )
        failed = metadata.get("entities", {}).get("failed_chunks", 0)
        if failed:
            say(f"  warning           {failed} chunks failed extraction (retried next run)")

    async def questions() -> tuple[list[Any], Answer, Answer]:
        async with open_platform(settings) as platform:
            top = [r for r in await platform.graph.get_reports(room_id) if r.level == 0][:5]
            return (
                top,
                await answer_question(platform, room_id, GLOBAL_QUESTION),
                await answer_question(platform, room_id, LOCAL_QUESTION),
            )

    top, global_answer, local_answer = asyncio.run(questions())
    say("")
    say("Top communities")
    for report in top:
        say(f"  [{report.rank:>5.2f}] {report.title}")
    say("")
    say(f"Q (global): {GLOBAL_QUESTION}")
    print_answer(global_answer, max_evidence=3)
    say("")
    say(f"Q (local): {LOCAL_QUESTION}")
    print_answer(local_answer, max_evidence=3)
    say("")
    say(
        "Open the Dagster UI to see this run: `make dagster` (or "
        "`DAGSTER_HOME=<data dir>/dagster dagster dev -w workspace.yaml`)."
    )
