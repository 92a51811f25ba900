"""`coagent demo` end to end, as a newcomer runs it: a fresh data dir, twice."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def demo_dir():  # type: ignore[no-untyped-def]
    path = Path(tempfile.mkdtemp(prefix="cgd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run_demo(data_dir: Path) -> str:
    env = {**os.environ, "COAGENT_DATA_DIR": str(data_dir)}
    env.pop("DAGSTER_HOME", None)
    # Output to files, not pipes: the `tail -F` processes of Dagster's compute-log capture can
    # outlive the demo by a moment holding its stdout, and their watcher waits for the demo's
    # pid to vanish, which a zombie never does until it is waited for: reading pipes to EOF
    # deadlocked (seen once, on a slow day).
    out, err = data_dir.parent / f"{data_dir.name}.out", data_dir.parent / f"{data_dir.name}.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        result = subprocess.run(
            [sys.executable, "-m", "coagent.cli", "demo"],
            env=env,
            stdout=stdout,
            stderr=stderr,
            timeout=600,
        )
    output, errors = out.read_text(), err.read_text()
    out.unlink()
    err.unlink()
    assert result.returncode == 0, output + errors
    return output


def test_demo_builds_the_sample_room_and_a_second_run_extracts_nothing(demo_dir: Path) -> None:
    first = _run_demo(demo_dir)
    assert re.search(r"497 messages from 39 speakers \(497 loaded now\)", first)
    assert re.search(r"Dagster run [0-9a-f-]{36} succeeded", first)
    extracted = re.search(r"entities\s+(\d+) \((\d+) chunks extracted this run\)", first)
    assert extracted and int(extracted.group(1)) > 20 and int(extracted.group(2)) > 10
    assert "Top communities" in first
    # one global and one local answer, each citing message ids
    assert "route: global" in first and "route: local" in first
    assert len(re.findall(r"\[message \d+\]", first)) >= 4

    second = _run_demo(demo_dir)
    assert "(0 loaded now)" in second
    assert re.search(r"entities\s+\d+ \(0 chunks extracted this run\)", second)
    assert "(0 regenerated)" in second

    # both runs are recorded in the instance the Dagster UI reads (its PostgreSQL stopped
    # with the demo: attach to the same data dir again)
    from dagster import DagsterInstance

    from knowledge.embedded import embedded_postgres_url

    embedded_postgres_url(demo_dir)
    instance = DagsterInstance.from_config(str(demo_dir / "dagster"))
    try:
        assert len(instance.get_runs()) == 2
    finally:
        instance.dispose()
