"""Human rendering of plans and runs (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cli.common import console as stdout_console
from domain.backup_items import human_bytes
from domain.models import DeployPlan

ACTION_TEXT = {
    "apply": "apply",
    "reapply": "resolve as rolled back, then re-apply",
    "resolve_applied": "resolve as applied (effects already present)",
    "leave_phantom": "leave alone (phantom: in the database, not in the folder)",
    "already_applied": "already applied",
    "needs_human": "STOP: needs a human",
}


def render_plan(plan: DeployPlan, out: Console | None = None) -> None:
    console = out or stdout_console
    console.print(
        f"[bold]Plan for {plan.environment}[/bold] ({plan.operation}) · server {plan.server_version or '?'} · "
        f"risk [bold]{plan.risk}[/bold] · approvals needed per gate: {plan.required_approvals}"
    )
    table = Table(show_lines=False)
    table.add_column("migration", overflow="fold")
    table.add_column("action")
    table.add_column("txn")
    table.add_column("risk")
    table.add_column("rollback")
    table.add_column("notes", overflow="fold")
    for m in plan.migrations:
        if m.action == "already_applied":
            continue
        notes = [m.reason] + [f"{f.code}: {f.message}" for f in m.findings if f.severity != "info"]
        notes += [f"evidence: {e}" for e in m.evidence]
        notes += [f"backup first: {b.reason} (about {human_bytes(b.estimated_bytes)})" for b in m.backups]
        notes += [f"no backup: {u}" for u in m.unbacked]
        table.add_row(
            m.name,
            ACTION_TEXT.get(m.action, m.action),
            "yes" if m.in_transaction else f"no ({m.execution})",
            m.risk,
            m.rollback or "none",
            "\n".join(n for n in notes if n),
        )
    applied = len(plan.by_action("already_applied")) + plan.unlisted_applied
    console.print(table)
    if applied:
        console.print(f"{applied} migration(s) already applied, unchanged.")
    if plan.backup_bytes:
        console.print(f"backups before destruction: about {human_bytes(plan.backup_bytes)}, in schema "
                      "_migrator_backup of the target database", markup=False)
    if plan.drift:
        console.print(f"drift: {plan.drift.verdict} {plan.drift.summary}", markup=False)
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)
    for blocker in plan.blockers:
        console.print(f"[red]blocked:[/red] {blocker}")
    if plan.no_backup and not plan.blockers:
        flags = " ".join(f"--no-backup {n}" for n in plan.no_backup)
        console.print(f"WITHOUT A BACKUP: {', '.join(plan.no_backup)} destroy(s) data no backup will hold; the deploy "
                      f"approval must acknowledge exactly that ({flags})", markup=False, soft_wrap=True)
    console.print(f"fingerprint: {plan.fingerprint}", markup=False)
