"""`status` and `plan` speed on large histories (issue 8, item 2).

1,000 and 10,000 generated migrations; the ledger fully applied, and half pending. `status` is
timed as a user runs it (a `starter.py status --json` process, start-up included) and as the pure
diagnosis alone; Prisma's `migrate status` is the comparison where the oracle is installed.
`plan` goes through the workflow's preflight on the dev server (a bundle over one Temporal payload
travels in parts: README "Histories of any length"; a plan too large for one payload is refused,
reported in the table). bench/long_history.py is the 10,000-migration history of real files.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from activities.ledger import MigrationLedger
from bench.generate import write_folder
from bench.overhead import RESULTS, create_db, machine, prisma_deploy  # noqa: F401
from bench.report import print_table
from devstack.pgcluster import PgCluster
from devstack.services import TemporalDevServer, WorkerProcess
from domain.prisma.diagnosis import diagnose
from domain.prisma.folder import read_migrations_dir
from domain.prisma.ledger import CREATE_TABLE_DDL

REPO = Path(__file__).resolve().parent.parent
SIZES = [int(x) for x in os.environ.get("BENCH_STATUS_SIZES", "1000,10000").split(",")]


async def fill_ledger(dsn: str, folder: Path, applied: int) -> None:
    """Ledger rows as `migrate deploy` writes them, for the first `applied` migrations (SQL not run:
    status reads only the ledger)."""
    migrations = read_migrations_dir(folder)[:applied]
    conn = await asyncpg.connect(dsn)
    await conn.execute(CREATE_TABLE_DDL)
    await conn.executemany(
        "INSERT INTO _prisma_migrations (id, checksum, started_at, finished_at, migration_name, logs, applied_steps_count)"
        " VALUES (gen_random_uuid()::text, $1, now(), now(), $2, NULL, 1)",
        [(m.checksum, m.name) for m in migrations],
    )
    await conn.close()


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, cwd=REPO)
    return time.perf_counter() - start, proc.returncode


def prisma_status(dsn: str, folder: Path) -> float | None:
    script = REPO.parent / "shared" / "tools" / "prisma-oracle" / "prisma.sh"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prisma-oracle" / "node_modules" / "prisma"
    if not script.exists() or not cache.exists():
        return None
    elapsed, _ = timed([str(script), "status"], {"DATABASE_URL": dsn, "MIGRATIONS_DIR": str(folder)})
    return elapsed


async def pure_diagnosis_seconds(dsn: str, folder: Path) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        start = time.perf_counter()
        local = read_migrations_dir(folder)
        snapshot = await MigrationLedger(conn).read()
        diagnose(local, snapshot)
        return time.perf_counter() - start
    finally:
        await conn.close()


def plan_seconds(folder: Path, dsn: str, temporal: TemporalDevServer, n: int) -> tuple[float | None, str]:
    """`starter.py plan` through the workflow's preflight; None with the reason when refused."""
    env_name = f"plan{n}"
    worker = WorkerProcess(
        {
            "MIGRATOR_TEMPORAL_ADDRESS": temporal.address,
            "MIGRATOR_TASK_QUEUE": f"plan-{n}",
            "MIGRATOR_ENVIRONMENTS": json.dumps({env_name: {"database_url": dsn}}),
            "MIGRATOR_LOG_LEVEL": "WARNING",
        }
    ).start()
    try:
        env = {"MIGRATOR_TEMPORAL_ADDRESS": temporal.address, "MIGRATOR_TASK_QUEUE": f"plan-{n}"}
        cmd = [sys.executable, "starter.py", "plan", "--env", env_name, "--migrations-dir", str(folder), "--json"]
        timed(cmd, env)  # the worker's first workflow task pays one-off imports; not what a user waits for twice
        start = time.perf_counter()
        proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, cwd=REPO)
        elapsed = time.perf_counter() - start
        if proc.returncode not in (0, 1):
            return None, proc.stderr.strip().splitlines()[-1][:160] if proc.stderr.strip() else "failed"
        return elapsed, ""
    finally:
        worker.stop()


async def main() -> dict:
    pg = PgCluster().start()
    temporal = TemporalDevServer().start()
    rows = []
    try:
        for n in SIZES:
            folder = write_folder(Path(tempfile.mkdtemp(prefix=f"status-{n}-")) / "migrations", n)
            for label, applied in (("all applied", n), ("half pending", n // 2)):
                dsn = await create_db(pg, f"status_{n}_{applied}")
                await fill_ledger(dsn, folder, applied)
                cli_s, code = timed(
                    [sys.executable, "starter.py", "status", "--migrations-dir", str(folder), "--json"],
                    {"DATABASE_URL": dsn},
                )
                rows.append(
                    {
                        "migrations": n,
                        "ledger": label,
                        "status_cli_s": round(cli_s, 3),
                        "status_exit": code,
                        "diagnosis_s": round(await pure_diagnosis_seconds(dsn, folder), 3),
                        "prisma_status_s": (lambda v: round(v, 3) if v else None)(prisma_status(dsn, folder)),
                    }
                )
                plan_s, why = plan_seconds(folder, dsn, temporal, n)
                rows[-1]["plan_s"] = round(plan_s, 3) if plan_s is not None else None
                rows[-1]["plan_note"] = why
                print(json.dumps(rows[-1]), flush=True)
    finally:
        temporal.stop()
        pg.destroy()
    return {"benchmark": "status_speed", "machine": machine(), "rows": rows}


def render(result: dict) -> None:
    print_table("status speed (target: status CLI <= 1 s at 1,000 migrations)", ["migrations", "ledger", "status_cli_s", "status_exit", "diagnosis_s", "prisma_status_s", "plan_s", "plan_note"], result["rows"])


if __name__ == "__main__":
    RESULTS.mkdir(parents=True, exist_ok=True)
    res = asyncio.run(main())
    (RESULTS / "status_speed.json").write_text(json.dumps(res, indent=2))
    render(res)
