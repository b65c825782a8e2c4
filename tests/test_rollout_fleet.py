"""Fleets on real PostgreSQL and the dev server: databases discovered by a query on the server,
deployed in waves by real DeployWorkflow children; one plan per ledger state, each approved once."""

from __future__ import annotations

import asyncio

import asyncpg

from domain.models import ApprovalAnswer, ApprovalPayload
from domain.rollout_models import ControlPayload
from tests.conftest import PG_TEST_PASSWORD
from tests.helpers import new_worker
from tests.rollout_fakes import final_rollout, start_rollout, wait_rollout
from tests.rollout_helpers import (
    EFFECTS,
    all_holdings,
    apply_by_hand,
    create_fleet,
    deployed_once,
    drop_fleet,
    fleet_settings,
    request,
)


async def approve(handle, stage: str, by: str, fingerprint: str) -> ApprovalAnswer:
    return await handle.execute_update("approve_update", ApprovalPayload(stage=stage, approver=by, fingerprint=fingerprint),
                                       result_type=ApprovalAnswer)


async def test_twenty_databases_in_three_waves_the_odd_one_with_its_own_plan_and_approval(dev_client, pg_server) -> None:
    prefix, names = await create_fleet(pg_server, 20)
    odd = names[13]  # in the third wave
    await apply_by_hand(pg_server.url(odd), [EFFECTS])  # a different ledger state: the first migration is there
    settings = fleet_settings(pg_server, prefix, gates=["deploy"], approvers=["alice", "bob"], allow_self_approval=False)
    target = {n: f"tenants:{n}" for n in names}
    try:
        async with new_worker(dev_client, settings) as worker:
            req = request(["tenants"], waves=["1", "50%", "100%"], concurrency=4)
            handle = await start_rollout(dev_client, worker, req)
            status = await wait_rollout(handle, lambda s: s.awaiting is not None, timeout=60)
            assert [w.targets for w in status.waves] == [[target[n] for n in names[:1]], [target[n] for n in names[1:10]],
                                                         [target[n] for n in names[10:]]]
            main = status.groups[status.awaiting.groups[0]]
            assert main.members == 1 and main.gates == ["deploy"]
            await approve(handle, "deploy", "bob", main.state_fingerprint)  # once, for all 19 in this state

            status = await wait_rollout(handle, lambda s: s.awaiting is not None and s.awaiting.wave == 2, timeout=60)
            assert status.awaiting.wave_approval  # the canary's result is in, every plan of wave 2 approved already
            assert status.waves[0].results[target[names[0]]].outcome == "succeeded"
            assert status.groups[main.key].members == 10
            await approve(handle, "wave", "alice", status.waves[1].fingerprint)

            status = await wait_rollout(handle, lambda s: s.awaiting is not None and s.awaiting.wave == 3, timeout=90)
            own = status.groups[status.awaiting.groups[0]]
            assert own.members == 1 and own.state_fingerprint != main.state_fingerprint
            assert [m.action for m in own.plan.migrations] == ["already_applied", "apply"]
            assert status.groups[main.key].members == 19
            # Paused at the gate: the approval opens it, but nothing starts until someone resumes.
            await handle.execute_update("pause_update", ControlPayload(by="dave", reason="lunch"), result_type=ApprovalAnswer)
            await approve(handle, "deploy", "alice", own.state_fingerprint)
            paused = await wait_rollout(handle, lambda s: s.phase == "paused", timeout=30)
            await asyncio.sleep(1.0)
            assert not (await wait_rollout(handle, lambda s: True)).running
            untouched = await all_holdings(pg_server, names[10:])
            assert all(h["tables"] == set() for n, h in untouched.items() if n != odd)
            assert len(paused.waves[2].results) == 0
            await handle.execute_update("resume_update", ControlPayload(by="dave"), result_type=ApprovalAnswer)
            status = await final_rollout(handle)
        assert status.outcome == "succeeded"
        held = await all_holdings(pg_server, names)
        assert all(deployed_once(h) for h in held.values()), held
        results = {r.target: r for r in status.results()}
        assert results[target[odd]].applied == 1 and results[target[odd]].group == own.key
        assert all(results[target[n]].applied == 2 for n in names if n != odd)
        assert all(r.approvals == "rollout" for r in results.values())
        history = (await handle.fetch_history()).to_json()
        assert PG_TEST_PASSWORD not in history and "postgresql://" not in history
    finally:
        await drop_fleet(pg_server, names)


async def test_failures_past_the_threshold_halt_the_wave_and_leave_the_rest_untouched(dev_client, pg_server) -> None:
    prefix, names = await create_fleet(pg_server, 6)
    for broken in names[1:3]:  # the first two of wave 2 already have an "accounts" table: the migration fails there
        await apply_by_hand(pg_server.url(broken), [EFFECTS])
        conn = await asyncpg.connect(pg_server.url(broken))
        await conn.execute('CREATE TABLE "accounts" ("id" INT)')
        await conn.close()
    try:
        async with new_worker(dev_client, fleet_settings(pg_server, prefix)) as worker:
            req = request(["tenants"], waves=["1", "100%"], concurrency=1, max_failures="1")
            status = await final_rollout(await start_rollout(dev_client, worker, req))
        assert status.outcome == "halted"
        assert "wave 2 (tenants, 100%) had 2 failed database(s), more than 1 allowed" in status.error
        wave = status.waves[1]
        assert {r.target: r.outcome for r in wave.results.values()} == {
            f"tenants:{n}": "failed_rolled_back" for n in names[1:3]}
        held = await all_holdings(pg_server, names)
        assert deployed_once(held[names[0]])
        assert all(held[n]["applied"] == {EFFECTS.name: 1} for n in names[1:3])  # as before: the run undid itself
        assert all(held[n]["tables"] == set() for n in names[3:])  # never started
    finally:
        await drop_fleet(pg_server, names)
