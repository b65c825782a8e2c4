"""Deciding whether one approve/reject attempt counts. Pure: the workflow calls it from its signal
and update handlers and records every attempt, accepted or refused, in RunStatus.approvals.

Rules (issues 3 and 15), checked in this order so the first refusal is the one a person can act on:
the payload must say which gate and who; the stage must be a gate this run has and has not passed
yet; a payload naming another run is refused; the approver must be on the environment's list (when
there is one); the requester may not approve their own run where the environment forbids it; a
fingerprint, when given, must be the plan's; then the **proof** of who the approver is:

- a signature, when present, must verify (domain/approval_proof.py) against the allowed signers
  the policy carries, over this run's workflow id, run id, stage, decision, approver and plan
  fingerprint: the record then says `proof="ssh"`, the principal and the key;
- without one, the attempt counts only where the environment accepts typed names, and is recorded
  as `proof="typed"` (unproven).

A deploy approval of a plan that runs migrations without a backup of the data they destroy
(`DeployPlan.no_backup`: over the environment's backup_max_bytes, or impossible to back up) must
acknowledge exactly those migrations (`"no_backup": [...]`), and a signed one signs that list too
(format v2 of domain/approval_proof.py); the record keeps what it acknowledged.

Each gate needs `required_approvals` distinct approvers, counted by proven principal; one key
counts once per gate even when the allowed signers list it for several names. Approvals may arrive
before their gate is reached: they are checked the same way and counted when the run gets there. A
rejection may come from an approver or from the requester (withdrawing their own run), with the
same proof rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.allowed_signers import AllowedSigner, AllowedSignersError, parse_allowed_signers
from domain.approval_proof import ApprovalStatement, Proven, verify_approval
from domain.models import (
    ApprovalPayload,
    ApprovalPolicy,
    ApprovalRecord,
    DeployPlan,
    Stage,
)

DECISIONS = ("approve", "reject")
GATE_STAGES = (Stage.resolve.value, Stage.deploy.value, Stage.verify.value)
PROOF_SSH = "ssh"
PROOF_TYPED = "typed"
EXAMPLE = '{"stage": "deploy", "approver": "alice", "comment": "ok", "fingerprint": "<plan fingerprint>"}'


@dataclass(frozen=True)
class ProofContext:
    """What a proof is checked against: this run's ids (workflow.info()) and the allowed signers
    parsed from the policy (`problem` says why the policy's list could not be read)."""

    workflow_id: str
    run_id: str
    signers: list[AllowedSigner] = field(default_factory=list)
    problem: str | None = None


def proof_context(workflow_id: str, run_id: str, policy: ApprovalPolicy | None) -> ProofContext:
    if policy is None:
        return ProofContext(workflow_id, run_id)
    try:
        return ProofContext(workflow_id, run_id, parse_allowed_signers(policy.allowed_signers))
    except AllowedSignersError as exc:  # validated at load; a list edited by hand since still says why
        return ProofContext(workflow_id, run_id, problem=str(exc))


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    return None


def check_attempt(
    payload: Any,
    *,
    decision: str,
    via: str,
    at: datetime,
    plan: DeployPlan | None,
    policy: ApprovalPolicy | None,
    requested_by: str,
    gates: list[str],
    passed: list[str],
    records: list[ApprovalRecord],
    open_for_approvals: bool = True,
    proofs: ProofContext | None = None,
) -> ApprovalRecord:
    """One attempt, judged: the record to append to the run's approvals. `proofs` None: the run
    predates approval proofs (workflow.patched), so names count as typed, as they did then."""
    data: dict[str, Any] | None = None
    if isinstance(payload, ApprovalPayload):
        data = payload.model_dump()
    elif isinstance(payload, dict):
        data = payload
    raw = data or {}
    stage_raw = raw.get("stage")
    approver_raw = raw.get("approver")
    stage = _as_text(stage_raw)
    approver = _as_text(approver_raw)
    comment = raw.get("comment")
    comment = comment if isinstance(comment, str) or comment is None else str(comment)
    fingerprint = _as_text(raw.get("fingerprint"))
    signature = raw.get("signature")
    acknowledged: list[str] = []  # the plan's no_backup list, once this approval acknowledged it

    def record(refusal: str | None, proof: str | None = None, principal: str | None = None,
               key: str | None = None) -> ApprovalRecord:
        return ApprovalRecord(
            decision=decision,
            stage=stage if stage is not None else (None if stage_raw is None else str(stage_raw)),
            approver=approver if approver is not None else (None if approver_raw is None else str(approver_raw)),
            comment=comment,
            fingerprint=fingerprint,
            at=at,
            via=via,
            accepted=refusal is None,
            refusal=refusal,
            proof=proof,
            principal=principal,
            key_fingerprint=key,
            no_backup=list(acknowledged) if refusal is None else [],
        )

    if decision not in DECISIONS:
        return record(f"unknown decision '{decision}'")
    if data is None:
        return record(f"the payload must be a JSON object like {EXAMPLE}")
    if stage is None:
        return record(f"'stage' is missing or not a text (one of: {', '.join(GATE_STAGES)}); example: {EXAMPLE}")
    if approver is None:
        return record(f"'approver' is missing or not a text: say who you are; example: {EXAMPLE}")
    if raw.get("fingerprint") is not None and fingerprint is None:
        return record("'fingerprint' must be a text (the plan fingerprint shown by the run)")
    if not open_for_approvals:
        return record("the run no longer takes approvals: it is finishing or undoing its changes")
    if plan is None or policy is None:
        return record("the plan is not ready yet (preflight is still running); send it when the run waits at a gate")
    if stage not in GATE_STAGES:
        return record(f"unknown stage '{stage}': gates are named {', '.join(GATE_STAGES)}")
    if stage not in gates:
        having = ", ".join(gates) or "none"
        return record(f"this run has no '{stage}' gate (its gates: {having})")
    if stage in passed:
        return record(f"the '{stage}' gate was already passed")
    if proofs is not None:
        other_run = _other_run(raw, proofs)
        if other_run:
            return record(other_run)

    allowed = policy.approvers
    if decision == "approve":
        if allowed and approver not in allowed:
            return record(
                f"{approver} is not an approver for {plan.environment} (allowed: {', '.join(allowed)})"
            )
        if not policy.allow_self_approval and approver == requested_by:
            return record(
                f"{approver} requested this run and may not approve it: {plan.environment} needs someone else"
            )
    elif allowed and approver not in allowed and approver != requested_by:
        return record(
            f"{approver} may not reject runs on {plan.environment} (approvers: {', '.join(allowed)}, "
            f"or the requester {requested_by})"
        )
    if fingerprint is not None and fingerprint.lower() != plan.fingerprint.lower():
        return record(
            f"the fingerprint you sent, {fingerprint}, does not match this run's plan, {plan.fingerprint}: "
            "the plan you reviewed is not the one waiting; review the current plan and approve that one"
        )

    acknowledged, problem = no_backup_acknowledgement(raw.get("no_backup"), decision, stage, plan)
    if problem:
        return record(problem)

    if proofs is None:
        proof, principal, key = PROOF_TYPED, None, None
    else:
        statement = ApprovalStatement(proofs.workflow_id, proofs.run_id, stage, decision, approver, plan.fingerprint,
                                      no_backup=tuple(acknowledged))
        if signature is not None:
            verdict = verify_approval(signature, statement, proofs.signers, at=at, claims=raw)
            if not isinstance(verdict, Proven):
                return record(_with_list_problem(verdict.reason, plan.environment, proofs), key=verdict.key_fingerprint)
            proof, principal, key = PROOF_SSH, verdict.principal, verdict.key_fingerprint
        elif PROOF_TYPED in policy.proofs:
            proof, principal, key = PROOF_TYPED, None, None
        else:
            return record(_unsigned_refusal(plan.environment, stage, decision, approver, proofs))

    if decision == "approve":
        if approver in approvers_of(records, stage):
            return record(f"{approver} already approved the '{stage}' gate; another approver is needed",
                          proof, principal, key)
        counted = _key_counted_for(records, stage, key)
        if counted:
            return record(f"the key {key} already approved the '{stage}' gate as {counted}: one key counts once, "
                          "another approver must sign with their own key", proof, principal, key)
    return record(None, proof, principal, key)


def no_backup_acknowledgement(given: Any, decision: str, stage: str, plan: DeployPlan) -> tuple[list[str], str | None]:
    """(the migrations acknowledged to run without a backup, or why the payload's `no_backup` is
    refused). A deploy approval of a plan with `no_backup` must name exactly those migrations;
    every other approval names none; a rejection's list is ignored."""
    if given is None or given == []:
        names: list[str] = []
    elif isinstance(given, str):
        names = [given.strip()]
    elif isinstance(given, list) and all(isinstance(n, str) for n in given):
        names = [n.strip() for n in given]
    else:
        return [], "'no_backup' must be a list of migration names (the ones the plan runs without a backup)"
    if decision != "approve":
        return [], None
    needed = sorted(set(plan.no_backup)) if stage == Stage.deploy.value else []
    if sorted(set(names)) == needed:
        return needed, None
    if not needed:
        where = ("this plan backs up all the data it destroys" if stage == Stage.deploy.value
                 else "only a deploy approval acknowledges running without a backup")
        return [], f"'no_backup' names {', '.join(names)}, but {where}: leave it out"
    flags = " ".join(f"--no-backup {n}" for n in needed)
    if not names:
        return [], (f"the plan runs {', '.join(needed)} without a backup of the data "
                    f"{'it destroys' if len(needed) == 1 else 'they destroy'} (see the plan: over backup_max_bytes, "
                    f"or impossible to back up): the deploy approval must acknowledge exactly that, with "
                    f"\"no_backup\": {json.dumps(needed)} (`starter.py approve ... {flags}`)")
    return [], (f"'no_backup' must name exactly the migrations the plan runs without a backup, {', '.join(needed)}; "
                f"it names {', '.join(names)} (`starter.py approve ... {flags}`)")


def require_proof(record: ApprovalRecord, policy: ApprovalPolicy, environment: str) -> ApprovalRecord:
    """An approval that reached this run another way (a rollout's, judged by its child) counts only
    with the proof this environment asks for: a typed name, where only signatures count, is refused."""
    if not record.accepted or record.proof == PROOF_SSH or PROOF_TYPED in policy.proofs:
        return record
    return record.model_copy(update={"accepted": False, "refusal": (
        f"{record.approver}'s approval reached this run through a rollout as a typed name, and {environment} "
        "accepts only SSH-signed approvals: approve this run itself with a signature (`starter.py sign`)")})


def _other_run(raw: dict[str, Any], proofs: ProofContext) -> str | None:
    """A payload that names a run names this one (a signed payload always does)."""
    workflow_id, run_id = _as_text(raw.get("workflow_id")), _as_text(raw.get("run_id"))
    if (workflow_id and workflow_id != proofs.workflow_id) or (run_id and run_id != proofs.run_id):
        named = f"{workflow_id or proofs.workflow_id}/{run_id or '?'}"
        return (f"this approval is for run {named}, not this run {proofs.workflow_id}/{proofs.run_id}: "
                "sign again for this run (`starter.py sign`)")
    return None


def _unsigned_refusal(environment: str, stage: str, decision: str, approver: str, proofs: ProofContext) -> str:
    what = "approval" if decision == "approve" else "rejection"
    sign = f"python starter.py sign {proofs.workflow_id} --stage {stage} --by {approver} --key <your key>" + (
        " --decision reject" if decision == "reject" else "")
    text = (f"the {what} is not signed, and {environment} accepts only SSH-signed approvals: sign it with "
            f"`{sign}` and paste the line it prints, or run `starter.py {decision} ... --sign-with <your key>`")
    if not proofs.signers:
        text += f" ({environment} lists no allowed signers yet: its worker settings must name the approvers' keys)"
    return text


def _with_list_problem(reason: str, environment: str, proofs: ProofContext) -> str:
    if proofs.problem:
        return f"{reason} ({environment}'s allowed signers cannot be read: {proofs.problem})"
    if not proofs.signers:
        return f"{reason} ({environment} lists no allowed signers yet: its worker settings must name the approvers' keys)"
    return reason


def _key_counted_for(records: list[ApprovalRecord], stage: str, key: str | None) -> str | None:
    if key is None:
        return None
    for r in records:
        if r.accepted and r.decision == "approve" and r.stage == stage and r.key_fingerprint == key:
            return r.principal or r.approver
    return None


def approvers_of(records: list[ApprovalRecord], stage: str) -> set[str]:
    """Distinct people whose approval of `stage` was accepted: the proven principal where there
    is one (it is always the name the approval was signed for), else the typed name."""
    return {
        r.principal or r.approver for r in records
        if r.accepted and r.decision == "approve" and r.stage == stage and (r.principal or r.approver)
    }


def no_backup_approved(records: list[ApprovalRecord]) -> list[str]:
    """The migrations the accepted deploy approvals acknowledged to run without a backup (each
    acknowledged exactly the plan's list, or it was refused)."""
    for r in records:
        if r.accepted and r.decision == "approve" and r.stage == Stage.deploy.value and r.no_backup:
            return list(r.no_backup)
    return []


def rejection(records: list[ApprovalRecord], passed: list[str]) -> ApprovalRecord | None:
    """The first accepted rejection of a gate not yet passed, if any."""
    for r in records:
        if r.accepted and r.decision == "reject" and r.stage not in passed:
            return r
    return None


def gate_open(records: list[ApprovalRecord], stage: str, required: int) -> bool:
    return len(approvers_of(records, stage)) >= max(1, required)
