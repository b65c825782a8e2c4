"""Deciding whether one approve/reject attempt counts. Pure: the workflow calls it from its signal
and update handlers and records every attempt, accepted or refused, in RunStatus.approvals.

Rules (issue 3): the stage must be a gate this run has and has not passed yet; the approver must be
on the environment's list (when there is one); the requester may not approve their own run where
the environment forbids it; a fingerprint, when given, must be the plan's; each gate needs
`required_approvals` distinct approvers. Approvals may arrive before their gate is reached — they
are checked the same way and counted when the run gets there. A rejection may come from an
approver or from the requester (withdrawing their own run).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.models import (
    ApprovalPayload,
    ApprovalPolicy,
    ApprovalRecord,
    DeployPlan,
    Stage,
)

DECISIONS = ("approve", "reject")
GATE_STAGES = (Stage.resolve.value, Stage.deploy.value, Stage.verify.value)
EXAMPLE = '{"stage": "deploy", "approver": "alice", "comment": "ok", "fingerprint": "<plan fingerprint>"}'


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
) -> ApprovalRecord:
    """One attempt, judged: the record to append to the run's approvals."""
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

    def record(refusal: str | None) -> ApprovalRecord:
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
            f"fingerprint {fingerprint[:16]}… does not match this run's plan ({plan.fingerprint[:16]}…): "
            "the plan you reviewed is not the one waiting; review the current plan"
        )
    if decision == "approve" and approver in approvers_of(records, stage):
        return record(f"{approver} already approved the '{stage}' gate; another approver is needed")
    return record(None)


def approvers_of(records: list[ApprovalRecord], stage: str) -> set[str]:
    """Distinct people whose approval of `stage` was accepted."""
    return {r.approver for r in records if r.accepted and r.decision == "approve" and r.stage == stage and r.approver}


def rejection(records: list[ApprovalRecord], passed: list[str]) -> ApprovalRecord | None:
    """The first accepted rejection of a gate not yet passed, if any."""
    for r in records:
        if r.accepted and r.decision == "reject" and r.stage not in passed:
            return r
    return None


def gate_open(records: list[ApprovalRecord], stage: str, required: int) -> bool:
    return len(approvers_of(records, stage)) >= max(1, required)
