"""What every torture case needs: the real worker as a subprocess configured through MIGRATOR_*
variables, runs started the way the starter starts them, and checks of what PostgreSQL holds
afterwards (effects, ledger, advisory lock, connections)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowHandle

from devstack.services import REPO, WorkerProcess
from domain.models import (
    BundledMigration,
    DeployRequest,
    MigrationBundle,
    Operation,
    RunStatus,
    workflow_id_for,
)
from domain.prisma.ledger import ADVISORY_LOCK_KEY
from runtime.settings import Settings
from workflows.messages import final_status

try:  # the starter's own module, once split from the workflow
    from workflows.start import WORKFLOW_NAME, start_options
except ImportError:  # pragma: no cover
    from workflows.deploy import WORKFLOW_NAME, start_options

ARTIFACTS = REPO / "test-artifacts" / "torture"

# Short timeouts where settings expose them (see /work/helpers/torture-bugs.md K1): a crashed
# attempt is re-dispatched after the heartbeat timeout, so it bounds each crash trial.
HEARTBEAT_S = 3
HAS_HEARTBEAT_SETTING = "heartbeat_timeout" in Settings.model_fields


def new_env_name(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def env_config(database_url: str, **rules: Any) -> dict[str, Any]:
    """One entry of MIGRATOR_ENVIRONMENTS (JSON); no gates unless given; typed (unproven) approver
    names accepted, self-approval allowed and one approval per gate unless the case says otherwise."""
    rules.setdefault("gates", [])
    rules.setdefault("approval_proofs", ["ssh", "typed"])
    rules.setdefault("allow_self_approval", True)
    rules.setdefault("required_approvals", {"low": 1, "medium": 1, "high": 1})
    out = {"database_url": database_url, **rules}
    for key, value in list(out.items()):
        if isinstance(value, timedelta):
            out[key] = value.total_seconds()
    return out


class TortureWorker:
    """`python worker.py` with its log in test-artifacts/torture/<name>.log."""

    def __init__(self, address: str, task_queue: str, environments: dict[str, dict], name: str,
                 **settings: str) -> None:
        self.log_file = ARTIFACTS / f"{name}.log"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {
            "MIGRATOR_TEMPORAL_ADDRESS": address,
            "MIGRATOR_TASK_QUEUE": task_queue,
            "MIGRATOR_ENVIRONMENTS": json.dumps(environments),
            "MIGRATOR_ADVISORY_LOCK_TIMEOUT": "PT20S",
            "MIGRATOR_LOG_JSON": "true",
            "MIGRATOR_LOG_LEVEL": "DEBUG",
        }
        if HAS_HEARTBEAT_SETTING:
            env["MIGRATOR_HEARTBEAT_TIMEOUT"] = f"PT{HEARTBEAT_S}S"
        env.update({f"MIGRATOR_{k.upper()}": v for k, v in settings.items()})
        self.env = env
        self.procs: list[WorkerProcess] = []

    def start(self) -> "TortureWorker":
        self.procs.append(WorkerProcess(self.env, log_file=self.log_file).start())
        return self

    @property
    def current(self) -> WorkerProcess:
        return self.procs[-1]

    def kill(self) -> None:
        self.current.kill()

    def pause(self) -> None:
        os.killpg(self.current.proc.pid, 19)  # SIGSTOP: alive, silent (no heartbeats, no polls)

    def resume(self) -> None:
        os.killpg(self.current.proc.pid, 18)  # SIGCONT

    def restart(self) -> None:
        """kill -9 the running worker and start a fresh one on the same task queue."""
        self.kill()
        self.start()

    def stop(self) -> None:
        for p in self.procs:
            if p.proc and p.proc.poll() is None:
                try:
                    os.killpg(p.proc.pid, 18)
                except ProcessLookupError:
                    pass
            p.stop()

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


async def connect_client(address: str, timeout: float = 60) -> Client:
    """A client with the pydantic converter, once the (re)started server's frontend is healthy."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await Client.connect(address, data_converter=pydantic_data_converter)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def make_request(environment: str, migrations: list[BundledMigration], *, requested_by: str = "carol",
                 operation: Operation = Operation.full, dry_run: bool = False) -> DeployRequest:
    return DeployRequest(environment=environment, operation=operation, requested_by=requested_by, dry_run=dry_run,
                         bundle=MigrationBundle(migrations=migrations, revision="torture", source="tests/torture"))


async def start_run(client: Client, req: DeployRequest, task_queue: str) -> WorkflowHandle:
    options = start_options(req, task_queue=task_queue, workflow_id=workflow_id_for(req.environment))
    return await client.start_workflow(WORKFLOW_NAME, req, result_type=RunStatus, **options)


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except Exception as exc:  # noqa: BLE001 - e.g. no worker answering a query yet
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


async def status_of(handle: WorkflowHandle) -> RunStatus:
    return await handle.query("status", result_type=RunStatus)


async def wait_status(handle: WorkflowHandle, predicate: Callable[[RunStatus], bool], timeout: float,
                      what: str) -> RunStatus:
    async def check() -> RunStatus | None:
        st = await status_of(handle)
        return st if predicate(st) else None

    return await wait_for(check, timeout, what, interval=0.1)


async def run_result(handle: WorkflowHandle, timeout: float = 120) -> RunStatus:
    """The final RunStatus: the result, or details[0] of the run's non-retryable failure."""
    status = await asyncio.wait_for(final_status(handle), timeout)
    assert status is not None, "the run ended without a RunStatus (result or failure details)"
    return status


# -- PostgreSQL side ---------------------------------------------------------------------------

async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def active_queries(admin_url: str, database: str, like: str) -> list[asyncpg.Record]:
    return await fetch(admin_url, "SELECT pid, state, query FROM pg_stat_activity WHERE datname = $1 AND "
                       "state = 'active' AND query ILIKE $2 AND pid <> pg_backend_pid()", database, f"%{like}%")


async def leftovers(admin_url: str, database: str) -> tuple[int, list[str]]:
    """(advisory locks on Prisma's key held in `database`, other sessions connected to it)."""
    locks = await fetch(admin_url, "SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                        "WHERE l.locktype = 'advisory' AND l.objid = $1 AND d.datname = $2 AND l.granted",
                        ADVISORY_LOCK_KEY, database)
    sessions = await fetch(admin_url, "SELECT pid, state, left(query, 80) AS q FROM pg_stat_activity "
                           "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
    return locks[0]["n"], [f"{r['pid']} {r['state']} {r['q']}" for r in sessions]


async def assert_clean(admin_url: str, database: str, timeout: float = 10.0) -> None:
    """No advisory lock held and no session left on the database (a just-closed one may take a moment)."""
    async def clean() -> bool:
        locks, sessions = await leftovers(admin_url, database)
        return locks == 0 and not sessions

    try:
        await wait_for(clean, timeout, "no advisory lock and no connection left", interval=0.2)
    except AssertionError:
        locks, sessions = await leftovers(admin_url, database)
        raise AssertionError(f"left behind on {database}: {locks} advisory lock(s), sessions {sessions}") from None


def write_folder(root: Path, migrations: list[BundledMigration]) -> Path:
    """The bundle as a Prisma migrations folder (for the real Prisma CLI)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for m in migrations:
        d = root / m.name
        d.mkdir(exist_ok=True)
        (d / "migration.sql").write_bytes(m.sql.encode())
    return root


def starter(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python starter.py ...` as a user runs it (the worker's MIGRATOR_ENVIRONMENTS not needed)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATOR_")}
    return subprocess.run([sys.executable, str(REPO / "starter.py"), *args], env={**clean, **env}, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


async def astarter(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATOR_")}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(REPO / "starter.py"), *args, env={**clean, **env},
                                                cwd=REPO, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()
