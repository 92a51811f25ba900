#!/usr/bin/env python3
"""Run a local Neo4j 5.26 Community server with APOC core and GDS, without Docker.

The jars come from Maven Central through ``deploy/neo4j/pom.xml`` (``mvn``),
cached outside git.  The server is a plain ``java`` process
(``org.neo4j.server.CommunityEntryPoint``) started in the background, with Bolt
on 127.0.0.1 on a free port, auth on, and APOC/GDS unrestricted.

Subcommands::

    start    resolve jars if needed, write neo4j.conf, start, wait for Bolt,
             check ``RETURN gds.version(), apoc.version()``, print NEO4J_* lines
             (already running: just print them)
    stop     stop the server started from this home (pid file), wait for it
    status   exit 0 and print NEO4J_* lines if running, exit 3 if not
    env      like status, but only the NEO4J_* lines (for eval / source)
    resolve  only materialize the jars (e.g. to warm a cache)

Only the NEO4J_* lines go to stdout, so ``eval "$(... start --export)"`` works;
everything else goes to stderr.  Any failure exits non-zero with the reason.

Standard library only.  The version check uses the ``neo4j`` Python driver
when importable and otherwise a minimal built-in Bolt client.  The first clean
stop leaves an AppCDS class-data archive next to the jars, which later starts
use (about half the startup CPU).  See README.md for paths and variables.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
MAIN_CLASS = "org.neo4j.server.CommunityEntryPoint"
ADMIN_CLASS = "org.neo4j.server.startup.Neo4jAdminCommand"
DEFAULT_PASSWORD = "coagent-neo4j"
USER = "neo4j"
DATABASE = "neo4j"
CHECK_QUERY = "RETURN gds.version(), apoc.version()"

# Neo4j's own defaults for server.jvm.additional (5.26), minus AlwaysPreTouch,
# which would touch the whole heap up front.
JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+UnlockExperimentalVMOptions",
    "-XX:+TrustFinalNonStaticFields",
    "-XX:+DisableExplicitGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Djdk.tls.ephemeralDHKeySize=2048",
    "-Djdk.tls.rejectClientInitiatedRenegotiation=true",
    "-Dfile.encoding=UTF-8",
    "-Dlog4j2.disable.jmx=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--enable-native-access=ALL-UNNAMED",
]


class Fail(Exception):
    """A failure with a message meant for the user."""


def log(msg: str) -> None:
    print(f"neo4j: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- #
# Paths and settings
# --------------------------------------------------------------------------- #


def env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def cache_root() -> Path:
    return env_path("COAGENT_NEO4J_CACHE", Path.home() / ".cache" / "coagent" / "neo4j")


def home_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "home", None):
        return Path(args.home).expanduser().resolve()
    return env_path("COAGENT_NEO4J_HOME", cache_root() / "run")


def pom_versions() -> dict[str, str]:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = ET.parse(POM).getroot().find("m:properties", ns)
    if props is None:
        raise Fail(f"{POM} has no <properties>")
    out = {}
    for key in ("neo4j.version", "apoc.version", "gds.version"):
        el = props.find(f"m:{key}", ns)
        text = (el.text or "").strip() if el is not None else ""
        if not text:
            raise Fail(f"{POM} has no <{key}> property")
        out[key] = text
    return out


def jar_dir() -> Path:
    return cache_root() / pom_versions()["neo4j.version"]


class Paths:
    def __init__(self, home: Path):
        self.home = home
        self.conf_dir = home / "conf"
        self.conf = self.conf_dir / "neo4j.conf"
        self.data = home / "data"
        self.logs = home / "logs"
        self.run = home / "run"
        self.imports = home / "import"
        self.pid = self.run / "neo4j.pid"
        self.lock = self.run / "neo4j_server.lock"
        self.console = self.logs / "console.log"
        self.user_log = self.logs / "neo4j.log"
        self.debug_log = self.logs / "debug.log"
        self.env_file = home / "neo4j.env"
        self.password_file = self.run / "initial-password"
        self.cds_pending = self.run / "cds-pending"
        self.log_offsets: dict[Path, int] = {}

    def mark_logs(self) -> None:
        """Remember where the logs end, so reports show only this start's lines."""
        self.log_offsets = {}
        for path in (self.user_log, self.debug_log, self.console):
            with contextlib.suppress(OSError):
                self.log_offsets[path] = path.stat().st_size

    def make(self) -> None:
        for d in (self.conf_dir, self.data, self.logs, self.run, self.imports):
            d.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def locked(paths: Paths):
    """Serialize start/stop on one home (two `make test` at once, say)."""
    paths.run.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- #
# Jars (Maven)
# --------------------------------------------------------------------------- #


def pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def jars_ready(target: Path) -> bool:
    stamp = target / ".resolved"
    return (
        stamp.is_file()
        and stamp.read_text().strip() == pom_digest()
        and any((target / "lib").glob("neo4j-*.jar"))
        and any((target / "plugins").glob("*.jar"))
    )


def resolve_jars(quiet: bool = False) -> Path:
    """Materialize lib/ and plugins/ under the cache with `mvn package`."""
    target = jar_dir()
    if jars_ready(target):
        if not quiet:
            log(f"jars cached in {target}")
        return target
    mvn = os.environ.get("COAGENT_MVN") or shutil.which("mvn")
    if not mvn:
        raise Fail(
            "Maven (`mvn`) is not on PATH: it is needed once to fetch the Neo4j jars "
            "from Maven Central (apt-get install maven, or set COAGENT_MVN)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    versions = pom_versions()
    log(
        f"resolving Neo4j {versions['neo4j.version']}, APOC {versions['apoc.version']}, "
        f"GDS {versions['gds.version']} from Maven Central into {target} ..."
    )
    cmd = [mvn, "-B", "-q", "-f", str(POM), "package", f"-Dneo4j.cache.dir={staging}"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise Fail(f"cannot run Maven ({mvn}): {exc}") from exc
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join(
            line
            for line in proc.stdout.splitlines()
            if "Download" not in line and "Progress" not in line
        )[-4000:]
        raise Fail(f"`{shlex.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
    shutil.rmtree(staging / "maven-target", ignore_errors=True)
    (staging / ".resolved").write_text(pom_digest() + "\n")
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        target.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    staging.rename(target)
    n_lib = len(list((target / "lib").glob("*.jar")))
    n_plug = len(list((target / "plugins").glob("*.jar")))
    log(f"resolved {n_lib} server jars + {n_plug} plugin jars in {time.monotonic() - t0:.1f}s")
    return target


# --------------------------------------------------------------------------- #
# Java
# --------------------------------------------------------------------------- #


def java_version(java: str) -> tuple[int | None, str]:
    """(major version, full `java -version` text)."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None, ""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return None, out
    major = int(m.group(1))
    return (int(m.group(2)) if major == 1 and m.group(2) else major), out


def find_java() -> tuple[str, str]:
    """A Java 17 or 21 (what Neo4j 5.26 supports): JAVA_HOME, PATH, /usr/lib/jvm.

    Returns (path, `java -version` text)."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    for pattern in ("*-21-*", "*-17-*", "*21*", "*17*"):
        candidates += [str(p / "bin" / "java") for p in sorted(Path("/usr/lib/jvm").glob(pattern))]
    seen = []
    for cand in candidates:
        if cand in seen or not os.access(cand, os.X_OK):
            continue
        seen.append(cand)
        major, text = java_version(cand)
        if major in (17, 21):
            return cand, text
    raise Fail(
        "no Java 17 or 21 found (JAVA_HOME, PATH, /usr/lib/jvm); Neo4j 5.26 needs one. "
        f"Tried: {', '.join(seen) or 'nothing'}"
    )


def classpath(jars: Path) -> str:
    return f"{jars / 'plugins'}/*:{jars / 'lib'}/*"


def cds_archive(jars: Path, java: str, version_text: str) -> Path:
    """AppCDS archive for this JVM build and jar set (it halves startup CPU).

    Written by the JVM on the first clean stop (-XX:ArchiveClassesAtExit) and
    used from then on; a JVM that finds it stale ignores it with a warning."""
    key = hashlib.sha256(f"{os.path.realpath(java)}\n{version_text}".encode()).hexdigest()[:16]
    return jars / "cds" / f"neo4j-{key}.jsa"


def cds_flags(paths: Paths, archive: Path) -> list[str]:
    paths.cds_pending.unlink(missing_ok=True)
    if os.environ.get("COAGENT_NEO4J_CDS", "1") == "0":
        return []
    if archive.is_file() and archive.stat().st_size > 0:
        return [f"-XX:SharedArchiveFile={archive}"]
    archive.parent.mkdir(parents=True, exist_ok=True)
    for stale in archive.parent.glob("*.tmp"):  # dumps of servers that did not stop cleanly
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 600:
                stale.unlink()
    tmp = archive.with_name(f"{archive.name}.{os.getpid()}.tmp")
    paths.cds_pending.write_text(f"{tmp}\n{archive}\n")
    return [f"-XX:ArchiveClassesAtExit={tmp}"]


def cds_finish(paths: Paths, clean_exit: bool) -> None:
    """After the server exited: keep the archive it dumped only if it exited cleanly."""
    try:
        tmp_s, final_s = paths.cds_pending.read_text().split()
    except (OSError, ValueError):
        return
    tmp, final = Path(tmp_s), Path(final_s)
    if clean_exit and tmp.is_file() and tmp.stat().st_size > 0:
        tmp.replace(final)
        log(f"saved class-data archive {final} (faster starts from now on)")
    else:
        tmp.unlink(missing_ok=True)
    paths.cds_pending.unlink(missing_ok=True)


# --------------------------------------------------------------------------- #
# Process bookkeeping
# --------------------------------------------------------------------------- #


def read_pid(paths: Paths) -> int | None:
    try:
        return int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None


def is_our_server(pid: int, paths: Paths) -> bool:
    """Alive, and really the Neo4j of this home (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    return MAIN_CLASS in args and f"--home-dir={paths.home}" in args


def running_pid(paths: Paths) -> int | None:
    pid = read_pid(paths)
    if pid is not None and is_our_server(pid, paths):
        return pid
    return None


def read_env_file(paths: Paths) -> dict[str, str]:
    out = {}
    with contextlib.suppress(OSError):
        for line in paths.env_file.read_text().splitlines():
            line = line.strip()
            if line.startswith("export "):
                line = line[len("export ") :]
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                out[key] = shlex.split(value)[0] if value else ""
    return out


def env_lines(env: dict[str, str], export: bool) -> str:
    prefix = "export " if export else ""
    keys = ("NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD", "NEO4J_DATABASE")
    return "".join(f"{prefix}{k}={shlex.quote(env[k])}\n" for k in keys if k in env)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def read_log(paths: Paths, path: Path) -> list[str]:
    """Lines `path` got since this start (see Paths.mark_logs)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(paths.log_offsets.get(path, 0))
            return fh.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def startup_report(paths: Paths) -> str:
    """What went wrong: ERROR / Caused-by lines (and WARN lines naming GDS) logged since
    this start, else the tail of the logs; stack frames left out."""
    picked: list[str] = []
    for path in (paths.user_log, paths.console, paths.debug_log):
        lines = read_log(paths, path)
        errors = [
            f"{path.name}: {line[:600]}"
            for line in lines
            if " ERROR " in line
            or line.startswith("Caused by")
            or "Exception" in line.split(" ", 1)[0]
            or (" WARN " in line and ("gds" in line.lower() or "Graph Data Science" in line))
        ]
        if errors and path == paths.debug_log and picked:
            break  # debug.log repeats neo4j.log's errors
        picked += errors
    if not picked:
        for path in (paths.user_log, paths.console):
            lines = [x for x in read_log(paths, path) if not x.lstrip().startswith(("at ", "..."))]
            picked += [f"{path.name}: {line[:600]}" for line in lines[-25:]]
    body = "\n".join(picked[-40:]) or "(the logs say nothing)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        # CI machines go away with their logs: show more of debug.log there.
        debug = read_log(paths, paths.debug_log)[-80:]
        body += f"\n--- {paths.debug_log} (last {len(debug)} lines) ---\n" + "\n".join(debug)
    return f"{body}\n(full logs in {paths.logs})"


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #


def write_conf(
    paths: Paths, jars: Path, port: int, heap: str, heap_initial: str, pagecache: str
) -> None:
    conf = f"""\
# Written by deploy/neo4j/neo4j_server.py on every start: edits are lost.
server.directories.lib={jars / "lib"}
server.directories.plugins={jars / "plugins"}
server.directories.data={paths.data}
server.directories.logs={paths.logs}
server.directories.run={paths.run}
server.directories.import={paths.imports}

server.default_listen_address=127.0.0.1
server.default_advertised_address=127.0.0.1
server.bolt.enabled=true
server.bolt.listen_address=127.0.0.1:{port}
server.bolt.advertised_address=127.0.0.1:{port}
server.bolt.tls_level=DISABLED
server.http.enabled=false
server.https.enabled=false

dbms.security.auth_enabled=true
dbms.security.auth_minimum_password_length=1
dbms.security.procedures.unrestricted=apoc.*,gds.*
dbms.security.procedures.allowlist=*

# Modest: the test suite runs on the same 2-core machine.
server.memory.heap.initial_size={heap_initial}
server.memory.heap.max_size={heap}
server.memory.pagecache.size={pagecache}

dbms.usage_report.enabled=false
db.logs.query.enabled=OFF
db.tx_log.rotation.retention_policy=100M size
# Faster stop: Bolt's netty loops otherwise wait 2 x 5 s on shutdown.
internal.dbms.bolt.netty_server_shutdown_quiet_period=0
internal.dbms.bolt.netty_server_shutdown_timeout=2
"""
    paths.conf.write_text(conf)


def set_initial_password(paths: Paths, jars: Path, java: str, password: str) -> None:
    """`neo4j-admin dbms set-initial-password`, before the first start only."""
    env = dict(os.environ, NEO4J_HOME=str(paths.home), NEO4J_CONF=str(paths.conf_dir))
    cmd = [java, "-cp", classpath(jars), ADMIN_CLASS, "dbms", "set-initial-password", password]
    proc = subprocess.run(cmd, cwd=paths.home, env=env, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        redacted = " ".join(cmd[:-1]) + " ***"
        raise Fail(f"`{redacted}` failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    paths.password_file.write_text(password + "\n")
    paths.password_file.chmod(0o600)


# --------------------------------------------------------------------------- #
# Bolt queries: the neo4j driver, or a minimal stdlib Bolt client
# --------------------------------------------------------------------------- #


class BoltError(Exception):
    def __init__(self, msg: str, code: str = ""):
        super().__init__(msg)
        self.code = code


def _pack(value) -> bytes:
    if value is None:
        return b"\xc0"
    if value is True:
        return b"\xc3"
    if value is False:
        return b"\xc2"
    if isinstance(value, int):
        if -16 <= value < 128:
            return struct.pack(">b", value)
        if -(2**31) <= value < 2**31:
            return b"\xca" + struct.pack(">i", value)
        return b"\xcb" + struct.pack(">q", value)
    if isinstance(value, str):
        data = value.encode()
        n = len(data)
        head = (
            bytes([0x80 | n])
            if n < 16
            else (b"\xd0" + struct.pack(">B", n) if n < 256 else b"\xd1" + struct.pack(">H", n))
        )
        return head + data
    if isinstance(value, dict):
        n = len(value)
        head = bytes([0xA0 | n]) if n < 16 else b"\xd8" + struct.pack(">B", n)
        return head + b"".join(_pack(k) + _pack(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        n = len(value)
        head = bytes([0x90 | n]) if n < 16 else b"\xd4" + struct.pack(">B", n)
        return head + b"".join(_pack(v) for v in value)
    raise TypeError(f"cannot pack {type(value)}")


class _Unpacker:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def size(self, marker: int, small_base: int, sizes: dict[int, str]) -> int:
        if small_base <= marker < small_base + 16:
            return marker - small_base
        fmt = sizes[marker]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def value(self):
        m = self.take(1)[0]
        if m < 0x80:
            return m
        if m >= 0xF0:
            return m - 0x100
        if m == 0xC0:
            return None
        if m in (0xC2, 0xC3):
            return m == 0xC3
        if m == 0xC1:
            return struct.unpack(">d", self.take(8))[0]
        ints = {0xC8: ">b", 0xC9: ">h", 0xCA: ">i", 0xCB: ">q"}
        if m in ints:
            fmt = ints[m]
            return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        if m in (0xCC, 0xCD, 0xCE):
            n = self.size(m, -100, {0xCC: ">B", 0xCD: ">H", 0xCE: ">I"})
            return self.take(n)
        if 0x80 <= m < 0x90 or m in (0xD0, 0xD1, 0xD2):
            n = self.size(m, 0x80, {0xD0: ">B", 0xD1: ">H", 0xD2: ">I"})
            return self.take(n).decode()
        if 0x90 <= m < 0xA0 or m in (0xD4, 0xD5, 0xD6):
            n = self.size(m, 0x90, {0xD4: ">B", 0xD5: ">H", 0xD6: ">I"})
            return [self.value() for _ in range(n)]
        if 0xA0 <= m < 0xB0 or m in (0xD8, 0xD9, 0xDA):
            n = self.size(m, 0xA0, {0xD8: ">B", 0xD9: ">H", 0xDA: ">I"})
            return {self.value(): self.value() for _ in range(n)}
        if 0xB0 <= m < 0xC0:
            n, tag = m - 0xB0, self.take(1)[0]
            return ("struct", tag, [self.value() for _ in range(n)])
        raise BoltError(f"unsupported PackStream marker 0x{m:02x}")


class MiniBolt:
    """Just enough Bolt (4.4 / 5.x) to log in and run one read query."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.sendall(
            b"\x60\x60\xb0\x17" + bytes([0, 4, 4, 5]) + bytes([0, 0, 4, 4]) + bytes(8)
        )
        reply = self._recv_exact(4)
        self.version = (reply[3], reply[2])
        if self.version == (0, 0):
            raise BoltError("server accepted no Bolt version we offered (5.0-5.4, 4.4)")

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise BoltError("connection closed by server")
            buf += chunk
        return buf

    def _send(self, tag: int, *fields) -> None:
        body = bytes([0xB0 | len(fields), tag]) + b"".join(_pack(f) for f in fields)
        out = b""
        for i in range(0, len(body), 65535):
            part = body[i : i + 65535]
            out += struct.pack(">H", len(part)) + part
        self.sock.sendall(out + b"\x00\x00")

    def _read(self):
        body = b""
        while True:
            (n,) = struct.unpack(">H", self._recv_exact(2))
            if n == 0:
                if body:
                    break
                continue  # NOOP keep-alive
            body += self._recv_exact(n)
        _kind, tag, fields = _Unpacker(body).value()
        return tag, fields

    def _expect_success(self) -> dict:
        tag, fields = self._read()
        if tag == 0x70:
            return fields[0]
        if tag == 0x7F:
            meta = fields[0]
            raise BoltError(meta.get("message", str(meta)), meta.get("code", ""))
        raise BoltError(f"unexpected Bolt message 0x{tag:02x}")

    def login(self, user: str, password: str) -> None:
        auth = {"scheme": "basic", "principal": user, "credentials": password}
        extra: dict[str, object] = {"user_agent": "coagent-neo4j-server/1"}
        if self.version >= (5, 1):
            extra["bolt_agent"] = {"product": "coagent-neo4j-server/1"}
            self._send(0x01, extra)
            self._expect_success()
            self._send(0x6A, auth)
            self._expect_success()
        else:
            self._send(0x01, {**extra, **auth})
            self._expect_success()

    def query(self, cypher: str, database: str) -> list[list]:
        self._send(0x10, cypher, {}, {"db": database, "mode": "r"})
        self._send(0x3F, {"n": -1})
        self._expect_success()
        rows = []
        while True:
            tag, fields = self._read()
            if tag == 0x71:
                rows.append(fields[0])
            elif tag == 0x70:
                return rows
            elif tag == 0x7F:
                meta = fields[0]
                raise BoltError(meta.get("message", str(meta)), meta.get("code", ""))
            else:
                raise BoltError(f"unexpected Bolt message 0x{tag:02x}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(0x02)
        self.sock.close()


def run_query(port: int, password: str, cypher: str) -> list[list]:
    """Rows of `cypher` as lists; the neo4j driver if importable, else MiniBolt."""
    try:
        import neo4j  # noqa: F401
    except ImportError:
        client = MiniBolt("127.0.0.1", port)
        try:
            client.login(USER, password)
            return client.query(cypher, DATABASE)
        finally:
            client.close()
    from neo4j import GraphDatabase
    from neo4j.exceptions import Neo4jError

    with GraphDatabase.driver(
        f"bolt://127.0.0.1:{port}",
        auth=(USER, password),
        connection_timeout=10,
        max_connection_pool_size=1,
    ) as driver:
        try:
            with driver.session(database=DATABASE) as session:
                return [list(r.values()) for r in session.run(cypher)]
        except Neo4jError as exc:
            raise BoltError(exc.message or str(exc), exc.code or "") from exc


TRANSIENT = (
    "ServiceUnavailable",
    "DatabaseUnavailable",
    "Unavailable",
    "connection closed",
    "Connection refused",
    "SessionExpired",
    "timed out",
)


def wait_ready(
    proc_pid: int,
    alive: Callable[[], bool],
    paths: Paths,
    port: int,
    password: str,
    deadline: float,
) -> None:
    """Until the deadline: Bolt port open, then a query answered."""
    last = "Bolt port not open yet"
    while time.monotonic() < deadline:
        if not alive():
            raise Fail(
                f"the Neo4j process (pid {proc_pid}) exited during startup:\n"
                f"{startup_report(paths)}"
            )
        if port_open(port):
            try:
                run_query(port, password, "RETURN 1")
                return
            except Exception as exc:  # retried until the deadline
                last = f"{type(exc).__name__}: {exc}"
                if "Unauthorized" in getattr(
                    exc, "code", ""
                ) or "AuthenticationRateLimit" in getattr(exc, "code", ""):
                    raise Fail(
                        f"Bolt is up on 127.0.0.1:{port} but login as {USER!r} failed: {exc}. "
                        "The store keeps the password it was first started with; use that "
                        f"NEO4J_PASSWORD, or `start --fresh` to wipe {paths.data}."
                    ) from exc
                transient = (
                    isinstance(exc, OSError)
                    or ".TransientError." in getattr(exc, "code", "")
                    or any(t.lower() in last.lower() for t in TRANSIENT)
                )
                if not transient:
                    raise Fail(
                        f"Bolt is up on 127.0.0.1:{port} but `RETURN 1` failed: {last}"
                    ) from exc
        time.sleep(0.5)
    raise Fail(
        f"Neo4j did not answer on bolt://127.0.0.1:{port} within the timeout "
        f"(last: {last}):\n{startup_report(paths)}"
    )


def check_plugins(paths: Paths, port: int, password: str) -> tuple[str, str, str]:
    try:
        rows = run_query(port, password, CHECK_QUERY)
    except Exception as exc:
        raise Fail(
            f"`{CHECK_QUERY}` failed: {exc}\nThe GDS/APOC plugins did not load. "
            f"Plugin jars: {jar_dir() / 'plugins'}. Log lines:\n{startup_report(paths)}"
        ) from exc
    gds, apoc = rows[0]
    neo = "?"
    with contextlib.suppress(Exception):
        comp = run_query(
            port,
            password,
            "CALL dbms.components() YIELD versions, edition RETURN versions[0] + ' ' + edition",
        )
        neo = comp[0][0]
    return neo, str(gds), str(apoc)


# --------------------------------------------------------------------------- #
# Commands
# --------------------------------------------------------------------------- #


def current_env(paths: Paths) -> dict[str, str] | None:
    if running_pid(paths) is None:
        return None
    env = read_env_file(paths)
    return env if "NEO4J_URI" in env else None


def uri_port(uri: str) -> int:
    return int(uri.rsplit(":", 1)[1])


def cmd_start(args: argparse.Namespace) -> int:
    paths = Paths(home_dir(args))
    password = os.environ.get("NEO4J_PASSWORD") or DEFAULT_PASSWORD
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    with locked(paths):
        pid = running_pid(paths)
        if pid is not None:
            env = read_env_file(paths)
            if "NEO4J_URI" not in env:
                raise Fail(
                    f"a Neo4j (pid {pid}) runs from {paths.home} but {paths.env_file} is missing; "
                    "run `stop` first"
                )
            port = uri_port(env["NEO4J_URI"])
            wait_ready(
                pid,
                lambda: is_our_server(pid, paths),
                paths,
                port,
                env.get("NEO4J_PASSWORD", password),
                deadline,
            )
            log(f"already running (pid {pid}, home {paths.home})")
            sys.stdout.write(env_lines(env, args.export))
            return 0

        jars = resolve_jars()
        java, java_text = find_java()
        if args.fresh and paths.data.exists():
            log(f"--fresh: wiping {paths.data}")
            shutil.rmtree(paths.data)
            paths.password_file.unlink(missing_ok=True)
        paths.make()

        store_exists = (paths.data / "databases" / "system").exists()
        if store_exists:
            stored = (
                paths.password_file.read_text().strip() if paths.password_file.exists() else None
            )
            if stored is not None and stored != password:
                raise Fail(
                    f"the store in {paths.data} was created with another NEO4J_PASSWORD; "
                    "use that one, or `start --fresh` to wipe the data"
                )
        previous = read_env_file(paths)

        if args.port:
            port = args.port
            if not port_free(port):
                raise Fail(f"port {port} on 127.0.0.1 is in use")
        elif "NEO4J_URI" in previous and port_free(uri_port(previous["NEO4J_URI"])):
            port = uri_port(previous["NEO4J_URI"])
        else:
            port = free_port()

        write_conf(paths, jars, port, args.heap, args.heap_initial, args.pagecache)
        out_env = {
            "NEO4J_URI": f"bolt://127.0.0.1:{port}",
            "NEO4J_USER": USER,
            "NEO4J_PASSWORD": password,
            "NEO4J_DATABASE": DATABASE,
        }
        paths.env_file.write_text(
            "# Written by deploy/neo4j/neo4j_server.py start\n" + env_lines(out_env, False)
        )
        paths.env_file.chmod(0o600)
        if not store_exists:
            set_initial_password(paths, jars, java, password)

        cmd = [
            java,
            f"-Xms{args.heap_initial}",
            f"-Xmx{args.heap}",
            *JVM_FLAGS,
            *cds_flags(paths, cds_archive(jars, java, java_text)),
            *shlex.split(os.environ.get("COAGENT_NEO4J_JAVA_OPTS", "")),
            f"-Dcoagent.neo4j.home={paths.home}",
            "-cp",
            classpath(jars),
            MAIN_CLASS,
            f"--home-dir={paths.home}",
            f"--config-dir={paths.conf_dir}",
        ]
        env = dict(os.environ, NEO4J_HOME=str(paths.home), NEO4J_CONF=str(paths.conf_dir))
        paths.mark_logs()
        with open(paths.console, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=paths.home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        paths.pid.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + args.timeout  # the JVM's own time; not mvn's
        log(
            f"starting Neo4j (pid {proc.pid}, bolt 127.0.0.1:{port}, home {paths.home}, "
            f"logs {paths.logs})"
        )
        try:
            # Our own child: poll() (not /proc/PID/cmdline, which reads empty for
            # a moment around exec) tells whether it is still alive.
            wait_ready(proc.pid, lambda: proc.poll() is None, paths, port, password, deadline)
            neo, gds, apoc = check_plugins(paths, port, password)
        except BaseException:
            if proc.poll() is None:
                log(f"stopping the server that failed to come up (logs stay in {paths.logs})")
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            cds_finish(paths, clean_exit=False)
            paths.pid.unlink(missing_ok=True)
            raise

        log(
            f"Neo4j {neo} up in {time.monotonic() - t0:.1f}s: gds.version()={gds}, apoc.version()={apoc}"
        )
        sys.stdout.write(env_lines(out_env, args.export))
        return 0


def _terminate(pid: int, paths: Paths, grace: float) -> bool:
    """SIGTERM, wait up to `grace` s, then SIGKILL. True if it stopped in time."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not is_our_server(pid, paths):
            return True
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not is_our_server(pid, paths):
            break
        time.sleep(0.2)
    return False


def cmd_stop(args: argparse.Namespace) -> int:
    paths = Paths(home_dir(args))
    with locked(paths):
        pid = running_pid(paths)
        if pid is None:
            paths.pid.unlink(missing_ok=True)
            log(f"not running (home {paths.home})")
            return 0
        t0 = time.monotonic()
        if paths.cds_pending.exists():
            log("writing the class-data archive on this first stop (takes a little longer)")
        clean = _terminate(pid, paths, grace=args.timeout)
        paths.pid.unlink(missing_ok=True)
        cds_finish(paths, clean_exit=clean)
        if is_our_server(pid, paths):
            raise Fail(f"pid {pid} did not exit even after SIGKILL")
        if clean:
            log(f"stopped (pid {pid}) in {time.monotonic() - t0:.1f}s")
        else:
            log(f"pid {pid} ignored SIGTERM for {args.timeout:.0f}s and was killed (SIGKILL)")
        return 0


def cmd_status(args: argparse.Namespace, quiet: bool = False) -> int:
    paths = Paths(home_dir(args))
    pid = running_pid(paths)
    env = current_env(paths)
    if pid is None or env is None:
        log(f"not running (home {paths.home})")
        return 3
    port = uri_port(env["NEO4J_URI"])
    if not port_open(port):
        log(f"pid {pid} is alive but {env['NEO4J_URI']} is not accepting connections (starting?)")
        return 4
    if not quiet:
        log(f"running (pid {pid}, home {paths.home}, logs {paths.logs})")
    sys.stdout.write(env_lines(env, args.export))
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    jars = resolve_jars()
    print(jars)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--home",
        help="run directory (conf, data, logs); default $COAGENT_NEO4J_HOME "
        "or ~/.cache/coagent/neo4j/run",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("start", help="start (or report) the server and print NEO4J_* lines")
    p.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("COAGENT_NEO4J_TIMEOUT", 120)),
        help="seconds to wait for Bolt (default 120)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("COAGENT_NEO4J_BOLT_PORT", 0)),
        help="Bolt port (default: the last one if free, else a free one)",
    )
    p.add_argument("--heap", default=os.environ.get("COAGENT_NEO4J_HEAP", "1g"))
    p.add_argument("--heap-initial", default=os.environ.get("COAGENT_NEO4J_HEAP_INITIAL", "512m"))
    p.add_argument("--pagecache", default=os.environ.get("COAGENT_NEO4J_PAGECACHE", "256m"))
    p.add_argument("--fresh", action="store_true", help="wipe the data directory first")
    p.add_argument("--export", action="store_true", help="print `export NEO4J_...=` lines")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("stop", help="stop the server of this home")
    p.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before SIGKILL (default 120)"
    )
    p.set_defaults(func=cmd_stop)

    for name, quiet in (("status", False), ("env", True)):
        p = sub.add_parser(name, help="exit 0 and print NEO4J_* lines if running, else exit 3")
        p.add_argument("--export", action="store_true")
        p.set_defaults(func=lambda a, q=quiet: cmd_status(a, quiet=q))

    p = sub.add_parser("resolve", help="only fetch the jars into the cache; print its path")
    p.set_defaults(func=cmd_resolve)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Fail as exc:
        print(f"neo4j: ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
