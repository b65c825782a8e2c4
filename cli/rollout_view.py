"""Following a rollout: poll its `status` query and show live per-wave progress (rich), announce
gates with how to approve them, and failures as they happen. Used by `rollout start` and `watch`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError

from cli.common import err_console
from domain.rollout_approval import no_backup_to_acknowledge
from domain.rollout_details import wave_name
from domain.rollout_models import RolloutGate, RolloutStatus
from workflows.rollout_history import final_rollout_status, query_rollout

POLL_SECONDS = 0.5


@dataclass
class RolloutSnapshot:
    closed: bool
    execution_status: WorkflowExecutionStatus | None
    status: RolloutStatus | None


async def snapshot(handle: WorkflowHandle) -> RolloutSnapshot:
    desc = await handle.describe()
    if desc.status == WorkflowExecutionStatus.CONTINUED_AS_NEW:  # between two runs: ask the newest
        desc = await handle._client.get_workflow_handle(handle.id).describe()
    if desc.status != WorkflowExecutionStatus.RUNNING:
        closed = handle._client.get_workflow_handle(handle.id, run_id=desc.run_id)
        return RolloutSnapshot(True, desc.status, await final_rollout_status(closed))
    try:
        status = await query_rollout(handle._client.get_workflow_handle(handle.id))
    except RPCError:
        status = None  # no worker polling right now
    return RolloutSnapshot(False, desc.status, status)


def gate_hint(status: RolloutStatus, gate: RolloutGate, workflow_id: str) -> str:
    wave = status.wave(gate.wave)
    lines = [f"waiting before wave {wave.number} ({wave_name(wave)}, {len(wave.targets)} database(s)):"]
    if gate.groups:
        for key in gate.groups:
            group = status.groups[key]
            todo = [s for s in group.gates if s not in group.gates_passed]
            lines.append(f"  plan {group.state_fingerprint} — {group.members} database(s), risk {group.plan.risk}, "
                         f"{group.policy.required_approvals} approval(s) per gate by "
                         f"{', '.join(group.policy.approvers) or 'anyone'}")
            sign = "" if "typed" in group.policy.proofs else " --sign-with YOUR_KEY"
            for stage in todo:
                unbacked = "".join(f" --no-backup {n}" for n in no_backup_to_acknowledge(group, stage))
                lines.append(f"    python starter.py approve {workflow_id} --stage {stage} --by YOUR_NAME "
                             f"--fingerprint {group.state_fingerprint}{sign}{unbacked}")
    else:
        lines.append(f"  every plan is approved; continue with {gate.approvals_needed} approval(s) of the wave by "
                     f"{', '.join(gate.approvers) or 'anyone'}:")
        typed = all("typed" in g.policy.proofs for g in status.groups.values() if g.key in wave.membership.values())
        lines.append(f"    python starter.py approve {workflow_id} --stage wave --by YOUR_NAME --fingerprint {wave.fingerprint}"
                     + ("" if typed else " --sign-with YOUR_KEY"))
    lines.append(f"  details: python starter.py rollout show {status.name}")
    return "\n".join(lines)


async def follow(handle: WorkflowHandle, *, until_gate: bool, quiet: bool = False) -> RolloutSnapshot:
    """Live per-wave bars until the rollout ends (or, with until_gate, waits for a human)."""
    bars: dict[int, TaskID] = {}
    reported: set[str] = set()
    announced: tuple[int, tuple[str, ...], bool] | None = None
    phase = None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                  TimeElapsedColumn(), console=err_console, disable=quiet) as bar:
        while True:
            snap = await snapshot(handle)
            status = snap.status
            if status is not None:
                for wave in status.waves:
                    running = sum(1 for t in status.running if t in set(wave.targets))
                    failed = len(wave.failures())
                    note = " ".join(x for x in (f"{running} running" if running else "",
                                                f"[red]{failed} failed[/red]" if failed else "") if x)
                    if wave.number not in bars:
                        bars[wave.number] = bar.add_task(f"wave {wave.number} ({wave_name(wave)})",
                                                         total=len(wave.targets), note="")
                    bar.update(bars[wave.number], completed=len(wave.results), note=note)
                    for r in wave.failures():
                        if r.target not in reported and not quiet:
                            reported.add(r.target)
                            bar.console.print(f"{r.target}: {r.outcome} — {r.error or 'see its run'}", markup=False,
                                              soft_wrap=True)
                if status.phase != phase and not quiet:
                    phase = status.phase
                    bar.console.print(f"rollout {status.name}: {phase}", markup=False)
                gate = status.awaiting
                key = (gate.wave, tuple(gate.groups), gate.wave_approval) if gate else None
                if gate is not None and key != announced:
                    announced = key
                    if not quiet:
                        bar.console.print(gate_hint(status, gate, handle.id), markup=False, soft_wrap=True)
                    if until_gate:
                        return snap
                elif gate is None:
                    announced = None
            if snap.closed:
                return snap
            await asyncio.sleep(POLL_SECONDS)


def outcome_line(status: RolloutStatus | None, execution_status: WorkflowExecutionStatus | None) -> str:
    if status is None or status.outcome is None:
        return f"rollout ended: {execution_status.name.lower() if execution_status else 'unknown'}"
    results = status.results()
    ok = sum(1 for r in results if r.outcome == "succeeded")
    line = f"outcome: {status.outcome} — {ok}/{len(results)} database(s) succeeded"
    return line + (f"; {status.error}" if status.error else "")
