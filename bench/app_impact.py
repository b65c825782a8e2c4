"""Application impact of a deploy behind a long transaction (issue 13, "Polite with locks").

Setup, per run, on a fresh copy of a 200,000-row `orders` table (durable PostgreSQL cluster):
  t=0            the application load starts: RATE transactions/s, each `SELECT` one order +
                 `UPDATE` another, arriving open-loop (bench/app_load.py, its own process)
  t=WARMUP       a blocker opens a transaction and holds its lock for HOLD seconds:
                   add_column:   a report, `SELECT count(*) FROM orders` then idle (ACCESS SHARE)
                   create_index: a batch job, `UPDATE orders ... WHERE id = 1` then idle (ROW EXCLUSIVE;
                                 a reader would not block CREATE INDEX's SHARE lock)
  t=WARMUP+1     the migration is deployed by one of:
                   none     nothing (control: what the stall metric reads from machine noise alone)
                   prisma   the real `prisma migrate deploy` (../shared/tools/prisma-oracle/prisma.sh)
                   today    the product before this change: lock_timeout 10 s, Temporal's retries
                   gitlab   GitLab's with_lock_retries schedule (bench/lock_schedules.py)
                   pgroll   pgroll's 500 ms lock_timeout and jittered exponential backoff
                   polite   activities.locks.LockPoliteExecutor (driven directly, ledger row included)
                   product  the product's FULL workflow: `python starter.py deploy --env ... --operation
                            migrate --wait` against a worker process (`python worker.py`) on a Temporal
                            dev server, gates off, default lock settings (preflight with its schema
                            checks, deploy through the polite executor, verify)
  until the deploy and the blocker have both finished, plus TAIL seconds.

Definitions (latency = commit time - scheduled arrival, so queueing for a connection counts):
  normal     the 99th percentile latency of transactions arriving in [1 s, WARMUP) (before the blocker)
  excess_i   max(0, latency_i - normal)
  stall      WALL-CLOCK seconds during which at least one application transaction had been
             running longer than `normal`: the measure of the union of the intervals
             [arrival_i + normal, commit_i] over transactions arriving after the blocker started.
             This is "how long the application was frozen" (the figure issue 13 quotes).
  stalled_tx_s  the sum of excess_i over the same transactions (transaction-seconds of stall).
  max / p99  latency over the transactions arriving after the blocker started.
  failed     application transactions that raised an error.
  applied    the migration's column / valid index exists afterwards.

Goal (issue 13): polite stall <= 1/10 of prisma's, no application transaction slower than 1 s,
applied in every run where the blocker ends within the budget.

Goal for the product: the same, against prisma's stall (polite and product are judged alike).

Environment: BENCH_LOCK_HOLD_S (10; the issue's measurement used 30), BENCH_RUNS (1),
BENCH_RATE (200), BENCH_ROWS (200000), BENCH_BUDGET_S (300), BENCH_SCENARIOS, BENCH_VARIANTS
(default, the quick set `make bench` runs: none,prisma,polite,product; all of them:
none,prisma,today,gitlab,pgroll,polite,product).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from activities.ledger import MigrationLedger, utcnow
from activities.locks import LockPoliteExecutor
from bench.lock_schedules import SCHEDULES, run_blind
from bench.report import print_table
from devstack.pgcluster import PgCluster
from devstack.services import TemporalDevServer, WorkerProcess
from domain.prisma.checksum import sha256_hex
from domain.lock_levels import all_locks, script_locks
from domain.lock_waits import LockBudgetExhausted, LockRetryPolicy

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
HOLD_S = float(os.environ.get("BENCH_LOCK_HOLD_S", "10"))
RUNS = int(os.environ.get("BENCH_RUNS", "1"))
RATE = float(os.environ.get("BENCH_RATE", "200"))
ROWS = int(os.environ.get("BENCH_ROWS", "200000"))
BUDGET_S = float(os.environ.get("BENCH_BUDGET_S", "300"))
VARIANTS = os.environ.get("BENCH_VARIANTS", "none,prisma,polite,product").split(",")
JUDGED = ("polite", "product")  # the variants the goals are checked for
POOL = 16
WARMUP_S, DEPLOY_AFTER_S, TAIL_S = 4.0, 1.0, 2.0


@dataclass(frozen=True)
class Scenario:
    name: str
    sql: str
    blocker: str  # "reader" | "writer"
    applied_sql: str


SCENARIOS = {s.name: s for s in [
    Scenario("add_column", 'ALTER TABLE "orders" ADD COLUMN "note" TEXT;\n', "reader",
             "SELECT count(*) = 1 FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'note'"),
    Scenario("create_index", 'CREATE INDEX "orders_customer_id_idx" ON "orders"("customer_id");\n', "writer",
             "SELECT coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('orders_customer_id_idx')),"
             " false)"),
]}
SELECTED = [SCENARIOS[n] for n in os.environ.get("BENCH_SCENARIOS", ",".join(SCENARIOS)).split(",")]
MIGRATION = "20240101000000_change"


def prisma_script() -> Path | None:
    script = Path(os.environ.get("PRISMA_ORACLE", REPO.parent / "shared" / "tools" / "prisma-oracle"))
    script = script / "prisma.sh" if script.is_dir() else script
    return script if script.is_file() else None


async def make_base(pg: PgCluster) -> None:
    admin = await asyncpg.connect(pg.url("postgres"))
    await admin.execute("DROP DATABASE IF EXISTS app_base")
    await admin.execute("CREATE DATABASE app_base TEMPLATE template0")
    await admin.close()
    conn = await asyncpg.connect(pg.url("app_base"))
    await conn.execute(f"""
        CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, total numeric NOT NULL,
                             created_at timestamptz NOT NULL DEFAULT now());
        INSERT INTO orders (id, customer_id, total) SELECT g, g % 5000, g FROM generate_series(1, {ROWS}) g;
    """)
    await conn.execute("VACUUM ANALYZE orders")
    await MigrationLedger(conn).ensure_table()
    await conn.close()


async def fresh_db(pg: PgCluster, name: str) -> str:
    admin = await asyncpg.connect(pg.url("postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE app_base')
    await admin.close()
    return pg.url(name)


async def hold_blocker(url: str, kind: str, seconds: float, started: asyncio.Event) -> None:
    conn = await asyncpg.connect(url, server_settings={"application_name": "report" if kind == "reader" else "batch-job"})
    async with conn.transaction():
        if kind == "reader":
            await conn.fetchval("SELECT count(*) FROM orders")
        else:
            await conn.execute("UPDATE orders SET total = total WHERE id = 1")
        started.set()
        await asyncio.sleep(seconds)
    await conn.close()


async def ledger_row(conn: asyncpg.Connection, sql: str) -> None:
    now = utcnow()
    await MigrationLedger(conn).insert_applied(MIGRATION, sha256_hex(sql.encode()), now, now)


def write_folder(workdir: Path, scenario: Scenario) -> Path:
    folder = workdir / "migrations"
    (folder / MIGRATION).mkdir(parents=True, exist_ok=True)
    (folder / "migration_lock.toml").write_text('provider = "postgresql"\n')
    (folder / MIGRATION / "migration.sql").write_text(scenario.sql)
    return folder


class Product:
    """The product as a user runs it: a Temporal dev server, `python worker.py` with one
    environment per product run (gates off), and `python starter.py deploy ... --wait`."""

    def __init__(self, pg: PgCluster, environments: list[str]) -> None:
        self.temporal = TemporalDevServer().start()
        envs = {name: {"database_url": pg.url(name), "gates": [], "lock_wait_budget": f"{BUDGET_S:g}s"}
                for name in environments}
        self.env = {"MIGRATOR_TEMPORAL_ADDRESS": self.temporal.address, "MIGRATOR_TASK_QUEUE": "bench-app-impact"}
        self.worker = WorkerProcess({**self.env, "MIGRATOR_ENVIRONMENTS": json.dumps(envs),
                                     "MIGRATOR_LOG_LEVEL": "WARNING"}).start()

    async def deploy(self, environment: str, folder: Path) -> dict:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "starter.py"), "deploy", "--env", environment, "--migrations-dir", str(folder),
            "--operation", "migrate", "--requested-by", "bench", "--wait", "--json",
            env={**os.environ, **self.env}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await proc.communicate()
        result: dict = {"ok": proc.returncode == 0, "attempts": None,
                        "error": None if proc.returncode == 0 else (err or out).decode(errors="replace")[-400:]}
        try:
            status = json.loads(out.decode()).get("status") or {}
        except (ValueError, AttributeError):
            return result
        for applied in status.get("applied") or []:
            wait = applied.get("lock_wait") or {}
            result["attempts"] = wait.get("attempts", 1)
            result["message"] = wait.get("message")
        failed = status.get("failed") or {}
        if failed.get("lock_wait"):
            result["attempts"] = failed["lock_wait"].get("attempts")
        return result

    def stop(self) -> None:
        self.worker.stop()
        self.temporal.stop()


def product_environment(scenario: Scenario, run: int) -> str:
    return f"impact_{scenario.name}_product_{run}"


async def deploy(variant: str, url: str, scenario: Scenario, workdir: Path, product: Product | None = None,
                 environment: str = "") -> dict:
    """Deploy the scenario's migration with `variant`; {"ok", "attempts", "error"}."""
    if variant == "none":
        return {"ok": False, "attempts": 0, "error": None}
    if variant == "product":
        assert product is not None
        return await product.deploy(environment, write_folder(workdir, scenario))
    if variant == "prisma":
        folder = write_folder(workdir, scenario)
        env = {**os.environ, "DATABASE_URL": url, "MIGRATIONS_DIR": str(folder), "ORACLE_OUTPUT": "native"}
        proc = await asyncio.create_subprocess_exec(str(prisma_script()), "deploy", env=env, cwd=workdir,
                                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = await proc.communicate()
        return {"ok": proc.returncode == 0, "attempts": 1,
                "error": None if proc.returncode == 0 else out.decode(errors="replace")[-300:]}
    conn = await asyncpg.connect(url, server_settings={"application_name": f"deploy-{variant}"})
    try:
        if variant == "polite":
            observer = await asyncpg.connect(url, server_settings={"application_name": "deploy-observer"})
            executor = LockPoliteExecutor(conn, observer, LockRetryPolicy(budget_s=BUDGET_S))
            try:
                report = await executor.run_script(scenario.sql, all_locks(script_locks(scenario.sql)),
                                                   what=MIGRATION, after=lambda c: ledger_row(c, scenario.sql))
                return {"ok": True, "attempts": report.attempts, "error": None, "message": report.message()}
            except LockBudgetExhausted as exc:
                return {"ok": False, "attempts": exc.report.attempts, "error": str(exc)}
            finally:
                await observer.close()

        async def body(c: asyncpg.Connection) -> None:
            await c.execute(scenario.sql)
            await ledger_row(c, scenario.sql)

        outcome = await run_blind(conn, SCHEDULES[variant](random.Random()), BUDGET_S, body)
        return {"ok": outcome.applied, "attempts": outcome.attempts, "error": outcome.error}
    finally:
        await conn.close()


def metrics(records: list, blocker_at: float) -> dict:
    base = sorted(lat for t, lat, _ in records if records[0][0] + 1 <= t < blocker_at)
    normal = base[min(len(base) - 1, int(len(base) * 0.99))]
    window = sorted((t, lat, err) for t, lat, err in records if t >= blocker_at)
    lats = sorted(lat for _, lat, _ in window)
    intervals = sorted((t + normal, t + lat) for t, lat, _ in window if lat > normal)
    stall, cur_start, cur_end = 0.0, None, None
    for s, e in intervals:
        if cur_end is None or s > cur_end:
            if cur_end is not None:
                stall += cur_end - cur_start
            cur_start, cur_end = s, e
        else:
            cur_end = max(cur_end, e)
    if cur_end is not None:
        stall += cur_end - cur_start
    return {"normal_ms": round(normal * 1000, 1), "stall_s": round(stall, 3),
            "stalled_tx_s": round(sum(max(0.0, lat - normal) for _, lat, _ in window), 2),
            "max_s": round(lats[-1], 3), "p99_s": round(lats[int(len(lats) * 0.99)], 3),
            "transactions": len(window), "failed": sum(1 for _, _, err in window if err)}


async def one_run(pg: PgCluster, scenario: Scenario, variant: str, run: int, product: Product | None = None) -> dict:
    name = product_environment(scenario, run) if variant == "product" else f"impact_{scenario.name}_{variant}_{run}"
    url = await fresh_db(pg, name)
    load = subprocess.Popen([sys.executable, "-m", "bench.app_load", url, str(RATE), str(POOL), str(ROWS)],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert load.stdout is not None and load.stdin is not None
    await asyncio.get_running_loop().run_in_executor(None, load.stdout.readline)  # "ready"
    await asyncio.sleep(WARMUP_S)
    started = asyncio.Event()
    blocker_at = time.time()
    blocker = asyncio.create_task(hold_blocker(url, scenario.blocker, HOLD_S, started))
    await started.wait()
    await asyncio.sleep(DEPLOY_AFTER_S)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        outcome = await deploy(variant, url, scenario, Path(tmp), product, name)
    deploy_s = time.time() - t0
    await blocker
    await asyncio.sleep(TAIL_S)
    out, _ = await asyncio.get_running_loop().run_in_executor(None, load.communicate, "stop\n")
    records = json.loads(out.strip().splitlines()[-1])["records"]
    conn = await asyncpg.connect(url)
    applied = await conn.fetchval(scenario.applied_sql)
    await conn.close()
    row = {"scenario": scenario.name, "variant": variant, "run": run,
           "applied": bool(applied) if variant != "none" else None,
           "deploy_s": round(deploy_s, 2), "attempts": outcome["attempts"], **metrics(records, blocker_at)}
    if outcome.get("error"):
        row["error"] = outcome["error"]
    if outcome.get("message"):
        row["message"] = outcome["message"]
    return row


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for scenario in SELECTED:
        prisma = [r["stall_s"] for r in rows if r["scenario"] == scenario.name and r["variant"] == "prisma"]
        for variant in VARIANTS:
            mine = [r for r in rows if r["scenario"] == scenario.name and r["variant"] == variant]
            if not mine:
                continue
            stall = statistics.median(r["stall_s"] for r in mine)
            out.append({"scenario": scenario.name, "variant": variant, "runs": len(mine),
                        "stall_s (median)": stall, "max_s (worst)": max(r["max_s"] for r in mine),
                        "p99_s (worst)": max(r["p99_s"] for r in mine),
                        "failed": sum(r["failed"] for r in mine),
                        "applied": "-" if variant == "none" else f"{sum(r['applied'] for r in mine)}/{len(mine)}",
                        "vs prisma": f"{stall / statistics.median(prisma):.3f}" if prisma and statistics.median(prisma) else "-"})
    return out


async def main() -> int:
    variants = [v for v in VARIANTS if v != "prisma" or prisma_script()]
    if "prisma" in VARIANTS and "prisma" not in variants:
        print("prisma oracle not found: the prisma variant is skipped", file=sys.stderr)
    pg = PgCluster(durable=True).start()
    rows: list[dict] = []
    product = None
    try:
        await make_base(pg)
        if "product" in variants:
            product = Product(pg, [product_environment(s, run) for s in SELECTED for run in range(1, RUNS + 1)])
        for run in range(1, RUNS + 1):
            for scenario in SELECTED:
                for variant in variants:
                    row = await one_run(pg, scenario, variant, run, product)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    finally:
        if product is not None:
            product.stop()
        pg.destroy()
    summary = summarise(rows)
    print_table(f"Application impact of a deploy behind a {HOLD_S:g} s lock holder ({RATE:g} tx/s, {ROWS} rows)",
                list(summary[0].keys()) if summary else [], summary)
    goals = []
    for scenario in SELECTED:
        prisma = [r for r in rows if r["scenario"] == scenario.name and r["variant"] == "prisma"]
        for judged in JUDGED:
            mine = [r for r in rows if r["scenario"] == scenario.name and r["variant"] == judged]
            if not mine or not prisma:
                continue
            ratio = statistics.median(r["stall_s"] for r in mine) / max(1e-9, statistics.median(r["stall_s"] for r in prisma))
            goals.append({"scenario": scenario.name, "variant": judged,
                          "stall ratio <= 0.1": f"{ratio:.3f} {'ok' if ratio <= 0.1 else 'MISSED'}",
                          "max latency < 1 s": "ok" if all(r["max_s"] < 1 for r in mine) else "MISSED",
                          "applied every run": "ok" if all(r["applied"] for r in mine) else "MISSED"})
    if goals:
        print_table("Goals (issue 13)", list(goals[0].keys()), goals)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "app_impact.json").write_text(json.dumps(
        {"hold_s": HOLD_S, "rate": RATE, "rows": ROWS, "budget_s": BUDGET_S, "runs": rows, "summary": summary,
         "goals": goals}, indent=2))
    return 1 if any("MISSED" in str(g.values()) for g in goals) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
