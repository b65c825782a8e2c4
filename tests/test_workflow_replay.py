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

import json
import os
import tempfile
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import WorkflowHistory, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.ledger import MigrationLedger
from devstack.incident import reproduce_incident
from domain.approval_proof import NAMESPACE, ApprovalStatement, signed_payload
from domain.bundle import build_bundle, pack
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
from tests.ssh_keys import make_key, sign
from workflows.messages import BUNDLE_PART_UPDATE
from worker import WORKFLOWS  # every workflow a history may be of (deploys, rollouts)
from workflows.sandbox import workflow_runner

HISTORIES = Path(__file__).resolve().parent / "histories"
# The folder new recordings go to; an existing recording is never overwritten.
RECORDING_VERSION = "v6-one-marker"
RECORDED = sorted(HISTORIES.glob("*/*.json"))


def history_of(name: str, text: str) -> WorkflowHistory:
    """The history under its own workflow id (from its start event), as a worker replays it: approval
    signatures are over the run's workflow id and run id, so a replay under another id would judge
    them differently."""
    events = json.loads(text).get("events") or [{}]
    started = events[0].get("workflowExecutionStartedEventAttributes") or {}
    return WorkflowHistory.from_json(started.get("workflowId") or name, text)


def _signed(key, workflow_id: str, run_id: str, stage: str, approver: str, fingerprint: str) -> dict:
    statement = ApprovalStatement(workflow_id, run_id, stage, "approve", approver, fingerprint)
    return signed_payload(statement, sign(key, statement.message(), NAMESPACE), "reviewed")


async def _record_incident(client, database_url: str) -> str:
    """Production's rules (issue 15): only SSH-signed approvals count. Refused attempts of every
    kind are in the history (not an approver, unsigned, another key), then alice's signed signal
    and bob's signed update pass the gates."""
    await reproduce_incident(database_url)
    with tempfile.TemporaryDirectory() as tmp:
        keys = {who: make_key(Path(tmp), who, "ed25519") for who in ("alice", "bob", "mallory")}
        settings = make_settings("prod", database_url, production_defaults=True, gates=["resolve", "deploy"],
                                 approvers=["alice", "bob"], allow_self_approval=False,
                                 allowed_signers=[f"alice {keys['alice'].public}", f"bob {keys['bob'].public}"])
        async with new_worker(client, settings) as worker:
            handle = await start(client, worker, incident_request("prod", requested_by="carol"),
                                 workflow_id="replay-incident")
            status = await wait_gate(handle, "resolve")
            fp, run_id = status.plan.fingerprint, handle.result_run_id
            await handle.signal("approve", {"stage": "resolve", "approver": "mallory"})  # refused, recorded
            await handle.signal("approve", approval("resolve", "bob", fp))  # unsigned: refused, recorded
            await handle.signal("approve", _signed(keys["mallory"], handle.id, run_id, "resolve", "alice", fp))
            await handle.signal("approve", _signed(keys["alice"], handle.id, run_id, "resolve", "alice", fp))
            await wait_gate(handle, "deploy")
            await handle.execute_update("approve_update", _signed(keys["bob"], handle.id, run_id, "deploy", "bob", fp))
            final = await final_status(handle)
    assert final.outcome == Outcome.succeeded
    assert [(a.accepted, a.proof) for a in final.approvals] == [
        (False, None), (False, None), (False, None), (True, "ssh"), (True, "ssh")]
    return await history_json(handle)


async def _record_rollback(client, database_url: str) -> str:
    a = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT PRIMARY KEY);', down='DROP TABLE "a";')
    b = migration("20250102000000_b", 'INSERT INTO "a" ("id") VALUES (1);', verify='SELECT count(*) = 2 FROM "a";')
    async with new_worker(client, make_settings("dev", database_url)) as worker:
        handle = await start(client, worker, request("dev", [a, b]), workflow_id="replay-rollback")
        final = await final_status(handle)
        assert final.outcome == Outcome.failed_rolled_back
        return await history_json(handle)


async def _record_bundle_in_parts(client, database_url: str) -> str:
    """A bundle sent in parts (small limits, so the recording stays small): one refused, the rest
    accepted, then preflight reads the SQL back from history and the run deploys it."""
    migs = [migration(f"2025010{i}000000_p{i}", f'CREATE TABLE "p{i}" ("id" INT);', down=f'DROP TABLE "p{i}";')
            for i in range(1, 6)]
    header, parts = pack(build_bundle(migs, revision="replay", source="tests"), inline_limit=500, part_bytes=300)
    req = request("dev", []).model_copy(update={"bundle": header})
    async with new_worker(client, make_settings("dev", database_url)) as worker:
        handle = await start(client, worker, req, workflow_id="replay-bundle-parts")
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(BUNDLE_PART_UPDATE, parts[1].model_copy(update={"index": 0}), result_type=str)
        for part in parts:
            await handle.execute_update(BUNDLE_PART_UPDATE, part, result_type=str)
        final = await final_status(handle)
        assert final.outcome == Outcome.succeeded and len(final.applied) == len(migs) and len(parts) >= 2
        return await history_json(handle)


async def _record_lock_budget(client, database_url: str) -> str:
    """Issue 13 item 5: a report holds its lock past the budget; the migration never takes its lock,
    leaves no trace, and the run ends failed_no_changes naming the report (patch 'lock-budget-no-changes')."""
    add = migration("20250101000000_add_note", 'ALTER TABLE "orders" ADD COLUMN "note" TEXT;')
    conn = await asyncpg.connect(database_url, server_settings={"application_name": "nightly-report"})
    try:
        await conn.execute('CREATE TABLE "orders" ("id" INT PRIMARY KEY)')
        await MigrationLedger(conn).ensure_table()
        async with conn.transaction():
            await conn.fetchval('SELECT count(*) FROM "orders"')
            async with new_worker(client, make_settings("dev", database_url, lock_wait_budget="2s")) as worker:
                handle = await start(client, worker, request("dev", [add]), workflow_id="replay-lock-budget")
                final = await final_status(handle)
    finally:
        await conn.close()
    assert final.outcome == Outcome.failed_no_changes and "application 'nightly-report'" in final.error
    return await history_json(handle)


async def _record_no_backup(client, database_url: str) -> str:
    """Issue 13 item 3: over backup_max_bytes the deploy gate's approval must acknowledge "no
    backup" for exactly that migration: one approval without it refused, one with it accepted."""
    table = migration("20250101000000_customers", "CREATE TABLE customers (id int PRIMARY KEY, phone text);\n"
                                                  "INSERT INTO customers VALUES (1, '+1 555 0101');\n")
    drop = migration("20250102000000_drop_phone", "ALTER TABLE customers DROP COLUMN phone;\n")
    async with new_worker(client, make_settings("dev", database_url)) as worker:
        assert (await final_status(await start(client, worker, request("dev", [table])))).outcome == Outcome.succeeded
    conn = await asyncpg.connect(database_url)
    await conn.execute("ANALYZE customers")  # the backup's size is estimated from the statistics
    await conn.close()
    settings = make_settings("dev", database_url, gates=["deploy"], backup_max_bytes=10)
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, request("dev", [table, drop]), workflow_id="replay-no-backup")
        status = await wait_gate(handle, "deploy")
        assert status.plan.no_backup == [drop.name]
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("approve_update", approval("deploy", "alice", status.plan.fingerprint))
        await handle.execute_update("approve_update", {**approval("deploy", "alice", status.plan.fingerprint),
                                                       "no_backup": [drop.name]})
        final = await final_status(handle)
    assert final.outcome == Outcome.succeeded and [a.no_backup for a in final.approvals if a.accepted] == [[drop.name]]
    return await history_json(handle)


SCENARIOS = {"incident_full_succeeded": _record_incident, "verify_failed_rolled_back": _record_rollback,
             "bundle_in_parts_succeeded": _record_bundle_in_parts, "lock_budget_failed_no_changes": _record_lock_budget,
             "no_backup_approved_succeeded": _record_no_backup}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_recording_scenarios_still_end_as_recorded_and_replay(dev_client, database_url: str, name: str) -> None:
    """The scenarios behind the committed histories still reach their outcome, and their fresh
    histories replay; with RECORD_HISTORIES=1 they also overwrite the committed files."""
    text = await SCENARIOS[name](dev_client, database_url)
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter,
                        workflow_runner=workflow_runner(strict=True))
    await replayer.replay_workflow(history_of(name, text))
    if os.environ.get("RECORD_HISTORIES"):
        target = HISTORIES / RECORDING_VERSION / f"{name}.json"
        assert not target.exists(), f"{target} is recorded already: bump RECORDING_VERSION to record anew"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def test_every_scenario_has_a_recording() -> None:
    assert {p.stem for p in RECORDED} >= set(SCENARIOS)


@pytest.mark.parametrize("strict", [True, False], ids=["strict-sandbox", "worker-sandbox"])
@pytest.mark.parametrize("path", RECORDED, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_recorded_history_replays_with_the_current_code(path: Path, strict: bool) -> None:
    """Under the tests' strict sandbox and under the worker's (own modules passed through)."""
    text = path.read_text()
    assert PG_TEST_PASSWORD not in text  # committed histories hold no secrets either
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter,
                        workflow_runner=workflow_runner(strict=strict))
    await replayer.replay_workflow(history_of(path.stem, text))


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
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter,
                        workflow_runner=workflow_runner(strict=True))
    await replayer.replay_workflow(history_of(handle.id, text))
