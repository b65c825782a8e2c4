"""`watch`: a live view of a run until it ends or waits for a human."""

from __future__ import annotations

import typer

from cli.app import app
from cli.common import (
    console,
    describe_or_fail,
    load_settings,
    resolve_run,
    run,
    temporal,
)
from cli.follow import follow, outcome_line

RunArg = typer.Argument(..., help="Environment name, workflow id, or WORKFLOW_ID/RUN_ID.")


@app.command()
@run
async def watch(run_ref: str = RunArg) -> int:
    """Follow a run: stage, progress over migrations, and what it waits for (with how to approve).

    Exits 0 when the run succeeded or waits for approval, 1 when it ended otherwise."""
    settings = load_settings()
    client = await temporal(settings)
    handle = resolve_run(client, run_ref)
    await describe_or_fail(handle)
    snap = await follow(handle, until_gate=True)
    if snap.closed:
        console.print(outcome_line(snap.status, snap.execution_status), markup=False)
        return 0 if snap.status and snap.status.outcome == "succeeded" else 1
    return 0
