"""Fleet rollouts (issue 16): speed-up of concurrent child deploys, and history per rollout.

On one throwaway PostgreSQL server (fsync on) with BENCH_ROLLOUT_DBS tenant databases (default 200),
the embedded Temporal dev server and the worker as a separate process (the fleet discovered by a
query on the server, like production settings), the same rollout (one wave, no gates) runs:

  (1) one database at a time (concurrency 1), then (8) BENCH_ROLLOUT_CONCURRENCY at a time (default 8),

each on freshly reset databases. Every tenant receives two migrations; the second holds a
`pg_sleep(BENCH_ROLLOUT_SLEEP)` (default 1 s) inside its transaction: database time that costs the
orchestrator nothing, as a migration's lock waits and I/O on a real server do. BENCH_ROLLOUT_SLEEP=0
measures pure orchestration cost instead (then the 2 shared cores of this machine are the limit).

Reported: wall time of each, speed-up (1) / (8) against the ideal (the concurrency); the mean
duration of one database's run and how many were open on average (their summed durations over the
wall time: the rollout keeps its slots busy, or it does not); the machine's load average (the
machine is shared); and for each rollout its runs (continue-as-new), the largest run's events and
bytes, and events in all: the largest run is what Temporal limits, and it must not grow with the fleet.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg

from bench.report import print_table
from devstack.pgcluster import PgCluster
from devstack.services import TemporalDevServer, WorkerProcess
from domain.models import BundledMigration, MigrationBundle, Operation
from domain.prisma.checksum import sha256_hex
from domain.rollout_models import RolloutRequest, RolloutStatus
from workflows.rollout_history import final_rollout_status, run_chain
from workflows.rollout_start import ROLLOUT_WORKFLOW_NAME, rollout_start_options

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DBS = int(os.environ.get("BENCH_ROLLOUT_DBS", "200"))
CONCURRENCY = int(os.environ.get("BENCH_ROLLOUT_CONCURRENCY", "8"))
SLEEP = float(os.environ.get("BENCH_ROLLOUT_SLEEP", "1.0"))
SMALL = int(os.environ.get("BENCH_ROLLOUT_SMALL", "20"))  # a small fleet, to compare history per run


def bundle(sleep: float) -> MigrationBundle:
    def m(name: str, sql: str) -> BundledMigration:
        return BundledMigration(name=name, sql=sql, checksum=sha256_hex(sql.encode()))

    return MigrationBundle(revision="bench", source="bench/bench_rollout.py", migrations=[
        m("20250101000000_accounts", 'CREATE TABLE "accounts" ("id" SERIAL PRIMARY KEY, "email" TEXT NOT NULL);\n'
          'CREATE UNIQUE INDEX "accounts_email_key" ON "accounts" ("email");\n'),
        m("20250102000000_plans", 'CREATE TABLE "plans" ("id" SERIAL PRIMARY KEY, "account_id" INT NOT NULL '
          'REFERENCES "accounts" ("id"), "name" TEXT NOT NULL DEFAULT \'free\');\n'
          'INSERT INTO "plans" ("account_id", "name") SELECT "id", \'free\' FROM "accounts";\n'
          + (f"SELECT pg_sleep({sleep});\n" if sleep else "")),
    ])


async def create_fleet(pg: PgCluster, prefix: str, n: int) -> list[str]:
    conn = await asyncpg.connect(pg.url("postgres"))
    names = [f"{prefix}_{i:04d}" for i in range(n)]
    try:
        for name in names:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await conn.close()
    return names


async def reset(pg: PgCluster, names: list[str]) -> None:
    async def one(name: str) -> None:
        conn = await asyncpg.connect(pg.url(name))
        try:
            await conn.execute('DROP TABLE IF EXISTS "plans", "accounts", "_prisma_migrations" CASCADE')
        finally:
            await conn.close()

    for start in range(0, len(names), 20):
        await asyncio.gather(*(one(n) for n in names[start:start + 20]))


async def rollout(client, fleet: str, concurrency: int, sleep: float, task_queue: str) -> dict:
    req = RolloutRequest(name=f"bench-{fleet}-c{concurrency}-{uuid.uuid4().hex[:6]}", stages=[fleet],
                         requested_by="bench", bundle=bundle(sleep), operation=Operation.migrate, waves=["100%"],
                         concurrency=concurrency)
    start = time.perf_counter()
    handle = await client.start_workflow(ROLLOUT_WORKFLOW_NAME, req, result_type=RolloutStatus,
                                         **rollout_start_options(req, task_queue=task_queue))
    status = await final_rollout_status(handle)
    elapsed = time.perf_counter() - start
    if status is None or status.outcome != "succeeded":
        raise RuntimeError(f"rollout ended {status and status.outcome}: {status and status.error}")
    load = os.getloadavg()[0]
    chain = await run_chain(client, handle.id)
    events = [len(h.events) for _, h in chain]
    sizes = [len(h.to_json().encode()) for _, h in chain]
    # How long each database's own run took, first event to last: their sum over the wall time is
    # how many runs were open on average (the rollout's occupancy of its concurrency).
    spans = []
    for r in status.results():
        h = await client.get_workflow_handle(f"prisma-deploy-{r.target}", run_id=r.run_id).fetch_history()
        spans.append((h.events[-1].event_time.ToDatetime() - h.events[0].event_time.ToDatetime()).total_seconds())
    return {"databases": len(status.results()), "concurrency": concurrency, "seconds": round(elapsed, 1),
            "run_s_mean": round(sum(spans) / len(spans), 2), "in_flight_mean": round(sum(spans) / elapsed, 2),
            "runs": len(chain), "max_events_per_run": max(events), "events_total": sum(events),
            "max_run_bytes": max(sizes), "load_avg_1m": round(load, 1)}


async def main() -> dict:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    RESULTS.mkdir(parents=True, exist_ok=True)
    pg = PgCluster(durable=True).start()
    temporal = TemporalDevServer().start()
    worker = None
    rows = []
    try:
        big = await create_fleet(pg, "tenant", DBS)
        await create_fleet(pg, "small", SMALL)
        query = "SELECT datname FROM pg_database WHERE datname LIKE '{}\\_%' ORDER BY datname"
        fleets = {name: {"discover": {"server_url": pg.url("postgres"), "query": query.format(name)},
                         "rules": {"gates": []}} for name in ("tenant", "small")}
        task_queue = "bench-rollout"
        worker = WorkerProcess({"MIGRATOR_TEMPORAL_ADDRESS": temporal.address, "MIGRATOR_TASK_QUEUE": task_queue,
                                "MIGRATOR_ENVIRONMENTS": "{}", "MIGRATOR_FLEETS": json.dumps(fleets),
                                "MIGRATOR_LOG_LEVEL": "WARNING"}).start()
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        for concurrency in (1, CONCURRENCY):
            await reset(pg, big)
            rows.append({"fleet": "tenant", "sleep_s": SLEEP, **await rollout(client, "tenant", concurrency, SLEEP,
                                                                              task_queue)})
            print(json.dumps(rows[-1]), flush=True)
        rows.append({"fleet": "small", "sleep_s": SLEEP, **await rollout(client, "small", CONCURRENCY, SLEEP,
                                                                         task_queue)})
        print(json.dumps(rows[-1]), flush=True)
    finally:
        if worker is not None:
            worker.stop()
        temporal.stop()
        pg.destroy()
    one, many = rows[0], rows[1]
    speedup = one["seconds"] / many["seconds"]
    summary = {"speedup": round(speedup, 2), "ideal": CONCURRENCY, "fraction_of_ideal": round(speedup / CONCURRENCY, 3),
               "per_database_s_one_at_a_time": round(one["seconds"] / one["databases"], 3)}
    return {"benchmark": "rollout", "machine": machine(), "rows": rows, "summary": summary}


def machine() -> dict:
    import platform

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def render(result: dict) -> None:
    print_table("Fleet rollouts (one wave, no gates)", ["fleet", "databases", "concurrency", "sleep_s", "seconds",
                                                        "run_s_mean", "in_flight_mean", "runs", "max_events_per_run",
                                                        "events_total", "max_run_bytes", "load_avg_1m"], result["rows"])
    s = result["summary"]
    print(f"speed-up {s['speedup']}x of an ideal {s['ideal']}x = {s['fraction_of_ideal']:.0%} "
          f"(one database at a time: {s['per_database_s_one_at_a_time']} s each)")


if __name__ == "__main__":
    res = asyncio.run(main())
    name = "rollout.json" if SLEEP else "rollout-no-sleep.json"
    (RESULTS / name).write_text(json.dumps(res, indent=2))
    render(res)
    sys.exit(0 if res["summary"]["fraction_of_ideal"] >= 0.8 or not SLEEP else 1)
