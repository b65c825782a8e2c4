"""Orchestration overhead, history size and worker memory (issue 8, items 1, 3 and 4).

For N generated migrations, on one throwaway PostgreSQL and the embedded Temporal dev server:
  (a) floor: the same SQL and Prisma-identical ledger rows applied with one asyncpg connection
  (b) the full workflow (preflight, deploy, verify) with both gates approved as soon as they wait
  (c) the real `prisma migrate deploy` when ../shared/tools/prisma-oracle is installed
Each measured on a fresh database, median of RUNS runs; b/a and b/c from the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from activities.ledger import MigrationLedger, utcnow
from bench.generate import write_folder
from bench.report import print_table
from devstack.pgcluster import PgCluster
from devstack.services import TemporalDevServer, WorkerProcess
from domain.bundle import build_bundle
from domain.models import (
    ApprovalPayload,
    DeployRequest,
    Operation,
    RunStatus,
    workflow_id_for,
)
from domain.prisma.folder import read_migrations_dir
from workflows.messages import APPROVE_UPDATE, query_status

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "10,100,500").split(",")]
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


async def create_db(pg: PgCluster, name: str) -> str:
    conn = await asyncpg.connect(pg.url("postgres"))
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    await conn.close()
    return pg.url(name)


async def floor(dsn: str, folder: Path) -> float:
    migrations = read_migrations_dir(folder)
    start = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    ledger = MigrationLedger(conn)
    await conn.execute("SELECT pg_advisory_lock(72707369)")
    await ledger.ensure_table()
    for m in migrations:
        async with conn.transaction():
            started = utcnow()
            await conn.execute(m.sql)
            await ledger.insert_applied(m.name, m.checksum, started, utcnow())
    await conn.close()
    return time.perf_counter() - start


def prisma_deploy(dsn: str, folder: Path) -> float | None:
    script = REPO.parent / "shared" / "tools" / "prisma-oracle" / "prisma.sh"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prisma-oracle" / "node_modules" / "prisma"
    if not script.exists() or not cache.exists():
        return None
    start = time.perf_counter()
    proc = subprocess.run(
        [str(script), "deploy"], env={**os.environ, "DATABASE_URL": dsn, "MIGRATIONS_DIR": str(folder)},
        capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"prisma deploy failed: {proc.stderr[-500:]}")
    return elapsed


async def workflow_run(client, env_name: str, folder: Path, task_queue: str) -> tuple[float, dict]:
    bundle = build_bundle(read_migrations_dir(folder), revision="bench", source=str(folder))
    request = DeployRequest(environment=env_name, operation=Operation.migrate, requested_by="bench", bundle=bundle)
    start = time.perf_counter()
    handle = await client.start_workflow(
        "DeployWorkflow", request, id=workflow_id_for(env_name), task_queue=task_queue, result_type=RunStatus
    )
    approved: set[str] = set()
    result_task = asyncio.create_task(handle.result())
    while not result_task.done():
        try:
            status = await query_status(handle)
        except Exception:  # noqa: BLE001 - the first query can race the first workflow task
            status = None
        if status and status.awaiting and status.awaiting not in approved:
            approved.add(status.awaiting)
            await handle.execute_update(
                APPROVE_UPDATE,
                ApprovalPayload(stage=status.awaiting, approver="bench-approver", fingerprint=None),
            )
        await asyncio.wait([result_task], timeout=0.02)
    status = result_task.result()
    elapsed = time.perf_counter() - start
    if status.outcome != "succeeded":
        raise RuntimeError(f"workflow run ended {status.outcome}: {status.error}")
    history = await handle.fetch_history()
    size = len(history.to_json().encode())
    # Temporal refuses any single payload over 2 MB: the biggest event is what to watch.
    largest = max(e.ByteSize() for e in history.events)
    return elapsed, {"events": len(history.events), "history_bytes": size, "largest_event_bytes": largest}


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def main() -> dict:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    RESULTS.mkdir(parents=True, exist_ok=True)
    pg = PgCluster(durable=True).start()
    temporal = TemporalDevServer().start()
    rows = []
    try:
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        for n in SIZES:
            folder = write_folder(Path(tempfile.mkdtemp(prefix=f"bench-{n}-")) / "migrations", n)
            a, b, c, hist, rss = [], [], [], {}, float("nan")
            env_dbs = {f"bench{r}": f"wf_{n}_{r}" for r in range(RUNS)}
            # Typed approver names (unproven) suffice to measure orchestration overhead.
            envs = {env: {"database_url": pg.url(db), "gates": ["deploy"], "approval_proofs": ["ssh", "typed"]}
                    for env, db in env_dbs.items()}
            task_queue = f"bench-{n}"
            worker = WorkerProcess(
                {
                    "MIGRATOR_TEMPORAL_ADDRESS": temporal.address,
                    "MIGRATOR_TASK_QUEUE": task_queue,
                    "MIGRATOR_ENVIRONMENTS": json.dumps(envs),
                    "MIGRATOR_LOG_LEVEL": "WARNING",
                }
            ).start()
            try:
                for r in range(RUNS):
                    a.append(await floor(await create_db(pg, f"floor_{n}_{r}"), folder))
                    await create_db(pg, env_dbs[f"bench{r}"])
                    elapsed, hist = await workflow_run(client, f"bench{r}", folder, task_queue)
                    b.append(elapsed)
                    pc = prisma_deploy(await create_db(pg, f"prisma_{n}_{r}"), folder)
                    if pc is not None:
                        c.append(pc)
                rss = peak_rss_mb(worker.proc.pid)
            finally:
                worker.stop()
            ma, mb = statistics.median(a), statistics.median(b)
            mc = statistics.median(c) if c else None
            rows.append(
                {
                    "n": n,
                    "floor_s": round(ma, 3),
                    "workflow_s": round(mb, 3),
                    "prisma_s": round(mc, 3) if mc else None,
                    "workflow_over_floor": round(mb / ma, 2),
                    "workflow_over_prisma": round(mb / mc, 2) if mc else None,
                    "history_events": hist.get("events"),
                    "history_bytes": hist.get("history_bytes"),
                    "largest_event_bytes": hist.get("largest_event_bytes"),
                    "worker_peak_rss_mb": round(rss, 1),
                    "runs": RUNS,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        temporal.stop()
        pg.destroy()
    return {"benchmark": "overhead", "machine": machine(), "rows": rows}


def machine() -> dict:
    import platform

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def render(result: dict) -> None:
    print_table("Orchestration overhead (median of runs)", ["n", "floor_s", "workflow_s", "prisma_s", "workflow_over_floor", "workflow_over_prisma",
            "history_events", "history_bytes", "largest_event_bytes", "worker_peak_rss_mb"], result["rows"])


if __name__ == "__main__":
    res = asyncio.run(main())
    (RESULTS / "overhead.json").write_text(json.dumps(res, indent=2))
    render(res)
    sys.exit(0)
