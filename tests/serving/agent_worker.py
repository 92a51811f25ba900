"""The agent worker (``serving.agents.worker``) run in a background thread for tests: the same
code ``coagent worker`` runs, on the tests' PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import threading

from knowledge.settings import Settings
from serving.agents.worker import serve_worker


class WorkerThread:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="agent-worker")

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await serve_worker(self.settings, self._stop)

        try:
            asyncio.run(main())
        except BaseException as error:  # surfaced by stop()
            self.error = error
            self._ready.set()

    def start(self) -> WorkerThread:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the agent worker did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        if self.error is not None:
            raise self.error
