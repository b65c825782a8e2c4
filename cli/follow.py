"""Following a run: poll its `status` query (and the deploy activity's heartbeats) until it ends
or waits for a human. Used by `watch` and `deploy --wait`."""

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


async def snapshot(handle: WorkflowHandle) -> Snapshot:
    desc = await handle.describe()
    if desc.status != WorkflowExecutionStatus.RUNNING:
        closed = handle._client.get_workflow_handle(handle.id, run_id=desc.run_id)  # the run described, not a newer one
        return Snapshot(True, desc.status, await final_status(closed), None)
    try:
        status = await query_status(handle)
    except RPCError:
        status = None  # no worker polling right now
    progress = None
    for pending in desc.raw_description.pending_activities:
        if pending.heartbeat_details.payloads:
            try:
                raw = json.loads(pending.heartbeat_details.payloads[0].data)
                progress = RunProgress.model_validate(raw)
            except (ValueError, TypeError):
                progress = None
    return Snapshot(False, desc.status, status, progress)


def approval_hint(status: RunStatus, workflow_id: str) -> str:
    stage = status.awaiting or "deploy"
    fingerprint = status.plan.fingerprint if status.plan else ""
    proofs = status.policy.proofs if status.policy else ["ssh"]
    lines = [
        f"waiting for approval of stage '{stage}'"
        + (f" ({status.approvals_needed} approval(s) needed)" if status.approvals_needed > 1 else ""),
        f"  plan fingerprint: {fingerprint}",
        "  Temporal UI: the run's User Metadata tab, Current Details, shows the plan and how to approve",
    ]
    if "ssh" in proofs:
        lines += [
            f"  CLI: python starter.py approve {workflow_id} --stage {stage} --by YOUR_NAME --sign-with ~/.ssh/id_ed25519",
            f"  UI: python starter.py sign {workflow_id} --stage {stage} --by YOUR_NAME --key ~/.ssh/id_ed25519, then "
            "paste its line in More Actions > Send an Update > approve_update",
        ]
    if "typed" in proofs:
        payload = json.dumps({"stage": stage, "approver": "YOUR NAME", "comment": "reviewed", "fingerprint": fingerprint})
        lines += [
            f"  typed names are accepted here (recorded as unproven): python starter.py approve {workflow_id} "
            f"--stage {stage} --by YOUR_NAME, or in the UI, Send an Update > approve_update with:",
            f"  {payload}",
        ]
    return "\n".join(lines)


async def follow(handle: WorkflowHandle, *, until_gate: bool, quiet: bool = False) -> Snapshot:
    """Show a live view until the run closes (or, with until_gate, waits for a human)."""
    announced_gate: str | None = None
    last_stage = None
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
                prog = snap.progress or status.progress
                total = prog.total or None
                bar.update(
                    task,
                    description=f"{status.stage}" + (f" · {prog.current}" if prog.current else ""),
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
