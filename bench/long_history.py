"""A 10,000-migration history (issue 14, item 3): `status`, `plan` and a deploy of its last 10
migrations, with the real Prisma CLI's figures beside.

The history is generated from the corpus's real files (bench/corpus_history.py) and PostgreSQL
really runs its first N - 10 migrations once, into a template database; every measurement gets a
fresh copy of it (CREATE DATABASE ... TEMPLATE), so each starts from the same state: N - 10 applied,
10 pending. Everything is timed as a user runs it: `python starter.py ...` processes (start-up
included) against a Temporal dev server and a worker process; `prisma migrate status|deploy` through
../shared/tools/prisma-oracle. Also recorded: how the bundle travelled (parts, their largest size),
the run's history (events, bytes, largest event) and the worker's peak memory.

The shadow replay (activities/shadow.py) is part of every `plan` and deploy. Timed apart: the first
`plan` on the server, which replays the whole folder (cold: no kept replay, nothing cached); the
timed `plan`s and deploys after it, whose replay the worker's cache answers; and a `plan` from a
fresh worker on a database where all 10,000 are deployed, which copies the replay the server kept
(activities/shadow_template.py). Each worker is warmed first by a plan of a small folder, so its
one-off imports are not in these figures.
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
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.ledger import MigrationLedger
from bench.corpus_history import write
from bench.overhead import RESULTS, create_db, machine, peak_rss_mb
from bench.report import print_table
from bench.status_speed import prisma_status
from devstack.pgcluster import PgCluster
from devstack.services import TemporalDevServer, WorkerProcess
from domain.bundle import build_bundle, pack
from domain.models import workflow_id_for
from domain.prisma.folder import read_migrations_dir

REPO = Path(__file__).resolve().parent.parent
N = int(os.environ.get("BENCH_LONG_N", "10000"))
PENDING = 10
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
ORACLE = REPO.parent / "shared" / "tools" / "prisma-oracle" / "prisma.sh"
INCIDENT = REPO / "examples" / "incident" / "prisma" / "migrations"  # a small folder to warm a worker with


async def build_template(pg: PgCluster, folder: Path) -> float:
    """The first N - PENDING migrations run for real, each with the ledger row Prisma's deploy writes."""
    admin = await asyncpg.connect(pg.url("postgres"))
    await admin.execute('DROP DATABASE IF EXISTS "long_template"')
    await admin.execute('CREATE DATABASE "long_template"')
    await admin.close()
    conn = await asyncpg.connect(pg.url("long_template"))
    start = time.perf_counter()
    try:
        ledger = MigrationLedger(conn)
        await ledger.ensure_table()
        for m in read_migrations_dir(folder)[: N - PENDING]:
            started = datetime.now(timezone.utc)
            await conn.execute(m.sql)  # one simple-query script, as Prisma's engine sends it
            await ledger.insert_applied(m.name, m.checksum, started, datetime.now(timezone.utc))
    finally:
        await conn.close()
    return time.perf_counter() - start


async def copy_of_template(pg: PgCluster, name: str) -> str:
    admin = await asyncpg.connect(pg.url("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "long_template"')
    finally:
        await admin.close()
    return pg.url(name)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, cwd=REPO, timeout=1800)
    return time.perf_counter() - start, proc


def prisma(command: str, dsn: str, folder: Path) -> float | None:
    if command == "status":
        return prisma_status(dsn, folder)
    if not ORACLE.exists():
        return None
    elapsed, proc = timed([str(ORACLE), command], {"DATABASE_URL": dsn, "MIGRATIONS_DIR": str(folder)})
    if proc.returncode != 0:
        raise RuntimeError(f"prisma {command} failed: {(proc.stdout + proc.stderr)[-400:]}")
    return elapsed


async def applied_names(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL "
                                "AND rolled_back_at IS NULL ORDER BY started_at, migration_name")
        return [r["migration_name"] for r in rows]
    finally:
        await conn.close()


async def history_facts(address: str, workflow_id: str) -> dict:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    # Serialized event sizes, as Temporal counts them against its history limits (the JSON export
    # would add base64's third).
    return {"history_events": len(history.events), "history_bytes": sum(e.ByteSize() for e in history.events),
            "largest_event_bytes": max(e.ByteSize() for e in history.events)}


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


async def main() -> dict:
    RESULTS.mkdir(parents=True, exist_ok=True)
    folder = write(Path(tempfile.mkdtemp(prefix="long-")) / "migrations", N)
    header, parts = pack(build_bundle(read_migrations_dir(folder), revision=None, source=str(folder)))
    travel = {"migrations": N, "sql_mb": round(sum((d / "migration.sql").stat().st_size for d in folder.iterdir()
                                                    if d.is_dir()) / 1e6, 2),
              "parts": len(parts), "largest_part_kb": round(max((p.size for p in header.parts), default=0) / 1024)}
    pg = PgCluster(durable=True).start()
    temporal = TemporalDevServer().start()
    rows: list[dict] = []
    try:
        travel["template_build_s"] = round(await build_template(pg, folder), 1)
        print(json.dumps(travel), flush=True)
        dbs = {f"long{r}": await copy_of_template(pg, f"long_{r}") for r in range(RUNS)}
        envs = {env: {"database_url": url, "gates": []} for env, url in dbs.items()}
        envs["longplan"] = {"database_url": await copy_of_template(pg, "long_plan")}
        # Without a replay: one replay is kept per server, and the warm-up's must not replace this history's.
        envs["warmup"] = {"database_url": await create_db(pg, "long_warmup"), "drift_proof": "never"}
        queue = "bench-long"
        cli = {"MIGRATOR_TEMPORAL_ADDRESS": temporal.address, "MIGRATOR_TASK_QUEUE": queue}
        starter = [sys.executable, "starter.py"]
        warmup_cmd = [*starter, "plan", "--env", "warmup", "--migrations-dir", str(INCIDENT), "--json"]

        def start_worker() -> WorkerProcess:
            worker = WorkerProcess({"MIGRATOR_TEMPORAL_ADDRESS": temporal.address, "MIGRATOR_TASK_QUEUE": queue,
                                    "MIGRATOR_ENVIRONMENTS": json.dumps(envs),
                                    "MIGRATOR_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING")},
                                   log_file=RESULTS / "long_history_worker.log").start()
            timed(warmup_cmd, cli)  # the worker's first workflow task pays one-off imports
            return worker

        worker = start_worker()
        try:
            status, plan, deploy, p_status, p_deploy, facts = [], [], [], [], [], {}
            plan_cmd = [*starter, "plan", "--env", "longplan", "--migrations-dir", str(folder), "--json"]
            first_plan, proc = timed(plan_cmd, cli)  # replays the whole folder: the server keeps it
            assert proc.returncode == 0, proc.stderr[-400:]
            print(json.dumps({"first_plan_s": first_plan}), flush=True)
            for r in range(RUNS):
                dsn = await copy_of_template(pg, f"long_status_{r}")
                elapsed, proc = timed([*starter, "status", "--migrations-dir", str(folder), "--json"], {"DATABASE_URL": dsn})
                assert proc.returncode == 1 and json.loads(proc.stdout)["summary"]["pending"] == PENDING, proc.stderr[-300:]
                status.append(elapsed)
                p_status.append(prisma("status", dsn, folder))

                elapsed, proc = timed(plan_cmd, cli)
                planned = json.loads(proc.stdout) if proc.returncode == 0 else None
                assert planned and len([m for m in planned["migrations"] if m["action"] == "apply"]) == PENDING, \
                    proc.stderr[-400:]
                plan.append(elapsed)

                env = f"long{r}"
                elapsed, proc = timed([*starter, "deploy", "--env", env, "--migrations-dir", str(folder), "--wait"], cli)
                assert proc.returncode == 0, (proc.stdout + proc.stderr)[-600:]
                assert len(await applied_names(dbs[env])) == N
                deploy.append(elapsed)
                facts = await history_facts(temporal.address, workflow_id_for(env))

                prisma_db = await copy_of_template(pg, f"long_prisma_{r}")
                p_deploy.append(prisma("deploy", prisma_db, folder))
                if p_deploy[-1] is not None:
                    assert len(await applied_names(prisma_db)) == N
                print(json.dumps({"run": r, "status_s": status[-1], "plan_s": plan[-1], "deploy_s": deploy[-1],
                                  "prisma_status_s": p_status[-1], "prisma_deploy_s": p_deploy[-1]}), flush=True)
            rss = peak_rss_mb(worker.proc.pid)
        finally:
            worker.stop()
        # A fresh worker (nothing cached) plans a database where all N are deployed: it copies the
        # replay the server kept and replays nothing.
        worker = start_worker()
        try:
            kept_cmd = [*starter, "plan", "--env", "long0", "--migrations-dir", str(folder), "--json"]
            kept_plan, proc = timed(kept_cmd, cli)
            assert proc.returncode == 0 and not [m for m in json.loads(proc.stdout)["migrations"] if m["action"] == "apply"], \
                proc.stderr[-400:]
        finally:
            worker.stop()
    finally:
        temporal.stop()
        pg.destroy()
    rows = [
        {"what": f"`status` ({N - PENDING:,} applied, {PENDING} pending)", "product_s": median(status),
         "prisma_s": median(p_status)},
        {"what": "`plan` (workflow preflight, read-only; the replay cached in the worker)", "product_s": median(plan),
         "prisma_s": None},
        {"what": "first `plan` on the server (the whole folder replayed, once)", "product_s": round(first_plan, 3),
         "prisma_s": None},
        {"what": f"`plan` from a fresh worker, all {N:,} deployed (the server's kept replay copied)",
         "product_s": round(kept_plan, 3), "prisma_s": None},
        {"what": f"deploy of the last {PENDING} (`deploy --wait`; Prisma: `migrate deploy`)",
         "product_s": median(deploy), "prisma_s": median(p_deploy)},
    ]
    return {"benchmark": "long_history", "machine": machine(), "runs": RUNS, "travel": travel, "rows": rows,
            "deploy_history": facts, "worker_peak_rss_mb": round(rss, 1)}


def render(result: dict) -> None:
    print(json.dumps(result["travel"]))
    print(json.dumps(result["deploy_history"]), f"worker peak RSS {result['worker_peak_rss_mb']} MB")
    print_table(f"{result['travel']['migrations']:,}-migration history (median of {result['runs']})",
                ["what", "product_s", "prisma_s"], result["rows"])


if __name__ == "__main__":
    res = asyncio.run(main())
    (RESULTS / "long_history.json").write_text(json.dumps(res, indent=2))
    render(res)
