"""The plan's part about backups before destruction (called by domain/plan.py). Pure.

Per migration to run: the backups domain/backup.py decided from preflight's facts, shown with
their estimated size; a data-only statement with a backup makes the migration undoable (its
rollback puts the backup back). The run's backups together must stay under the environment's
`backup_max_bytes`; above it, or where a backup is impossible, the plan names what would go
unprotected (`DeployPlan.no_backup`) and the deploy gate's approval must acknowledge exactly those
migrations (domain/approval.py `no_backup_acknowledgement`). An environment without a deploy gate
has nobody to give that acknowledgement: its plan stops with blocker `no_backup_needs_approval`,
before any change, saying why.
"""

from __future__ import annotations

from collections.abc import Sequence

from domain.backup_items import MigrationBackups, human_bytes
from domain.models import Blocker, BlockerCode, PlannedMigration, RollbackSource
from domain.sql.rollback import derive_rollback
from domain.sql.rules import MigrationAnalysis


def attach_backups(pm: PlannedMigration, analysis: MigrationAnalysis | None, backups: MigrationBackups | None,
                   default_schema: str) -> None:
    """Put the migration's backups on its plan entry; a migration without a rollback that only
    changes data where it has backups is undone by restoring them."""
    if backups is None:
        return
    pm.backups = list(backups.items)
    pm.unbacked = list(backups.impossible)
    if pm.rollback is None and analysis is not None and pm.backups:
        covered = frozenset(i.statement - 1 for i in pm.backups)
        sql, blockers = derive_rollback(analysis.statements, default_schema, restored=covered)
        if sql is not None and not blockers:
            pm.rollback = RollbackSource.backup if not sql else RollbackSource.derived
            pm.rollback_sql = sql


def limit_backups(running: Sequence[PlannedMigration], max_bytes: int, *, deploy_gate: bool = False
                  ) -> tuple[list[Blocker], list[str], int, list[str]]:
    """(blockers, notes, estimated bytes, migrations needing "no backup") for the run's backups.
    `deploy_gate`: the environment has a deploy gate, whose approval can acknowledge "no backup"."""
    total = sum(i.estimated_bytes for m in running for i in m.backups)
    notes: list[str] = []
    if total > max_bytes:
        for m in running:
            m.unbacked += [f"{i.reason}: backup of about {human_bytes(i.estimated_bytes)} not taken, the run's "
                           f"backups together ({human_bytes(total)}) exceed backup_max_bytes ({human_bytes(max_bytes)})"
                           for i in m.backups]
            m.backups = []
    for m in running:
        for i in m.backups:
            rows = f"{i.estimated_rows} row(s)" + (" at most" if i.where else "")
            notes.append(f"{m.name}: backs up {i.reason} before it runs (about {human_bytes(i.estimated_bytes)}, "
                         f"{rows}) into schema _migrator_backup; compensation puts it back")
    unprotected = [m for m in running if m.unbacked]
    if deploy_gate:
        notes += [f"{m.name} destroys data that no backup will hold ({'; '.join(m.unbacked)}): the deploy approval "
                  f"must acknowledge running it without a backup (\"no_backup\", `--no-backup {m.name}`)"
                  for m in unprotected]
        blockers = []
    else:
        blockers = [Blocker(code=BlockerCode.no_backup_needs_approval, migration=m.name,
                            message=f"migration {m.name} destroys data that no backup would hold ({'; '.join(m.unbacked)}), "
                                    "and running it without a backup needs an explicit approval, which this environment "
                                    "cannot give: it has no deploy gate; add a deploy gate (its approval then "
                                    "acknowledges \"no backup\" for it), make the change smaller, or raise the "
                                    "environment's backup_max_bytes")
                    for m in unprotected]
    return blockers, notes, (total if total <= max_bytes else 0), [m.name for m in unprotected]
