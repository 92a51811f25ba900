"""``coagent``: the command line of the CoAgent graph platform."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import warnings
from datetime import datetime
from typing import TYPE_CHECKING, Any

from coagent.database import prepare_database
from coagent.progress import fail, say, step
from knowledge.errors import DomainError
from knowledge.settings import InsecureSettingsError

if TYPE_CHECKING:
    from knowledge.search import Answer


def _quiet() -> None:
    # Library warnings (Dagster preview APIs, platformdirs) are noise on a terminal.
    warnings.filterwarnings("ignore")
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _settings():  # type: ignore[no-untyped-def]
    from knowledge.settings import get_settings

    return get_settings()


def cmd_migrate(args: argparse.Namespace) -> None:
    from pipelines.instance import ensure_dagster_home

    settings = _settings()
    prepare_database(settings)
    with step("Preparing the Dagster instance"):
        ensure_dagster_home(settings)


def cmd_demo(args: argparse.Namespace) -> None:
    from coagent.demo import run_demo

    run_demo(_settings())


def cmd_materialize(args: argparse.Namespace) -> None:
    from coagent.runs import run_room_job
    from knowledge.platform import open_platform
    from knowledge.rooms import get_room
    from pipelines.instance import get_instance

    settings = _settings()
    prepare_database(settings)

    async def check_room() -> None:
        async with open_platform(settings) as platform, platform.session() as s:
            await get_room(s, args.room)

    asyncio.run(check_room())
    instance = get_instance(settings)
    job = "rebuild_room" if args.rebuild else "refresh_room"
    say(f"Running {job} for room {args.room}")
    outcome = run_room_job(instance, job, args.room)
    if not outcome.success:
        fail(f"run {outcome.run_id} failed: {outcome.error or outcome.failed_checks}", 1)
    say(f"Run {outcome.run_id} succeeded in {outcome.seconds:.1f} s")


def cmd_import(args: argparse.Namespace) -> None:
    """Import a transcript file into a room, then ask for the room's refresh."""
    from pathlib import Path

    from knowledge.platform import open_platform
    from knowledge.transcripts import ImportResult, import_transcript, read_transcript

    settings = _settings()
    path = Path(args.file)
    rows = read_transcript(path, settings.max_message_chars)  # a bad file stops here
    prepare_database(settings)

    async def load() -> ImportResult:
        async with open_platform(settings) as platform, platform.session() as session:
            result = await import_transcript(session, args.room, rows, settings.max_message_chars)
            await session.commit()
            return result

    with step(f"Importing {path.name}"):
        result = asyncio.run(load())
    span = ""
    if result.first_time is not None and result.last_time is not None:
        span = f", {result.first_time.isoformat()} to {result.last_time.isoformat()}"
    say(
        f"Imported {result.messages} messages from {result.speakers} speakers "
        f"({result.new_users} new users) into room {result.room_id}"
        f" (message ids {result.first_message_id}-{result.last_message_id}{span})"
    )
    _request_refresh(settings, str(result.room_id))


def _request_refresh(settings, room_id: str) -> None:  # type: ignore[no-untyped-def]
    """Append ``room.rebuild_requested`` (full=false), as ``POST …/graph/build`` does; the
    Dagster sensor refreshes the room. Redis unreachable: say how the room gets indexed."""
    from redis.asyncio import Redis

    from knowledge.platform import redis_url
    from realtime.events import RoomRebuildRequested
    from realtime.publisher import EventPublisher

    async def publish(url: str) -> str:
        redis = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            publisher = EventPublisher(redis, maxlen=settings.events_stream_maxlen)
            return await publisher.publish(RoomRebuildRequested(room_id=room_id, full=False))
        finally:
            await redis.aclose()

    try:
        entry = asyncio.run(publish(redis_url(settings)))
    except Exception as error:
        say(
            f"Could not reach Redis ({error}): the room will be indexed at its next refresh, "
            f"or run `coagent materialize --room {room_id}`"
        )
        return
    say(f"Asked for a refresh of the room (event {entry} on the graphrag:events stream)")


def cmd_export(args: argparse.Namespace) -> None:
    """Write a room's graph as GraphRAG output tables (Parquet) into a folder."""
    from pathlib import Path

    from knowledge.export import export_room
    from knowledge.platform import open_platform

    settings = _settings()
    prepare_database(settings)
    out = Path(args.dir)

    async def export() -> dict[str, int]:
        async with open_platform(settings) as platform:
            return await export_room(platform, args.room, out)

    with step(f"Exporting room {args.room}"):
        counts = asyncio.run(export())
    for name, rows in counts.items():
        say(f"  {name + '.parquet':<26} {rows:>6} rows")
    say(f"Wrote {len(counts)} tables in GraphRAG's output layout to {out}")


def _top_k(value: str) -> int:
    from knowledge.retrieval.pipeline import MAX_TOP_K

    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if not 1 <= number <= MAX_TOP_K:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_TOP_K}, not {number}")
    return number


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def answer_json(answer: Answer, mode: str, top_k: int) -> dict[str, Any]:
    """An answer as one JSON-ready object (times as ISO 8601 strings, stage timings in
    seconds)."""

    return {
        "question": answer.question,
        "route": answer.route.value,
        "mode": mode,
        "top_k": top_k,
        "answer": answer.answer,
        "citations": [
            {
                "kind": c.kind,
                "id": c.id,
                "speaker": c.speaker,
                "time": _iso(c.time),
                "excerpt": c.excerpt,
            }
            for c in answer.citations
        ],
        "evidence": [
            {
                "rank": rank,
                "kind": e.kind,
                "id": e.id,
                "unit_id": e.unit_id,
                "score": e.score,
                "signals": dict(e.signals),
                "speaker": e.speaker,
                "time": _iso(e.time),
                "excerpt": e.excerpt,
            }
            for rank, e in enumerate(answer.evidence, start=1)
        ],
        "stages": [
            {"stage": s.stage, "found": s.found, "seconds": round(s.seconds, 6), "note": s.note}
            for s in answer.stages
        ],
        "entities": list(answer.entities),
        "communities": list(answer.communities),
        "seconds": round(answer.seconds, 6),
    }


def cmd_ask(args: argparse.Namespace) -> None:
    import json

    from knowledge.platform import open_platform
    from knowledge.search import Mode, Route, answer_question

    settings = _settings()
    route = Route(args.route) if args.route else None
    mode = Mode(args.mode)

    async def ask():  # type: ignore[no-untyped-def]
        async with open_platform(settings) as platform:
            return await answer_question(
                platform, args.room, args.question, route, top_k=args.top_k, mode=mode
            )

    answer = asyncio.run(ask())
    if args.json:
        print(json.dumps(answer_json(answer, mode.value, args.top_k), ensure_ascii=False))
        return
    from coagent.demo import print_answer

    print_answer(answer, mode)


def cmd_dagster(args: argparse.Namespace) -> None:
    """The Dagster UI (webserver + daemon) on this platform's instance."""
    import subprocess

    from pipelines.instance import ensure_dagster_home

    settings = _settings()
    prepare_database(settings)  # keeps the embedded PostgreSQL up while the UI runs
    home = ensure_dagster_home(settings)
    say(f"Dagster UI on http://{args.host}:{args.port}  (DAGSTER_HOME={home})")
    command = [
        sys.executable, "-m", "dagster", "dev", "-w", _workspace(),
        "-h", args.host, "-p", str(args.port),
    ]  # fmt: skip
    raise SystemExit(subprocess.call(command, env={**os.environ, "DAGSTER_HOME": str(home)}))


def _workspace() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parent.parent / "workspace.yaml")


def cmd_dev(args: argparse.Namespace) -> None:
    from coagent.dev import run_dev

    raise SystemExit(run_dev(_settings(), args.host, args.port, args.dagster_port, args.ready_file))


def cmd_serve(args: argparse.Namespace) -> None:
    """Migrate, create the super admin (FIRST_SUPERUSER), then serve the API with uvicorn."""
    import uvicorn

    from knowledge.platform import open_platform, redis_url
    from serving.app import create_app
    from serving.auth.service import ensure_superuser

    settings = _settings()
    settings.check_production()  # before anything is migrated or created
    prepare_database(settings)
    with step("Starting Redis" if settings.uses_embedded_redis else "Connecting Redis"):
        redis_url(settings)

    async def superuser() -> str | None:
        async with open_platform(settings) as platform, platform.session() as session:
            user = await ensure_superuser(session, settings)
            return user.email if user else None

    with step("Creating the super admin"):
        admin = asyncio.run(superuser())
    if admin is None:
        say("  (no super admin: set FIRST_SUPERUSER and FIRST_SUPERUSER_PASSWORD to create one)")
    say(
        f"API on http://{args.host}:{args.port}/api/v1  (OpenAPI docs: http://{args.host}:{args.port}/docs)"
    )
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=True,
        ws_max_size=64 * 1024,
    )


def cmd_worker(args: argparse.Namespace) -> None:
    """The agent worker: answers @mentions off the request path (arq on the API's Redis)."""
    import logging

    from serving.agents.worker import serve_worker

    settings = _settings()
    prepare_database(settings)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    say("agent worker running (Ctrl-C to stop)")

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (compose, dev) stops cleanly, like Ctrl-C

    signal.signal(signal.SIGTERM, terminate)
    try:
        asyncio.run(serve_worker(settings))
    except KeyboardInterrupt:
        say("agent worker stopped")


def cmd_mcp(args: argparse.Namespace) -> None:
    """The MCP server on stdin/stdout, as one user (stdout carries only the protocol)."""
    from serving.mcp.stdio import serve_stdio

    email = args.user or os.environ.get("COAGENT_MCP_USER", "")
    if not email.strip():
        fail("name the user the tools run as: --user EMAIL or COAGENT_MCP_USER")
    asyncio.run(serve_stdio(_settings(), email))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coagent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply the database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser(
        "demo", help="load the sample room, build its graph through Dagster, answer questions"
    ).set_defaults(func=cmd_demo)
    materialize = sub.add_parser("materialize", help="refresh (or rebuild) one room's graph")
    materialize.add_argument("--room", required=True, help="room id")
    materialize.add_argument("--rebuild", action="store_true", help="wipe the room first")
    materialize.set_defaults(func=cmd_materialize)
    dagster = sub.add_parser("dagster", help="run the Dagster UI and daemon on this instance")
    dagster.add_argument("--host", default="127.0.0.1")
    dagster.add_argument("--port", type=int, default=3000)
    dagster.set_defaults(func=cmd_dagster)
    dev = sub.add_parser("dev", help="run the Dagster UI + daemon (with the sensor) and the API")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000, help="API port")
    dev.add_argument("--dagster-port", type=int, default=3000)
    dev.add_argument("--ready-file", help="written once everything is up (for scripts)")
    dev.set_defaults(func=cmd_dev)
    serve = sub.add_parser("serve", help="migrate and serve the HTTP/WebSocket API (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="run the agent worker (replies to @mentions)")
    worker.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    worker.set_defaults(func=cmd_worker)
    mcp = sub.add_parser(
        "mcp", help="serve the rooms' knowledge to an MCP client over stdio (Claude Desktop…)"
    )
    mcp.add_argument(
        "--user",
        metavar="EMAIL",
        help="the account whose rooms the tools may read (default: $COAGENT_MCP_USER)",
    )
    mcp.set_defaults(func=cmd_mcp)
    imp = sub.add_parser(
        "import", help="import a transcript (.jsonl, .ndjson, .csv, .parquet) into a room"
    )
    imp.add_argument("room", help="room id")
    imp.add_argument("file", help="columns speaker, text; optional time, kind (human|agent)")
    imp.set_defaults(func=cmd_import)
    export = sub.add_parser(
        "export", help="write a room's graph as GraphRAG output Parquet tables into DIR"
    )
    export.add_argument("room", help="room id")
    export.add_argument("dir", help="output folder (created)")
    export.set_defaults(func=cmd_export)
    ask = sub.add_parser("ask", help="ask a question about a room")
    ask.add_argument("--room", required=True, help="room id")
    ask.add_argument("--route", choices=["global", "local"], help="force a search route")
    ask.add_argument(
        "--top-k", type=_top_k, default=10, metavar="N", help="units of evidence (1-50, 10)"
    )
    ask.add_argument(
        "--mode",
        choices=["answer", "evidence"],
        default="answer",
        help="evidence: the ranked evidence only, no LLM call",
    )
    ask.add_argument(
        "--json", action="store_true", help="print one JSON object (answer, evidence, stages)"
    )
    ask.add_argument("question")
    ask.set_defaults(func=cmd_ask)
    return parser


def main(argv: list[str] | None = None) -> None:
    _quiet()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (DomainError, InsecureSettingsError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        fail("interrupted", 130)


if __name__ == "__main__":
    main(sys.argv[1:])
