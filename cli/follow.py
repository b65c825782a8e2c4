"""Following a run: poll its `status` query (and the deploy activity's heartbeats) until it ends
or waits for a human. Used by `watch` and `deploy --wait`. While a migration (or a rollback) waits
for a lock, the heartbeats say who holds it: each new sentence is printed as it changes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.service import RPCError

from cli.common import console, err_console
from domain.models import Progress as RunProgress
from domain.models import RunStatus
from workflows.messages import final_status, query_status

POLL_SECONDS = 0.5


@dataclass
class Snapshot:
    closed: bool
    execution_status: WorkflowExecutionStatus | None
    status: RunStatus | None
    progress: RunProgress | None
    lock_wait: dict | None = None  # the running activity's wait for locks (activities/execute.py lock_details)


async def snapshot(handle: WorkflowHandle) -> Snapshot:
    desc = await handle.describe()
    if desc.status != WorkflowExecutionStatus.RUNNING:
        closed = handle._client.get_workflow_handle(handle.id, run_id=desc.run_id)  # the run described, not a newer one
        return Snapshot(True, desc.status, await final_status(closed), None)
    try:
        status = await query_status(handle)
    except RPCError:
        status = None  # no worker polling right now
    progress, waiting = None, None
    for pending in desc.raw_description.pending_activities:
        raw = heartbeat_details(pending)
        if raw is not None:
            try:
                progress = RunProgress.model_validate(raw)
            except (ValueError, TypeError):
                progress = None
            waiting = raw.get("lock_wait") if isinstance(raw.get("lock_wait"), dict) else None
    return Snapshot(False, desc.status, status, progress, waiting)


def heartbeat_details(pending) -> dict | None:
    """The first heartbeat detail of a pending activity, when it is a JSON object."""
    if not pending.heartbeat_details.payloads:
        return None
    try:
        raw = json.loads(pending.heartbeat_details.payloads[0].data)
    except (ValueError, TypeError):
        return None
    return raw if isinstance(raw, dict) else None


def lock_line(waiting: dict | None) -> str | None:
    """What to print about a wait for locks: the executor's sentence, once it has waited at all."""
    if not waiting or not waiting.get("message"):
        return None
    if not (waiting.get("waiting") or waiting.get("lock_timeouts") or waiting.get("blockers")):
        return None
    return f"locks: {waiting['message']}"


def approval_hint(status: RunStatus, workflow_id: str) -> str:
    stage = status.awaiting or "deploy"
    fingerprint = status.plan.fingerprint if status.plan else ""
    proofs = status.policy.proofs if status.policy else ["ssh"]
    unbacked = sorted(status.plan.no_backup) if status.plan and stage == "deploy" else []
    flags = "".join(f" --no-backup {n}" for n in unbacked)
    lines = [
        f"waiting for approval of stage '{stage}'"
        + (f" ({status.approvals_needed} approval(s) needed)" if status.approvals_needed > 1 else ""),
        f"  plan fingerprint: {fingerprint}",
        "  Temporal UI: the run's User Metadata tab, Current Details, shows the plan and how to approve",
    ]
    if unbacked:
        lines.append(f"  WITHOUT A BACKUP: {', '.join(unbacked)} destroy(s) data no backup will hold; the approval "
                     "must acknowledge exactly that (the --no-backup options below)")
    if "ssh" in proofs:
        lines += [
            f"  CLI: python starter.py approve {workflow_id} --stage {stage} --by YOUR_NAME --sign-with ~/.ssh/id_ed25519{flags}",
            f"  UI: python starter.py sign {workflow_id} --stage {stage} --by YOUR_NAME --key ~/.ssh/id_ed25519{flags}, then "
            "paste its line in More Actions > Send an Update > approve_update",
        ]
    if "typed" in proofs:
        payload = json.dumps({"stage": stage, "approver": "YOUR NAME", "comment": "reviewed", "fingerprint": fingerprint,
                              **({"no_backup": unbacked} if unbacked else {})})
        lines += [
            f"  typed names are accepted here (recorded as unproven): python starter.py approve {workflow_id} "
            f"--stage {stage} --by YOUR_NAME{flags}, or in the UI, Send an Update > approve_update with:",
            f"  {payload}",
        ]
    return "\n".join(lines)


async def follow(handle: WorkflowHandle, *, until_gate: bool, quiet: bool = False) -> Snapshot:
    """Show a live view until the run closes (or, with until_gate, waits for a human)."""
    announced_gate: str | None = None
    last_stage = None
    last_lock: str | None = None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=quiet,
    ) as bar:
        task = bar.add_task("starting", total=None)
        while True:
            snap = await snapshot(handle)
            if snap.closed:
                return snap
            status = snap.status
            if status is not None:
                if status.stage != last_stage and not quiet:
                    bar.console.print(f"stage: {status.stage}")
                    last_stage = status.stage
                said = lock_line(snap.lock_wait)
                if said and said != last_lock and not quiet:
                    bar.console.print(said, markup=False, highlight=False, soft_wrap=True)
                last_lock = said
                prog = snap.progress or status.progress
                total = prog.total or None
                bar.update(
                    task,
                    description=f"{status.stage}" + (f" · {prog.current}" if prog.current else "")
                    + (" · waiting for a lock" if said else ""),
                    total=total,
                    completed=prog.done,
                )
                if status.awaiting and status.awaiting != announced_gate:
                    announced_gate = status.awaiting
                    if not quiet:
                        bar.console.print(approval_hint(status, handle.id))
                    if until_gate:
                        return snap
                elif not status.awaiting:
                    announced_gate = None
            await asyncio.sleep(POLL_SECONDS)


def outcome_line(status: RunStatus | None, execution_status: WorkflowExecutionStatus | None) -> str:
    if status is None or status.outcome is None:
        return f"run ended: {execution_status.name.lower() if execution_status else 'unknown'}"
    line = f"outcome: {status.outcome}"
    if status.error:
        line += f" — {status.error}"
    if status.human_action:
        line += f"\nhuman action needed: {status.human_action}"
    return line


def print_outcome(status: RunStatus | None, execution_status: WorkflowExecutionStatus | None) -> None:
    console.print(outcome_line(status, execution_status), markup=False)
