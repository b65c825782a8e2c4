"""`approve` and `reject`: sent as workflow updates, so the answer comes back at once.

Bound to the plan by default (issue 15): the command first shows the plan the run waits with and
its full fingerprint, and sends that fingerprint (or the one given with --fingerprint, the plan the
approver reviewed earlier: refused if the run's plan is another). It signs the decision with the
approver's SSH key (--sign-with KEY, or the ssh-agent key the run's allowed signers list for --by)
over the run's statement (domain/approval_proof.py), so the workflow can prove who approved;
without a key the decision goes unsigned, and counts only where the environment accepts typed
names (the refusal says how to sign).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from cli.render import render_plan
from cli.rollout_approve import rollout_statement
from cli.sign import SigningError, sign_message, signed_run_id, signing_key
from domain.approval_proof import ApprovalStatement, signed_payload
from domain.models import ApprovalAnswer, RunStatus
from workflows.messages import APPROVE_UPDATE, REJECT_UPDATE, query_status
from workflows.rollout_start import ROLLOUT_WORKFLOW_NAME


def _run_closed(message: str) -> bool:
    """Temporal's words when an update races the run's end."""
    text = (message or "").lower()
    return "closing workflow" in text or "already completed" in text or "workflow execution already" in text


RunArg = typer.Argument(..., help="Environment name, workflow id, or WORKFLOW_ID/RUN_ID.")
NoBackupOpt = typer.Option(
    None, "--no-backup",
    help="A migration the plan runs without a backup of the data it destroys (repeat for each): a deploy "
         "approval of such a plan must acknowledge exactly those (signed with it).")
SignOpt = typer.Option(
    None, "--sign-with", "-k",
    help="Your SSH private key (or its .pub with the key in ssh-agent) to prove who you are. "
         "Default: the ssh-agent key the run's allowed signers list for --by; none: sent unsigned.")


async def _send(run_ref: str, decision: str, stage: str, by: str, comment: str | None, fingerprint: str | None,
                sign_with: Path | None, no_backup: list[str] | None = None) -> int:
    settings = load_settings()
    client = await temporal(settings)
    handle = resolve_run(client, run_ref)
    desc = await describe_or_fail(handle)
    if desc.status is None or desc.status.name != "RUNNING":
        fail(f"run {handle.id} has already ended ({desc.status.name.lower() if desc.status else 'unknown'})")
    handle = client.get_workflow_handle(desc.id, run_id=desc.run_id)  # the run shown is the run decided
    update = APPROVE_UPDATE if decision == "approve" else REJECT_UPDATE
    if desc.workflow_type == ROLLOUT_WORKFLOW_NAME:
        # A rollout shows its own plans (`starter.py rollout show`): signed over its ids and the plan state.
        statement, holder = await rollout_statement(handle, desc.id, signed_run_id(desc), stage, decision, by,
                                                    fingerprint)
        _warn_no_backup(list(holder.no_backup), no_backup)
        payload = await _payload(desc.id, statement.run_id, holder, decision, stage, by, comment,
                                 statement.fingerprint, sign_with, no_backup)
        return await _execute(handle, update, payload, stage)
    try:
        status = await query_status(handle)
    except RPCError as exc:
        fail(f"run {desc.id} does not answer (is a worker running?): {exc.message.splitlines()[0][:200]}")
    if status.plan is None or not status.plan.fingerprint:
        fail(f"run {desc.id} has no plan yet (preflight is still running): decide when it waits at a gate")
    _show_plan(status, stage, decision, fingerprint, no_backup)
    payload = await _payload(desc.id, signed_run_id(desc), status, decision, stage, by, comment,
                             fingerprint or status.plan.fingerprint, sign_with, no_backup)
    return await _execute(handle, update, payload, stage)


async def _execute(handle: Any, update: str, payload: dict[str, Any], stage: str) -> int:
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


def _show_plan(status: RunStatus, stage: str, decision: str, fingerprint: str | None,
               no_backup: list[str] | None = None) -> None:
    """What is being decided, before the answer: the plan and its full fingerprint (stderr is
    kept for the one-line error)."""
    plan = status.plan
    console.print(f"You {decision} the '{stage}' gate of this plan:", markup=False)
    render_plan(plan)
    if fingerprint and fingerprint.lower() != plan.fingerprint.lower():
        console.print(f"You reviewed plan {fingerprint}, but the run waits with {plan.fingerprint}: "
                          "the run will refuse this decision.", markup=False, soft_wrap=True)
    _warn_no_backup(sorted(plan.no_backup) if stage == "deploy" and decision == "approve" else [], no_backup)


def _warn_no_backup(needed: list[str], given: list[str] | None) -> None:
    """Before sending: the acknowledgement this decision needs, when --no-backup does not give exactly it."""
    if sorted(set(given or [])) != sorted(needed):
        console.print(("The plan runs " + ", ".join(needed) + " without a backup: approve it with "
                       + " ".join(f"--no-backup {n}" for n in needed) if needed else
                       "This approval acknowledges no missing backup: leave --no-backup out")
                      + "; the run will refuse this decision.", markup=False, soft_wrap=True)


async def _payload(workflow_id: str, run_id: str, status: Any, decision: str, stage: str, by: str,
                   comment: str | None, fingerprint: str, sign_with: Path | None,
                   no_backup: list[str] | None = None) -> dict[str, Any]:
    """`status`: what holds the policy whose allowed signers pick the key (a RunStatus, or a
    rollout's PolicyHolder). `no_backup`: the migrations acknowledged to run without a backup."""
    unbacked = tuple(sorted(set(no_backup or [])))
    unsigned = {"stage": stage, "approver": by, "comment": comment, "fingerprint": fingerprint}
    if unbacked:
        unsigned["no_backup"] = list(unbacked)
    with signing_key(sign_with, by, status) as key:
        if key is None:
            console.print(f"Not signed (no --sign-with, and no ssh-agent key listed for {by}): it counts only "
                              "where the environment accepts typed names.", markup=False, soft_wrap=True)
            return unsigned
        statement = ApprovalStatement(workflow_id, run_id, stage, decision, by, fingerprint, no_backup=unbacked)
        problem = statement.problem()
        if problem:
            fail(problem)
        try:
            signature = sign_message(statement.message(), key)
        except SigningError as exc:
            fail(str(exc))
    return signed_payload(statement, signature, comment)


@app.command()
@run
async def approve(
    run_ref: str = RunArg,
    stage: str = typer.Option(..., "--stage", "-s", help="The gate to approve: resolve, deploy or verify."),
    by: str = typer.Option(..., "--by", help="Your name, as the environment's approvers and allowed signers list it."),
    comment: str = typer.Option(None, "--comment", "-m", help="Why (kept in the audit)."),
    fingerprint: str = typer.Option(
        None, "--fingerprint",
        help="The plan fingerprint you reviewed (default: the plan the run waits with, shown first); "
             "refused if the plan changed."),
    sign_with: Path = SignOpt,
    no_backup: list[str] = NoBackupOpt,
) -> int:
    """Approve a gate of a waiting run: shows the plan and its fingerprint, signs with your SSH key,
    and prints the workflow's answer (accepted, or why refused)."""
    return await _send(run_ref, "approve", stage, by, comment, fingerprint, sign_with, no_backup)


@app.command()
@run
async def reject(
    run_ref: str = RunArg,
    stage: str = typer.Option(..., "--stage", "-s", help="The gate to reject."),
    by: str = typer.Option(..., "--by", help="Your name."),
    comment: str = typer.Option(None, "--comment", "-m", help="Why (kept in the audit)."),
    fingerprint: str = typer.Option(None, "--fingerprint", help="The plan fingerprint you reviewed."),
    sign_with: Path = SignOpt,
) -> int:
    """Reject a gate: the run undoes anything it changed and ends as rejected."""
    return await _send(run_ref, "reject", stage, by, comment, fingerprint, sign_with)
