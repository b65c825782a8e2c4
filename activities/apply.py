"""The deploy stage's activity (type name `deploy`): apply the planned migrations, exactly once.

Under Prisma's advisory lock, after checking that nobody changed the ledger since the plan:

- A transactional migration runs as ONE transaction holding its whole migration.sql (one simple
  query, like Prisma's engine) and its ledger row: it is applied with its row or not at all, so a
  retried attempt skips exactly the migrations whose rows it finds (row ids chosen by the workflow).
- A migration that cannot run in a transaction follows Prisma's sequence: started row, statements,
  finished. A crash in between leaves a started row: re-run only when the migration is idempotent.
- A migration's own SQL error is recorded as Prisma's failed row and returned, never retried;
  connection loss, serialization failures and lock timeouts are raised as retryable errors.
"""

from __future__ import annotations

import time
from datetime import timedelta

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.failures import is_transient, prisma_error_logs
from activities.heartbeat import Heartbeater
from activities.ledger import MigrationLedger, utcnow
from activities.target import TargetDatabases, ledger_changed
from domain.models import (
    AppliedMigration,
    BundledMigration,
    DeployInput,
    DeployResult,
    FailedMigration,
    PlannedMigration,
)
from domain.prisma.ledger import LedgerRow
from domain.sql.parse import SqlParseError, split_statements
from domain.sql.rules import analyze_migration


class ApplyActivities:
    def __init__(self, targets: TargetDatabases) -> None:
        self.targets = targets

    @activity.defn(name="deploy")
    async def deploy(self, inp: DeployInput) -> DeployResult:
        """Apply the planned migrations in order under Prisma's lock; exactly once across retries."""
        total = len(inp.migrations)
        progress = {"done": 0, "total": total, "current": None}
        planned = {m.name: m for m in inp.plan.migrations}
        with self.targets.errors(f"deploy on {inp.environment}"):
            async with self.targets.connection(inp.environment) as conn, Heartbeater(lambda: dict(progress)):
                inp = await self._with_sql(inp)
                async with self.targets.advisory_lock(conn, inp.environment):
                    ledger = MigrationLedger(conn)
                    await ledger.ensure_table()
                    snapshot = await ledger.read()
                    changed = ledger_changed(inp.plan.ledger_digest, snapshot.rows, inp.marks, inp.environment)
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
            logs = self.targets.scrub(prisma_error_logs(mig.name, exc))
            await ledger.insert_failed(mig.name, mig.checksum, started, logs, row_id)
            activity.logger.warning("migration failed", extra={"migration": mig.name, "sqlstate": exc.sqlstate})
            return FailedMigration(name=mig.name, ledger_id=row_id, error=self.targets.scrub(f"{exc.sqlstate}: {exc}"))
        return AppliedMigration(name=mig.name, checksum=mig.checksum, ledger_id=row_id, started_at=started,
                                finished_at=finished, duration_ms=(time.perf_counter() - t0) * 1000)

    async def _apply_outside_transaction(
        self, ledger: MigrationLedger, mig: BundledMigration, pm: PlannedMigration, row_id: str, row: LedgerRow | None
    ) -> AppliedMigration | FailedMigration | str:
        """Prisma's sequence for statements that cannot run in a transaction: started row, each
        statement on its own, finished. A crash in between leaves a started row: re-run only when
        the migration is idempotent, otherwise a person must look."""

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
                logs = self.targets.scrub(prisma_error_logs(mig.name, exc))
                await ledger.record_failure(row_id, logs)
                return FailedMigration(name=mig.name, ledger_id=row_id, error=self.targets.scrub(f"{exc.sqlstate}: {exc}"),
                                       partial=done > 0, statements_done=done)
            done += 1
        finished = utcnow()
        await ledger.mark_finished(row_id, finished)
        return AppliedMigration(name=mig.name, checksum=mig.checksum, ledger_id=row_id, started_at=started,
                                finished_at=finished, duration_ms=(time.perf_counter() - t0) * 1000)


def _has_statements(sql: str) -> bool:
    """False for an empty or comment-only script (asyncpg's execute() fails on PostgreSQL's
    EmptyQueryResponse); unparseable SQL counts as statements, so PostgreSQL reports the error."""

    try:
        return bool(split_statements(sql))
    except SqlParseError:
        return True


def _applied_from_row(row: LedgerRow) -> AppliedMigration:
    finished = row.finished_at or row.started_at
    return AppliedMigration(name=row.migration_name, checksum=row.checksum, ledger_id=row.id, started_at=row.started_at,
                            finished_at=finished, duration_ms=(finished - row.started_at) / timedelta(milliseconds=1))
