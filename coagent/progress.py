"""Plain progress lines for long CLI steps (no terminal tricks: works in logs and CI)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def say(message: str) -> None:
    print(message, flush=True)


@contextmanager
def step(label: str) -> Iterator[None]:
    print(f"• {label} …", end="", flush=True)
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        print(" failed", flush=True)
        raise
    print(f" done ({time.perf_counter() - started:.1f} s)", flush=True)


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)
