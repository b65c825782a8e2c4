"""Background heartbeats for long activities (the PostHog `Heartbeater` pattern)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from temporalio import activity


# Details change while a migration waits for a lock (who holds it); beat at least this often.
MAX_INTERVAL_S = 2.0


class Heartbeater:
    """Heartbeats `details()` from a background task, so a stuck attempt (long SQL, dead worker)
    is noticed by the heartbeat timeout and its asyncio task cancelled (asyncpg then cancels the query)."""

    def __init__(self, details: Callable[[], dict]) -> None:
        self.details = details
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Heartbeater:
        timeout = activity.info().heartbeat_timeout
        interval = min(MAX_INTERVAL_S, max(0.2, timeout.total_seconds() / 3)) if timeout else MAX_INTERVAL_S
        activity.heartbeat(self.details())

        async def beat() -> None:
            while True:
                await asyncio.sleep(interval)
                activity.heartbeat(self.details())

        self.task = asyncio.create_task(beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
