"""The deploy stage's activity (type name `deploy`): apply the planned migrations, exactly once,
each one exactly as Prisma's engine runs it: the whole migration.sql as ONE simple-query script.

Under Prisma's advisory lock, after checking that nobody changed the ledger since the plan, each
migration runs the way its file dictates (domain/sql/script.py, the plan's `execution`):

- `transaction` (no transaction control, or BEGIN ... COMMIT around the whole file): the script,
  its backups and its ledger row commit in ONE transaction, the file's own BEGIN/COMMIT blanked
  out (same text length, so PostgreSQL's error positions still match the file). It is applied with
  its row or not at all, so a retried attempt skips exactly the migrations whose rows it finds
  (row ids chosen by the workflow). A failure rolls everything back and is recorded as Prisma's
  failed row, in one statement, with the real error.
- `alone` (its only statement refuses transaction blocks, e.g. CREATE INDEX CONCURRENTLY):
  Prisma's sequence: started row, the statement, finished. A failed index build's INVALID index
  (its only effect) is dropped before the failure is recorded. A crash leaves the started row;
  the retry looks at the index (valid: finished; INVALID: dropped and built again).
- `script` (the file's own COMMITs split it): sent as it is after the started row; a crash or an
  error may leave some of its transactions committed, which the run reports for a person.

A migration's own SQL error is returned (never retried); connection loss and serialization
failures are raised as retryable errors. Each piece is sent by the lock-polite executor
(activities/execute.py): short lock timeouts, retried within the environment's lock budget, never
queueing behind a long transaction. Every migration's wait is kept with it (`lock_wait`: attempts,
seconds, the sessions that blocked it), and the live wait is in the heartbeat details. When the
budget runs out the migration is returned as failed with the blocking sessions named: nothing of
it was changed (no ledger row is left), except by a statement PostgreSQL runs in several
transactions (the CONCURRENTLY family, a file with its own COMMITs), recorded as Prisma records a
failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import backup, bookkeeping
from activities.catalog import read_schema_model
from activities.execute import LockPoliteExecutor, executor_for, lock_details, lock_wait, locks_of, statements_of
from activities.failures import is_transient, prisma_error_logs
from activities.heartbeat import Heartbeater
from activities.index_builds import drop_if_invalid, index_state, index_target
from activities.ledger import MigrationLedger, utcnow
from activities.target import OBSERVER_APPLICATION_NAME, TargetDatabases, ledger_changed
from domain.lock_waits import LockBudgetExhausted
from domain.models import (
    Action,
    AppliedMigration,
    BundledMigration,
    DeployInput,
    DeployResult,
    FailedMigration,
    PlannedMigration,
)
from domain.prisma.errors import migration_failed_logs
from domain.prisma.ledger import LedgerRow
from domain.sql.parse import SqlParseError, split_statements
from domain.sql.repeatable import not_repeatable
from domain.sql.script import ExecutionMode, script_plan
from domain.undo import run_key


class _Run:
    """One migration's execution on the deploy's connection."""

    def __init__(self, targets: TargetDatabases, ledger: MigrationLedger, executor: LockPoliteExecutor,
                 mig: BundledMigration, pm: PlannedMigration, row_id: str, bookkeeping: bool) -> None:
        self.targets, self.ledger, self.executor = targets, ledger, executor
        self.mig, self.pm, self.row_id = mig, pm, row_id
        self.conn = ledger.conn
        self.bookkeeping = bookkeeping  # the _migrator_backup schema is there to write to

    def _failed(self, exc: asyncpg.PostgresError, **extra: object) -> tuple[str, FailedMigration]:
        logs = self.targets.scrub(prisma_error_logs(self.mig.name, exc))
        activity.logger.warning("migration failed", extra={"migration": self.mig.name, "sqlstate": exc.sqlstate})
        error = self.targets.scrub(f"{exc.sqlstate}: {exc}")
        return logs, FailedMigration(name=self.mig.name, ledger_id=self.row_id, error=error, **extra)

    def _applied(self, started: datetime, finished: datetime, t0: float) -> AppliedMigration:
        return AppliedMigration(name=self.mig.name, checksum=self.mig.checksum, ledger_id=self.row_id,
                                started_at=started, finished_at=finished,
                                duration_ms=(time.perf_counter() - t0) * 1000,
                                lock_wait=lock_wait(self.executor.report))

    def _out_of_budget(self, exc: LockBudgetExhausted, **extra: object) -> FailedMigration:
        """The lock budget ran out: the failure, with the blocking sessions named."""
        activity.logger.warning("lock budget exhausted", extra={"migration": self.mig.name,
                                                                "blockers": exc.report.seen_pids})
        text = str(exc).removeprefix(f"{self.mig.name}: ").replace("; nothing was changed", "; nothing of it was changed")
        return FailedMigration(name=self.mig.name, error=self.targets.scrub(text), lock_wait=lock_wait(exc.report), **extra)

    def _budget_logs(self, exc: LockBudgetExhausted) -> str:
        """Prisma's `logs` for a failure that was a lock timeout (SQLSTATE 55P03)."""
        return self.targets.scrub(migration_failed_logs(self.mig.name, "55P03", str(exc)))

    async def in_transaction(self) -> AppliedMigration | FailedMigration | _BackupFailed:
        try:
            statements = split_statements(self.mig.sql)
            body = script_plan(statements, self.mig.sql).body if statements else ""
        except SqlParseError:  # the plan stops unparseable SQL first; PostgreSQL would report it as Prisma's run
            body = self.mig.sql
        started = utcnow()
        t0 = time.perf_counter()
        finished: list[datetime] = []

        async def backups(conn: asyncpg.Connection) -> None:
            try:
                await backup.take(conn, self.row_id, self.mig.name, self.pm.backups)
            except asyncpg.LockNotAvailableError:
                raise  # the attempt's short lock timeout: the executor tries the whole attempt again
            except asyncpg.PostgresError as exc:
                raise _BackupFailed(self.targets.scrub(f"{exc.sqlstate}: {exc}")) from None

        async def ledger_row(conn: asyncpg.Connection) -> None:
            finished.append(utcnow())
            await self.ledger.insert_applied(self.mig.name, self.mig.checksum, started, finished[-1], self.row_id)
            if self.bookkeeping:
                await bookkeeping.record_write(conn, self.row_id)

        async def attempt() -> None:  # one transaction: backups, the script, the ledger row
            async with self.conn.transaction():
                await backups(self.conn)
                if body.strip():
                    await self.conn.execute(body)  # no arguments: one simple-query script, as Prisma sends it
                await ledger_row(self.conn)

        try:
            await self.executor.run_atomic(attempt, locks_of(body), what=self.mig.name)
        except _BackupFailed as exc:
            return exc
        except LockBudgetExhausted as exc:  # its transaction never committed: no trace, no ledger row
            return self._out_of_budget(exc)
        except asyncpg.PostgresError as exc:
            if is_transient(exc):
                raise
            logs, failed = self._failed(exc)
            await self.ledger.insert_failed(self.mig.name, self.mig.checksum, started, logs, self.row_id)
            return failed
        return self._applied(started, finished[-1], t0)

    async def alone(self, row: LedgerRow | None) -> AppliedMigration | FailedMigration | str:
        (stmt,) = split_statements(self.mig.sql)
        target = index_target(stmt.kind, stmt.node())
        if row is not None:  # our started row, no error recorded: an earlier attempt stopped mid-way
            state = await index_state(self.conn, target) if target else None
            if target and state is not None and state.valid:
                return await self._finish(row.started_at, time.perf_counter())  # the build had completed
            if target and state is not None:
                await drop_if_invalid(self.conn, target, None)  # the interrupted build's leftover
            elif not target and not_repeatable(stmt):
                return (f"{self.mig.name} runs outside a transaction and an earlier attempt of this run stopped "
                        f"part-way (ledger row {self.row_id} started, never finished); its statement is not safe "
                        f"to repeat ({not_repeatable(stmt)}), so it was not re-run: check whether it took effect, "
                        "then resolve it (prisma migrate resolve --applied or --rolled-back)")
            started = row.started_at
        else:
            if target and self.pm.action == Action.reapply:
                await drop_if_invalid(self.conn, target, None)  # the failed attempt's leftover (see the plan)
            started = utcnow()
            await self.ledger.insert_started(self.mig.name, self.mig.checksum, started, self.row_id)
        before = await index_state(self.conn, target) if target else None
        t0 = time.perf_counter()
        statements = statements_of(self.mig.sql)
        # One statement is its own transaction, retried politely; the CONCURRENTLY family may commit
        # part of its work before it waits, so it gets one patient attempt.
        several = not statements or any(st.multi_transaction for st in statements)
        try:
            await self.executor.run_statement(self.mig.sql, locks_of(self.mig.sql), what=self.mig.name,
                                              multi_transaction=several)
        except LockBudgetExhausted as exc:
            if not exc.changed:  # the statement never ran: the database as before it, its started row removed
                await self.ledger.delete_rows([self.row_id])
                return self._out_of_budget(exc)
            dropped = await drop_if_invalid(self.conn, target, before) if target else False
            await self.ledger.record_failure(self.row_id, self._budget_logs(exc))
            return self._out_of_budget(exc, ledger_id=self.row_id, invalid_index_dropped=dropped, partial=not target)
        except asyncpg.PostgresError as exc:
            if is_transient(exc):
                raise
            dropped = await drop_if_invalid(self.conn, target, before) if target else False
            logs, failed = self._failed(exc, invalid_index_dropped=dropped)
            await self.ledger.record_failure(self.row_id, logs)
            return failed
        return await self._finish(started, t0)

    async def script(self, row: LedgerRow | None) -> AppliedMigration | FailedMigration | str:
        if row is not None:
            return (f"{self.mig.name} commits in several transactions (its own COMMITs) and an earlier attempt "
                    f"of this run stopped part-way (ledger row {self.row_id} started, never finished): some of "
                    "its transactions may have committed, so it was not re-run: check what took effect, complete "
                    "or undo it, then resolve it (prisma migrate resolve --applied or --rolled-back)")
        started = utcnow()

        async with self.conn.transaction():  # its backups and its started row, before the script
            await backup.take(self.conn, self.row_id, self.mig.name, self.pm.backups)
            await self.ledger.insert_started(self.mig.name, self.mig.checksum, started, self.row_id)
        t0 = time.perf_counter()
        try:
            await self.executor.run_statement(self.mig.sql, locks_of(self.mig.sql), what=self.mig.name,
                                              multi_transaction=True)
        except LockBudgetExhausted as exc:  # its transactions before the one that waited may have committed
            await self.ledger.record_failure(self.row_id, self._budget_logs(exc))
            return self._out_of_budget(exc, ledger_id=self.row_id, partial=True)
        except asyncpg.PostgresError as exc:
            if isinstance(exc, asyncpg.PostgresConnectionError):
                raise
            if self.conn.is_in_transaction():  # the file's own BEGIN left the session in the failed block
                await self.conn.execute("ROLLBACK")
            logs, failed = self._failed(exc, partial=True)
            await self.ledger.record_failure(self.row_id, logs)
            return failed
        return await self._finish(started, t0)

    async def _finish(self, started: datetime, t0: float) -> AppliedMigration:
        finished = utcnow()
        await self.ledger.mark_finished(self.row_id, finished)
        return self._applied(started, finished, t0)


class ApplyActivities:
    def __init__(self, targets: TargetDatabases) -> None:
        self.targets = targets

    async def _prepare(self, conn: asyncpg.Connection, schema_now: asyncio.Task | None, inp: DeployInput) -> bool:
        """Before this run's first change: the bookkeeping schema, expired backups dropped, and the
        schema as it is now (`schema_now`, read on the observer's session meanwhile; kept by the
        first attempt; compensation returns to it). False when the role may not create the
        bookkeeping schema: the run goes on without it unless it must back something up
        (compensation then judges every row as the application's, and cannot compare the schema
        with the one before)."""
        if not await bookkeeping.ensure(conn):
            if any(pm.backups for pm in inp.plan.migrations):
                raise bookkeeping.BookkeepingError(bookkeeping.NO_PRIVILEGE + "; nothing was changed")
            activity.logger.warning("deploying without bookkeeping", extra={"reason": bookkeeping.NO_PRIVILEGE})
            return False
        retention = self.targets.environment(inp.environment).backup_retention
        await bookkeeping.drop_expired(conn, retention, keep=set(inp.marks.deploy_ids.values()))
        key = run_key(inp.marks)
        if key and schema_now is not None and await bookkeeping.schema_before(conn, key) is None:
            await bookkeeping.remember_schema(conn, key, (await schema_now).model_dump_json())
        return True

    @activity.defn(name="deploy")
    async def deploy(self, inp: DeployInput) -> DeployResult:
        """Apply the planned migrations in order under Prisma's lock; exactly once across retries."""
        total = len(inp.migrations)
        progress = {"done": 0, "total": total, "current": None}
        planned = {m.name: m for m in inp.plan.migrations}
        running: list[LockPoliteExecutor] = []

        def details() -> dict:  # progress, and the current migration's wait for its locks (watch shows it)
            waiting = lock_details(running[0] if running else None)
            return {**progress, "lock_wait": waiting} if waiting else dict(progress)

        unacknowledged = sorted(set(inp.plan.no_backup) - set(inp.no_backup_approved))
        if unacknowledged:  # a workflow that did not pass the approvals' acknowledgement: refuse, change nothing
            return DeployResult(refused=True, stopped=(
                f"{', '.join(unacknowledged)} would destroy data without a backup, and no deploy approval "
                "acknowledged that (\"no_backup\"); nothing was changed: start a new run and approve it with "
                "--no-backup for each"))
        with self.targets.errors(f"deploy on {inp.environment}"):
            policy = self.targets.lock_policy(inp.environment)
            # The observer, which reads only the catalog (the schema before the run, then pg_locks), takes
            # the session preflight left warm and hands it on to verify; the migrations get a session of
            # their own, closed after them (activities/sessions.py).
            async with self.targets.connection(inp.environment, OBSERVER_APPLICATION_NAME, keep=True) as observer, \
                    self.targets.connection(inp.environment) as conn, \
                    Heartbeater(details):
                inp = await self._with_sql(inp)
                async with self.targets.advisory_lock(conn, inp.environment), \
                        _reading_schema(observer, wanted=run_key(inp.marks) is not None) as schema_now:
                    ledger = MigrationLedger(conn)
                    await ledger.ensure_table()
                    snapshot = await ledger.read()
                    changed = ledger_changed(inp.plan.ledger_digest, snapshot.rows, inp.marks, inp.environment)
                    if changed:
                        return DeployResult(stopped=changed)
                    own = {r.id: r for r in snapshot.rows if r.id in inp.marks.deploy_ids.values()}
                    with_bookkeeping = await self._prepare(conn, schema_now, inp)
                    await _settled(schema_now)  # not needed (a retry's, or no bookkeeping): the observer is free
                    executor = executor_for(conn, observer, policy)
                    running.append(executor)
                    result = DeployResult()
                    for index, mig in enumerate(inp.migrations):
                        progress.update(done=index, current=mig.name)
                        row_id = inp.marks.deploy_ids[mig.name]
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
                        run = _Run(self.targets, ledger, executor, mig, planned[mig.name], row_id, with_bookkeeping)
                        mode = ExecutionMode(planned[mig.name].execution)
                        if mode == ExecutionMode.transaction:
                            outcome = await run.in_transaction()
                        elif mode == ExecutionMode.alone:
                            outcome = await run.alone(row)
                        else:
                            outcome = await run.script(row)
                        if isinstance(outcome, _BackupFailed):
                            result.stopped = (f"the backup before {mig.name} failed ({outcome}); the migration did "
                                              "not run, nothing of it was changed")
                            return result
                        if isinstance(outcome, AppliedMigration):
                            result.applied.append(outcome)
                        elif isinstance(outcome, FailedMigration):
                            result.failed = outcome
                            return result
                        else:
                            result.needs_attention = outcome
                            return result
                    progress.update(done=total, current=None)
                    return result

    async def _with_sql(self, inp: DeployInput) -> DeployInput:
        """For a bundle that came in parts, the SQL of the migrations to run, from the run's history
        (checked against the parts' digests there, and here against the checksums the plan was
        approved with)."""
        if not inp.bundle_parts:
            return inp
        whole = {m.name: m for m in await self.targets.bundles.migrations(inp.bundle_parts, [])}
        todo = []
        for m in inp.migrations:
            found = whole.get(m.name)
            if found is None or found.checksum != m.checksum:
                raise ApplicationError(f"migration {m.name} with checksum {m.checksum[:12]}… is not in the bundle this "
                                       "run received; nothing was applied", type="BundleIncomplete", non_retryable=True)
            todo.append(found)
        return inp.model_copy(update={"migrations": todo})


class _BackupFailed(Exception):
    """Taking a backup failed: the migration's transaction rolled back, nothing of it ran."""


def _applied_from_row(row: LedgerRow) -> AppliedMigration:
    finished = row.finished_at or row.started_at
    return AppliedMigration(name=row.migration_name, checksum=row.checksum, ledger_id=row.id, started_at=row.started_at,
                            finished_at=finished, duration_ms=(finished - row.started_at) / timedelta(milliseconds=1))


@contextlib.asynccontextmanager
async def _reading_schema(observer: asyncpg.Connection, *, wanted: bool) -> AsyncIterator[asyncio.Task | None]:
    """The schema before the run's first change, read on the observer's session while the
    migrations' session prepares the ledger and the bookkeeping (neither is in the schema model),
    under Prisma's advisory lock, so no other deploy changes the schema meanwhile. The read is
    over before the observer watches locks (the deploy waits for it), and leaving waits for it."""
    task = asyncio.create_task(read_schema_model(observer)) if wanted else None
    try:
        yield task
    finally:
        if task is not None and not task.done():  # the run stopped before it needed the schema
            task.cancel()
        await _settled(task)


async def _settled(task: asyncio.Task | None) -> None:
    """Wait for `task` to end; its result and error are not wanted here (`_prepare` raises the
    error of a read it needs)."""
    if task is not None:
        await asyncio.wait([task])  # raises only this activity's own cancellation
        if not task.cancelled():
            task.exception()  # retrieved: not reported as never retrieved
