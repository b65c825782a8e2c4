"""What a run costs on real histories, shadow replay included (issue 12): `python -m bench.bench_run_cost`.

On one durable throwaway PostgreSQL, the Temporal dev server and a worker process, for each corpus
history that deploys here (documenso, rallly, hoppscotch), on a fresh database each time:
  - `prisma migrate deploy` of the folder (the yardstick; needs the oracle);
  - a full run without gates (`deploy --operation full`, what CI runs), timed from the start of
    the workflow to its result, on a worker that has not seen the folder (started afresh and warmed
    by one run of a small folder, so its imports are paid but its replay cache is cold: preflight
    replays the whole folder, verification is answered by the worker's cache), with the time of
    each stage from the run's own status;
  - the same run from another fresh worker, the server holding the replay the first run kept
    (activities/shadow_template.py: as the next deploy of the folder), and again on the same worker
    (the folder's replay cached in process, as for a deploy right after `plan`);
and `starter.py plan` on documenso (process start-up included, as a user runs it) on a fresh
database and on one where it is fully deployed, cold and cached. Medians of BENCH_RUNS (default 3).
Targets: full run <= 1.0x Prisma's deploy; plan on documenso < 2.5 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.overhead import RESULTS, create_db, machine, prisma_deploy
from bench.report import print_table
from devstack.pgcluster import PgCluster
from devstack.services import TemporalDevServer, WorkerProcess
from domain.bundle import build_bundle
from domain.models import DeployRequest, Operation, RunStatus
from domain.prisma.folder import read_migrations_dir
from workflows.messages import final_status

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
INCIDENT = REPO / "examples" / "incident" / "prisma" / "migrations"  # a small folder to warm a worker with
HISTORIES = [h for h in os.environ.get("BENCH_HISTORIES", "documenso,rallly,hoppscotch").split(",") if h]


def median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def seconds(status: RunStatus, stage: str) -> float:
    times = status.stage_times.get(stage) or {}
    if not times.get("started") or not times.get("ended"):
        return 0.0
    return (times["ended"] - times["started"]).total_seconds()


class Stack:
    """One worker process serving every benchmark environment (one per database)."""

    def __init__(self, temporal: TemporalDevServer, envs: dict[str, str]) -> None:
        self.temporal = temporal
        self.queue = f"cost-{uuid.uuid4().hex[:8]}"
        self.envs = envs
        self.worker: WorkerProcess | None = None

    def restart(self) -> None:
        if self.worker:
            self.worker.stop()
        environments = {name: {"database_url": url, "gates": []} for name, url in self.envs.items()}
        environments["warmup"]["drift_proof"] = "never"  # warms the worker without touching any replay
        self.worker = WorkerProcess({
            "MIGRATOR_TEMPORAL_ADDRESS": self.temporal.address, "MIGRATOR_TASK_QUEUE": self.queue,
            "MIGRATOR_ENVIRONMENTS": json.dumps(environments), "MIGRATOR_LOG_LEVEL": "WARNING",
        }).start()

    def stop(self) -> None:
        if self.worker:
            self.worker.stop()


async def full_run(client, stack: Stack, env: str, folder: Path) -> tuple[float, RunStatus]:
    bundle = build_bundle(read_migrations_dir(folder), revision="bench", source=str(folder))
    request = DeployRequest(environment=env, operation=Operation.full, requested_by="bench", bundle=bundle)
    start = time.perf_counter()
    handle = await client.start_workflow("DeployWorkflow", request, id=f"cost-{env}-{uuid.uuid4().hex[:6]}",
                                         task_queue=stack.queue)
    status = await final_status(handle)
    elapsed = time.perf_counter() - start
    if status is None or status.outcome != "succeeded":
        raise RuntimeError(f"run on {env} ended {status.outcome if status else None}: {status.error if status else ''}")
    return elapsed, status


async def drop_kept_templates(pg: PgCluster) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg.url("postgres"))
    try:
        for (name,) in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'migrator_template_%'"):
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def plan_cli(stack: Stack, env: str, folder: Path) -> float:
    cmd = [sys.executable, "starter.py", "plan", "--env", env, "--migrations-dir", str(folder), "--json"]
    environ = {**os.environ, "MIGRATOR_TEMPORAL_ADDRESS": stack.temporal.address, "MIGRATOR_TASK_QUEUE": stack.queue}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=environ, capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"plan failed: {proc.stderr[-400:]}")
    return elapsed


async def main() -> dict:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    pg = PgCluster(durable=True).start()
    temporal = TemporalDevServer().start()
    rows, plans = [], {}
    try:
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        dbs = {f"{h}{r}": f"cost_{h}_{r}" for h in HISTORIES for r in range(RUNS + 1)}
        dbs |= {f"{h}k{r}": f"cost_{h}_k{r}" for h in HISTORIES for r in range(RUNS)}
        dbs |= {"plan_fresh": "cost_plan_fresh", "plan_deployed": "cost_plan_deployed", "warmup": "cost_warmup"}
        stack = Stack(temporal, {env: pg.url(db) for env, db in dbs.items()})
        await create_db(pg, dbs["warmup"])
        for history in HISTORIES:
            folder = CORPUS / history / "migrations"
            prisma_s = []
            for r in range(RUNS):
                took = prisma_deploy(await create_db(pg, f"prisma_{history}_{r}"), folder)
                if took is not None:
                    prisma_s.append(took)
            cold, stages, kept = [], [], []
            for r in range(RUNS):
                await create_db(pg, dbs[f"{history}{r}"])
                await drop_kept_templates(pg)  # nothing replayed on this server before...
                stack.restart()  # ...nor in this worker's cache...
                await full_run(client, stack, "warmup", INCIDENT)  # ...but a workflow has run (imports paid)
                elapsed, status = await full_run(client, stack, f"{history}{r}", folder)
                cold.append(elapsed)
                stages.append({s: seconds(status, s) for s in ("preflight", "deploy", "verify")})
                # The next deploy of the folder from another worker: the server's kept replay.
                await create_db(pg, dbs[f"{history}k{r}"])
                stack.restart()
                await full_run(client, stack, "warmup", INCIDENT)
                kept.append((await full_run(client, stack, f"{history}k{r}", folder))[0])
            await create_db(pg, dbs[f"{history}{RUNS}"])
            warm, _ = await full_run(client, stack, f"{history}{RUNS}", folder)
            row = {
                "history": history,
                "migrations": len(read_migrations_dir(folder)),
                "prisma_deploy_s": median(prisma_s),
                "run_cold_s": median(cold),
                "preflight_s": median([s["preflight"] for s in stages]),
                "deploy_s": median([s["deploy"] for s in stages]),
                "verify_s": median([s["verify"] for s in stages]),
                "run_kept_s": median(kept),
                "run_cached_s": round(warm, 3),
            }
            if prisma_s:
                row["cold_over_prisma"] = round(median(cold) / median(prisma_s), 2)
                row["kept_over_prisma"] = round(median(kept) / median(prisma_s), 2)
                row["cached_over_prisma"] = round(warm / median(prisma_s), 2)
            rows.append(row)
            print(json.dumps(row), flush=True)

        documenso = CORPUS / "documenso" / "migrations"
        await create_db(pg, dbs["plan_fresh"])
        await create_db(pg, dbs["plan_deployed"])
        await drop_kept_templates(pg)
        stack.restart()
        plan_cli(stack, "warmup", CORPUS / "hoppscotch" / "migrations")  # imports paid; documenso not replayed
        plans["fresh_cold_s"] = round(plan_cli(stack, "plan_fresh", documenso), 3)
        plans["fresh_cached_s"] = round(median([plan_cli(stack, "plan_fresh", documenso) for _ in range(RUNS)]), 3)
        await full_run(client, stack, "plan_deployed", documenso)
        await drop_kept_templates(pg)
        stack.restart()
        plan_cli(stack, "warmup", CORPUS / "hoppscotch" / "migrations")
        plans["deployed_cold_s"] = round(plan_cli(stack, "plan_deployed", documenso), 3)
        plans["deployed_cached_s"] = round(median([plan_cli(stack, "plan_deployed", documenso) for _ in range(RUNS)]), 3)
        print(json.dumps(plans), flush=True)
        stack.stop()
    finally:
        temporal.stop()
        pg.destroy()
    return {"benchmark": "run_cost", "machine": machine(), "runs": RUNS, "rows": rows, "plan_documenso": plans}


def render(result: dict) -> None:
    print_table(f"Full run without gates vs prisma migrate deploy, fresh database (median of {result['runs']})",
                ["history", "migrations", "prisma_deploy_s", "run_cold_s", "cold_over_prisma", "preflight_s",
                 "deploy_s", "verify_s", "run_kept_s", "kept_over_prisma", "run_cached_s", "cached_over_prisma"],
                result["rows"])
    print_table("starter.py plan on documenso (target < 2.5 s)",
                ["fresh_cold_s", "fresh_cached_s", "deployed_cold_s", "deployed_cached_s"], [result["plan_documenso"]])


if __name__ == "__main__":
    res = asyncio.run(main())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "run_cost.json").write_text(json.dumps(res, indent=2, default=str))
    render(res)
