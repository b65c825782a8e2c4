"""Blind lock-retry schedules, reproduced for comparison in bench/app_impact.py.

"Blind": each attempt sets `lock_timeout`, runs the migration's transaction and, on a lock
timeout, sleeps and tries again; none looks at who holds the lock, so each attempt joins the
queue behind the blocker and stalls the application for its whole timeout.

- today:  the product before issue 13: session lock_timeout 10 s, the deploy activity's Temporal
          retry policy (DEPLOY_RETRY: 2 s initial interval, x2, 5 attempts).
- gitlab: GitLab's `Gitlab::Database::WithLockRetries::DEFAULT_TIMING_CONFIGURATION`, first 20
          entries ([lock_timeout, sleep] pairs: 100 ms/50 ms ... 3 s/3 min); enough for a 5 min budget.
- pgroll: pgroll's `--lock-timeout` default 500 ms, retried on 55P03 with cloudflare/backoff
          (interval 1 s, max 1 min, full jitter: sleep uniform in [0, min(60, 2^n) s)).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import asyncpg

_GITLAB = [(0.1, 0.05), (0.1, 0.05), (0.2, 0.05), (0.3, 0.10), (0.4, 0.15), (0.5, 2), (0.5, 2), (0.5, 2), (0.5, 2),
           (1, 5), (1, 60), (0.1, 0.05), (0.1, 0.05), (0.2, 0.05), (0.3, 0.10), (0.4, 0.15), (0.5, 2), (0.5, 2),
           (0.5, 2), (3, 180)]


def today_schedule(rng: random.Random) -> Iterator[tuple[float, float]]:
    interval = 2.0
    for _ in range(5):
        yield 10.0, interval
        interval *= 2


def gitlab_schedule(rng: random.Random) -> Iterator[tuple[float, float]]:
    yield from _GITLAB


def pgroll_schedule(rng: random.Random) -> Iterator[tuple[float, float]]:
    n = 0
    while True:
        yield 0.5, rng.uniform(0, min(60.0, 1.0 * 2 ** n))
        n += 1


SCHEDULES: dict[str, Callable[[random.Random], Iterator[tuple[float, float]]]] = {
    "today": today_schedule, "gitlab": gitlab_schedule, "pgroll": pgroll_schedule}


@dataclass
class BlindOutcome:
    applied: bool
    attempts: int
    error: str | None = None


async def run_blind(conn: asyncpg.Connection, schedule: Iterator[tuple[float, float]], budget_s: float,
                    body: Callable[[asyncpg.Connection], Awaitable[object]]) -> BlindOutcome:
    """Attempt `body(conn)` in a transaction along the schedule until it succeeds, the schedule
    ends, or the budget is spent (the last attempt's timeout is cut to what is left)."""
    deadline = time.monotonic() + budget_s
    attempts = 0
    for timeout_s, sleep_s in schedule:
        left = deadline - time.monotonic()
        if left <= 0.001:
            break
        attempts += 1
        await conn.execute(f"SET lock_timeout = {max(1, int(min(timeout_s, left) * 1000))}")
        try:
            async with conn.transaction():
                await body(conn)
            return BlindOutcome(True, attempts)
        except asyncpg.LockNotAvailableError:
            await asyncio.sleep(max(0.0, min(sleep_s, deadline - time.monotonic())))
    return BlindOutcome(False, attempts, "lock not obtained within the schedule or budget")
