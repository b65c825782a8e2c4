"""The plan's part about backups before destruction (called by domain/plan.py). Pure.

Per migration to run: the backups domain/backup.py decided from preflight's facts, shown with
their estimated size; a data-only statement with a backup makes the migration undoable (its
rollback puts the backup back). The run's backups together must stay under the environment's
`backup_max_bytes`; above it, or where a backup is impossible, the plan names what would go
unprotected and needs an explicit approval of "no backup" (blocker `no_backup_needs_approval`,
list `DeployPlan.no_backup`). Approving it is the approval rules' business (domain/approval.py);
until they accept such an approval the run stops at this blocker, before any change.
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


def limit_backups(running: Sequence[PlannedMigration], max_bytes: int) -> tuple[list[Blocker], list[str], int, list[str]]:
    """(blockers, notes, estimated bytes, migrations needing "no backup") for the run's backups."""
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
    blockers = [Blocker(code=BlockerCode.no_backup_needs_approval, migration=m.name,
                        message=f"migration {m.name} destroys data that no backup would hold ({'; '.join(m.unbacked)}): "
                                "it needs an explicit approval of running without a backup, or a smaller change "
                                "(or a larger backup_max_bytes for the environment)")
                for m in running if m.unbacked]
    return blockers, notes, (total if total <= max_bytes else 0), [m.name for m in running if m.unbacked]
