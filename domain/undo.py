"""What compensation must undo: this run's deploy steps, newest first. Pure: the workflow calls it
when a run stops after it started changing the database."""

from __future__ import annotations

from domain.models import DeployPlan, FailedMigration, RunMarks, UndoStep
from domain.stages import RUNS_IN_DEPLOY


def run_key(marks: RunMarks) -> str | None:
    """The key the run's bookkeeping (the schema before it) is stored under: its smallest deploy row id."""
    return min(marks.deploy_ids.values()) if marks.deploy_ids else None


def undo_steps(plan: DeployPlan, marks: RunMarks, *, deploy_started: bool, failed: FailedMigration | None) -> list[UndoStep]:
    """One step per migration the deploy stage may have applied, newest first. The compensate
    activity skips those without a ledger row of this run (never reached)."""
    if not deploy_started:
        return []
    return [
        UndoStep(
            name=m.name,
            ledger_id=marks.deploy_ids[m.name],
            rollback=m.rollback,
            rollback_sql=m.rollback_sql,
            in_transaction=m.in_transaction,
            unbacked=list(m.unbacked),
            # Its failure provably changed nothing: a rolled-back transaction, or no statement done.
            failed_without_effects=bool(failed and failed.name == m.name and not failed.partial),
        )
        for m in reversed(plan.by_action(*RUNS_IN_DEPLOY))
    ]
