"""Approval rules (pure): every attempt is judged into a record, refusals say why."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from domain.approval import approvers_of, check_attempt, gate_open, rejection
from domain.models import ApprovalPayload, ApprovalPolicy, DeployPlan, Operation

AT = datetime(2026, 1, 1, tzinfo=timezone.utc)
PLAN = DeployPlan(environment="prod", operation=Operation.full, fingerprint="ab" * 32)
POLICY = ApprovalPolicy(gates=["resolve", "deploy"], approvers=["alice", "bob"], allow_self_approval=False,
                        required_approvals=2)


def judge(payload, decision="approve", *, records=None, passed=None, gates=("resolve", "deploy"), plan=PLAN,
          policy=POLICY, open_=True):
    return check_attempt(payload, decision=decision, via="signal", at=AT, plan=plan, policy=policy,
                         requested_by="carol", gates=list(gates), passed=list(passed or []),
                         records=list(records or []), open_for_approvals=open_)


def ok(stage="resolve", approver="alice", **extra):
    return {"stage": stage, "approver": approver, "comment": "looks right", **extra}


def test_a_valid_approval_is_accepted_and_keeps_what_was_said() -> None:
    rec = judge(ok(fingerprint="AB" * 32))
    assert rec.accepted and rec.refusal is None
    assert (rec.stage, rec.approver, rec.comment, rec.via, rec.at) == ("resolve", "alice", "looks right", "signal", AT)
    assert judge(ApprovalPayload(stage="deploy", approver="bob")).accepted  # the model form (updates)


@pytest.mark.parametrize("payload,reason", [
    ("yes", "must be a JSON object"),
    (None, "must be a JSON object"),
    ({"approver": "alice"}, "'stage' is missing"),
    ({"stage": 3, "approver": "alice"}, "'stage' is missing or not a text"),
    ({"stage": "resolve"}, "'approver' is missing"),
    ({"stage": "resolve", "approver": "  "}, "'approver' is missing"),
    ({"stage": "resolve", "approver": "alice", "fingerprint": 12}, "'fingerprint' must be a text"),
    ({"stage": "migrate", "approver": "alice"}, "unknown stage 'migrate'"),
    ({"stage": "verify", "approver": "alice"}, "this run has no 'verify' gate"),
    ({"stage": "resolve", "approver": "mallory"}, "mallory is not an approver for prod (allowed: alice, bob)"),
    ({"stage": "resolve", "approver": "alice", "fingerprint": "cd" * 32}, "does not match this run's plan"),
])
def test_refusals_say_why(payload, reason) -> None:
    rec = judge(payload)
    assert not rec.accepted
    assert reason in rec.refusal


def test_the_requester_may_not_approve_where_forbidden_but_may_withdraw() -> None:
    strict = POLICY.model_copy(update={"approvers": ["alice", "carol"]})
    assert "carol requested this run and may not approve it" in judge(ok(approver="carol"), policy=strict).refusal
    lenient = strict.model_copy(update={"allow_self_approval": True})
    assert judge(ok(approver="carol"), policy=lenient).accepted
    assert judge(ok(approver="carol"), "reject").accepted  # withdrawing one's own run
    assert "may not reject" in judge(ok(approver="mallory"), "reject").refusal


def test_anyone_may_approve_when_the_environment_lists_no_approvers() -> None:
    open_policy = POLICY.model_copy(update={"approvers": []})
    assert judge(ok(approver="zed"), policy=open_policy).accepted


def test_state_of_the_run_passed_gates_duplicates_and_early_attempts() -> None:
    assert "already passed" in judge(ok(), passed=["resolve"]).refusal
    first = judge(ok())
    assert "alice already approved" in judge(ok(), records=[first]).refusal
    assert "plan is not ready yet" in judge(ok(), plan=None, policy=None).refusal
    assert "no longer takes approvals" in judge(ok(), open_=False).refusal
    assert judge(ok(stage="deploy")).accepted  # early, for a gate still ahead


def test_counting_distinct_approvers_and_rejections() -> None:
    a1, a2 = judge(ok()), judge(ok(approver="alice", comment="again"))
    refused = judge(ok(approver="mallory"))
    b = judge(ok(approver="bob"))
    assert approvers_of([a1, a2, refused], "resolve") == {"alice"}
    assert not gate_open([a1, a2, refused], "resolve", 2)
    assert gate_open([a1, refused, b], "resolve", 2)
    rej = judge(ok(stage="deploy", approver="bob"), "reject")
    assert rejection([a1, rej], passed=[]) is rej
    assert rejection([a1, rej], passed=["deploy"]) is None
    assert rejection([judge(ok(approver="mallory"), "reject")], passed=[]) is None  # refused ones do not count
