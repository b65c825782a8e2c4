"""The rollout's pure decisions: waves, thresholds, plan groups and their state fingerprints, the
gate before a wave, and the approval rules at the rollout and in its runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from domain.models import ApprovalPolicy, ApprovedPlan, PreflightResult
from domain.rollout import (
    RolloutSpecError,
    absorb,
    allowed_failures,
    check_control,
    gate_for,
    group_plans,
    split_waves,
    threshold_passed,
    wave_groups,
)
from domain.rollout_approval import (
    accept_for_child,
    approved_plan,
    check_group_attempt,
    check_wave_attempt,
    record_for_group,
    targets_of,
)
from domain.rollout_models import TargetResult, WaveState
from tests.rollout_fakes import FakeFleet, rollout_request

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
PROD = ApprovalPolicy(gates=["deploy"], approvers=["alice", "bob", "carol"], allow_self_approval=False,
                      approval_timeout=timedelta(hours=1), required_approvals=2, proofs=["ssh", "typed"])


def names(n: int) -> list[str]:
    return [f"db{i:03d}" for i in range(n)]


def test_waves_take_a_canary_then_cumulative_percentages_and_never_skip_a_database() -> None:
    waves = split_waves(names(20), ["1", "50%", "100%"])
    assert [(label, len(t)) for label, t in waves] == [("canary", 1), ("50%", 9), ("100%", 10)]
    assert [t for _, ts in waves for t in ts] == names(20)
    # Leftovers become a last wave; empty waves vanish; a tiny fleet is not over-split.
    assert [(l, len(t)) for l, t in split_waves(names(5), ["2", "10%"])] == [("2", 2), ("rest", 3)]
    assert [(l, len(t)) for l, t in split_waves(names(1), ["1", "50%", "100%"])] == [("canary", 1)]
    assert [len(t) for _, t in split_waves(names(200), ["1", "25%", "100%"])] == [1, 49, 150]


def test_named_groups_are_waves_in_fleet_order() -> None:
    groups = {"eu": ["db004", "db001"], "late": ["db002"]}
    waves = split_waves(names(6), ["1", "group:eu", "rest"], groups)
    assert waves == [("canary", ["db000"]), ("group:eu", ["db001", "db004"]), ("rest", ["db002", "db003", "db005"])]
    with pytest.raises(RolloutSpecError, match="has no group 'us'"):
        split_waves(names(3), ["group:us"], groups)


@pytest.mark.parametrize("spec,message", [(["0"], "is not a count"), (["150%"], "at most 100%"), (["x"], "not a count"),
                                          ([], "no waves given"), (["group:"], "names no group")])
def test_wave_specs_that_cannot_be_read_are_refused(spec, message) -> None:
    with pytest.raises(RolloutSpecError, match=message):
        split_waves(names(3), spec)


def test_thresholds_are_counts_or_percentages_of_the_wave() -> None:
    assert allowed_failures("0", 10) == 0 and allowed_failures("3", 10) == 3
    assert allowed_failures("10%", 25) == 2 and allowed_failures("10%", 1) == 0
    with pytest.raises(RolloutSpecError):
        allowed_failures("ten", 3)
    wave = WaveState(number=1, stage="t", label="x", targets=names(10))
    wave.results = {n: TargetResult(target=n, outcome="succeeded") for n in names(8)}
    wave.results["db000"].outcome = "failed_rolled_back"
    assert not threshold_passed(wave, "1") and threshold_passed(wave, "0")


def _planned(states: dict[str, str], policy: ApprovalPolicy = PROD) -> list[tuple[str, PreflightResult]]:
    fleet = FakeFleet(states=states, policies={n: policy for n in states})
    req = rollout_request(["t"]).child_request("x")
    return [(n, fleet.preflight_result(req.model_copy(update={"environment": n}), own_run=False)) for n in states]


def test_databases_in_one_state_share_a_group_and_a_different_one_gets_its_own() -> None:
    states = {n: "s" for n in names(5)} | {"db002": "other"}
    groups = group_plans(_planned(states))
    assert [g.members for g in groups] == [["db000", "db001", "db003", "db004"], ["db002"]]
    assert groups[0].state_fingerprint != groups[1].state_fingerprint
    # Equal states under different rules are approved apart.
    lax = ApprovalPolicy(gates=[], approval_timeout=timedelta(hours=1))
    mixed = group_plans(_planned({"a": "s"}) + _planned({"b": "s"}, lax))
    assert len(mixed) == 2 and mixed[0].state_fingerprint == mixed[1].state_fingerprint


def _rollout_groups(states: dict[str, str]):
    groups: dict = {}
    membership = absorb(groups, group_plans(_planned(states)))
    return groups, membership


def test_the_gate_asks_for_new_plans_then_for_a_wave_approval() -> None:
    groups, membership = _rollout_groups({n: "s" for n in names(4)})
    first = WaveState(number=1, stage="t", label="canary", targets=["db000"])
    gate = gate_for(first, wave_groups(first, membership), groups, first=True)
    assert gate.groups == [membership["db000"]] and not gate.wave_approval
    group = groups[membership["db000"]]
    for who in ("alice", "bob"):  # two distinct approvers for this policy
        record_for_group(group, check_group_attempt({"stage": "deploy", "approver": who}, group, decision="approve",
                                                    via="update", at=NOW, requested_by="carol", open_for_approvals=True))
    assert group.approved
    second = WaveState(number=2, stage="t", label="rest", targets=names(4)[1:])
    gate = gate_for(second, wave_groups(second, membership), groups, first=False)
    assert gate.wave_approval and gate.approvals_needed == 2 and not gate.allow_self_approval
    assert gate_for(second, wave_groups(second, membership), groups, first=True) is None


def test_plan_approvals_follow_the_single_deploy_rules() -> None:
    groups, membership = _rollout_groups({"db000": "s"})
    group = groups[membership["db000"]]

    def attempt(payload, decision="approve"):
        record = check_group_attempt(payload, group, decision=decision, via="signal", at=NOW, requested_by="carol",
                                     open_for_approvals=True)
        record_for_group(group, record)
        return record

    assert "mallory is not an approver" in attempt({"stage": "deploy", "approver": "mallory"}).refusal
    assert "carol requested this run and may not approve it" in attempt({"stage": "deploy", "approver": "carol"}).refusal
    assert "does not match" in attempt({"stage": "deploy", "approver": "alice", "fingerprint": "ab" * 32}).refusal
    assert "no 'verify' gate" in attempt({"stage": "verify", "approver": "alice"}).refusal
    assert "must be a JSON object" in attempt("yes").refusal
    ok = attempt({"stage": "deploy", "approver": "alice", "fingerprint": group.key})  # the key, as listed, works too
    assert ok.accepted and ok.fingerprint == group.state_fingerprint and not group.approved
    assert "already approved" in attempt({"stage": "deploy", "approver": "alice"}).refusal
    assert attempt({"stage": "deploy", "approver": "bob"}).accepted and group.approved


def test_an_attempt_names_its_plan_by_fingerprint_when_several_wait() -> None:
    groups, membership = _rollout_groups({"db000": "s", "db001": "other"})
    from domain.rollout_models import RolloutGate

    gate = RolloutGate(wave=1, groups=list(groups))
    keys, problem = targets_of({"stage": "deploy", "approver": "alice"}, gate, groups)
    assert keys == [] and "several plans wait" in problem
    fp = groups[membership["db001"]].state_fingerprint
    assert targets_of({"fingerprint": fp}, gate, groups) == ([membership["db001"]], None)


def test_wave_approvals_check_approvers_self_approval_and_the_wave_fingerprint() -> None:
    from domain.rollout_models import RolloutGate

    gate = RolloutGate(wave=2, wave_approval=True, approvals_needed=1, approvers=["alice", "bob"],
                       allow_self_approval=False)
    wave = WaveState(number=2, stage="t", label="rest", targets=["x"], fingerprint="f" * 64)

    def attempt(payload, decision="approve", records=()):
        return check_wave_attempt(payload, gate, wave, decision=decision, via="update", at=NOW, requested_by="bob",
                                  records=list(records), open_for_approvals=True)

    assert "not an approver for wave 2" in attempt({"stage": "wave", "approver": "mallory"}).refusal
    assert "may not approve it" in attempt({"stage": "wave", "approver": "bob"}).refusal
    assert "not wave 2's" in attempt({"stage": "wave", "approver": "alice", "fingerprint": "0" * 64}).refusal
    ok = attempt({"stage": "wave", "approver": "alice"})
    assert ok.accepted and ok.stage == "wave 2"
    assert "already approved" in attempt({"stage": "wave", "approver": "alice"}, records=[ok]).refusal
    assert attempt({"stage": "wave", "approver": "bob"}, decision="reject").accepted  # the requester may withdraw
    assert "not waiting for a wave approval" in check_wave_attempt(
        {"approver": "alice"}, None, None, decision="approve", via="signal", at=NOW, requested_by="x", records=[],
        open_for_approvals=True).refusal


def _child_inputs(state: str = "s"):
    groups, membership = _rollout_groups({"db000": "s"})
    group = groups[membership["db000"]]
    for who in ("alice", "bob"):
        record_for_group(group, check_group_attempt({"stage": "deploy", "approver": who}, group, decision="approve",
                                                    via="update", at=NOW, requested_by="carol", open_for_approvals=True))
    approved = approved_plan(group, "prisma-rollout-r", "run-1")
    own = _planned({"db009": state})[0][1]
    return approved, own


def test_a_child_takes_the_rollouts_approvals_only_for_its_state_and_as_its_child() -> None:
    approved, own = _child_inputs()
    kwargs = dict(plan=own.plan, policy=own.policy, requested_by="carol", gates=["deploy"], at=NOW)
    records, note = accept_for_child(approved, parent_workflow_id="prisma-rollout-r", **kwargs)
    assert [(r.approver, r.via, r.accepted) for r in records] == [("alice", "rollout", True), ("bob", "rollout", True)]
    assert "judged by this run's rules" in note
    records, note = accept_for_child(approved, parent_workflow_id=None, **kwargs)
    assert records == [] and "was not started by it" in note
    approved_other, drifted = _child_inputs(state="drifted")
    records, note = accept_for_child(approved_other, parent_workflow_id="prisma-rollout-r",
                                     **{**kwargs, "plan": drifted.plan})
    assert records == [] and "waits for its own approvals" in note


def test_a_child_judges_each_approval_again_by_its_own_rules() -> None:
    approved, own = _child_inputs()
    stricter = own.policy.model_copy(update={"approvers": ["alice"]})
    records, _ = accept_for_child(approved, parent_workflow_id="prisma-rollout-r", plan=own.plan, policy=stricter,
                                  requested_by="carol", gates=["deploy"], at=NOW)
    assert [(r.approver, r.accepted) for r in records] == [("alice", True), ("bob", False)]
    forged = ApprovedPlan(state_fingerprint=approved.state_fingerprint, rollout_workflow_id="prisma-rollout-r",
                          rollout_run_id="r", approvals=[approved.approvals[0].model_copy(update={"approver": "carol"})])
    records, _ = accept_for_child(forged, parent_workflow_id="prisma-rollout-r", plan=own.plan, policy=own.policy,
                                  requested_by="carol", gates=["deploy"], at=NOW)
    assert not records[0].accepted and "may not approve it" in records[0].refusal


def test_pause_resume_cancel_say_who_and_refuse_what_makes_no_sense() -> None:
    ok = check_control({"by": "dave", "reason": "incident"}, "pause", at=NOW, paused=False, cancelling=False,
                       finished=False)
    assert ok.accepted and ok.by == "dave" and ok.reason == "incident"
    assert "say who you are" in check_control({}, "pause", at=NOW, paused=False, cancelling=False, finished=False).refusal
    assert "not paused" in check_control({"by": "d"}, "resume", at=NOW, paused=False, cancelling=False,
                                         finished=False).refusal
    assert "has ended" in check_control({"by": "d"}, "cancel", at=NOW, paused=False, cancelling=False,
                                        finished=True).refusal


def test_the_gate_shows_previous_results_the_plans_and_the_exact_json_to_send() -> None:
    from domain import rollout_details
    from domain.rollout_models import RolloutStatus

    groups, membership = _rollout_groups({n: "s" for n in names(3)})
    status = RolloutStatus(name="r", stages=["t"], requested_by="carol", operation="full", groups=groups)
    first = WaveState(number=1, stage="t", label="canary", targets=["db000"], membership=membership)
    first.results["db000"] = TargetResult(target="db000", outcome="failed_rolled_back", error="relation exists")
    second = WaveState(number=2, stage="t", label="rest", targets=names(3)[1:], membership=membership)
    status.waves = [first, second]
    gate = gate_for(second, wave_groups(second, membership), groups, first=False)
    text = rollout_details.gate(status, gate, "prisma-rollout-r")
    key = membership["db000"]
    assert "waits before wave 2 (t, rest: 2 database(s))" in text
    assert "wave 1 (t, canary): 1/1 done — 1 failed_rolled_back" in text and "`db000`: **failed_rolled_back** — relation exists" in text
    assert (f'{{"stage": "deploy", "approver": "<your name>", "comment": "ok", "fingerprint": '
            f'"{groups[key].state_fingerprint}"}}') in text
    assert "starter.py approve prisma-rollout-r --stage <stage>" in text


# -- signed approvals (issue 15's proofs, over the rollout's ids and the group's state) ---------------

from domain.approval_proof import NAMESPACE, ApprovalStatement, signed_payload  # noqa: E402
from tests.ssh_keys import make_key, sign  # noqa: E402

IDS = ("prisma-rollout-r", "0194f3a2-7c1e-7d55-9f5c-6d0b1e2a3c4d")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("rollout-approver-keys")
    return {who: make_key(d, who, "ed25519") for who in ("alice", "bob", "mallory")}


@pytest.fixture(scope="module")
def ssh_policy(keys):
    return PROD.model_copy(update={"proofs": ["ssh"], "required_approvals": 1,
                                   "allowed_signers": f"alice {keys['alice'].public}\nbob {keys['bob'].public}\n"})


def signed_for(key, stage, approver, fingerprint, *, ids=IDS, decision="approve"):
    statement = ApprovalStatement(ids[0], ids[1], stage, decision, approver, fingerprint)
    return signed_payload(statement, sign(key, statement.message(), NAMESPACE), "reviewed")


def test_a_signed_plan_approval_is_proven_at_the_rollout_and_again_in_each_run(keys, ssh_policy) -> None:
    groups, membership = _rollout_groups_under({"db000": "s"}, ssh_policy)
    group = groups[membership["db000"]]

    def attempt(payload):
        record = check_group_attempt(payload, group, decision="approve", via="update", at=NOW, requested_by="carol",
                                     open_for_approvals=True, rollout_ids=IDS)
        record_for_group(group, record, payload.get("signature") if isinstance(payload, dict) else None)
        return record

    unsigned = attempt({"stage": "deploy", "approver": "alice", "fingerprint": group.state_fingerprint})
    assert not unsigned.accepted and "accepts only SSH-signed approvals" in unsigned.refusal
    assert f"starter.py sign {IDS[0]} --stage deploy --by alice" in unsigned.refusal
    elsewhere = attempt(signed_for(keys["alice"], "deploy", "alice", group.state_fingerprint,
                                   ids=("prisma-rollout-other", IDS[1])))
    assert not elsewhere.accepted and "not this run prisma-rollout-r" in elsewhere.refusal
    not_listed = attempt(signed_for(keys["mallory"], "deploy", "alice", group.state_fingerprint))
    assert not not_listed.accepted and "not in this environment's allowed signers" in not_listed.refusal
    ok = attempt(signed_for(keys["alice"], "deploy", "alice", group.state_fingerprint))
    assert ok.accepted and ok.proof == "ssh" and ok.principal == "alice" and group.approved

    carried = approved_plan(group, *IDS)
    assert len(carried.approvals) == 1 and carried.signatures[0].startswith("-----BEGIN SSH SIGNATURE-----")
    own = _planned({"db009": "s"}, ssh_policy)[0][1]
    kwargs = dict(parent_workflow_id=IDS[0], plan=own.plan, requested_by="carol", gates=["deploy"], at=NOW,
                  with_proofs=True)
    records, _ = accept_for_child(carried, policy=own.policy, **kwargs)
    assert [(r.approver, r.proof, r.accepted) for r in records] == [("alice", "ssh", True)]
    # A database whose allowed signers do not list the key does not take it; nor a bare name.
    other_keys = own.policy.model_copy(update={"allowed_signers": f"alice {keys['mallory'].public}\n"})
    records, _ = accept_for_child(carried, policy=other_keys, **kwargs)
    assert not records[0].accepted and "not in this environment's allowed signers" in records[0].refusal
    bare = carried.model_copy(update={"signatures": [None]})
    records, _ = accept_for_child(bare, policy=own.policy, **kwargs)
    assert not records[0].accepted and "accepts only SSH-signed approvals" in records[0].refusal


def test_a_wave_approval_needs_the_same_proof(keys, ssh_policy) -> None:
    from domain.rollout_models import RolloutGate

    gate = RolloutGate(wave=2, wave_approval=True, approvals_needed=1, approvers=["alice", "bob"])
    wave = WaveState(number=2, stage="t", label="rest", targets=["x"], fingerprint="f" * 64)

    def attempt(payload):
        return check_wave_attempt(payload, gate, wave, decision="approve", via="update", at=NOW, requested_by="carol",
                                  records=[], open_for_approvals=True, rollout_ids=IDS, policies=[ssh_policy])

    refused = attempt({"stage": "wave", "approver": "bob"})
    assert not refused.accepted and f"starter.py sign {IDS[0]} --stage wave --by bob" in refused.refusal
    wrong = attempt(signed_for(keys["bob"], "wave", "bob", "0" * 64))
    assert not wrong.accepted  # signed for other results than the wave's
    ok = attempt(signed_for(keys["bob"], "wave", "bob", wave.fingerprint))
    assert ok.accepted and ok.proof == "ssh" and ok.principal == "bob" and ok.stage == "wave 2"


def _rollout_groups_under(states: dict[str, str], policy: ApprovalPolicy):
    groups: dict = {}
    membership = absorb(groups, group_plans(_planned(states, policy)))
    return groups, membership
