"""Run the test suite with every service it needs (what `make test` calls).

PostgreSQL and Redis are embedded (started by the tests themselves). Neo4j (Community + APOC +
GDS, from Maven-resolved jars) is started with ``deploy/neo4j/neo4j_server.py`` when
``NEO4J_URI`` is unset, and stopped afterwards; a server that was already running (``make
neo4j``) is used and left running. When Neo4j cannot start:

- with ``CI=true`` the run fails (a missing service is never a silent skip in CI);
- otherwise a warning is printed and the tests run without it: the Neo4j tests report as
  skipped, with the reason.

Arguments are passed on to pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "deploy" / "neo4j" / "neo4j_server.py"
NEO4J_VARS = ("NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD", "NEO4J_DATABASE")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def say(message: str) -> None:
    print(f"run_tests: {message}", file=sys.stderr, flush=True)


def parse_env(text: str) -> dict[str, str]:
    """``NEO4J_URI=…`` lines (optionally prefixed with ``export``) → a dict."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export ") :].strip()
        key, sep, value = line.partition("=")
        if sep and key in NEO4J_VARS:
            env[key] = value.strip().strip("'\"")
    return env


def launcher(*args: str, capture: bool = True) -> subprocess.CompletedProcess[str]:
    # The launcher's progress and errors go to our stderr; its env lines to stdout.
    return subprocess.run(
        [sys.executable, str(LAUNCHER), *args],
        stdout=subprocess.PIPE if capture else None,
        text=True,
        cwd=ROOT,
        check=False,
    )


def start_neo4j() -> tuple[dict[str, str], bool]:
    """The server's env lines, and whether this run started it (and so must stop it)."""
    running = launcher("status")
    if running.returncode == 0:
        env = parse_env(running.stdout)
        if env.get("NEO4J_URI"):
            say(f"using the Neo4j server already running at {env['NEO4J_URI']}")
            return env, False
    started = time.perf_counter()
    result = launcher("start", "--export")
    env = parse_env(result.stdout)
    if result.returncode != 0 or not env.get("NEO4J_URI"):
        raise RuntimeError(
            f"Neo4j did not start (deploy/neo4j/neo4j_server.py start exited "
            f"{result.returncode}; its messages are above)"
        )
    say(f"Neo4j started in {time.perf_counter() - started:.1f} s at {env['NEO4J_URI']}")
    return env, True


def stop_neo4j() -> None:
    started = time.perf_counter()
    result = launcher("stop", capture=False)
    if result.returncode != 0:
        say(f"warning: stopping Neo4j exited {result.returncode}")
    else:
        say(f"Neo4j stopped in {time.perf_counter() - started:.1f} s")


def main() -> int:
    pytest = [sys.executable, "-m", "pytest", "-v", *sys.argv[1:]]
    if os.environ.get("NEO4J_URI"):
        say(f"NEO4J_URI is set ({os.environ['NEO4J_URI']}): using that server")
        return subprocess.call(pytest, cwd=ROOT)

    env = dict(os.environ)
    started = False
    try:
        try:
            neo4j_env, started = start_neo4j()
            env.update(neo4j_env)
        except (RuntimeError, OSError) as error:
            if in_ci():
                say(f"error: {error}. With CI=true the Neo4j tests cannot be skipped: failing.")
                return 1
            say(
                f"WARNING: {error}. Running the tests WITHOUT Neo4j: every Neo4j test is "
                "skipped (with CI=true this is a failure)."
            )
        return subprocess.call(pytest, cwd=ROOT, env=env)
    finally:
        if started:
            stop_neo4j()


if __name__ == "__main__":
    sys.exit(main())
