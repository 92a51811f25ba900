"""Evidence quality on the golden sets: ours beside a plain BM25 over messages, in one run.

    .venv/bin/python bench/quality/run.py [--sets coriolanus,teamchat] [--per-question] [--dense]

Each golden set (bench/quality/data/<set>/) is loaded into a fresh room of an embedded
platform (its own data dir), indexed with the domain layer's steps (chunks, evidence, graph,
communities, reports: what a Dagster run does), then every question is asked of:

- ``ours``: the product's retrieval (``knowledge.search.find_evidence``, router included),
  with whatever embedder / LLM / reranker the environment configures (offline by default);
- ``no-graph``: the same without the graph and report signals;
- ``no-rerank``: the same with fusion order only;
- ``bm25``: a plain Okapi BM25 over the messages (lower-cased words, no stemming, no stoplist);
- ``bm25+an``: the same BM25 with our analyzer (stemming, stoplist), to show what the analyzer
  alone buys;
- ``dense``: cosine over message embeddings alone, when a real embedder is configured.

Printed per kind: recall@5, recall@10 and MRR (gold = message numbers of the transcript).
Nothing is asserted; the numbers go in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT))


KINDS = ["single-hop", "multi-hop", "temporal", "alias", "global"]


@dataclass
class GoldenSet:
    name: str
    rows: list  # TranscriptRow
    artifacts: list[dict]
    questions: list[dict]


def load_set(name: str):  # type: ignore[no-untyped-def]
    from knowledge.sample import load_sample
    from knowledge.transcripts import TranscriptRow, read_transcript

    folder = DATA / name
    questions = [
        json.loads(line) for line in (folder / "questions.jsonl").read_text().splitlines() if line
    ]
    if (folder / "transcript.jsonl").exists():
        rows = read_transcript(folder / "transcript.jsonl")
    else:  # the bundled sample room
        rows = [TranscriptRow(speaker=s.speaker, text=s.text, time=None) for s in load_sample()]
    artifacts = []
    if (folder / "artifacts.jsonl").exists():
        artifacts = [
            json.loads(line)
            for line in (folder / "artifacts.jsonl").read_text().splitlines()
            if line.strip()
        ]
    return GoldenSet(name, rows, artifacts, questions)


def plain_words(text: str) -> list[str]:
    from knowledge.lexical import words

    return words(text)


def metrics(ranked: list[int], gold: list[int]) -> tuple[float, float, float]:
    wanted = set(gold)
    r5 = len(wanted & set(ranked[:5])) / len(wanted)
    r10 = len(wanted & set(ranked[:10])) / len(wanted)
    mrr = next((1.0 / (i + 1) for i, n in enumerate(ranked[:10]) if n in wanted), 0.0)
    return r5, r10, mrr


async def run_set(platform, golden: GoldenSet, per_question: bool) -> dict:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from dbschema.models import Message
    from knowledge import rooms
    from knowledge.artifacts import create_artifact
    from knowledge.courses import create_course
    from knowledge.indexing import index_room
    from knowledge.lexical import BM25Index
    from knowledge.retrieval import RetrievalOptions
    from knowledge.search import find_evidence
    from knowledge.transcripts import import_transcript

    async with platform.session() as session:
        course = await create_course(session, f"bench {golden.name}")
        room = await rooms.create_room(session, course.id, golden.name)
        result = await import_transcript(
            session, room.id, golden.rows, platform.settings.max_message_chars
        )
        for artifact in golden.artifacts:
            created = await create_artifact(
                session,
                room.id,
                artifact["title"],
                artifact["content"],
                platform.settings.max_artifact_chars,
            )
            if artifact.get("time"):
                # Shared when the message that shares it was said (the set's README), not when
                # the bench runs: an artifact dated today would be the newest unit of the room.
                shared = datetime.fromisoformat(artifact["time"])
                created.created_at = created.updated_at = shared
        await session.commit()
        ids = (
            (
                await session.execute(
                    select(Message.id).where(Message.room_id == room.id).order_by(Message.id)
                )
            )
            .scalars()
            .all()
        )
    room_id = str(room.id)
    number_of = {mid: n for n, mid in enumerate(ids, start=1)}
    started = time.perf_counter()
    graph = (await index_room(platform, room_id)).graph
    build_seconds = time.perf_counter() - started
    print(
        f"\n== {golden.name}: {result.messages} messages, {len(golden.artifacts)} artifacts, "
        f"{len(golden.questions)} questions; {graph.entities} entities; "
        f"indexed in {build_seconds:.1f} s",
        flush=True,
    )

    texts = [r.text for r in golden.rows]
    plain = BM25Index(texts, tokenize=plain_words)
    analyzed = BM25Index(texts)
    systems: dict[str, RetrievalOptions | None] = {
        "ours": RetrievalOptions(),
        "no-graph": RetrievalOptions(
            signals=frozenset({"lexical", "clauses", "dense", "context", "speaker", "time"})
        ),
        "no-rerank": RetrievalOptions(rerank="none"),
    }
    if platform.embedder.semantic:
        systems["dense"] = RetrievalOptions(signals=frozenset({"dense"}), rerank="none")
    scores: dict[str, dict[str, list[tuple[float, float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    latencies: list[float] = []
    stage_seconds: dict[str, float] = defaultdict(float)
    for q in golden.questions:
        gold = q["gold"]
        row = {}
        for name, index in (("bm25", plain), ("bm25+an", analyzed)):
            ranked = [d.index + 1 for d in index.search(q["question"], 10)]
            row[name] = metrics(ranked, gold)
        for name, options in systems.items():
            t0 = time.perf_counter()
            retrieval = await find_evidence(platform, room_id, q["question"], 10, options)
            if name == "ours":
                latencies.append(time.perf_counter() - t0)
                for stage in retrieval.stages:
                    stage_seconds[stage.stage] += stage.seconds
            ranked = [
                number_of[int(e.id)]
                for e in retrieval.evidence
                if e.kind == "message" and int(e.id) in number_of
            ]
            row[name] = metrics(ranked, gold)
            if per_question and name == "ours":
                print(
                    f"  {q['id']} {q['kind']:<10} R@10 ours {row['ours'][1]:.2f} "
                    f"bm25 {row['bm25'][1]:.2f}  gold {gold} got {ranked}"
                )
        # How much of the gold the candidates reach at all: recall@50 of ours (a top-50 query)
        # and of BM25. Gold found but ranked below 10 is the reranker's to lift.
        deep = await find_evidence(platform, room_id, q["question"], 50, systems["ours"])
        ours50 = [number_of[int(e.id)] for e in deep.evidence if e.kind == "message"]
        bm50 = [d.index + 1 for d in plain.search(q["question"], 50)]
        wanted = set(gold)
        row["ours@50"] = (len(wanted & set(ours50)) / len(wanted), 0.0, 0.0)
        row["bm25@50"] = (len(wanted & set(bm50)) / len(wanted), 0.0, 0.0)
        for name, value in row.items():
            scores[name][q["kind"]].append(value)
            scores[name]["all"].append(value)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))] * 1000
    print(f"   retrieval latency in-process (ours): p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    n = max(1, len(latencies))
    print(
        "   mean per stage (ms): "
        + ", ".join(f"{k} {v / n * 1000:.1f}" for k, v in stage_seconds.items())
    )
    return scores


def print_tables(scores: dict) -> None:  # type: ignore[type-arg]
    names = ["ours", "no-graph", "no-rerank", "bm25", "bm25+an"] + (
        ["dense"] if "dense" in scores else []
    )
    present = {k for per in scores.values() for k in per if k != "all"}
    kinds = [k for k in KINDS if k in present] + sorted(present - set(KINDS)) + ["all"]
    for metric, label in ((1, "recall@10"), (0, "recall@5"), (2, "MRR@10")):
        header = f"   {label:<12}{'n':>4}" + "".join(f"{n:>11}" for n in names)
        if metric == 1:
            header += f"{'ours-bm25':>11}"
        print(header)
        for kind in kinds:
            values = {n: scores[n][kind] for n in names}
            count = len(values["ours"])
            means = {n: sum(v[metric] for v in vals) / len(vals) for n, vals in values.items()}
            line = f"   {kind:<12}{count:>4}" + "".join(f"{means[n]:>11.3f}" for n in names)
            if metric == 1:
                line += f"{means['ours'] - means['bm25']:>+11.3f}"
            print(line)
        print()
    # Gold within reach of the candidates (top 50), beside what reaches the top 10.
    print(f"   {'recall@50':<12}{'n':>4}{'ours':>11}{'bm25':>11}{'ours@10':>11}")
    for kind in kinds:
        deep = {n: scores[n][kind] for n in ("ours@50", "bm25@50", "ours")}
        r50 = {n: sum(v[0] for v in vals) / len(vals) for n, vals in deep.items()}
        r10 = sum(v[1] for v in deep["ours"]) / len(deep["ours"])
        print(
            f"   {kind:<12}{len(deep['ours']):>4}{r50['ours@50']:>11.3f}{r50['bm25@50']:>11.3f}"
            f"{r10:>11.3f}"
        )
    print()


def start_embed_server():  # type: ignore[no-untyped-def]
    """bench/embed_server.py (the ``bench`` extra) on a free port, its URL, model name and
    dimension exported as EMBEDDING_BASE_URL, LLM_EMBEDDING_MODEL, LLM_EMBEDDING_DIM."""
    import subprocess

    script = str(ROOT / "bench" / "embed_server.py")
    server = subprocess.Popen(
        [sys.executable, script, "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    print(server.stdout.readline().strip())  # "<model> (<dim> dimensions, …) on <url>"
    # "  EMBEDDING_BASE_URL=… LLM_EMBEDDING_MODEL=… LLM_EMBEDDING_DIM=…"
    line = server.stdout.readline()
    if "EMBEDDING_BASE_URL=" not in line:
        server.kill()
        raise SystemExit("bench/embed_server.py did not start: pip install -e '.[bench]'")
    for pair in line.split():
        key, value = pair.split("=", 1)
        os.environ[key] = value
    return server


async def main(args: argparse.Namespace) -> None:
    from dbschema.migrate import upgrade
    from knowledge.platform import open_platform, sync_engine
    from knowledge.settings import get_settings

    settings = get_settings()
    engine = sync_engine(settings)
    upgrade(engine)
    engine.dispose()
    embedder = (
        f"model {settings.llm_embedding_model}"
        if settings.uses_embedding_model
        else "offline hashing (dense signal off)"
    )
    print(
        f"embedder: {embedder}; "
        f"LLM: {settings.llm_chat_model if settings.uses_llm else 'none'}; "
        f"reranker: {'http ' + settings.rerank_url if settings.rerank_url else 'offline'}"
    )
    async with open_platform(settings) as platform:
        for name in args.sets.split(","):
            if not (DATA / name / "questions.jsonl").exists():
                print(f"(no golden set {name!r} in {DATA})")
                continue
            print_tables(await run_set(platform, load_set(name), args.per_question))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="coriolanus,teamchat")
    parser.add_argument("--per-question", action="store_true")
    parser.add_argument(
        "--dense", action="store_true", help="embed with bench/embed_server.py (started here)"
    )
    parsed = parser.parse_args()
    from bench.common import bench_data_dir

    # Removed at exit once its embedded PostgreSQL is stopped (an rmtree first left the server
    # running on a deleted directory).
    data_dir = bench_data_dir("cgq-")
    os.environ["COAGENT_DATA_DIR"] = str(data_dir)
    for var in ("DATABASE_URL", "POSTGRES_SERVER", "NEO4J_URI", "QDRANT_URL"):
        os.environ.pop(var, None)
    embed_server = start_embed_server() if parsed.dense else None
    try:
        asyncio.run(main(parsed))
    finally:
        if embed_server is not None:
            embed_server.terminate()
            embed_server.wait(10)
