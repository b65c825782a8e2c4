"""`approve` and `reject`: sent as workflow updates, so the answer comes back at once."""

from __future__ import annotations

import typer
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from cli.app import app
from cli.common import (
    console,
    describe_or_fail,
    fail,
    load_settings,
    resolve_run,
    run,
    temporal,
)
from domain.models import ApprovalAnswer, ApprovalPayload
from workflows.messages import APPROVE_UPDATE, REJECT_UPDATE


def _run_closed(message: str) -> bool:
    """Temporal's words when an update races the run's end."""
    text = (message or "").lower()
    return "closing workflow" in text or "already completed" in text or "workflow execution already" in text


RunArg = typer.Argument(..., help="Environment name, workflow id, or WORKFLOW_ID/RUN_ID.")


async def _send(run_ref: str, update: str, stage: str, by: str, comment: str | None, fingerprint: str | None) -> int:
    settings = load_settings()
    client = await temporal(settings)
    handle = resolve_run(client, run_ref)
    desc = await describe_or_fail(handle)
    if desc.status is None or desc.status.name != "RUNNING":
        fail(f"run {handle.id} has already ended ({desc.status.name.lower() if desc.status else 'unknown'})")
    payload = ApprovalPayload(stage=stage, approver=by, comment=comment, fingerprint=fingerprint)
    try:
        answer = await handle.execute_update(update, payload, result_type=ApprovalAnswer)
    except WorkflowUpdateFailedError as exc:
        reason = exc.cause.message if getattr(exc.cause, "message", None) else str(exc.cause)
        if _run_closed(reason):
            fail(f"run {handle.id} ended before your {stage} decision was recorded; nothing was approved", 1)
        fail(f"refused: {reason}", exit_code=1)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND or _run_closed(exc.message):
            fail(f"run {handle.id} ended before your {stage} decision was recorded; nothing was approved", 1)
        fail(f"Temporal refused the request: {exc.message}")
    if not answer.accepted:
        fail(f"refused: {answer.message}", exit_code=1)
    console.print(answer.message, markup=False)
    return 0


@app.command()
@run
async def approve(
    run_ref: str = RunArg,
    stage: str = typer.Option(..., "--stage", "-s", help="The gate to approve: resolve, deploy or verify."),
    by: str = typer.Option(..., "--by", help="Your name, as listed in the environment's approvers."),
    comment: str = typer.Option(None, "--comment", "-m", help="Why (kept in the audit)."),
    fingerprint: str = typer.Option(
        None, "--fingerprint", help="The plan fingerprint you reviewed; refused if the plan changed."
    ),
) -> int:
    """Approve a gate of a waiting run. Prints the workflow's answer (accepted, or why refused)."""
    return await _send(run_ref, APPROVE_UPDATE, stage, by, comment, fingerprint)


@app.command()
@run
async def reject(
    run_ref: str = RunArg,
    stage: str = typer.Option(..., "--stage", "-s", help="The gate to reject."),
    by: str = typer.Option(..., "--by", help="Your name."),
    comment: str = typer.Option(None, "--comment", "-m", help="Why (kept in the audit)."),
    fingerprint: str = typer.Option(None, "--fingerprint"),
) -> int:
    """Reject a gate: the run undoes anything it changed and ends as rejected."""
    return await _send(run_ref, REJECT_UPDATE, stage, by, comment, fingerprint)
