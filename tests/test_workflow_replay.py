"""Replay: the current DeployWorkflow code must reproduce recorded histories exactly.

tests/histories/<version>/*.json are histories of completed runs (history.to_json()), one folder
per workflow version that recorded them; every one is replayed. A failure here means a change to
workflows/deploy.py is not replay-compatible with runs already in flight: guard it with
`workflow.patched()` instead.

Histories are appended, never overwritten. After changing the workflow, record the current
version's histories into a new folder (bump RECORDING_VERSION first):

    RECORD_HISTORIES=1 .venv/bin/python -m pytest -q tests/test_workflow_replay.py

which runs the scenarios below on the dev server and real PostgreSQL (they run in every test run
too, to a temporary history), writes tests/histories/<RECORDING_VERSION>/, then replays them.
Commit the new folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from devstack.incident import reproduce_incident
from domain.models import Outcome
from tests.conftest import PG_TEST_PASSWORD
from tests.helpers import (
    approval,
    final_status,
    history_json,
    incident_request,
    make_settings,
    migration,
    new_worker,
    request,
    start,
    wait_gate,
)
from workflows.deploy import DeployWorkflow
from workflows.sandbox import workflow_runner

HISTORIES = Path(__file__).resolve().parent / "histories"
# The folder new recordings go to; an existing recording is never overwritten.
RECORDING_VERSION = "v2"
RECORDED = sorted(HISTORIES.glob("*/*.json"))


async def _record_incident(client, database_url: str) -> str:
    await reproduce_incident(database_url)
    settings = make_settings("prod", database_url, gates=["resolve", "deploy"], approvers=["alice", "bob"],
                             allow_self_approval=False)
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, incident_request("prod", requested_by="carol"),
                             workflow_id="replay-incident")
        status = await wait_gate(handle, "resolve")
        await handle.signal("approve", {"stage": "resolve", "approver": "mallory"})  # refused, recorded
        await handle.signal("approve", approval("resolve", "alice", status.plan.fingerprint))
        await wait_gate(handle, "deploy")
        await handle.execute_update("approve_update", approval("deploy", "bob", status.plan.fingerprint))
        final = await final_status(handle)
        assert final.outcome == Outcome.succeeded
        return await history_json(handle)


async def _record_rollback(client, database_url: str) -> str:
    a = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT PRIMARY KEY);', down='DROP TABLE "a";')
    b = migration("20250102000000_b", 'INSERT INTO "a" ("id") VALUES (1);', verify='SELECT count(*) = 2 FROM "a";')
    async with new_worker(client, make_settings("dev", database_url)) as worker:
        handle = await start(client, worker, request("dev", [a, b]), workflow_id="replay-rollback")
        final = await final_status(handle)
        assert final.outcome == Outcome.failed_rolled_back
        return await history_json(handle)


SCENARIOS = {"incident_full_succeeded": _record_incident, "verify_failed_rolled_back": _record_rollback}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_recording_scenarios_still_end_as_recorded_and_replay(dev_client, database_url: str, name: str) -> None:
    """The scenarios behind the committed histories still reach their outcome, and their fresh
    histories replay; with RECORD_HISTORIES=1 they also overwrite the committed files."""
    text = await SCENARIOS[name](dev_client, database_url)
    replayer = Replayer(workflows=[DeployWorkflow], data_converter=pydantic_data_converter,
                        workflow_runner=workflow_runner())
    await replayer.replay_workflow(WorkflowHistory.from_json(name, text))
    if os.environ.get("RECORD_HISTORIES"):
        target = HISTORIES / RECORDING_VERSION / f"{name}.json"
        assert not target.exists(), f"{target} is recorded already: bump RECORDING_VERSION to record anew"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def test_every_scenario_has_a_recording() -> None:
    assert {p.stem for p in RECORDED} >= set(SCENARIOS)


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_recorded_history_replays_with_the_current_code(path: Path) -> None:
    text = path.read_text()
    assert PG_TEST_PASSWORD not in text  # committed histories hold no secrets either
    replayer = Replayer(workflows=[DeployWorkflow], data_converter=pydantic_data_converter,
                        workflow_runner=workflow_runner())
    await replayer.replay_workflow(WorkflowHistory.from_json(path.stem, text))


async def test_a_fresh_history_with_signals_updates_and_compensation_replays(dev_client, database_url: str) -> None:
    await reproduce_incident(database_url)
    settings = make_settings("prod", database_url, gates=["resolve", "deploy"])
    async with new_worker(dev_client, settings) as worker:
        handle = await start(dev_client, worker, incident_request("prod"))
        status = await wait_gate(handle, "resolve")
        await handle.execute_update("approve_update", approval("resolve", "alice", status.plan.fingerprint))
        await wait_gate(handle, "deploy")
        await handle.signal("reject", approval("deploy", "bob", comment="wrong window"))
        final = await final_status(handle)
        text = await history_json(handle)
    assert final.outcome == Outcome.rejected
    replayer = Replayer(workflows=[DeployWorkflow], data_converter=pydantic_data_converter,
                        workflow_runner=workflow_runner())
    await replayer.replay_workflow(WorkflowHistory.from_json(handle.id, text))
