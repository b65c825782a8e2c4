"""Approvals on the real dev server: updates answer at once, signals never vanish, every attempt
(accepted or refused) is recorded; visibility through our search attributes."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowUpdateFailedError

from devstack.incident import reproduce_incident
from domain.models import ApprovalAnswer, ApprovalPayload, Outcome, RunStatus
from tests.helpers import (
    approval,
    final_status,
    incident_request,
    make_settings,
    new_worker,
    start,
    wait_gate,
    wait_status,
)


async def refused(handle, update: str, payload) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(update, payload, result_type=ApprovalAnswer)
    assert err.value.cause.type == "ApprovalRefused"
    return err.value.cause.message


async def test_prod_approval_rules_refuse_and_record(dev_client, database_url: str) -> None:
    await reproduce_incident(database_url)
    settings = make_settings("prod", database_url, gates=["resolve", "deploy"], approvers=["alice", "bob"],
                             allow_self_approval=False, required_approvals={"low": 2, "medium": 2, "high": 2})
    async with new_worker(dev_client, settings) as worker:
        handle = await start(dev_client, worker, incident_request("prod", requested_by="alice"))
        status = await wait_gate(handle, "resolve")
        fp = status.plan.fingerprint
        assert status.approvals_needed == 2

        assert "mallory is not an approver for prod" in await refused(
            handle, "approve_update", ApprovalPayload(stage="resolve", approver="mallory", fingerprint=fp))
        assert "alice requested this run and may not approve it" in await refused(
            handle, "approve_update", ApprovalPayload(stage="resolve", approver="alice", fingerprint=fp))
        assert "does not match this run's plan" in await refused(
            handle, "approve_update", ApprovalPayload(stage="resolve", approver="bob", fingerprint="0" * 64))
        assert "this run has no 'verify' gate" in await refused(
            handle, "approve_update", ApprovalPayload(stage="verify", approver="bob"))
        # Malformed signals, as typed into the UI: recorded as refused, not dropped.
        await handle.signal("approve", "yes please")
        await handle.signal("approve", {"stage": "resolve"})
        # An approval for the next gate, sent early, is accepted and counted when the run gets there.
        early = await handle.execute_update("approve_update", approval("deploy", "bob", fp), result_type=ApprovalAnswer)
        assert early.accepted and "deploy approved by bob" in early.message

        ok = await handle.execute_update("approve_update", approval("resolve", "bob", fp), result_type=ApprovalAnswer)
        assert "1/2" in ok.message
        assert "already approved" in await refused(handle, "approve_update", approval("resolve", "bob", fp))
        status = await handle.query("status", result_type=RunStatus)
        assert status.awaiting == "resolve"  # one distinct approver is not enough

        assert "carol is not an approver" in await refused(handle, "approve_update", approval("resolve", "carol", fp))
        status = await handle.query("status", result_type=RunStatus)
        refusals = [a for a in status.approvals if not a.accepted]
        assert len(refusals) == 8
        assert {a.via for a in refusals} == {"update", "signal"}
        assert any("must be a JSON object" in a.refusal for a in refusals)
        assert any("'approver' is missing" in a.refusal for a in refusals)
        await handle.execute_update("reject_update", approval("resolve", "alice", comment="I withdraw it"),
                                    result_type=ApprovalAnswer)
        final = await final_status(handle)
    assert final.outcome == Outcome.rejected
    assert "alice rejected the resolve gate: I withdraw it" in final.error
    assert len([a for a in final.approvals if a.accepted]) == 3  # bob x2 (resolve, deploy), alice's rejection


async def test_two_approvers_open_a_gate_and_runs_are_listed_by_search_attributes(dev_client, database_url: str) -> None:
    await reproduce_incident(database_url)
    settings = make_settings("stage2", database_url, gates=["deploy"], required_approvals={"low": 2})
    async with new_worker(dev_client, settings) as worker:
        handle = await start(dev_client, worker, incident_request("stage2", requested_by="zoe"))
        status = await wait_gate(handle, "deploy")
        await handle.signal("approve", approval("deploy", "yuri", status.plan.fingerprint))
        await wait_status(handle, lambda s: len(s.approvals) == 1)
        assert (await handle.query("status", result_type=RunStatus)).awaiting == "deploy"
        await handle.signal("approve", approval("deploy", "xena"))
        final = await final_status(handle)
    assert final.outcome == Outcome.succeeded
    query = ("WorkflowType = 'DeployWorkflow' AND MigrationEnvironment = 'stage2' AND "
             "MigrationOutcome = 'succeeded' AND MigrationRequestedBy = 'zoe'")
    for _ in range(50):  # visibility is eventually consistent
        found = [wf.id async for wf in dev_client.list_workflows(query)]
        if handle.id in found:
            break
        await asyncio.sleep(0.1)
    assert handle.id in found
    desc = await handle.describe()
    assert "full on stage2" in (await desc.static_summary())


async def test_verify_only_on_an_empty_database_fails_with_nothing_to_undo(dev_client, database_url: str) -> None:
    settings = make_settings("empty", database_url, gates=["deploy"])
    async with new_worker(dev_client, settings) as worker:
        handle = await start(dev_client, worker, incident_request("empty", operation="verify"))
        final = await final_status(handle)
    # verify on an empty database: nothing applied, so verification fails; nothing was changed
    assert final.outcome == Outcome.failed_no_changes
    assert final.compensation == []
