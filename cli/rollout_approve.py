"""What an approver of a rollout's gate signs: the rollout's workflow id and first run id, the stage
(a plan's gate, or `wave`), the decision, the approver and the fingerprint (the plan group's state
fingerprint, or the wave's), as the rollout itself checks it (domain/rollout_approval.py). Used by
`starter.py approve|reject|sign` when the run named is a rollout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cli.common import fail
from domain.approval_proof import ApprovalStatement
from domain.models import ApprovalPolicy
from domain.rollout import wave_groups
from domain.rollout_approval import WAVE, no_backup_to_acknowledge, targets_of
from workflows.rollout_history import query_rollout


@dataclass(frozen=True)
class PolicyHolder:
    """The policy whose allowed signers pick and check the approver's key (what cli/sign.py reads
    from a deploy run's status), and the migrations this decision must acknowledge to run without
    a backup (the group's plan's `no_backup` for its deploy approval)."""

    policy: ApprovalPolicy | None
    no_backup: tuple[str, ...] = ()


async def rollout_statement(handle: Any, workflow_id: str, first_run_id: str, stage: str, decision: str, approver: str,
                            fingerprint: str | None) -> tuple[ApprovalStatement, PolicyHolder]:
    """The statement for this decision on the rollout's current gate (one line and exit when there
    is nothing it could approve)."""
    status = await query_rollout(handle)
    run_id = status.first_run_id or first_run_id
    gate = status.awaiting
    if stage == WAVE:
        if gate is None or not gate.wave_approval:
            fail(f"rollout {workflow_id} is not waiting for a wave approval" +
                 (f" (it waits for the plans of wave {gate.wave}: approve their gates)" if gate else ""))
        wave = status.wave(gate.wave)
        if fingerprint and fingerprint.lower() != wave.fingerprint.lower():
            fail(f"you reviewed wave fingerprint {fingerprint}, but wave {wave.number}'s is {wave.fingerprint}: "
                 "look at its results again (`starter.py rollout show`)", exit_code=1)
        keys = [k for k in wave_groups(wave, wave.membership) if status.groups[k].gates]
        policy = status.groups[keys[0]].policy if keys else None
        return ApprovalStatement(workflow_id, run_id, WAVE, decision, approver, wave.fingerprint), PolicyHolder(policy)
    keys, problem = targets_of({"fingerprint": fingerprint}, gate, status.groups)
    if problem:
        fail(f"rollout {workflow_id}: {problem}")
    group = status.groups[keys[0]]
    statement = ApprovalStatement(workflow_id, run_id, stage, decision, approver, group.state_fingerprint)
    problem = statement.problem()
    if problem:
        fail(problem)
    needed = no_backup_to_acknowledge(group, stage) if decision == "approve" else []
    return statement, PolicyHolder(group.policy, tuple(needed))
