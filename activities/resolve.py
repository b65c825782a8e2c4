"""The resolve activity: Prisma's `migrate resolve` for the plan's failed migrations.

`--rolled-back` for failed migrations to re-apply (the failed rows get rolled_back_at), `--applied`
for those whose effects are all in place (a new applied row), all in one transaction under Prisma's
advisory lock, after checking that nobody changed the ledger since the plan. Timestamps and row ids
come from the workflow (RunMarks), so a retried attempt and compensation recognise this run's rows.
"""

from __future__ import annotations

from temporalio import activity

from activities.heartbeat import Heartbeater
from activities.ledger import MigrationLedger, utcnow
from activities.target import TargetDatabases, ledger_changed
from domain.models import Action, ResolveDecision, ResolveInput, ResolveResult


class ResolveActivities:
    def __init__(self, targets: TargetDatabases) -> None:
        self.targets = targets

    @activity.defn(name="resolve")
    async def resolve(self, inp: ResolveInput) -> ResolveResult:
        """Prisma's `migrate resolve` for the plan's failed migrations, in one transaction."""
        at = inp.marks.resolve_at or utcnow()
        with self.targets.errors(f"resolve on {inp.environment}"):
            async with self.targets.connection(inp.environment) as conn, Heartbeater(lambda: {"stage": "resolve"}), \
                    self.targets.advisory_lock(conn, inp.environment):
                ledger = MigrationLedger(conn)
                before = await ledger.read()
                changed = ledger_changed(inp.plan.ledger_digest, before.rows, inp.marks, inp.environment)
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
