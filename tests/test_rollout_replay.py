"""Replay: the current RolloutWorkflow (and DeployWorkflow, for the runs a rollout starts) must
reproduce recorded rollout histories exactly. tests/histories/*-rollout/ hold them (a folder per
recording version): a fleet in waves with an approved plan, a wave approval, a second plan and a pause (its runs' histories too:
the children that took the rollout's approvals), a rollout that continued as new, and a promotion
whose prod approval was SSH-signed over the rollout's ids (and checked again by prod's run).

Record anew after a change (into a new folder; never overwrite):

    RECORD_HISTORIES=1 .venv/bin/python -m pytest -q tests/test_rollout_replay.py

The scenarios also run in every test run (to a temporary history) and must replay.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from domain.models import ApprovalAnswer, ApprovalPayload
from domain.rollout_models import ControlPayload
from tests.conftest import PG_TEST_PASSWORD
from tests.helpers import new_worker
from tests.rollout_fakes import final_rollout, start_rollout, wait_rollout
from tests.test_workflow_replay import history_of  # under its own workflow id: approvals are signed over it
from tests.rollout_helpers import EFFECTS, apply_by_hand, create_fleet, drop_fleet, fleet_settings, request
from worker import WORKFLOWS
from workflows.rollout_history import run_chain
from workflows.sandbox import workflow_runner

HISTORIES = Path(__file__).resolve().parent / "histories"
RECORDING_VERSION = "v6-rollout"
RECORDED = sorted(HISTORIES.glob("*/rollout_*.json"))  # every version's rollout recordings


def replayer(*, strict: bool = True) -> Replayer:
    return Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter,
                    workflow_runner=workflow_runner(strict=strict))


async def _approve(handle, stage: str, by: str, fingerprint: str) -> None:
    await handle.execute_update("approve_update", ApprovalPayload(stage=stage, approver=by, fingerprint=fingerprint),
                                result_type=ApprovalAnswer)


async def _record_waves(client, pg_server) -> dict[str, str]:
    prefix, names = await create_fleet(pg_server, 4)
    await apply_by_hand(pg_server.url(names[3]), [EFFECTS])
    settings = fleet_settings(pg_server, prefix, gates=["deploy"], approvers=["alice", "bob"], allow_self_approval=False)
    try:
        async with new_worker(client, settings) as worker:
            handle = await start_rollout(client, worker, request(["tenants"], waves=["1", "2", "rest"], concurrency=2))
            status = await wait_rollout(handle, lambda s: s.awaiting is not None, timeout=60)
            await handle.signal("approve", {"stage": "deploy", "approver": "mallory"})  # refused, recorded
            await _approve(handle, "deploy", "bob", status.groups[status.awaiting.groups[0]].state_fingerprint)
            status = await wait_rollout(handle, lambda s: s.awaiting is not None and s.awaiting.wave == 2, timeout=60)
            await _approve(handle, "wave", "alice", status.waves[1].fingerprint)
            status = await wait_rollout(handle, lambda s: s.awaiting is not None and s.awaiting.wave == 3, timeout=60)
            await handle.execute_update("pause_update", ControlPayload(by="dave"), result_type=ApprovalAnswer)
            await _approve(handle, "deploy", "alice", status.groups[status.awaiting.groups[0]].state_fingerprint)
            await wait_rollout(handle, lambda s: s.phase == "paused", timeout=30)
            await handle.signal("resume", {"by": "dave"})
            final = await final_rollout(handle)
            assert final.outcome == "succeeded"
            out = {"rollout_waves_succeeded": (await handle.fetch_history()).to_json()}
            for target in (f"tenants:{names[0]}", f"tenants:{names[3]}"):
                run_id = next(r.run_id for r in final.results() if r.target == target)
                child = client.get_workflow_handle(f"prisma-deploy-{target}", run_id=run_id)
                key = "rollout_child_own_state" if target.endswith(names[3]) else "rollout_child_canary"
                out[key] = (await child.fetch_history()).to_json()
            return out
    finally:
        await drop_fleet(pg_server, names)


async def _record_continue_as_new(client, pg_server) -> dict[str, str]:
    prefix, names = await create_fleet(pg_server, 3)
    try:
        async with new_worker(client, fleet_settings(pg_server, prefix)) as worker:
            handle = await start_rollout(client, worker, request(["tenants"], waves=["1", "rest"], concurrency=2,
                                                                 children_per_run=2))
            final = await final_rollout(handle)
            assert final.outcome == "succeeded" and final.runs == 2
            chain = await run_chain(client, handle.id)
            return {f"rollout_continued_run{i + 1}": history.to_json() for i, (_, history) in enumerate(chain)}
    finally:
        await drop_fleet(pg_server, names)


async def _record_signed_promotion(client, pg_server) -> dict[str, str]:
    """staging, then prod under production's rules: prod's plan approved with an SSH signature over
    the rollout's ids and the plan state, which prod's own run checks again."""
    import tempfile
    import uuid
    from datetime import timedelta

    from domain.approval_proof import NAMESPACE, ApprovalStatement, signed_payload
    from runtime.settings import EnvironmentSettings, Settings
    from tests.ssh_keys import make_key, sign

    dbs = [await pg_server.create_database("sig") for _ in range(2)]
    key = make_key(Path(tempfile.mkdtemp(prefix="rollout-replay-")), "alice", "ed25519")
    staging, prod = f"staging{uuid.uuid4().hex[:6]}", f"prod{uuid.uuid4().hex[:6]}"
    settings = Settings(environments={
        staging: EnvironmentSettings(database_url=pg_server.url(dbs[0]), gates=[]),
        prod: EnvironmentSettings(database_url=pg_server.url(dbs[1]), gates=["deploy"], approvers=["alice"],
                                  allowed_signers=f"alice {key.public}\n")}, advisory_lock_timeout=timedelta(seconds=5),
        _env_file=None)
    try:
        async with new_worker(client, settings) as worker:
            handle = await start_rollout(client, worker, request([staging, prod]))
            status = await wait_rollout(handle, lambda s: s.awaiting is not None, timeout=60)
            fp = status.groups[status.awaiting.groups[0]].state_fingerprint
            await handle.signal("approve", {"stage": "deploy", "approver": "alice", "fingerprint": fp})  # unsigned: refused
            statement = ApprovalStatement(handle.id, status.first_run_id, "deploy", "approve", "alice", fp)
            await handle.execute_update("approve_update", signed_payload(statement, sign(key, statement.message(),
                                                                                        NAMESPACE), "ok"),
                                        result_type=ApprovalAnswer)
            final = await final_rollout(handle)
            assert final.outcome == "succeeded"
            child = client.get_workflow_handle(f"prisma-deploy-{prod}", run_id=final.waves[1].results[prod].run_id)
            return {"rollout_signed_promotion": (await handle.fetch_history()).to_json(),
                    "rollout_signed_child": (await child.fetch_history()).to_json()}
    finally:
        for d in dbs:
            await pg_server.drop_database(d)


SCENARIOS = {"waves": _record_waves, "continue_as_new": _record_continue_as_new, "signed": _record_signed_promotion}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_recording_scenarios_still_end_as_recorded_and_replay(dev_client, pg_server, name: str) -> None:
    histories = await SCENARIOS[name](dev_client, pg_server)
    for key, text in histories.items():
        assert PG_TEST_PASSWORD not in text and "postgresql://" not in text
        await replayer().replay_workflow(history_of(key, text))
        if os.environ.get("RECORD_HISTORIES"):
            target = HISTORIES / RECORDING_VERSION / f"{key}.json"
            assert not target.exists(), f"{target} is recorded already: record into a new version folder"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)


def test_the_recordings_exist() -> None:
    assert {p.stem for p in RECORDED} >= {"rollout_waves_succeeded", "rollout_child_canary", "rollout_child_own_state",
                                          "rollout_continued_run1", "rollout_continued_run2",
                                          "rollout_signed_promotion", "rollout_signed_child"}


@pytest.mark.parametrize("strict", [True, False], ids=["strict-sandbox", "worker-sandbox"])
@pytest.mark.parametrize("path", RECORDED, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_recorded_rollout_history_replays_with_the_current_code(path: Path, strict: bool) -> None:
    text = path.read_text()
    assert PG_TEST_PASSWORD not in text
    await replayer(strict=strict).replay_workflow(history_of(path.stem, text))
