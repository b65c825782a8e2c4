"""Approvals at the rollout level, judged by the same rules as a single run's (domain/approval.py).

A plan group's gate is approved exactly as a DeployWorkflow gate is: `approval.check_attempt` with
the group's representative plan, its policy, its gates and the approvals it has, the fingerprint
being the group's state fingerprint, and the same proofs: where the policy counts only SSH
signatures, an approval is signed (domain/approval_proof.py) over the rollout's workflow id and
first run id, the stage, the decision, the approver and the group's state fingerprint, and checked
against the policy's allowed signers. The runs the rollout then starts carry the accepted records
and their signatures (ApprovedPlan); each run judges them again with `accept_for_child` under its
own rules and its own allowed signers, over the same statement, and only if it is a child of that
rollout and its own plan has that state. A `wave` approval (continue after seeing the previous
wave's results) is an extra gate under the same proof rules: it never stands in for a plan's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain import approval
from domain.approval_proof import ApprovalStatement, Proven, verify_approval
from domain.models import ApprovalPayload, ApprovalPolicy, ApprovalRecord, ApprovedPlan, DeployPlan, Stage
from domain.rollout_models import PlanGroup, RolloutGate, WaveState

# (workflow id, first run id) a rollout's approvals are signed over; None: a rollout recorded
# before approval proofs, whose names count as typed (workflow.patched).
RolloutIds = tuple[str, str] | None

WAVE = "wave"
EXAMPLE = '{"stage": "deploy", "approver": "alice", "comment": "ok", "fingerprint": "<state fingerprint>"}'


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _fields(payload: Any) -> dict[str, Any] | None:
    if isinstance(payload, ApprovalPayload):
        return payload.model_dump()
    return payload if isinstance(payload, dict) else None


def group_plan(group: PlanGroup) -> DeployPlan:
    """The group's plan as its approvals name it: fingerprint = state fingerprint, and the
    environment is the group (so refusals read "not an approver for <group>")."""
    return group.plan.model_copy(update={"fingerprint": group.state_fingerprint,
                                         "environment": f"plan {group.state_fingerprint[:12]}"})


def no_backup_to_acknowledge(group: PlanGroup, stage: str) -> list[str]:
    """The migrations an approval of this gate of the group must acknowledge to run without a
    backup (`"no_backup"`, `--no-backup`): the plan's list for its deploy gate, else none."""
    return sorted(set(group.plan.no_backup)) if stage == Stage.deploy.value else []


def check_group_attempt(payload: Any, group: PlanGroup, *, decision: str, via: str, at: datetime, requested_by: str,
                        open_for_approvals: bool, rollout_ids: RolloutIds = None) -> ApprovalRecord:
    """One approve/reject of a plan group's gate, by the single-run rules and proofs."""
    data = dict(_fields(payload) or {})
    given = _text(data.get("fingerprint"))
    if given is None or given.lower() == group.key.lower():  # the group key, as `rollout show` lists it
        data["fingerprint"] = group.state_fingerprint
    proofs = approval.proof_context(*rollout_ids, group.policy) if rollout_ids else None
    return approval.check_attempt(
        data if _fields(payload) is not None else payload,
        decision=decision, via=via, at=at, plan=group_plan(group), policy=group.policy, requested_by=requested_by,
        gates=group.gates, passed=group.gates_passed, records=group.approvals, open_for_approvals=open_for_approvals,
        proofs=proofs,
    )


def _refused(decision: str, via: str, at: datetime, data: dict[str, Any] | None, reason: str) -> ApprovalRecord:
    raw = data or {}
    return ApprovalRecord(decision=decision, stage=_text(raw.get("stage")), approver=_text(raw.get("approver")),
                          comment=raw.get("comment") if isinstance(raw.get("comment"), str) else None,
                          fingerprint=_text(raw.get("fingerprint")), at=at, via=via, accepted=False, refusal=reason)


def check_wave_attempt(payload: Any, gate: RolloutGate | None, wave: WaveState | None, *, decision: str, via: str,
                       at: datetime, requested_by: str, records: list[ApprovalRecord], open_for_approvals: bool,
                       rollout_ids: RolloutIds = None, policies: list[ApprovalPolicy] | None = None) -> ApprovalRecord:
    """One approve/reject of the gate before a wave (stage "wave"): the approver rules of the
    wave's policies (approvers, self-approval, distinct approvers), the wave fingerprint if given,
    and the proof every one of those policies asks for."""
    data = _fields(payload)
    approver = _text((data or {}).get("approver"))
    fingerprint = _text((data or {}).get("fingerprint"))
    if data is None:
        return _refused(decision, via, at, None, f"the payload must be a JSON object like {EXAMPLE}")
    if approver is None:
        return _refused(decision, via, at, data, "'approver' is missing or not a text: say who you are")
    if not open_for_approvals:
        return _refused(decision, via, at, data, "the rollout no longer takes approvals: it is finishing")
    if gate is None or not gate.wave_approval or wave is None:
        return _refused(decision, via, at, data, "the rollout is not waiting for a wave approval"
                        + (f" (it waits for the plans of wave {gate.wave})" if gate is not None else ""))
    other = _other_rollout(data, rollout_ids)
    if other:
        return _refused(decision, via, at, data, other)
    if gate.approvers and approver not in gate.approvers and not (decision == "reject" and approver == requested_by):
        return _refused(decision, via, at, data,
                        f"{approver} is not an approver for wave {wave.number} (allowed: {', '.join(gate.approvers)})")
    if decision == "approve" and not gate.allow_self_approval and approver == requested_by:
        return _refused(decision, via, at, data,
                        f"{approver} requested this rollout and may not approve it: wave {wave.number} needs someone else")
    if fingerprint is not None and fingerprint.lower() != wave.fingerprint.lower():
        return _refused(decision, via, at, data,
                        f"fingerprint {fingerprint[:16]}… is not wave {wave.number}'s ({wave.fingerprint[:16]}…): "
                        "the results you saw are not the current ones; look again")
    proof, principal, key, problem = _wave_proof(data, decision, approver, wave, at, rollout_ids, policies or [])
    if problem:
        return _refused(decision, via, at, data, problem).model_copy(update={"key_fingerprint": key})
    if decision == "approve" and approver in wave_approvers(records, wave.number):
        return _refused(decision, via, at, data, f"{approver} already approved wave {wave.number}; another approver is needed")
    if decision == "approve" and key and any(r.accepted and r.stage == f"{WAVE} {wave.number}" and r.key_fingerprint == key
                                             for r in records):
        return _refused(decision, via, at, data, f"the key {key} already approved wave {wave.number}: one key counts once")
    comment = data.get("comment")
    return ApprovalRecord(decision=decision, stage=f"{WAVE} {wave.number}", approver=approver,
                          comment=comment if isinstance(comment, str) else None,
                          fingerprint=fingerprint or wave.fingerprint, at=at, via=via, accepted=True,
                          proof=proof, principal=principal, key_fingerprint=key)


def _other_rollout(data: dict[str, Any], rollout_ids: RolloutIds) -> str | None:
    if rollout_ids is None:
        return None
    workflow_id, run_id = _text(data.get("workflow_id")), _text(data.get("run_id"))
    if (workflow_id and workflow_id != rollout_ids[0]) or (run_id and run_id != rollout_ids[1]):
        return (f"this approval is for {workflow_id or rollout_ids[0]}/{run_id or '?'}, not this rollout "
                f"{rollout_ids[0]}/{rollout_ids[1]}: sign again for this rollout (`starter.py sign`)")
    return None


def _wave_proof(data: dict[str, Any], decision: str, approver: str, wave: WaveState, at: datetime,
                rollout_ids: RolloutIds, policies: list[ApprovalPolicy]
                ) -> tuple[str, str | None, str | None, str | None]:
    """(proof, principal, key, refusal) of a wave decision: a signature must verify against the
    allowed signers of every policy in the wave; a typed name counts only where all accept one."""
    if rollout_ids is None:
        return approval.PROOF_TYPED, None, None, None
    signature = data.get("signature")
    if signature is None:
        if all(approval.PROOF_TYPED in p.proofs for p in policies):
            return approval.PROOF_TYPED, None, None, None
        return approval.PROOF_TYPED, None, None, (
            f"the {decision} of wave {wave.number} is not signed, and its databases accept only SSH-signed approvals: "
            f"`python starter.py sign {rollout_ids[0]} --stage {WAVE} --by {approver} --key <your key>`"
            + (" --decision reject" if decision == "reject" else "") + ", or `starter.py "
            f"{decision} {rollout_ids[0]} --stage {WAVE} --by {approver} --sign-with <your key>`")
    statement = ApprovalStatement(rollout_ids[0], rollout_ids[1], WAVE, decision, approver, wave.fingerprint)
    verdict = None
    for policy in policies:
        context = approval.proof_context(*rollout_ids, policy)
        verdict = verify_approval(signature, statement, context.signers, at=at, claims=data)
        if not isinstance(verdict, Proven):
            return approval.PROOF_SSH, None, verdict.key_fingerprint, verdict.reason
    if not isinstance(verdict, Proven):
        return approval.PROOF_SSH, None, None, "the wave has no policy to check the signature against"
    return approval.PROOF_SSH, verdict.principal, verdict.key_fingerprint, None


def wave_approvers(records: list[ApprovalRecord], number: int) -> set[str]:
    return {r.approver for r in records if r.accepted and r.decision == "approve" and r.stage == f"{WAVE} {number}"
            and r.approver}


def targets_of(payload: Any, gate: RolloutGate | None, groups: dict[str, PlanGroup]) -> tuple[list[str], str | None]:
    """Which plan groups an approve/reject of a gate stage names: by its fingerprint (a state
    fingerprint or a group key, as shown), or the only group the rollout waits for."""
    data = _fields(payload) or {}
    fingerprint = _text(data.get("fingerprint"))
    if fingerprint is not None:
        fp = fingerprint.lower()
        named = [k for k, g in groups.items() if g.state_fingerprint.lower() == fp or k.lower() == fp]
        if not named:
            return [], f"no plan of this rollout has the fingerprint {fingerprint[:16]}…"
        # One state may be planned under several policies (staging, then prod): those still waiting count.
        waiting = [k for k in named if groups[k].gates and not groups[k].approved]
        return waiting or named, None
    waiting = gate.groups if gate is not None else []
    if len(waiting) == 1:
        return list(waiting), None
    if not waiting:
        return [], "the rollout is not waiting for a plan approval; name the plan with its fingerprint"
    fps = ", ".join(groups[k].state_fingerprint[:12] for k in waiting)
    return [], f"several plans wait for approval ({fps}…): name the one you approve with its fingerprint"


def refused(payload: Any, reason: str, *, decision: str, via: str, at: datetime) -> ApprovalRecord:
    """An attempt refused before any gate could judge it (e.g. it names no plan of this rollout)."""
    return _refused(decision, via, at, _fields(payload), reason)


def record_for_group(group: PlanGroup, record: ApprovalRecord, signature: Any = None) -> None:
    """Append a judged attempt (and the signature it was proven with) to its group; a gate passes
    once it has its distinct approvals."""
    group.approvals.append(record)
    group.signatures.append(signature if record.accepted and record.proof == approval.PROOF_SSH
                            and isinstance(signature, str) else None)
    for stage in group.gates:
        if stage not in group.gates_passed and approval.gate_open(group.approvals, stage, group.policy.required_approvals):
            group.gates_passed.append(stage)


def approved_plan(group: PlanGroup, rollout_workflow_id: str, rollout_run_id: str) -> ApprovedPlan | None:
    """What the runs of an approved group carry (None where the plan has no gate)."""
    if not group.gates:
        return None
    signatures = group.signatures + [None] * (len(group.approvals) - len(group.signatures))
    accepted = [(r, sig) for r, sig in zip(group.approvals, signatures) if r.accepted and r.decision == "approve"]
    return ApprovedPlan(state_fingerprint=group.state_fingerprint, approvals=[r for r, _ in accepted],
                        signatures=[sig for _, sig in accepted], rollout_workflow_id=rollout_workflow_id,
                        rollout_run_id=rollout_run_id)


def accept_for_child(approved: ApprovedPlan, *, parent_workflow_id: str | None, plan: DeployPlan,
                     policy: ApprovalPolicy, requested_by: str, gates: list[str], at: datetime,
                     with_proofs: bool = False) -> tuple[list[ApprovalRecord], str]:
    """The rollout's approvals as a run records them, each judged again by the run's own rules
    (with `with_proofs`, its own allowed signers over the statement the approver signed for the
    rollout), and a note for the run's status. Nothing is taken unless the run is that rollout's
    child and its plan has the approved state."""
    if parent_workflow_id != approved.rollout_workflow_id:
        return [], (f"approvals in the request for rollout {approved.rollout_workflow_id} were ignored: this run "
                    "was not started by it; it waits for its own approvals")
    if plan.state_fingerprint != approved.state_fingerprint:
        return [], (f"rollout {approved.rollout_workflow_id} approved plan state {approved.state_fingerprint[:12]}…, "
                    f"but this database's plan state is {plan.state_fingerprint[:12]}…: it waits for its own approvals")
    as_approved = plan.model_copy(update={"fingerprint": approved.state_fingerprint})
    proofs = (approval.proof_context(approved.rollout_workflow_id, approved.rollout_run_id, policy)
              if with_proofs else None)
    signatures = approved.signatures + [None] * (len(approved.approvals) - len(approved.signatures))
    records: list[ApprovalRecord] = []
    for given, signature in zip(approved.approvals, signatures):
        if given.decision != "approve" or not given.accepted:
            continue
        payload = {"stage": given.stage, "approver": given.approver, "comment": given.comment,
                   "fingerprint": approved.state_fingerprint, "no_backup": given.no_backup}
        if signature is not None:
            payload |= {"workflow_id": approved.rollout_workflow_id, "run_id": approved.rollout_run_id,
                        "signature": signature}
        record = approval.check_attempt(payload, decision="approve", via="rollout", at=given.at, plan=as_approved,
                                        policy=policy, requested_by=requested_by, gates=gates, passed=[],
                                        records=records, proofs=proofs)
        records.append(record)
    taken = sum(1 for r in records if r.accepted)
    return records, (f"{taken} approval(s) given to rollout {approved.rollout_workflow_id} for plan state "
                     f"{approved.state_fingerprint[:12]}… were judged by this run's rules and recorded")
