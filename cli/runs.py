"""`runs`: past and open runs from Temporal visibility (search attributes), newest first."""

from __future__ import annotations

from datetime import date

import typer
from rich.table import Table

from cli.app import app
from cli.common import console, fail, load_settings, print_json, run, temporal
from workflows import search_attributes as sa
from domain.models import Outcome


def visibility_query(env: str | None, outcome: Outcome | None, since: date | None) -> str:
    clauses = ["WorkflowType = 'DeployWorkflow'"]
    if env:
        clauses.append(f"{sa.ENVIRONMENT.name} = '{_quote(env)}'")
    if outcome:
        clauses.append(f"{sa.OUTCOME.name} = '{outcome.value}'")
    if since:
        clauses.append(f"StartTime >= '{since.isoformat()}T00:00:00Z'")
    return " AND ".join(clauses)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


@app.command()
@run
async def runs(
    env: str = typer.Option(None, "--env", "-e", help="Only runs on this environment."),
    outcome: Outcome = typer.Option(None, "--outcome", help="Only runs that ended with this outcome."),
    since: str = typer.Option(None, "--since", help="Only runs started on or after this date (YYYY-MM-DD)."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000),
    json_out: bool = typer.Option(False, "--json"),
) -> int:
    """List deploy runs, newest first, with their outcome (plan-only runs are not listed)."""
    since_date = None
    if since:
        try:
            since_date = date.fromisoformat(since)
        except ValueError:
            fail(f"--since must be a date like 2026-01-31 (got '{since}')")
    settings = load_settings()
    client = await temporal(settings)
    rows = []
    async for wf in client.list_workflows(visibility_query(env, outcome, since_date), limit=limit):
        attrs = wf.typed_search_attributes
        rows.append(
            {
                "workflow_id": wf.id,
                "run_id": wf.run_id,
                "environment": attrs.get(sa.ENVIRONMENT),
                "operation": attrs.get(sa.OPERATION),
                "requested_by": attrs.get(sa.REQUESTED_BY),
                "stage": attrs.get(sa.STAGE),
                "outcome": attrs.get(sa.OUTCOME),
                "status": wf.status.name.lower() if wf.status else None,
                "started": wf.start_time.isoformat() if wf.start_time else None,
                "closed": wf.close_time.isoformat() if wf.close_time else None,
            }
        )
    rows = [r for r in rows if not r["workflow_id"].startswith("prisma-plan-")]
    rows.sort(key=lambda r: r["started"] or "", reverse=True)
    if json_out:
        print_json(rows)
        return 0
    if not rows:
        console.print("no runs match")
        return 0
    table = Table()
    for col in ("started", "environment", "operation", "requested by", "stage", "outcome", "run"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            (r["started"] or "")[:19].replace("T", " "),
            r["environment"] or "",
            r["operation"] or "",
            r["requested_by"] or "",
            r["stage"] or "",
            r["outcome"] or r["status"] or "",
            f"{r['workflow_id']}/{r['run_id']}",
        )
    console.print(table)
    return 0
