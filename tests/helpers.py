"""Shared test helpers for the deploy workflow: settings, workers on private task queues, bundles,
polling a run, catalog dumps and history scanning."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.apply import ApplyActivities
from activities.cleanup import CleanupActivities
from activities.compensate import CompensateActivities
from activities.preflight import PreflightActivities
from activities.resolve import ResolveActivities
from activities.target import TargetDatabases
from activities.verify import VerifyActivities
from domain.bundle import build_bundle
from domain.models import (
    BundledMigration,
    DeployRequest,
    MigrationBundle,
    Operation,
    RunStatus,
)
from domain.prisma.checksum import sha256_hex
from domain.prisma.folder import read_migrations_dir
from runtime.settings import EnvironmentSettings, Settings
from worker import build_worker
from workflows import messages
from workflows.sandbox import workflow_runner
from workflows.start import WORKFLOW_NAME, start_options

INCIDENT_DIR = Path(__file__).resolve().parent.parent / "examples" / "incident" / "prisma" / "migrations"


def make_settings(environment: str, database_url: str, **env: Any) -> Settings:
    """Worker settings with one environment. Defaults: no gates (pass gates=[...] to add some), and
    the permissive approval rules most tests need: typed names accepted (unproven), self-approval
    allowed, one approval at every risk. Tests of the production defaults build EnvironmentSettings
    themselves (or pass `production_defaults=True`)."""
    env.setdefault("gates", [])
    if not env.pop("production_defaults", False):
        env.setdefault("approval_proofs", ["ssh", "typed"])
        env.setdefault("allow_self_approval", True)
        env.setdefault("required_approvals", {"low": 1, "medium": 1, "high": 1})
    return Settings(
        environments={environment: EnvironmentSettings(database_url=database_url, **env)},
        advisory_lock_timeout=timedelta(seconds=2),
        _env_file=None,
    )


def new_worker(
    client: Client,
    settings: Settings,
    *,
    task_queue: str | None = None,
    **options: Any,
) -> Worker:
    """A worker on a private task queue; `activities=[...]` replaces the real ones (registered by name).
    Its sandbox reloads every module and checks every call (workflows/sandbox.py)."""
    options.setdefault("workflow_runner", workflow_runner(strict=True))
    return build_worker(client, settings, task_queue=task_queue or f"tq-{uuid.uuid4()}", **options)


class StageActivities:
    """The real activities of every stage for `settings`, as the worker builds them (one shared
    TargetDatabases), for tests that call them directly (ActivityEnvironment) or wrap one."""

    def __init__(self, settings: Settings) -> None:
        targets = TargetDatabases(settings)
        self.preflight = PreflightActivities(targets).preflight
        self.resolve = ResolveActivities(targets).resolve
        self.deploy = ApplyActivities(targets).deploy
        self.verify = VerifyActivities(targets).verify
        self.compensate = CompensateActivities(targets).compensate
        self.drop_shadow = CleanupActivities(targets).drop_shadow

    def all(self) -> list[Any]:
        return [self.preflight, self.resolve, self.deploy, self.verify, self.compensate, self.drop_shadow]


def migration(name: str, sql: str, down: str | None = None, verify: str | None = None) -> BundledMigration:
    return BundledMigration(name=name, sql=sql, checksum=sha256_hex(sql.encode()), down_sql=down, verify_sql=verify)


def request(
    environment: str,
    migrations: list[BundledMigration],
    *,
    operation: Operation = Operation.full,
    requested_by: str = "carol",
    dry_run: bool = False,
) -> DeployRequest:
    return DeployRequest(
        environment=environment,
        operation=operation,
        requested_by=requested_by,
        dry_run=dry_run,
        bundle=MigrationBundle(migrations=migrations, revision="test", source="tests"),
    )


def incident_request(environment: str, **kwargs: Any) -> DeployRequest:
    bundle = build_bundle(read_migrations_dir(INCIDENT_DIR), revision="test", source=str(INCIDENT_DIR))
    return request(environment, bundle.migrations, **kwargs)


async def start(client: Client, worker: Worker, req: DeployRequest, *, workflow_id: str | None = None) -> WorkflowHandle:
    options = start_options(req, task_queue=worker.task_queue, workflow_id=workflow_id or f"test-{uuid.uuid4()}")
    return await client.start_workflow(WORKFLOW_NAME, req, result_type=RunStatus, **options)


async def wait_status(handle: WorkflowHandle, predicate, timeout: float = 30.0) -> RunStatus:
    """Poll the `status` query until `predicate(status)` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: RunStatus | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = await handle.query("status", result_type=RunStatus)
        except Exception:  # noqa: BLE001 - the first task may not have run yet
            last = None
        if last is not None and predicate(last):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for the run; last status: {last.model_dump_json() if last else None}")


async def wait_gate(handle: WorkflowHandle, stage: str, timeout: float = 30.0) -> RunStatus:
    return await wait_status(handle, lambda s: s.awaiting == stage, timeout)


def approval(stage: str, approver: str, fingerprint: str | None = None, comment: str = "ok") -> dict:
    payload = {"stage": stage, "approver": approver, "comment": comment}
    if fingerprint:
        payload["fingerprint"] = fingerprint
    return payload


async def final_status(handle: WorkflowHandle) -> RunStatus:
    """The RunStatus a run returned, or the one carried in its failure's details."""
    status = await messages.final_status(handle)
    assert status is not None, "the run ended without a RunStatus (result or failure details)"
    return status


async def catalog_dump(conn: asyncpg.Connection) -> dict[str, Any]:
    """Schema objects and every row of every table in the public schema (the ledger included)."""
    dump: dict[str, Any] = {}
    dump["columns"] = [tuple(r) for r in await conn.fetch(
        "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY 1, 2")]
    dump["indexes"] = [tuple(r) for r in await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")]
    dump["constraints"] = [tuple(r) for r in await conn.fetch(
        "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
        "WHERE n.nspname = 'public' ORDER BY 1, 2")]
    dump["types"] = [tuple(r) for r in await conn.fetch(
        "SELECT t.typname, t.typtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE n.nspname = 'public' AND t.typtype IN ('e', 'c', 'd') ORDER BY 1")]
    tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    dump["rows"] = {
        t: sorted(str(tuple(r)) for r in await conn.fetch(f'SELECT * FROM "{t}"')) for t in tables
    }
    return dump


async def ledger_rows(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch("SELECT * FROM _prisma_migrations ORDER BY started_at, id")]


async def history_json(handle: WorkflowHandle) -> str:
    history = await handle.fetch_history()
    return history.to_json()


def activity_attempts(history_json_text: str, activity_type: str) -> int:
    """How many attempts of one activity type the history records (scheduled events + retries)."""
    import json

    events = json.loads(history_json_text)["events"]
    scheduled = [e for e in events if e.get("eventType") in ("EVENT_TYPE_ACTIVITY_TASK_SCHEDULED", "ActivityTaskScheduled")
                 and e["activityTaskScheduledEventAttributes"]["activityType"]["name"] == activity_type]
    ids = {e["eventId"] for e in scheduled}
    started = [e for e in events if e.get("eventType") in ("EVENT_TYPE_ACTIVITY_TASK_STARTED", "ActivityTaskStarted")
               and e["activityTaskStartedEventAttributes"]["scheduledEventId"] in ids]
    return sum(int(e["activityTaskStartedEventAttributes"].get("attempt", 1)) for e in started[-1:]) if started else 0


async def run_cli_in_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`starter.py ARGS` in this process (typer's runner), in a thread: the command's own asyncio
    loop cannot run on the test's, and the test's worker keeps running meanwhile. The result looks
    like a finished subprocess (returncode, stdout, stderr)."""
    from typer.testing import CliRunner

    from cli.main import app

    def invoke() -> subprocess.CompletedProcess:
        result = CliRunner().invoke(app, args, env=env, catch_exceptions=False)
        return subprocess.CompletedProcess(["starter.py", *args], result.exit_code, result.stdout, result.stderr)

    return await asyncio.to_thread(invoke)


async def history_state(
    database_url: str,
    *,
    applied: list[BundledMigration] = (),  # type: ignore[assignment]
    failed: BundledMigration | None = None,
    failed_by_hand: str | None = None,
    failed_in_transaction: bool = True,
    phantoms: dict[str, str] | None = None,
    by_hand: str | None = None,
) -> None:
    """Put a database in a state Prisma's deploy and people leave behind, as Prisma writes it:
    `applied` migrations run with their ledger rows; `failed` really run (inside a transaction
    unless told otherwise) and left as Prisma's failed row; `failed_by_hand`, if given, is SQL run
    just before it (the data that makes it fail, a partial attempt...); then `phantoms`, run by hand
    and recorded as applied without a folder; `by_hand` last, with no ledger row at all."""
    from datetime import datetime, timedelta, timezone

    from activities.ledger import MigrationLedger
    from domain.prisma.errors import migration_failed_logs

    t = datetime(2025, 1, 1, tzinfo=timezone.utc)
    conn = await asyncpg.connect(database_url)
    try:
        ledger = MigrationLedger(conn)
        await ledger.ensure_table()
        for i, m in enumerate(applied):
            async with conn.transaction():
                await conn.execute(m.sql)
                await ledger.insert_applied(m.name, m.checksum, t + timedelta(minutes=i), t + timedelta(minutes=i, seconds=1))
        if failed is not None:
            if failed_by_hand:
                await conn.execute(failed_by_hand)
            error: asyncpg.PostgresError | None = None
            try:
                if failed_in_transaction:
                    async with conn.transaction():
                        await conn.execute(failed.sql)
                else:  # e.g. CREATE INDEX CONCURRENTLY, which leaves an INVALID index when it fails
                    await conn.execute(failed.sql)
            except asyncpg.PostgresError as exc:
                error = exc
            assert error is not None, f"{failed.name} was meant to fail"
            await ledger.insert_failed(failed.name, failed.checksum, t + timedelta(hours=2),
                                       migration_failed_logs(failed.name, error.sqlstate, str(error)))
        for j, (name, sql) in enumerate((phantoms or {}).items()):
            await conn.execute(sql)
            at = t + timedelta(hours=3, minutes=j)
            await ledger.insert_applied(name, sha256_hex(sql.encode()), at, at + timedelta(seconds=1))
        if by_hand:
            await conn.execute(by_hand)
    finally:
        await conn.close()


async def plan_of(settings: Settings, req: DeployRequest):
    """The plan preflight makes for `req` (the real activity, outside a workflow)."""
    from temporalio.testing import ActivityEnvironment

    return (await ActivityEnvironment().run(StageActivities(settings).preflight, req)).plan


def patch_ids(history: Any) -> list[str]:
    """The ids of the workflow.patched() markers in a history, in order."""
    return [json.loads(p.data)["id"] for e in history.events if e.HasField("marker_recorded_event_attributes")
            for d in e.marker_recorded_event_attributes.details.values() for p in d.payloads]
