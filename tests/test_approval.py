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


# -- proven approvers (issue 15): real keys and signatures made by ssh-keygen ---------------------

from domain.approval import ProofContext, proof_context  # noqa: E402
from domain.approval_proof import NAMESPACE, ApprovalStatement, payload_json, signed_payload  # noqa: E402
from tests.ssh_keys import make_key, sign  # noqa: E402

WF, RUN = "prisma-deploy-prod", "0194f3a2-7c1e-7d55-9f5c-6d0b1e2a3c4d"
SSH_ONLY = POLICY.model_copy(update={"proofs": ["ssh"], "required_approvals": 2})


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("approver-keys")
    return {who: make_key(d, who, "ed25519") for who in ("alice", "bob", "mallory", "shared")}


@pytest.fixture(scope="module")
def signed_policy(keys):
    signers = (f"alice {keys['alice'].public}\nbob {keys['bob'].public}\n"
               f"alice,bob {keys['shared'].public}\n")
    return SSH_ONLY.model_copy(update={"allowed_signers": signers})


def signed(key, stage="resolve", approver="alice", decision="approve", *, fingerprint=PLAN.fingerprint,
           workflow_id=WF, run_id=RUN, comment="reviewed"):
    statement = ApprovalStatement(workflow_id, run_id, stage, decision, approver, fingerprint)
    return signed_payload(statement, sign(key, statement.message(), NAMESPACE), comment)


def prove(payload, policy, decision="approve", records=()):
    return check_attempt(payload, decision=decision, via="update", at=AT, plan=PLAN, policy=policy,
                         requested_by="carol", gates=["resolve", "deploy"], passed=[], records=list(records),
                         proofs=proof_context(WF, RUN, policy))


def test_a_signed_approval_is_accepted_and_records_its_proof(keys, signed_policy) -> None:
    rec = prove(signed(keys["alice"]), signed_policy)
    assert rec.accepted, rec.refusal
    assert (rec.proof, rec.principal, rec.key_fingerprint) == ("ssh", "alice", keys["alice"].fingerprint)
    assert rec.comment == "reviewed"  # recorded as sent, not signed
    # What the UI receives is the pasted line, parsed by the data converter: the same dict.
    import json
    assert prove(json.loads(payload_json(signed(keys["bob"], approver="bob"))), signed_policy).proof == "ssh"
    rej = prove(signed(keys["bob"], approver="bob", decision="reject"), signed_policy, "reject")
    assert rej.accepted and rej.proof == "ssh"


def test_signatures_for_something_else_are_refused_and_say_what(keys, signed_policy) -> None:
    cases = {
        "another key": (signed(keys["mallory"]), "is not in this environment's allowed signers"),
        "another person's key": (signed(keys["bob"], approver="alice"), "is allowed for bob, not for alice"),
        "another run": (signed(keys["alice"], run_id="0194f3a2-0000-7000-8000-000000000000"),
                        "this approval is for run prisma-deploy-prod/0194f3a2-0000"),
        "another stage": ({**signed(keys["alice"], stage="deploy"), "stage": "resolve"},
                          "the signature is for the 'deploy' stage, not 'resolve'"),
        "another decision": (signed(keys["alice"], decision="reject"), "is for the decision 'reject'"),
        "another plan": ({**signed(keys["alice"], fingerprint="cd" * 32), "fingerprint": PLAN.fingerprint},
                         "does not match this approval"),
        "stale fingerprint sent": (signed(keys["alice"], fingerprint="cd" * 32),
                                   f"{'cd' * 32}, does not match this run's plan, {PLAN.fingerprint}"),
    }
    for name, (payload, reason) in cases.items():
        rec = prove(payload, signed_policy)
        assert not rec.accepted, name
        assert reason in rec.refusal, (name, rec.refusal)
        assert rec.proof is None


def test_a_tampered_signature_or_payload_is_refused(keys, signed_policy) -> None:
    good = signed(keys["alice"])
    body = good["signature"].splitlines()
    body[2] = body[2][:-4] + ("AAAA" if not body[2].endswith("AAAA") else "BBBB")
    tampered = {**good, "signature": "\n".join(body) + "\n"}
    rec = prove(tampered, signed_policy)
    assert not rec.accepted and ("malformed" in rec.refusal or "does not match" in rec.refusal), rec.refusal
    renamed = {**good, "approver": "bob"}  # alice's signature sent as bob's approval
    rec = prove(renamed, signed_policy)
    assert not rec.accepted and "was made by alice, but the approval says bob" in rec.refusal
    assert "'signature' must be a text" in prove({**good, "signature": 42}, signed_policy).refusal


def test_unsigned_approvals_count_only_where_typed_names_are_allowed(keys, signed_policy) -> None:
    rec = prove(ok(), signed_policy)
    assert not rec.accepted
    assert "the approval is not signed, and prod accepts only SSH-signed approvals" in rec.refusal
    assert "starter.py sign prisma-deploy-prod --stage resolve --by alice" in rec.refusal
    nobody = prove(ok(), SSH_ONLY)  # no allowed signers at all: say so
    assert "prod lists no allowed signers yet" in nobody.refusal
    typed_ok = signed_policy.model_copy(update={"proofs": ["ssh", "typed"]})
    rec = prove(ok(), typed_ok)
    assert rec.accepted and rec.proof == "typed" and rec.principal is None
    # A signature, when present, must verify even where typed names are allowed.
    assert not prove(signed(keys["mallory"]), typed_ok).accepted


def test_two_distinct_approvers_are_counted_by_proven_identity_and_one_key_counts_once(keys, signed_policy) -> None:
    alice = prove(signed(keys["alice"]), signed_policy)
    assert alice.accepted
    again = prove(signed(keys["alice"], comment="again"), signed_policy, records=[alice])
    assert "alice already approved the 'resolve' gate" in again.refusal
    # The shared key is listed for alice and bob: it proves either, but counts once per gate.
    shared_alice = prove(signed(keys["shared"]), signed_policy)
    shared_bob = prove(signed(keys["shared"], approver="bob"), signed_policy, records=[shared_alice])
    assert shared_alice.accepted and not shared_bob.accepted
    assert f"the key {keys['shared'].fingerprint} already approved the 'resolve' gate as alice" in shared_bob.refusal
    assert not gate_open([shared_alice, shared_bob], "resolve", 2)
    bob = prove(signed(keys["bob"], approver="bob"), signed_policy, records=[alice])
    assert approvers_of([alice, again, bob], "resolve") == {"alice", "bob"}
    assert gate_open([alice, again, bob], "resolve", 2)
    # A typed name that was refused in production counts for nothing.
    typed_bob = prove(ok(approver="bob"), signed_policy, records=[alice])
    assert not gate_open([alice, typed_bob], "resolve", 2)


def test_a_broken_list_in_a_policy_is_said_with_the_refusal(keys) -> None:
    broken = SSH_ONLY.model_copy(update={"allowed_signers": "alice ssh-ed25519 not-base64\n"})
    context = proof_context(WF, RUN, broken)
    assert isinstance(context, ProofContext) and context.problem and not context.signers
    rec = prove(signed(keys["alice"]), broken)
    assert not rec.accepted and "allowed signers cannot be read" in rec.refusal


def test_an_approval_taken_from_a_rollout_needs_the_environments_proof(keys, signed_policy) -> None:
    from domain.approval import require_proof

    typed = judge(ok())  # judged without proofs, as a rollout's child re-judges the rollout's records
    assert typed.accepted and typed.proof == "typed"
    refused = require_proof(typed, signed_policy, "prod")
    assert not refused.accepted and "through a rollout as a typed name" in refused.refusal
    assert require_proof(typed, signed_policy.model_copy(update={"proofs": ["ssh", "typed"]}), "prod").accepted
    proven = prove(signed(keys["alice"]), signed_policy)
    assert require_proof(proven, signed_policy, "prod") is proven
