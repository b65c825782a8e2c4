"""RolloutWorkflow's orchestration with mocked activities on the time-skipping server: the children
are the real DeployWorkflow, only the database work is pretend. What the real activities do is
tested against PostgreSQL in tests/test_rollout_promotion.py and tests/test_rollout_fleet.py."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError

from domain.models import ApprovalAnswer, ApprovalPayload, ApprovalPolicy, RunStatus
from domain.rollout_models import ControlPayload
from workflows.rollout_history import run_chain
from tests.rollout_fakes import (
    FakeFleet,
    fake_worker,
    final_rollout,
    rollout_request,
    start_rollout,
    wait_rollout,
)

# Typed approver names: rollout-level approvals are not signed yet (issue 15 proves single runs).
PROD = ApprovalPolicy(gates=["deploy"], approvers=["alice", "bob", "carol"], allow_self_approval=False,
                      approval_timeout=timedelta(hours=2), required_approvals=1, proofs=["ssh", "typed"])


@pytest.fixture
def env(time_skipping_env):
    return time_skipping_env


_TAG = {"now": ""}


@pytest.fixture(autouse=True)
def _fresh_names():
    """Each test's databases have names (and so run ids prisma-deploy-<name>) of their own."""
    _TAG["now"] = uuid.uuid4().hex[:6]


def tenants(n: int) -> list[str]:
    return [f"tenants:{_TAG['now']}t{i:02d}" for i in range(1, n + 1)]


async def wait_closed(handle) -> None:
    """A run this test started ends before the worker goes (or it would hold its database's id)."""
    import asyncio

    from temporalio.client import WorkflowExecutionStatus

    for _ in range(200):
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} is still running")


async def approve(handle, stage: str, by: str, fingerprint: str | None = None) -> ApprovalAnswer:
    return await handle.execute_update("approve_update", ApprovalPayload(stage=stage, approver=by, fingerprint=fingerprint),
                                       result_type=ApprovalAnswer)


async def refused(handle, update: str, payload) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(update, payload, result_type=ApprovalAnswer)
    return err.value.cause.message


async def test_a_failed_staging_deploy_stops_production(env) -> None:
    fleet = FakeFleet(failing={"staging"}, policies={"prod": PROD})
    async with fake_worker(env.client, fleet) as worker:
        handle = await start_rollout(env.client, worker, rollout_request(["staging", "prod"]))
        status = await final_rollout(handle)
    assert status.outcome == "halted"
    assert status.error.startswith("stage staging failed: no further database was started; prod not started")
    staging = status.waves[0].results["staging"]
    assert staging.outcome == "failed_rolled_back" and "relation already exists" in staging.error
    assert fleet.calls[("compensate", "staging")] == 1  # the child undid its own change
    assert "prod" not in fleet.planned_by_rollout and fleet.deploys("prod") == 0
    assert [w.stage for w in status.waves] == ["staging"]


async def test_promotion_plans_prod_after_staging_and_needs_prods_approvers(env) -> None:
    fleet = FakeFleet(policies={"prod": PROD})
    async with fake_worker(env.client, fleet) as worker:
        handle = await start_rollout(env.client, worker, rollout_request(["staging", "prod"]))
        status = await wait_rollout(handle, lambda s: s.awaiting is not None)
        assert status.waves[0].results["staging"].outcome == "succeeded"
        assert status.awaiting.wave == 2 and len(status.awaiting.groups) == 1
        group = status.groups[status.awaiting.groups[0]]
        fp = group.state_fingerprint
        # Same state as staging had: the same state fingerprint, approved under prod's rules.
        assert "mallory is not an approver" in await refused(handle, "approve_update",
                                                             ApprovalPayload(stage="deploy", approver="mallory"))
        assert "carol requested this run and may not approve it" in await refused(
            handle, "approve_update", ApprovalPayload(stage="deploy", approver="carol", fingerprint=fp))
        assert "no plan of this rollout has the fingerprint" in await refused(
            handle, "approve_update", ApprovalPayload(stage="deploy", approver="alice", fingerprint="0" * 64))
        answer = await approve(handle, "deploy", "alice", fp)
        assert answer.accepted and "deploy of plan" in answer.message
        status = await final_rollout(handle)
    assert status.outcome == "succeeded"
    prod = status.waves[1].results["prod"]
    assert prod.outcome == "succeeded" and prod.approvals == "rollout"
    assert fleet.deploys("staging") == 1 and fleet.deploys("prod") == 1


async def test_twenty_databases_in_three_waves_one_plan_approved_once_and_the_odd_one_apart(env) -> None:
    names = tenants(20)
    odd = names[13]  # lands in the last wave
    fleet = FakeFleet({"tenants": names}, states={odd: "applied-a"}, policies={"tenants": PROD})
    req = rollout_request(["tenants"], waves=["1", "50%", "100%"], concurrency=4)
    async with fake_worker(env.client, fleet) as worker:
        handle = await start_rollout(env.client, worker, req)
        status = await wait_rollout(handle, lambda s: s.awaiting is not None)
        assert [len(w.targets) for w in status.waves] == [1, 9, 10]
        main = status.groups[status.awaiting.groups[0]]
        await approve(handle, "deploy", "bob", main.state_fingerprint)
        # Wave 2: every plan is approved already; the rollout asks to continue after the canary.
        status = await wait_rollout(handle, lambda s: s.awaiting is not None and s.awaiting.wave == 2)
        assert status.awaiting.wave_approval and status.waves[0].results[names[0]].outcome == "succeeded"
        assert "not waiting for a plan approval" in await refused(handle, "approve_update",
                                                                  ApprovalPayload(stage="deploy", approver="bob"))
        await approve(handle, "wave", "alice", status.waves[1].fingerprint)
        # Wave 3 holds the odd database: its own plan, its own approval (the main plan stays approved).
        status = await wait_rollout(handle, lambda s: s.awaiting is not None and s.awaiting.wave == 3)
        assert len(status.awaiting.groups) == 1
        own = status.groups[status.awaiting.groups[0]]
        assert own.members == 1 and own.state_fingerprint != main.state_fingerprint
        assert status.groups[main.key].members == 19
        await approve(handle, "deploy", "alice", own.state_fingerprint)
        status = await final_rollout(handle)
    assert status.outcome == "succeeded"
    results = {r.target: r for r in status.results()}
    assert set(results) == set(names) and all(r.outcome == "succeeded" for r in results.values())
    assert all(fleet.deploys(n) == 1 for n in names)
    assert results[odd].group == own.key and all(results[n].group == main.key for n in names if n != odd)
    assert all(r.approvals == "rollout" for r in results.values())
    # Plan approvals given once: one accepted approval per plan, one wave approval.
    accepted = [a for a in status.attempts if a.record.accepted]
    assert [(a.record.stage, a.record.approver) for a in accepted] == [("deploy", "bob"), ("wave 2", "alice"),
                                                                         ("deploy", "alice")]


async def test_failures_past_the_threshold_halt_the_wave(env) -> None:
    names = tenants(10)
    fleet = FakeFleet({"tenants": names}, failing=set(names[1:4]))
    req = rollout_request(["tenants"], waves=["1", "100%"], concurrency=1, max_failures="1")
    async with fake_worker(env.client, fleet) as worker:
        status = await final_rollout(await start_rollout(env.client, worker, req))
    assert status.outcome == "halted" and "wave 2 (tenants, 100%) had 2 failed database(s), more than 1" in status.error
    started = [n for n in names if fleet.deploys(n)]
    assert started == names[:3]  # concurrency 1: the third failure never happened, nothing after it started
    assert set(status.waves[1].results) == set(names[1:3])


async def test_pause_stops_new_deploys_until_resumed(env) -> None:
    names = tenants(6)
    fleet = FakeFleet({"tenants": names}, deploy_seconds=0.3)
    req = rollout_request(["tenants"], waves=["100%"], concurrency=2)
    async with fake_worker(env.client, fleet) as worker:
        handle = await start_rollout(env.client, worker, req)
        await wait_rollout(handle, lambda s: s.running)
        answer = await handle.execute_update("pause_update", ControlPayload(by="dave", reason="incident"),
                                             result_type=ApprovalAnswer)
        assert answer.accepted and "finish first" in answer.message
        paused = await wait_rollout(handle, lambda s: not s.running and s.phase == "paused")
        done = len(paused.waves[0].results)
        assert 1 <= done < len(names)
        assert "paused already" in await refused(handle, "pause_update", ControlPayload(by="dave"))
        again = await wait_rollout(handle, lambda s: True)
        assert len(again.waves[0].results) == done  # nothing started while paused
        await handle.execute_update("resume_update", ControlPayload(by="erin"), result_type=ApprovalAnswer)
        status = await final_rollout(handle)
    assert status.outcome == "succeeded" and all(fleet.deploys(n) == 1 for n in names)
    assert [(c.action, c.by, c.accepted) for c in status.controls] == [
        ("pause", "dave", True), ("pause", "dave", False), ("resume", "erin", True)]


async def test_continue_as_new_keeps_history_bounded_and_deploys_each_database_once(env) -> None:
    names = tenants(9)
    fleet = FakeFleet({"tenants": names})
    req = rollout_request(["tenants"], waves=["1", "100%"], concurrency=2, children_per_run=3)
    async with fake_worker(env.client, fleet) as worker:
        handle = await start_rollout(env.client, worker, req)
        status = await final_rollout(handle)
        chain = await run_chain(env.client, handle.id)
    lengths = [len(history.events) for _, history in chain]
    assert status.outcome == "succeeded" and status.runs == 3 and status.children_started == 9
    assert all(fleet.deploys(n) == 1 for n in names)
    assert len(lengths) == 3 and max(lengths) < 80


async def test_cancel_cancels_running_deploys_which_undo_their_changes(env) -> None:
    names = tenants(4)
    fleet = FakeFleet({"tenants": names}, blocking=set(names))
    req = rollout_request(["tenants"], waves=["100%"], concurrency=2)
    async with fake_worker(env.client, fleet) as worker:
        handle = await start_rollout(env.client, worker, req)
        await wait_rollout(handle, lambda s: len(s.running) == 2)
        while len(fleet.deploying) < 2:
            import asyncio

            await asyncio.sleep(0.05)
        await handle.execute_update("cancel_update", ControlPayload(by="dave", reason="wrong bundle"),
                                    result_type=ApprovalAnswer)
        status = await final_rollout(handle)
    assert status.outcome == "cancelled" and "dave cancelled the rollout" in status.error
    results = status.waves[0].results
    assert sorted(results) == names[:2] and all(r.outcome == "cancelled" for r in results.values())
    assert fleet.cancelled == set(names[:2]) and all(fleet.deploys(n) == 0 for n in names[2:])


async def test_a_run_whose_state_changed_since_planning_waits_for_its_own_approval(env) -> None:
    t01, t02 = tenants(2)
    fleet = FakeFleet({"tenants": [t01, t02]}, policies={"tenants": PROD}, later_states={t02: "drifted"})
    req = rollout_request(["tenants"], waves=["100%"])
    async with fake_worker(env.client, fleet) as worker:
        handle = await start_rollout(env.client, worker, req)
        status = await wait_rollout(handle, lambda s: s.awaiting is not None)
        await approve(handle, "deploy", "alice", status.groups[status.awaiting.groups[0]].state_fingerprint)
        child = env.client.get_workflow_handle(f"prisma-deploy-{t02}")
        from tests.helpers import wait_gate

        waiting = await wait_gate(child, "deploy")
        assert any("waits for its own approvals" in n for n in waiting.notes)
        assert not any(r.via == "rollout" and r.accepted for r in waiting.approvals)
        await child.execute_update("approve_update", ApprovalPayload(stage="deploy", approver="bob",
                                                                     fingerprint=waiting.plan.fingerprint))
        status = await final_rollout(handle)
    results = status.waves[0].results
    assert results[t01].approvals == "rollout" and results[t02].approvals == "own"
    assert status.outcome == "succeeded"


async def test_approvals_in_a_request_not_started_by_that_rollout_are_ignored(env) -> None:
    from domain.models import ApprovalRecord, ApprovedPlan
    from tests.helpers import start, wait_gate

    fleet = FakeFleet(policies={"prod": PROD})
    req = rollout_request(["prod"]).child_request("prod")
    state = fleet.preflight_result(req, own_run=True).plan.state_fingerprint
    forged = ApprovalRecord(decision="approve", stage="deploy", approver="alice", fingerprint=state,
                            at="2026-01-01T00:00:00Z", via="update", accepted=True)
    req.approved_plan = ApprovedPlan(state_fingerprint=state, approvals=[forged],
                                     rollout_workflow_id="prisma-rollout-x", rollout_run_id="r")
    async with fake_worker(env.client, fleet) as worker:
        handle = await start(env.client, worker, req)
        status = await wait_gate(handle, "deploy")
        assert any("was not started by it" in n for n in status.notes) and status.approvals == []
        await handle.cancel()
        await wait_closed(handle)
    assert isinstance(status, RunStatus)


async def test_a_rejected_plan_stops_the_rollout_before_any_database(env) -> None:
    fleet = FakeFleet({"tenants": tenants(3)}, policies={"tenants": PROD})
    async with fake_worker(env.client, fleet) as worker:
        handle = await start_rollout(env.client, worker, rollout_request(["tenants"], waves=["1", "100%"]))
        status = await wait_rollout(handle, lambda s: s.awaiting is not None)
        fp = status.groups[status.awaiting.groups[0]].state_fingerprint
        answer = await handle.execute_update("reject_update", ApprovalPayload(stage="deploy", approver="bob",
                                                                              comment="not tonight", fingerprint=fp),
                                             result_type=ApprovalAnswer)
        assert answer.accepted and "rejected by bob" in answer.message
        status = await final_rollout(handle)
    assert status.outcome == "rejected" and status.error.startswith("bob rejected deploy: not tonight")
    assert all(fleet.deploys(t) == 0 for t in tenants(3)) and status.results() == []


async def test_a_gate_nobody_answers_expires_and_nothing_starts(env) -> None:
    fleet = FakeFleet({"tenants": tenants(2)}, policies={"tenants": PROD})
    async with fake_worker(env.client, fleet) as worker:
        handle = await start_rollout(env.client, worker, rollout_request(["tenants"]))
        status = await final_rollout(handle)  # the time-skipping server jumps the 2 hours
    assert status.outcome == "expired" and "was not approved within 2:00:00" in status.error
    assert all(fleet.deploys(t) == 0 for t in tenants(2))


async def test_a_database_with_a_run_open_already_is_recorded_busy_not_deployed(env) -> None:
    import asyncio

    from workflows.start import start_options

    t01, t02 = tenants(2)
    fleet = FakeFleet({"tenants": [t01, t02]}, blocking={t02})
    async with fake_worker(env.client, fleet) as worker:
        req = rollout_request(["tenants"]).child_request(t02)
        manual = await env.client.start_workflow("DeployWorkflow", req, **start_options(req, task_queue=worker.task_queue))
        while t02 not in fleet.deploying:  # someone's own run of t02 is deploying
            await asyncio.sleep(0.05)
        status = await final_rollout(await start_rollout(env.client, worker, rollout_request(
            ["tenants"], waves=["100%"], max_failures="1")))
        await manual.cancel()
        await wait_closed(manual)
    busy = status.waves[0].results[t02]
    assert busy.outcome == "busy" and f"a run is already open for {t02}" in busy.error
    assert status.outcome == "completed_with_failures" and fleet.deploys(t01) == 1
    assert fleet.deploys(t02) == 1  # only the manual run's


async def test_temporal_cancellation_cancels_the_running_deploys(env) -> None:
    from temporalio.client import WorkflowExecutionStatus

    fleet = FakeFleet({"tenants": tenants(3)}, blocking=set(tenants(3)))
    async with fake_worker(env.client, fleet) as worker:
        handle = await start_rollout(env.client, worker, rollout_request(["tenants"], waves=["100%"], concurrency=2))
        await wait_rollout(handle, lambda s: len(s.running) == 2)
        while len(fleet.deploying) < 2:
            import asyncio

            await asyncio.sleep(0.05)
        await handle.cancel()  # the Temporal UI's Cancel, or `temporal workflow cancel`
        status = await wait_rollout(handle, lambda s: s.outcome is not None, timeout=30)
        description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.CANCELED and status.outcome == "cancelled"
    assert fleet.cancelled == set(tenants(2)) and fleet.deploys(tenants(3)[2]) == 0
