"""Open-loop application load for bench/app_impact.py, in a process of its own.

Transactions *arrive* at a fixed rate whether or not earlier ones have finished, as requests
arrive at a web application: when the table is locked they pile up behind it, and each one's
latency is counted from its scheduled arrival to its commit (so time spent waiting for a pool
connection counts, as it does for a user). Each transaction reads one order and updates
another (ACCESS SHARE and ROW EXCLUSIVE on `orders`), so both an ACCESS EXCLUSIVE migration and
a SHARE one (CREATE INDEX) stall it.

A separate process keeps the measurement independent of the deploy under test (which runs in
the benchmark's own event loop, or as the Prisma CLI).

    python -m bench.app_load URL RATE POOL MAX_ID
prints "ready" once its pool is open, runs until it reads a line on stdin (or MAX_RUN_S), and
prints one JSON object: {"records": [[arrival_epoch_s, latency_s, error_or_null], ...]}.
Row 1 is never touched, so a benchmark's batch job can hold it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time

import asyncpg

MAX_RUN_S = 900
DRAIN_S = 120


async def run(url: str, rate: float, pool_size: int, max_id: int) -> dict:
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size,
                                     server_settings={"application_name": "app"})
    loop = asyncio.get_running_loop()
    records: list[list] = []
    rng = random.Random(7)
    stop = asyncio.Event()

    async def one(arrival_wall: float, arrival: float, read_id: int, write_id: int) -> None:
        error = None
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.fetchval("SELECT total FROM orders WHERE id = $1", read_id)
                await conn.execute("UPDATE orders SET total = total + 1 WHERE id = $1", write_id)
        except asyncpg.PostgresError as exc:
            error = f"{exc.sqlstate}: {str(exc).splitlines()[0]}"
        except (OSError, asyncpg.InterfaceError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        records.append([arrival_wall, loop.time() - arrival, error])

    async def wait_for_stop() -> None:
        await loop.run_in_executor(None, sys.stdin.readline)
        stop.set()

    print("ready", flush=True)
    stopper = asyncio.create_task(wait_for_stop())
    start, start_wall = loop.time(), time.time()
    tasks: set[asyncio.Task] = set()
    i = 0
    while not stop.is_set() and loop.time() - start < MAX_RUN_S:
        arrival = start + i / rate
        delay = arrival - loop.time()
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                break
        task = asyncio.create_task(one(start_wall + i / rate, arrival, rng.randint(2, max_id), rng.randint(2, max_id)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.wait(tasks, timeout=DRAIN_S)
    stopper.cancel()
    await pool.close()
    return {"records": records}


def main() -> None:
    url, rate, pool_size, max_id = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    result = asyncio.run(run(url, rate, pool_size, max_id))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
