"""The compensate activity: undo this run, newest first.

Each migration this run applied is undone by its rollback (down.sql or derived) with its ledger row
marked rolled back in the same transaction; a failed row of this run is marked rolled back; then the
resolve decisions are restored. Idempotent: finished steps are recognised from the ledger. What
cannot be undone stops the compensation with one sentence saying what a person must do.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity

from activities.failures import is_transient
from activities.heartbeat import Heartbeater
from activities.ledger import MigrationLedger
from activities.target import TargetDatabases
from domain.models import (
    CompensateInput,
    CompensateResult,
    CompensationStep,
    RollbackSource,
    UndoStep,
)
from domain.prisma.ledger import LedgerRow
from domain.sql.parse import split_statements


class CompensateActivities:
    def __init__(self, targets: TargetDatabases) -> None:
        self.targets = targets

    @activity.defn(name="compensate")
    async def compensate(self, inp: CompensateInput) -> CompensateResult:
        """Undo this run, newest first: each applied migration's rollback with its ledger row marked
        rolled back (one transaction), a failed row of this run marked rolled back, then the resolve
        decisions restored. Idempotent: finished steps are recognised from the ledger."""
        result = CompensateResult()
        with self.targets.errors(f"compensate on {inp.environment}"):
            async with self.targets.connection(inp.environment) as conn, Heartbeater(lambda: {"compensating": True}):
                async with self.targets.advisory_lock(conn, inp.environment):
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
        what = "ran down.sql" if step.rollback == RollbackSource.down_sql else "ran derived rollback"
        try:
            if step.in_transaction:
                async with conn.transaction():
                    await conn.execute(step.rollback_sql)
                    await ledger.mark_row_rolled_back(row.id)
            else:

                for stmt in split_statements(step.rollback_sql):
                    await conn.execute(stmt.text)
                await ledger.mark_row_rolled_back(row.id)
        except asyncpg.PostgresError as exc:
            if is_transient(exc):
                raise
            message = self.targets.scrub(f"{exc.sqlstate}: {exc}")
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
