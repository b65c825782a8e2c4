"""The compensate activity: undo this run, newest first, and return the ledger to its state
before the run, so that the real Prisma CLI reads it consistently (`migrate status` lists exactly
what `migrate deploy` would apply). The audit of what ran stays in workflow history.

For each migration this run applied: its rollback (down.sql or derived) after checking that it
destroys no data the migration did not write itself (activities/undo_guard.py), then its backups
put back (activities/backup.py), then its ledger row removed: one transaction when the rollback
can run in one, otherwise statement by statement with each step recorded so a retry skips it. A
failed row of this run whose failure changed nothing is removed; one that left effects stays, with
what a person must do. Then the resolve decisions are undone, and the schema is compared with the
schema before the run (the deploy kept it): `complete` only when they are equal and no data the run
destroyed is missing.

Rollbacks take locks too (a DROP TABLE waits for ACCESS EXCLUSIVE like the CREATE did), so they go
through the same lock-polite executor as the deploy (activities/execute.py): when the lock budget
runs out, that migration's undo stops with the blocking sessions named, the migration intact.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity

from activities import backup, bookkeeping
from activities.catalog import read_schema_model
from activities.execute import LockPoliteExecutor, executor_for, lock_details, lock_wait, locks_of, statements_of
from activities.failures import is_transient
from activities.heartbeat import Heartbeater
from activities.index_builds import IndexTarget, drop_if_invalid, index_state, index_target
from activities.ledger import MigrationLedger
from activities.target import OBSERVER_APPLICATION_NAME, TargetDatabases
from activities.undo_guard import foreign_data
from domain.models import (
    CompensateInput,
    CompensateResult,
    CompensationStep,
    RollbackSource,
    UndoStep,
)
from domain.lock_waits import LockBudgetExhausted
from domain.prisma.ledger import LedgerRow
from domain.schema import SchemaModel, compare
from domain.sql.parse import StatementInfo, split_statements
from domain.sql.script import ExecutionMode, refuses_transaction_block, script_plan
from domain.undo import run_key

_SHOWN_DIFFERENCES = 5


class CompensateActivities:
    def __init__(self, targets: TargetDatabases) -> None:
        self.targets = targets

    @activity.defn(name="compensate")
    async def compensate(self, inp: CompensateInput) -> CompensateResult:
        """Undo this run, newest first, and return the ledger and the schema to their state before
        the run. Idempotent: finished steps are recognised from the ledger and the undo records."""
        result = CompensateResult()
        running: list[LockPoliteExecutor] = []
        with self.targets.errors(f"compensate on {inp.environment}"):
            policy = self.targets.lock_policy(inp.environment)
            async with self.targets.connection(inp.environment) as conn, \
                    self.targets.connection(inp.environment, OBSERVER_APPLICATION_NAME) as observer, \
                    Heartbeater(lambda: {"compensating": True, "lock_wait": lock_details(running[0] if running else None)}):
                async with self.targets.advisory_lock(conn, inp.environment):
                    executor = executor_for(conn, observer, policy)
                    running.append(executor)
                    ledger = MigrationLedger(conn)
                    if not await ledger.table_exists():
                        return result
                    rows = {r.id: r for r in (await ledger.read()).rows}
                    for index, step in enumerate(inp.undo):
                        row = rows.get(step.ledger_id)
                        if row is None:  # never reached, or undone by an earlier attempt (then say what it did)
                            earlier = await bookkeeping.undone(conn, step.ledger_id)
                            if earlier is not None:
                                result.steps.append(CompensationStep(name=step.name, action=earlier[0], ok=True,
                                                                     detail=earlier[1]))
                            continue
                        blocked = await self._undo_one(ledger, executor, step, row, result)
                        if blocked:
                            remaining = [s.name for s in inp.undo[index + 1:]
                                         if s.ledger_id in rows and rows[s.ledger_id].is_applied]
                            resolved = await self._resolve_rows(inp, rows)
                            result.complete = False
                            result.human_action = blocked + (
                                f"; the run did not undo anything older either (still applied by this run: "
                                f"{', '.join(remaining)})" if remaining else ""
                            ) + ("; resolve decisions were left as they are" if resolved else "")
                            return result
                    await self._restore_resolve(ledger, inp, rows, result)
                    await self._compare_schema(conn, inp, result)
        return result

    # -- one migration -------------------------------------------------------------------------
    async def _undo_one(self, ledger: MigrationLedger, executor: LockPoliteExecutor, step: UndoStep, row: LedgerRow,
                        result: CompensateResult) -> str | None:
        conn = ledger.conn
        if row.is_rolled_back:
            result.steps.append(CompensationStep(name=step.name, action="already rolled back", ok=True,
                                                 detail=f"row {row.id}"))
            return None
        if row.is_failed:
            if step.failed_without_effects:
                done = CompensationStep(
                    name=step.name, action="removed failed row", ok=True,
                    detail="its failure changed nothing (rolled back, or its INVALID index dropped): "
                           f"ledger row {row.id} removed, as before the run")
                async with conn.transaction():
                    await self._forget(ledger, row.id, done)
                result.steps.append(done)
                return None
            result.steps.append(CompensationStep(name=step.name, action="blocked", ok=False,
                                                 detail="failed part-way outside a transaction"))
            return (f"{step.name} failed part-way (ledger row {row.id} stays, recorded as failed): some of its "
                    "transactions committed before the error; check what took effect, undo or complete it by hand, "
                    "then run prisma migrate resolve --rolled-back or --applied for it")
        if step.rollback_sql is None:
            result.steps.append(CompensationStep(name=step.name, action="blocked", ok=False,
                                                 detail="no down.sql and no derivable rollback"))
            return (f"{step.name} was applied by this run (ledger row {row.id}) and has no rollback (no down.sql, "
                    "none derivable): it stays applied; undo it by hand if it must go")
        xid = await bookkeeping.write_xid(conn, row.id)
        at_risk = await foreign_data(conn, step.rollback_sql, xid) if step.rollback_sql.strip() else []
        if at_risk:
            result.steps.append(CompensationStep(name=step.name, action="blocked", ok=False, detail="; ".join(at_risk)))
            return (f"the rollback of {step.name} was not run, because it {'; '.join(at_risk)} (written after the "
                    f"migration ran): those objects and the migration are left as they are (ledger row {row.id}, "
                    "still applied); move or keep that data, then undo the migration by hand if it must go")
        what = {RollbackSource.down_sql: "ran down.sql", RollbackSource.derived: "ran derived rollback",
                RollbackSource.backup: "restored its backups"}.get(step.rollback, "ran rollback")
        try:
            done = await self._run_rollback(ledger, executor, step, row, what)
        except LockBudgetExhausted as exc:
            detail = self.targets.scrub(str(exc))
            result.steps.append(CompensationStep(name=step.name, action=f"{what} failed", ok=False, detail=detail,
                                                 lock_wait=lock_wait(exc.report)))
            kept = ("a statement of it that runs outside a transaction may have left a trace; "
                    if exc.changed else "nothing of its rollback was done: ")
            return (f"the rollback of {step.name} could not take its locks ({detail}); {kept}{step.name} stays "
                    f"applied (ledger row {row.id}): once that session ends, run its rollback by hand, then remove "
                    "its ledger row")
        except backup.RestoreImpossible as exc:
            result.steps.append(CompensationStep(name=step.name, action=f"{what} failed", ok=False, detail=str(exc)))
            return f"{exc}; nothing of its rollback was kept: {step.name} stays applied (ledger row {row.id})"
        except asyncpg.PostgresError as exc:
            if is_transient(exc):
                raise
            message = self.targets.scrub(f"{exc.sqlstate}: {exc}")
            result.steps.append(CompensationStep(name=step.name, action=f"{what} failed", ok=False, detail=message))
            return (f"the rollback of {step.name} failed ({message}); it stays applied (ledger row {row.id}): "
                    "fix and run its rollback by hand, then remove or resolve its ledger row")
        result.steps.append(done)
        if step.unbacked:
            result.data_lost.append(f"{step.name}: {'; '.join(step.unbacked)}")
        return None

    async def _run_rollback(self, ledger: MigrationLedger, executor: LockPoliteExecutor, step: UndoStep,
                            row: LedgerRow, what: str) -> CompensationStep:
        """The rollback, the backups put back and the ledger row removed (with the record of it),
        each transaction sent through the lock-polite executor."""
        conn = ledger.conn
        statements = split_statements(step.rollback_sql) if step.rollback_sql.strip() else []
        shape = script_plan(statements, step.rollback_sql) if statements else None
        # One transaction unless a statement refuses one (then statement by statement, as a person would).
        one_transaction = shape is None or (shape.mode == ExecutionMode.transaction and not any(
            refuses_transaction_block(s.kind, s.node()) for s in statements))
        what_ = f"rollback of {step.name}"
        waits = []
        finished: list[CompensationStep] = []

        async def restore_and_forget() -> None:  # one transaction: all of it, or nothing, on each attempt
            async with conn.transaction():
                if one_transaction and shape is not None:
                    await conn.execute(shape.body)
                finished.append(_done(step, row, what, await backup.restore(conn, row.id)))
                await self._forget(ledger, row.id, finished[-1])

        if not one_transaction:
            done = await bookkeeping.undo_steps_done(conn, row.id)
            for stmt in statements:
                if stmt.index in done or stmt.kind == "TransactionStmt":
                    continue
                if refuses_transaction_block(stmt.kind, stmt.node()):
                    await _run_alone(conn, executor, stmt, what=what_)
                    await bookkeeping.mark_undo_step(conn, row.id, stmt.index)
                else:
                    async def one(stmt: StatementInfo = stmt) -> None:
                        async with conn.transaction():
                            await conn.execute(stmt.text)
                            await bookkeeping.mark_undo_step(conn, row.id, stmt.index)

                    await executor.run_atomic(one, locks_of(stmt.text), what=what_)
                waits.append(lock_wait(executor.report))
        body = shape.body if one_transaction and shape is not None else ""
        await executor.run_atomic(restore_and_forget, locks_of(body), what=what_)
        waits.append(lock_wait(executor.report))
        longest = max((w for w in waits if w is not None and w.waited), key=lambda w: w.waited_s, default=None)
        return finished[-1].model_copy(update={"lock_wait": longest})

    async def _forget(self, ledger: MigrationLedger, row_id: str, done: CompensationStep) -> None:
        """In the caller's transaction: the ledger as before the run (this run's row removed; its
        record stays in workflow history), and what was done remembered for a retried attempt."""
        await ledger.delete_rows([row_id])
        if await bookkeeping.exists(ledger.conn):
            await bookkeeping.record_undone(ledger.conn, row_id, done.name, done.action, done.detail)

    # -- resolve, schema ---------------------------------------------------------------------------
    @staticmethod
    async def _resolve_rows(inp: CompensateInput, rows: dict[str, LedgerRow]) -> bool:
        at = inp.marks.resolve_at
        own = inp.marks.own_ids()
        marked = any(at is not None and r.rolled_back_at == at and i not in own for i, r in rows.items())
        return marked or any(i in rows for i in inp.marks.resolve_ids.values())

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

    async def _compare_schema(self, conn: asyncpg.Connection, inp: CompensateInput, result: CompensateResult) -> None:
        """Complete only when the schema is the one the deploy found before the run's first change."""
        key = run_key(inp.marks)
        before_json = await bookkeeping.schema_before(conn, key) if key else None
        if before_json is None:
            return
        differences = compare(SchemaModel.model_validate_json(before_json), await read_schema_model(conn))
        if differences:
            shown = "; ".join(d.sentence for d in differences[:_SHOWN_DIFFERENCES])
            more = f" (and {len(differences) - _SHOWN_DIFFERENCES} more)" if len(differences) > _SHOWN_DIFFERENCES else ""
            result.complete = False
            result.schema_differences = [d.sentence for d in differences]
            result.human_action = (f"after undoing, the schema still differs from before the run: {shown}{more}; "
                                   "the rollbacks (down.sql) do not restore it exactly: fix it by hand")
        if result.data_lost:
            result.complete = False
            lost = "; ".join(result.data_lost)
            result.human_action = "; ".join(x for x in (result.human_action, (
                f"the schema is back but data the run destroyed without a backup is not ({lost})")) if x)


def _done(step: UndoStep, row: LedgerRow, what: str, restored: list[str]) -> CompensationStep:
    detail = f"ledger row {row.id} removed" + (f"; {'; '.join(restored)}" if restored else "")
    return CompensationStep(name=step.name, action=what, ok=True, detail=detail)


async def _run_alone(conn: asyncpg.Connection, executor: LockPoliteExecutor, stmt: StatementInfo, *, what: str) -> None:
    """A rollback statement that refuses transaction blocks, run so that a retry after a crash
    finds it done: an index that is already gone is not dropped again, one already built (valid)
    is not built again, an INVALID one from an interrupted build is dropped and built again."""
    node = stmt.node()
    target = index_target(stmt.kind, node)
    if target is not None:
        state = await index_state(conn, target)
        if state is not None and state.valid:
            return
        if state is not None:
            await drop_if_invalid(conn, target, None)
    elif stmt.kind == "DropStmt" and node.get("removeType") == "OBJECT_INDEX" and not node.get("missing_ok"):
        parts = [p.get("String", {}).get("sval") for p in node["objects"][0].get("List", {}).get("items", [])]
        if await index_state(conn, IndexTarget(parts[0] if len(parts) > 1 else None, parts[-1])) is None:
            return
    several = any(st.multi_transaction for st in statements_of(stmt.text))
    await executor.run_statement(stmt.text, locks_of(stmt.text), what=what, multi_transaction=several)
