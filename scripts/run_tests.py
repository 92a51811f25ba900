"""Run the test suite with every service it needs (what `make test` calls).

PostgreSQL and Redis are embedded (started by the tests themselves). Neo4j (Community + APOC +
GDS, from Maven-resolved jars) is started with ``deploy/neo4j/neo4j_server.py`` when
``NEO4J_URI`` is unset, and stopped afterwards; a server that was already running (``make
neo4j``) is used and left running. When Neo4j cannot start:

- with ``CI=true`` the run fails (a missing service is never a silent skip in CI);
- otherwise a warning is printed and the tests run without it: the Neo4j tests report as
  skipped, with the reason.

A real Qdrant server (``../shared/qdrant/qdrant``, a 1.18.3 binary; ``QDRANT_BINARY`` names
another) is started on free loopback ports with its storage in a temporary directory, its URL
exported to pytest as ``COAGENT_TEST_QDRANT_URL``, and stopped (the directory removed)
afterwards; a ``COAGENT_TEST_QDRANT_URL`` already set is used as it is. When the binary is
missing or the server does not start: with ``CI=true`` the run fails; otherwise a warning is
printed and the Qdrant tests fall back to qdrant-client's local mode (which ignores payload
indexes, tenancy and HNSW settings).

Arguments are passed on to pytest.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "deploy" / "neo4j" / "neo4j_server.py"
NEO4J_VARS = ("NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD", "NEO4J_DATABASE")
QDRANT_URL_VAR = "COAGENT_TEST_QDRANT_URL"
QDRANT_BINARY = ROOT.parent / "shared" / "qdrant" / "qdrant"


def qdrant_binary() -> Path:
    """``QDRANT_BINARY``, else ``shared/qdrant/qdrant`` beside this checkout or beside any of
    its parents (a clone nested deeper still finds it), else ``qdrant`` on the PATH."""
    if os.environ.get("QDRANT_BINARY"):
        return Path(os.environ["QDRANT_BINARY"])
    for parent in ROOT.parents:
        candidate = parent / "shared" / "qdrant" / "qdrant"
        if candidate.is_file():
            return candidate
    on_path = shutil.which("qdrant")
    return Path(on_path) if on_path else QDRANT_BINARY


QDRANT_START_SECONDS = 30.0


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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class QdrantServer:
    """A Qdrant server of this run: free loopback ports, storage in a temporary directory."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.home = Path(tempfile.mkdtemp(prefix="cgt-qdrant-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError(
                f"no Qdrant server binary at {self.binary} (set QDRANT_BINARY to one)"
            )
        started = time.perf_counter()
        # A port found free can be taken before the server binds it: try fresh ports again.
        for _ in range(3):
            http, grpc = free_port(), free_port()
            if self._launch(http, grpc):
                say(
                    f"Qdrant started in {time.perf_counter() - started:.1f} s at {self.url} "
                    f"(storage {self.home})"
                )
                return
        code = self.process.returncode if self.process is not None else None
        raise RuntimeError(
            f"Qdrant ({self.binary}) did not start (exit code {code}); "
            f"the end of its log:\n{self.log_tail()}\n"
        )

    def _launch(self, http: int, grpc: int) -> bool:
        env = {
            **os.environ,
            "QDRANT__STORAGE__STORAGE_PATH": str(self.home / "storage"),
            "QDRANT__STORAGE__SNAPSHOTS_PATH": str(self.home / "snapshots"),
            "QDRANT__SERVICE__HOST": "127.0.0.1",
            "QDRANT__SERVICE__HTTP_PORT": str(http),
            "QDRANT__SERVICE__GRPC_PORT": str(grpc),
            "QDRANT__TELEMETRY_DISABLED": "true",
        }
        with open(self.home / "qdrant.log", "ab") as log:
            # cwd: the server writes a marker file (and snapshots by default) where it runs.
            self.process = subprocess.Popen(
                [str(self.binary)], cwd=self.home, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{http}"
        deadline = time.monotonic() + QDRANT_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        self.url = url
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self._terminate()
        return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.home / "qdrant.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def _terminate(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        running = self.process is not None and self.process.poll() is None
        self._terminate()
        shutil.rmtree(self.home, ignore_errors=True)
        if running:
            say("Qdrant stopped (its storage removed)")


def main() -> int:
    pytest = [sys.executable, "-m", "pytest", "-v", *sys.argv[1:]]
    # A terminated run (CI timeout) still stops the servers it started (the finally below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    env = dict(os.environ)
    neo4j_started = False
    qdrant: QdrantServer | None = None
    try:
        # Qdrant first: it starts in about a second, so a CI failure shows before Neo4j's wait.
        if env.get(QDRANT_URL_VAR):
            say(f"{QDRANT_URL_VAR} is set ({env[QDRANT_URL_VAR]}): using that Qdrant server")
        else:
            qdrant = QdrantServer(qdrant_binary())
            try:
                qdrant.start()
                env[QDRANT_URL_VAR] = qdrant.url
            except (RuntimeError, OSError) as error:
                if in_ci():
                    say(f"error: {error}. With CI=true the Qdrant tests need the server: failing.")
                    return 1
                say(
                    f"WARNING: {error}. Running the Qdrant tests in qdrant-client's local mode "
                    "(no payload indexes, tenancy or HNSW; with CI=true this is a failure)."
                )

        if env.get("NEO4J_URI"):
            say(f"NEO4J_URI is set ({env['NEO4J_URI']}): using that server")
        else:
            try:
                neo4j_env, neo4j_started = start_neo4j()
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
        if qdrant is not None:
            qdrant.stop()
        if neo4j_started:
            stop_neo4j()


if __name__ == "__main__":
    sys.exit(main())
