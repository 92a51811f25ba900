"""Neo4j graph store benchmark: one table, printed at the end of one run.

1. Entities written per second into a fresh room, at 10k and 100k entities, three ways:
   the store's write (``Neo4jGraphStore.replace_graph``: one read of the room's keys, then
   UNWIND batches: CREATE for entities not stored yet, MERGE for changed ones), plain
   UNWIND-batched MERGE of every row (``merge_entities``), and one MERGE statement per entity
   (``write_entities_per_row``, all in one transaction: the per-row path at its fastest). Per-row
   MERGE at 100k would take minutes: it is measured on the first ``--per-row-cap`` entities
   (default 10,000) and the table says so. Also: the time to re-write the same entities
   (fingerprints match, nothing is written).
2. Leiden, GDS (``gds.leiden`` on a per-room projection: project + run + drop, all timed)
   versus Python (graspologic-native, the embedded default), on planted-partition graphs of 1k,
   10k and 100k weighted edges: time and modularity (both scored with networkx on the same
   weighted graph).

Times are the best of ``--repeat`` (3) runs after a warm-up (the JVM's JIT), except per-row
MERGE (one run): the machine's cores are often shared with other work.

Neo4j: the server at ``NEO4J_URI`` (+ ``NEO4J_USER``/``NEO4J_PASSWORD``/``NEO4J_DATABASE``), or
one started with ``deploy/neo4j/neo4j_server.py`` and stopped afterwards (a server that is
already running is used and left running).

    .venv/bin/python bench/bench_neo4j.py [--entities 10000,100000] [--edges 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import networkx as nx  # noqa: E402

from knowledge.communities import leiden_partition  # noqa: E402
from knowledge.graph import Entity, Relationship, RoomGraph  # noqa: E402
from knowledge.stores.neo4j_graph import Neo4jGraphStore  # noqa: E402

LAUNCHER = ROOT / "deploy" / "neo4j" / "neo4j_server.py"
SEED = 42


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- Neo4j server ------------------------------------------------------------------------------


def neo4j_env() -> tuple[dict[str, str], bool]:
    """Connection settings, and whether this run started the server (and must stop it)."""
    if os.environ.get("NEO4J_URI"):
        return dict(os.environ), False
    for args, started in ((["status"], False), (["start", "--export"], True)):
        result = subprocess.run(
            [sys.executable, str(LAUNCHER), *args], stdout=subprocess.PIPE, text=True, check=False
        )
        env = {}
        for line in result.stdout.splitlines():
            key, _, value = line.removeprefix("export ").strip().partition("=")
            env[key] = value.strip("'\"")
        if result.returncode == 0 and env.get("NEO4J_URI"):
            return env, started
    raise SystemExit("Neo4j did not start: see the launcher's messages above")


# --- data --------------------------------------------------------------------------------------


def entities(n: int) -> list[Entity]:
    rng = random.Random(n)
    kinds = ["PERSON", "ORGANIZATION", "LOCATION", "EVENT", "CONCEPT"]
    return [
        Entity(
            name=f"entity {i:06d}",
            display_name=f"Entity {i:06d}",
            type=kinds[i % len(kinds)],
            description=f"Entity {i} of the benchmark, mentioned in a few chunks of the room.",
            source_chunk_ids=[f"chunk-{rng.randrange(5000):05d}" for _ in range(1 + i % 3)],
            mentions=1 + rng.randrange(20),
        )
        for i in range(n)
    ]


def planted_partition(edges: int, seed: int = SEED) -> RoomGraph:
    """About ``edges`` weighted edges on edges/5 nodes (mean degree 10), communities of ~25
    nodes, 85% of the edges inside a community."""
    rng = random.Random(seed)
    n = max(20, edges // 5)
    size = 25
    pairs: dict[tuple[int, int], float] = {}
    while len(pairs) < edges:
        a = rng.randrange(n)
        if rng.random() < 0.85:
            base = a - a % size
            b = base + rng.randrange(min(size, n - base))
        else:
            b = rng.randrange(n)
        if a != b:
            pairs[(min(a, b), max(a, b))] = float(rng.randint(1, 5))
    name = [f"node {i:06d}" for i in range(n)]
    return RoomGraph(
        entities=[Entity(name=name[i], display_name=name[i], type="CONCEPT") for i in range(n)],
        relationships=[
            Relationship(source=name[a], target=name[b], weight=w)
            for (a, b), w in sorted(pairs.items())
        ],
    )


def modularity(graph: RoomGraph, partition: dict[str, int]) -> float:
    g = nx.Graph()
    g.add_nodes_from(e.name for e in graph.entities)
    g.add_weighted_edges_from((r.source, r.target, r.weight) for r in graph.relationships)
    groups: dict[object, set[str]] = {}
    for node in g.nodes:
        groups.setdefault(partition.get(node, ("alone", node)), set()).add(node)
    return float(nx.community.modularity(g, groups.values(), weight="weight"))


# --- measures ----------------------------------------------------------------------------------


@dataclass
class WriteRow:
    entities: int
    batched_seconds: float
    merge_seconds: float
    rewrite_seconds: float
    per_row_entities: int
    per_row_seconds: float

    @property
    def batched_rate(self) -> float:
        return self.entities / self.batched_seconds

    @property
    def merge_rate(self) -> float:
        return self.entities / self.merge_seconds

    @property
    def per_row_rate(self) -> float:
        return self.per_row_entities / self.per_row_seconds


@dataclass
class LeidenRow:
    edges: int
    nodes: int
    gds_seconds: float
    gds_modularity: float
    gds_communities: int
    python_seconds: float
    python_modularity: float
    python_communities: int
    read_seconds: float


def new_room(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await work()
    return time.perf_counter() - started


async def measure_writes(store: Neo4jGraphStore, n: int, per_row_cap: int, repeat: int) -> WriteRow:
    """Best of ``repeat`` for the batched writes (each into a fresh room); per-row once."""
    data = entities(n)
    graph = RoomGraph(entities=data, relationships=[])
    batched, merge, rewrite = [], [], []
    for attempt in range(repeat):
        log(f"writes: {n:,} entities, replace_graph, then again unchanged ({attempt + 1}) …")
        room = new_room("batched")
        batched.append(await timed(lambda room=room: store.replace_graph(room, graph)))
        assert (await store.counts(room))["entities"] == n
        rewrite.append(await timed(lambda room=room: store.replace_graph(room, graph)))
        await store.wipe_room(room)

        log(f"writes: {n:,} entities, UNWIND MERGE of every row ({attempt + 1}) …")
        room = new_room("merge")
        merge.append(await timed(lambda room=room: store.merge_entities(room, data)))
        assert (await store.counts(room))["entities"] == n
        await store.wipe_room(room)

    sample = data[: min(n, per_row_cap)]
    room = new_room("per-row")
    log(f"writes: {len(sample):,} entities, one MERGE per row …")
    per_row = await timed(lambda: store.write_entities_per_row(room, sample))
    assert (await store.counts(room))["entities"] == len(sample)
    await store.wipe_room(room)
    return WriteRow(n, min(batched), min(merge), min(rewrite), len(sample), per_row)


async def measure_leiden(store: Neo4jGraphStore, edges: int, repeat: int) -> LeidenRow:
    """Best of ``repeat`` for each side, after one warm-up run of GDS."""
    graph = planted_partition(edges)
    room = new_room("leiden")
    log(f"leiden: {len(graph.relationships):,} edges on {len(graph.entities):,} nodes …")
    await store.replace_graph(room, graph)
    try:
        gds = await store.leiden_partition(room, SEED)  # warm-up: JIT and procedure caches
        gds_times = [await timed(lambda: store.leiden_partition(room, SEED)) for _ in range(repeat)]
        read_times, python_times = [], []
        python: dict[str, int] = {}
        for _ in range(repeat):
            started = time.perf_counter()
            stored = await store.get_graph(room)
            read_times.append(time.perf_counter() - started)
            weighted = [(r.source, r.target, r.weight) for r in stored.relationships]
            started = time.perf_counter()
            python = leiden_partition(weighted, SEED)
            python_times.append(time.perf_counter() - started)
    finally:
        await store.wipe_room(room)
    return LeidenRow(
        edges=len(graph.relationships),
        nodes=len(graph.entities),
        gds_seconds=min(gds_times),
        gds_modularity=modularity(graph, gds),
        gds_communities=len(set(gds.values())),
        python_seconds=min(python_times),
        python_modularity=modularity(graph, python),
        python_communities=len(set(python.values())),
        read_seconds=min(read_times),
    )


# --- table -------------------------------------------------------------------------------------


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def render(writes: list[WriteRow], leiden: list[LeidenRow], header: str) -> str:
    rows = [["measure", "size", "Neo4j / GDS", "baseline", "ratio"]]
    for w in writes:
        note = (
            ""
            if w.per_row_entities == w.entities
            else f", rate of the first {w.per_row_entities:,}"
        )
        per_row = f"{w.per_row_rate:,.0f}/s ({w.per_row_seconds:.2f} s{note})"
        rows.append(
            [
                "entity writes/s: store (UNWIND CREATE new) vs per-row MERGE",
                f"{w.entities:,} entities",
                f"{w.batched_rate:,.0f}/s ({w.batched_seconds:.2f} s)",
                per_row,
                f"{w.batched_rate / w.per_row_rate:.1f}x",
            ]
        )
        rows.append(
            [
                "entity writes/s: UNWIND MERGE (every row) vs per-row MERGE",
                f"{w.entities:,} entities",
                f"{w.merge_rate:,.0f}/s ({w.merge_seconds:.2f} s)",
                per_row,
                f"{w.merge_rate / w.per_row_rate:.1f}x",
            ]
        )
        rows.append(
            [
                "re-write of the same entities (nothing changed)",
                f"{w.entities:,} entities",
                f"{w.rewrite_seconds:.2f} s",
                "",
                "",
            ]
        )
    for r in leiden:
        rows.append(
            [
                "Leiden time: GDS vs Python (graspologic)",
                f"{r.edges:,} edges, {r.nodes:,} nodes",
                f"{r.gds_seconds:.3f} s",
                f"{r.python_seconds:.3f} s (+{r.read_seconds:.3f} s get_graph)",
                f"{r.gds_seconds / r.python_seconds:.1f}x",
            ]
        )
        rows.append(
            [
                "Leiden modularity: GDS vs Python",
                f"{r.edges:,} edges, {r.nodes:,} nodes",
                f"{r.gds_modularity:.4f} ({r.gds_communities} communities)",
                f"{r.python_modularity:.4f} ({r.python_communities} communities)",
                f"Δ {r.gds_modularity - r.python_modularity:+.4f}",
            ]
        )
    return header + "\n\n" + table(rows)


async def run(args: argparse.Namespace, env: dict[str, str]) -> str:
    store = Neo4jGraphStore(
        env["NEO4J_URI"],
        user=env.get("NEO4J_USER", "neo4j"),
        password=env.get("NEO4J_PASSWORD", "coagent-neo4j"),
        database=env.get("NEO4J_DATABASE", "neo4j"),
    )
    try:
        await store.ensure_schema()
        driver = await store.driver()
        records, _, _ = await driver.execute_query(
            "RETURN gds.version() AS gds, apoc.version() AS apoc", database_=store.database
        )
        versions = records[0]
        # Warm the JIT and the plan caches before timing.
        await measure_writes(store, 20_000, 1_000, 1)
        writes = [
            await measure_writes(store, n, args.per_row_cap, args.repeat)
            for n in args.entities
            if n > 0
        ]
        leiden = [await measure_leiden(store, e, args.repeat) for e in args.edges if e > 0]
    finally:
        await store.close()
    header = (
        f"Neo4j graph store benchmark — {env['NEO4J_URI']}, GDS {versions['gds']}, "
        f"APOC {versions['apoc']}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"best of {args.repeat} (per-row MERGE: one run)"
    )
    return render(writes, leiden, header)


def sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=sizes, default=[10_000, 100_000])
    parser.add_argument("--edges", type=sizes, default=[1_000, 10_000, 100_000])
    parser.add_argument("--per-row-cap", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N (not per-row)")
    args = parser.parse_args()
    env, started = neo4j_env()
    try:
        print(asyncio.run(run(args, env)))
    finally:
        if started:
            subprocess.run([sys.executable, str(LAUNCHER), "stop"], check=False)


if __name__ == "__main__":
    main()
