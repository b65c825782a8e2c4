"""The deploy workflow's activities: preflight, resolve, deploy, verify, compensate.

`MigrationActivities` holds the worker's settings and opens one connection per call to the
environment's database (the URL never leaves the worker). Semantics follow Prisma 6
(../shared/tools/prisma-oracle/REPORT.md §4.2, §4.6–4.9):

- resolve and deploy hold Prisma's advisory lock `pg_advisory_lock(72707369)`, so a concurrent
  `prisma migrate deploy` or another run is excluded; waiting for it is bounded.
- Under the lock they re-read `_prisma_migrations` and stop before any change when it is not the
  ledger the plan was made from (ignoring this run's own rows, recognised by workflow-chosen ids).
- A transactional migration runs as ONE transaction holding its whole migration.sql (one simple
  query, like Prisma's engine) and its ledger row: it is applied with its row or not at all, so a
  retried attempt skips exactly the migrations whose rows it finds.
- A migration's own SQL error is recorded as Prisma's failed row and returned, never retried;
  connection loss, serialization failures and lock timeouts are raised as retryable errors.

Every error leaving an activity is an ApplicationError with one sentence scrubbed of secrets and no
chained cause (the failure lands in workflow history).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.db import DatabaseUnavailable, connect
from activities.failures import is_transient, pg_interval_seconds, prisma_error_logs
from activities.heartbeat import Heartbeater
from activities.ledger_store import LedgerShapeError, MigrationLedger, utcnow
from domain.dsn import scrub
from domain.models import (
    Action,
    AppliedMigration,
    ApprovalPolicy,
    BundledMigration,
    CompensateInput,
    CompensateResult,
    CompensationStep,
    DeployInput,
    DeployRequest,
    DeployResult,
    FailedMigration,
    PlannedMigration,
    PreflightResult,
    ResolveDecision,
    ResolveInput,
    ResolveResult,
    UndoStep,
    VerifyCheck,
    VerifyInput,
    VerifyResult,
)
from domain.plan import (
    RUNS_IN_DEPLOY,
    build_plan,
    fit_to_budget,
    ledger_digest,
    result_too_large,
)
from domain.prisma.ledger import ADVISORY_LOCK_KEY, TABLE, LedgerRow, LedgerSnapshot
from domain.risk import Risk
from runtime.settings import EnvironmentSettings, Settings, UnknownEnvironment

# How often a backend running one of our statements checks that the worker is still connected.
CONNECTION_CHECK_INTERVAL = "1s"


@dataclass
class DeployHooks:
    """Fault injection for tests: after `crash_after` migrations were committed in attempt 1 of a
    deploy, raise as a crashed worker would (the result never reaches the workflow)."""

    crash_after: int | None = None


class MigrationActivities:
    def __init__(self, settings: Settings, hooks: DeployHooks | None = None) -> None:
        self.settings = settings
        self.hooks = hooks or DeployHooks()

    # -- plumbing -------------------------------------------------------------------------------
    def _env(self, name: str) -> EnvironmentSettings:
        try:
            return self.settings.environment(name)
        except UnknownEnvironment as exc:
            raise ApplicationError(str(exc), type="UnknownEnvironment", non_retryable=True) from None

    def _secrets(self) -> list[str]:
        out: list[str] = []
        for env in self.settings.environments.values():
            dsn = env.database_url.get_secret_value()
            out.append(dsn)
            password = re.match(r"^[a-z]+://[^:/@]+:([^@]+)@", dsn)
            if password:
                out.append(password.group(1))
        return sorted(out, key=len, reverse=True)

    def _scrub(self, text: str) -> str:
        return scrub(text, *self._secrets())

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Every failure becomes an ApplicationError: one scrubbed sentence, no chained cause."""
        try:
            yield
        except ApplicationError:
            raise
        except asyncio.CancelledError:
            raise
        except DatabaseUnavailable as exc:
            raise ApplicationError(f"{what}: {self._scrub(str(exc))}", type="DatabaseUnavailable") from None
        except LedgerShapeError as exc:
            raise ApplicationError(f"{what}: {self._scrub(str(exc))}", type="LedgerShapeError",
                                   non_retryable=True) from None
        except Exception as exc:  # noqa: BLE001 - classified below
            message = self._scrub(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
            if is_transient(exc):
                raise ApplicationError(f"{what}: database connection or transient error: {message}",
                                       type="TransientDatabaseError") from None
            if isinstance(exc, asyncpg.PostgresError):
                raise ApplicationError(f"{what}: {message}", type="DatabaseError", non_retryable=True) from None
            raise ApplicationError(f"{what}: {exc.__class__.__name__}: {message}", type="InternalError",
                                   non_retryable=True) from None

    def _timeouts(self, env: EnvironmentSettings) -> tuple[float, float]:
        lock = env.lock_timeout if "lock_timeout" in env.model_fields_set else self.settings.lock_timeout
        stmt = env.statement_timeout if "statement_timeout" in env.model_fields_set else self.settings.statement_timeout
        return pg_interval_seconds(lock), pg_interval_seconds(stmt)

    @contextlib.asynccontextmanager
    async def _connection(self, environment: str) -> AsyncIterator[asyncpg.Connection]:
        env = self._env(environment)
        lock, stmt = self._timeouts(env)
        conn = await connect(env.database_url.get_secret_value(), lock_timeout=lock, statement_timeout=stmt)
        # A worker killed mid-statement leaves its backend running the statement, holding Prisma's lock
        # and the transaction, until it next writes to the dead socket (hours for a big index build);
        # PostgreSQL >= 14 can check the socket while a query runs and cancel it. Older servers: skipped.
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute(f"SET client_connection_check_interval = '{CONNECTION_CHECK_INTERVAL}'")
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
            if not conn.is_closed():
                conn.terminate()

    @contextlib.asynccontextmanager
    async def _advisory_lock(self, conn: asyncpg.Connection, environment: str) -> AsyncIterator[None]:
        """Prisma's session lock; polled with pg_try_advisory_lock so the wait is bounded."""
        limit = self.settings.advisory_lock_timeout.total_seconds()
        deadline = time.monotonic() + limit
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY):
            if time.monotonic() >= deadline:
                raise ApplicationError(
                    f"another migration (a Prisma CLI or another run) has held the migration lock "
                    f"pg_advisory_lock({ADVISORY_LOCK_KEY}) on {environment} for more than {limit:g}s; "
                    "nothing was changed",
                    type="AdvisoryLockTimeout",
                )
            await asyncio.sleep(0.25)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)

    def _ledger_changed(self, plan_digest: str, rows: list[LedgerRow], inp_marks, environment: str) -> str | None:
        if ledger_digest(rows, inp_marks) == plan_digest:
            return None
        return (
            f"{TABLE} on {environment} changed since the plan was made (someone ran a migration or edited the "
            "table); nothing was changed by this stage — start a new run to plan again"
        )

    # -- preflight ------------------------------------------------------------------------------
    @activity.defn(name="preflight")
    async def preflight(self, request: DeployRequest) -> PreflightResult:
        """Read-only: server version, ledger, diagnosis, SQL analysis, evidence; the plan and the policy."""
        from activities.evidence import existing_insert_keys, failed_migration_evidence
        from domain.prisma.diagnosis import diagnose
        from domain.sql.parse import SqlParseError, split_statements
        from domain.sql.rules import analyze_migration

        env = self._env(request.environment)
        with self._errors(f"preflight on {request.environment}"):
            async with self._connection(request.environment) as conn, Heartbeater(lambda: {"stage": "preflight"}):
                server_version = await conn.fetchval("SHOW server_version")
                major = int(await conn.fetchval("SHOW server_version_num")) // 10000
                snapshot = await MigrationLedger(conn).read()
                diagnosis = diagnose(request.bundle.migrations, snapshot)
                states = {m.name: str(m.state) for m in diagnosis.migrations}
                analyses, parse_blockers = {}, []
                for m in request.bundle.migrations:
                    try:
                        analyses[m.name] = analyze_migration(
                            m.name, m.sql, default_schema=snapshot.schema_name, server_version=major
                        )
                    except SqlParseError as exc:
                        if states.get(m.name) in ("pending", "failed"):
                            parse_blockers.append(f"cannot analyse {m.name}: {exc}")
                    # A typo in verify.sql would otherwise surface only after deploy, as a rollback.
                    if m.verify_sql and m.verify_sql.strip():
                        try:
                            split_statements(m.verify_sql)
                        except SqlParseError as exc:
                            parse_blockers.append(f"cannot parse verify.sql of {m.name}: {exc}")
                evidence = {}
                for name, state in states.items():
                    if state == "failed" and name in analyses:
                        evidence[name] = await failed_migration_evidence(conn, analyses[name], snapshot.schema_name)
                # A derived DELETE of inserted keys only undoes the migration if those keys are new.
                unsafe: dict[str, str] = {}
                for m in request.bundle.migrations:
                    if states.get(m.name) not in ("pending", "failed") or m.name not in analyses:
                        continue
                    if m.down_sql or not analyses[m.name].derived_rollback:
                        continue
                    existing = await existing_insert_keys(conn, m.sql, snapshot.schema_name)
                    if existing:
                        unsafe[m.name] = "rows it inserts already exist (" + ", ".join(existing[:3]) + ")"
                for name, why in unsafe.items():
                    analyses[name] = analyses[name].model_copy(
                        update={"derived_rollback": None, "rollback_blockers": [why]}
                    )
                drift = await self._drift(env, request, snapshot, states, conn)
        plan = build_plan(
            request,
            diagnosis,
            analyses,
            evidence,
            snapshot=snapshot,
            required_approvals=env.required_approvals,
            server_version=str(server_version),
        )
        from domain.bundle import BOM, bundle_problems

        runnable = [n for n, st in states.items() if st in ("pending", "failed")]
        problems = bundle_problems(request.bundle.migrations, runnable)
        # A BOM is said once, plainly, rather than as a parse error at an invisible character.
        bom = {m.name for m in request.bundle.migrations if m.sql.startswith(BOM)}
        parse_blockers = [b for b in parse_blockers if not any(b.startswith(f"cannot analyse {n}:") for n in bom)]
        plan.blockers[:0] = problems
        plan.blockers.extend(parse_blockers)
        if drift is not None:
            plan.drift = drift.model_dump(mode="json")
            plan.notes.append(f"drift proof: {drift.summary}")
            if drift.verdict == "unexplained_drift":
                # The live schema holds changes no migration explains: approvers must look harder.
                plan.risk = Risk.high
                plan.required_approvals = max(plan.required_approvals, int(env.required_approvals.get("high", 1)))
        plan = fit_to_budget(plan)
        too_large = result_too_large(plan, sum((m.verify_sql or "").count(";") + 1 for m in request.bundle.migrations
                                               if m.verify_sql and m.verify_sql.strip()))
        if too_large:
            plan.blockers.append(too_large)
        policy = ApprovalPolicy(
            gates=list(env.gates),
            approvers=list(env.approvers),
            allow_self_approval=env.allow_self_approval,
            approval_timeout=env.approval_timeout,
            required_approvals=plan.required_approvals,
        )
        activity.logger.info(
            "preflight done", extra={"environment": request.environment, "fingerprint": plan.fingerprint,
                                     "blockers": len(plan.blockers)}
        )
        return PreflightResult(plan=plan, policy=policy, heartbeat_timeout=self.settings.heartbeat_timeout)

    async def _drift(self, env: EnvironmentSettings, request: DeployRequest, snapshot: LedgerSnapshot,
                     states: dict[str, str], conn: asyncpg.Connection):
        """Replay the applied local history into a shadow database on the same server and compare
        catalogs (activities/drift.py). `auto` does it when the ledger holds phantoms or edited
        migrations, the cases where the folder alone cannot say what the schema is."""
        from activities.drift import drift_proof

        phantoms = [n for n, st in states.items() if st == "missing_locally"]
        wanted = env.drift_proof == "always" or (
            env.drift_proof == "auto" and (phantoms or any(st == "modified" for st in states.values()))
        )
        if not wanted:
            return None
        bundle = {m.name: m for m in request.bundle.migrations}
        replay: list[tuple[str, str]] = []
        for row in snapshot.rows:
            if row.is_applied and row.migration_name in bundle and all(n != row.migration_name for n, _ in replay):
                replay.append((row.migration_name, bundle[row.migration_name].sql))
        activity.heartbeat({"stage": "drift proof", "migrations": len(replay)})
        return await drift_proof(env.database_url.get_secret_value(), replay, phantoms,
                                 live_conn=conn, schema=snapshot.schema_name)

    # -- resolve --------------------------------------------------------------------------------
    @activity.defn(name="resolve")
    async def resolve(self, inp: ResolveInput) -> ResolveResult:
        """Prisma's `migrate resolve` for the plan's failed migrations, in one transaction."""
        at = inp.marks.resolve_at or utcnow()
        with self._errors(f"resolve on {inp.environment}"):
            async with self._connection(inp.environment) as conn, Heartbeater(lambda: {"stage": "resolve"}), \
                    self._advisory_lock(conn, inp.environment):
                ledger = MigrationLedger(conn)
                before = await ledger.read()
                changed = self._ledger_changed(inp.plan.ledger_digest, before.rows, inp.marks, inp.environment)
                if changed:
                    return ResolveResult(stopped=changed)
                existing = {r.id for r in before.rows}
                async with conn.transaction():
                    for m in inp.plan.migrations:
                        if m.action == Action.reapply:
                            await ledger.mark_rolled_back(m.name, at)
                        elif m.action == Action.resolve_applied:
                            row_id = inp.marks.resolve_ids[m.name]
                            if row_id not in existing:
                                await ledger.resolve_applied(m.name, m.checksum or "", at, row_id)
                after = await ledger.read()
        decisions = []
        for m in inp.plan.migrations:
            if m.action not in (Action.reapply, Action.resolve_applied):
                continue
            marked = [r.id for r in after.rows if r.migration_name == m.name and r.rolled_back_at == at
                      and r.id not in inp.marks.own_ids()]
            inserted = inp.marks.resolve_ids.get(m.name) if m.action == Action.resolve_applied else None
            decisions.append(
                ResolveDecision(
                    name=m.name,
                    resolution="rolled_back" if m.action == Action.reapply else "applied",
                    reason=m.reason,
                    ledger_ids=marked + ([inserted] if inserted else []),
                    marked_ids=marked,
                    inserted_id=inserted,
                )
            )
        return ResolveResult(decisions=decisions)

    # -- deploy ---------------------------------------------------------------------------------
    @activity.defn(name="deploy")
    async def deploy(self, inp: DeployInput) -> DeployResult:
        """Apply the planned migrations in order under Prisma's lock; exactly once across retries."""
        total = len(inp.migrations)
        progress = {"done": 0, "total": total, "current": None}
        planned = {m.name: m for m in inp.plan.migrations}
        attempt = activity.info().attempt
        with self._errors(f"deploy on {inp.environment}"):
            async with self._connection(inp.environment) as conn, Heartbeater(lambda: dict(progress)):
                async with self._advisory_lock(conn, inp.environment):
                    ledger = MigrationLedger(conn)
                    await ledger.ensure_table()
                    snapshot = await ledger.read()
                    changed = self._ledger_changed(inp.plan.ledger_digest, snapshot.rows, inp.marks, inp.environment)
                    if changed:
                        return DeployResult(stopped=changed)
                    own = {r.id: r for r in snapshot.rows if r.id in inp.marks.deploy_ids.values()}
                    result = DeployResult()
                    for index, mig in enumerate(inp.migrations):
                        progress.update(done=index, current=mig.name)
                        row_id = inp.marks.deploy_ids[mig.name]
                        pm = planned[mig.name]
                        row = own.get(row_id)
                        if row is not None and row.is_applied:
                            result.applied.append(_applied_from_row(row))
                            continue
                        if row is not None and row.is_failed and row.logs is not None:
                            result.failed = FailedMigration(name=mig.name, ledger_id=row_id, error=row.logs)
                            return result
                        if row is not None and row.is_rolled_back:
                            result.stopped = f"{mig.name}: this run's row {row_id} was already rolled back"
                            return result
                        if pm.in_transaction:
                            outcome = await self._apply_in_transaction(ledger, mig, row_id)
                        else:
                            outcome = await self._apply_outside_transaction(ledger, mig, pm, row_id, row)
                        if isinstance(outcome, AppliedMigration):
                            result.applied.append(outcome)
                        elif isinstance(outcome, FailedMigration):
                            result.failed = outcome
                            return result
                        else:
                            result.needs_attention = outcome
                            return result
                        if self.hooks.crash_after is not None and attempt == 1 and len(result.applied) >= self.hooks.crash_after:
                            raise ApplicationError("simulated worker crash after a commit (test hook)",
                                                   type="SimulatedCrash")
                    progress.update(done=total, current=None)
                    return result

    async def _apply_in_transaction(
        self, ledger: MigrationLedger, mig: BundledMigration, row_id: str
    ) -> AppliedMigration | FailedMigration:
        conn = ledger.conn
        started = utcnow()
        t0 = time.perf_counter()
        try:
            async with conn.transaction():
                if _has_statements(mig.sql):  # Prisma records an empty migration as applied, so do we
                    await conn.execute(mig.sql)  # no arguments: simple query protocol, the whole script at once
                finished = utcnow()
                await ledger.insert_applied(mig.name, mig.checksum, started, finished, row_id)
        except Exception as exc:  # noqa: BLE001
            if is_transient(exc) or not isinstance(exc, asyncpg.PostgresError):
                raise
            logs = self._scrub(prisma_error_logs(mig.name, exc))
            await ledger.insert_failed(mig.name, mig.checksum, started, logs, row_id)
            activity.logger.warning("migration failed", extra={"migration": mig.name, "sqlstate": exc.sqlstate})
            return FailedMigration(name=mig.name, ledger_id=row_id, error=self._scrub(f"{exc.sqlstate}: {exc}"))
        return AppliedMigration(name=mig.name, checksum=mig.checksum, ledger_id=row_id, started_at=started,
                                finished_at=finished, duration_ms=(time.perf_counter() - t0) * 1000)

    async def _apply_outside_transaction(
        self, ledger: MigrationLedger, mig: BundledMigration, pm: PlannedMigration, row_id: str, row: LedgerRow | None
    ) -> AppliedMigration | FailedMigration | str:
        """Prisma's sequence for statements that cannot run in a transaction: started row, each
        statement on its own, finished. A crash in between leaves a started row: re-run only when
        the migration is idempotent, otherwise a person must look."""
        from domain.sql.parse import split_statements
        from domain.sql.rules import analyze_migration

        conn = ledger.conn
        if row is not None:  # our started row, unfinished, no failure recorded: a crash mid-way
            if not analyze_migration(mig.name, mig.sql).idempotent:
                return (
                    f"{mig.name} runs outside a transaction and an earlier attempt of this run stopped part-way "
                    f"(ledger row {row_id} started, never finished); it is not idempotent, so it was not re-run: "
                    "check which of its statements took effect, complete or undo them, then resolve it"
                )
            started = row.started_at
        else:
            started = utcnow()
            await ledger.insert_started(mig.name, mig.checksum, started, row_id)
        t0 = time.perf_counter()
        done = 0
        for stmt in split_statements(mig.sql):
            try:
                await conn.execute(stmt.text)
            except Exception as exc:  # noqa: BLE001
                if not isinstance(exc, asyncpg.PostgresError) or isinstance(exc, asyncpg.PostgresConnectionError):
                    raise
                logs = self._scrub(prisma_error_logs(mig.name, exc))
                await ledger.record_failure(row_id, logs)
                return FailedMigration(name=mig.name, ledger_id=row_id, error=self._scrub(f"{exc.sqlstate}: {exc}"),
                                       partial=done > 0, statements_done=done)
            done += 1
        finished = utcnow()
        await ledger.mark_finished(row_id, finished)
        return AppliedMigration(name=mig.name, checksum=mig.checksum, ledger_id=row_id, started_at=started,
                                finished_at=finished, duration_ms=(time.perf_counter() - t0) * 1000)

    # -- verify ---------------------------------------------------------------------------------
    @activity.defn(name="verify")
    async def verify(self, inp: VerifyInput) -> VerifyResult:
        """Read-only checks: each bundle migration applied exactly once, planned objects exist,
        every verify.sql statement returns rows and no false value."""
        from domain.sql.parse import SqlParseError, split_statements

        checks: list[VerifyCheck] = []
        with self._errors(f"verify on {inp.environment}"):
            async with self._connection(inp.environment) as conn, Heartbeater(lambda: {"stage": "verify"}):
                snapshot = await MigrationLedger(conn).read()
                for mig in inp.migrations:
                    rows = [r for r in snapshot.rows if r.migration_name == mig.name]
                    applied = [r for r in rows if r.is_applied]
                    failed = [r for r in rows if r.is_failed]
                    ok = len(applied) == 1 and not failed and applied[0].checksum == mig.checksum
                    detail = f"{len(applied)} applied row(s), {len(failed)} unfinished"
                    if applied and applied[-1].checksum != mig.checksum:
                        detail += "; checksum differs from the bundle"
                    checks.append(VerifyCheck(check="applied exactly once", migration=mig.name, passed=ok, detail=detail))
                expected = [(pm.name, obj) for pm in inp.plan.migrations
                            if pm.action in (*RUNS_IN_DEPLOY, Action.resolve_applied, Action.already_applied)
                            for obj in pm.creates]
                exists = await _objects_exist(conn, [obj for _, obj in expected])
                for name, obj in expected:
                    if obj in exists:
                        checks.append(VerifyCheck(check="object exists", migration=name, passed=exists[obj], detail=obj))
                for mig in inp.migrations:
                    if not (mig.verify_sql and mig.verify_sql.strip()):
                        continue
                    try:
                        statements = split_statements(mig.verify_sql)
                    except SqlParseError as exc:
                        checks.append(VerifyCheck(check="verify.sql", migration=mig.name, passed=False, detail=str(exc)))
                        continue
                    for stmt in statements:
                        checks.append(await self._verify_statement(conn, mig.name, stmt.text, stmt.line))
        return VerifyResult(checks=checks)

    async def _verify_statement(self, conn: asyncpg.Connection, name: str, sql: str, line: int) -> VerifyCheck:
        label = f"verify.sql line {line}"
        try:
            async with conn.transaction(readonly=True):
                rows = await conn.fetch(sql)
        except asyncpg.PostgresError as exc:
            if is_transient(exc):
                raise
            return VerifyCheck(check=label, migration=name, passed=False, detail=self._scrub(f"error: {exc}"))
        if not rows:
            return VerifyCheck(check=label, migration=name, passed=False, detail="returned no rows")
        falses = sum(1 for r in rows for v in r.values() if v is False)
        if falses:
            return VerifyCheck(check=label, migration=name, passed=False,
                               detail=f"{falses} false value(s) in {len(rows)} row(s)")
        return VerifyCheck(check=label, migration=name, passed=True, detail=f"{len(rows)} row(s), none false")

    # -- compensate -----------------------------------------------------------------------------
    @activity.defn(name="compensate")
    async def compensate(self, inp: CompensateInput) -> CompensateResult:
        """Undo this run, newest first: each applied migration's rollback with its ledger row marked
        rolled back (one transaction), a failed row of this run marked rolled back, then the resolve
        decisions restored. Idempotent: finished steps are recognised from the ledger."""
        result = CompensateResult()
        with self._errors(f"compensate on {inp.environment}"):
            async with self._connection(inp.environment) as conn, Heartbeater(lambda: {"compensating": True}):
                async with self._advisory_lock(conn, inp.environment):
                    ledger = MigrationLedger(conn)
                    if not await ledger.table_exists():
                        return result
                    rows = {r.id: r for r in (await ledger.read()).rows}
                    for index, step in enumerate(inp.undo):
                        row = rows.get(step.ledger_id)
                        if row is None:
                            continue  # this run never got to it
                        blocked = await self._undo_one(ledger, step, row, result)
                        if blocked:
                            remaining = [s.name for s in inp.undo[index + 1:]
                                         if s.ledger_id in rows and rows[s.ledger_id].is_applied]
                            result.complete = False
                            result.human_action = blocked + (
                                f"; the run did not undo anything older either (still applied by this run: "
                                f"{', '.join(remaining)})" if remaining else ""
                            ) + ("; resolve decisions were left as they are" if inp.marks.resolve_at else "")
                            return result
                    await self._restore_resolve(ledger, inp, rows, result)
        return result

    async def _undo_one(self, ledger: MigrationLedger, step: UndoStep, row: LedgerRow,
                        result: CompensateResult) -> str | None:
        conn = ledger.conn
        if row.is_rolled_back:
            result.steps.append(CompensationStep(name=step.name, action="already rolled back", ok=True,
                                                 detail=f"row {row.id}"))
            return None
        if row.is_failed:
            if row.applied_steps_count == 0 and (step.in_transaction or step.failed_without_effects):
                # Its transaction rolled back (or it never ran a statement): nothing to undo in the schema.
                await ledger.mark_row_rolled_back(row.id)
                result.steps.append(CompensationStep(name=step.name, action="marked failed row rolled back", ok=True,
                                                     detail="the failed attempt left no changes (its transaction rolled back)"))
                return None
            result.steps.append(CompensationStep(name=step.name, action="blocked", ok=False,
                                                 detail="failed part-way outside a transaction"))
            return (f"{step.name} failed part-way outside a transaction (ledger row {row.id}); some of its statements "
                    "took effect: undo or complete them by hand, then run prisma migrate resolve for it")
        if not step.rollback_sql:
            result.steps.append(CompensationStep(name=step.name, action="blocked", ok=False,
                                                 detail="no down.sql and no derivable rollback"))
            return (f"{step.name} was applied by this run (ledger row {row.id}) and has no rollback (no down.sql, "
                    "none derivable): undo it by hand, then mark it rolled back "
                    f"(prisma migrate resolve --rolled-back {step.name} after editing finished_at, or a new migration)")
        what = "ran down.sql" if step.rollback == "down.sql" else "ran derived rollback"
        try:
            if step.in_transaction:
                async with conn.transaction():
                    await conn.execute(step.rollback_sql)
                    await ledger.mark_row_rolled_back(row.id)
            else:
                from domain.sql.parse import split_statements

                for stmt in split_statements(step.rollback_sql):
                    await conn.execute(stmt.text)
                await ledger.mark_row_rolled_back(row.id)
        except asyncpg.PostgresError as exc:
            if is_transient(exc):
                raise
            message = self._scrub(f"{exc.sqlstate}: {exc}")
            result.steps.append(CompensationStep(name=step.name, action=f"{what} failed", ok=False, detail=message))
            return (f"the rollback of {step.name} failed ({message}); it stays applied (ledger row {row.id}): "
                    "fix and run its rollback by hand, then mark it rolled back")
        result.steps.append(CompensationStep(name=step.name, action=what, ok=True, detail=f"row {row.id} rolled back"))
        return None

    async def _restore_resolve(self, ledger: MigrationLedger, inp: CompensateInput, rows: dict[str, LedgerRow],
                               result: CompensateResult) -> None:
        at = inp.marks.resolve_at
        own = inp.marks.own_ids()
        marked = [i for i, r in rows.items() if at is not None and r.rolled_back_at == at and i not in own]
        inserted = [i for i in inp.marks.resolve_ids.values() if i in rows]
        if not marked and not inserted:
            return
        async with ledger.conn.transaction():
            if marked:
                await ledger.restore_rows(marked)
            if inserted:
                await ledger.delete_rows(inserted)
        names = sorted({rows[i].migration_name for i in marked + inserted})
        result.steps.append(CompensationStep(
            name=", ".join(names), action="restored resolve", ok=True,
            detail=(f"{len(marked)} failed row(s) un-marked" + (f", {len(inserted)} applied row(s) removed" if inserted else ""))))


def _has_statements(sql: str) -> bool:
    """False for an empty or comment-only script (asyncpg's execute() fails on PostgreSQL's
    EmptyQueryResponse); unparseable SQL counts as statements, so PostgreSQL reports the error."""
    from domain.sql.parse import SqlParseError, split_statements

    try:
        return bool(split_statements(sql))
    except SqlParseError:
        return True


def _applied_from_row(row: LedgerRow) -> AppliedMigration:
    finished = row.finished_at or row.started_at
    return AppliedMigration(name=row.migration_name, checksum=row.checksum, ledger_id=row.id, started_at=row.started_at,
                            finished_at=finished, duration_ms=(finished - row.started_at) / timedelta(milliseconds=1))


# One query per kind of object, for all objects of that kind at once.
_BATCH_QUERIES = {
    "relation": "SELECT n.nspname, c.relname, '' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    "type": "SELECT n.nspname, t.typname, '' FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
            " WHERE (n.nspname, t.typname) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    "function": "SELECT n.nspname, p.proname, '' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE (n.nspname, p.proname) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    "schema": "SELECT nspname, '', '' FROM pg_namespace WHERE nspname = ANY($1::text[])",
    "extension": "SELECT extname, '', '' FROM pg_extension WHERE extname = ANY($1::text[])",
    "constraint": "SELECT n.nspname, c.relname, k.conname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
                  " JOIN pg_namespace n ON n.oid = c.relnamespace"
                  " WHERE (n.nspname, c.relname, k.conname) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
    "column": "SELECT n.nspname, c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
              " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT a.attisdropped"
              " AND (n.nspname, c.relname, a.attname::text) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
    "trigger": "SELECT n.nspname, c.relname, g.tgname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid"
               " JOIN pg_namespace n ON n.oid = c.relnamespace"
               " WHERE (n.nspname, c.relname, g.tgname) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
}
_KIND_GROUP = {
    "table": "relation", "index": "relation", "sequence": "relation", "view": "relation",
    "materialized_view": "relation", "matview": "relation",
    "type": "type", "enum": "type", "domain": "type",
    "function": "function", "procedure": "function",
    "schema": "schema", "extension": "extension",
    "constraint": "constraint", "column": "column", "trigger": "trigger",
}
_PARTS = {"relation": 2, "type": 2, "function": 2, "schema": 1, "extension": 1, "constraint": 3, "column": 3,
          "trigger": 3}


def _object_key(spec: str) -> tuple[str, tuple[str, ...]] | None:
    """`kind:schema.name` / `kind:schema.table.name` (domain.sql.rules `creates`) -> (group, parts),
    or None when it cannot be checked."""
    kind, _, name = spec.partition(":")
    group = _KIND_GROUP.get(kind)
    if group is None or not name or "<unnamed>" in name:
        return None
    parts = tuple(name.split(".", _PARTS[group] - 1))
    if len(parts) != _PARTS[group]:
        return None
    return group, parts


async def _objects_exist(conn: asyncpg.Connection, specs: list[str]) -> dict[str, bool]:
    """Which of `specs` exist; specs that cannot be checked are left out."""
    wanted: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for spec in specs:
        key = _object_key(spec)
        if key is not None:
            wanted.setdefault(key[0], []).append((spec, key[1]))
    found: dict[str, bool] = {}
    for group, items in wanted.items():
        n = _PARTS[group]
        columns = [[parts[i] for _, parts in items] for i in range(n)]
        rows = await conn.fetch(_BATCH_QUERIES[group], *columns)
        present = {tuple(r[i] for i in range(n)) for r in rows}
        for spec, parts in items:
            found[spec] = parts in present
    return found
