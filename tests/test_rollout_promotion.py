"""Promotion on real PostgreSQL and the dev server: the same bundle through staging then prod, each a
real DeployWorkflow child; prod starts only when staging succeeded, under prod's own approval rules."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg

from domain.models import ApprovalAnswer, ApprovalPayload
from runtime.settings import EnvironmentSettings, Settings
from tests.conftest import PG_TEST_PASSWORD
from tests.helpers import new_worker
from tests.rollout_fakes import final_rollout, start_rollout, wait_rollout
from tests.rollout_helpers import ACCOUNTS, EFFECTS, apply_by_hand, deployed_once, holdings, request
from workflows.messages import final_status


def _settings(staging_url: str, prod_url: str) -> tuple[Settings, str, str]:
    """Settings with a fresh staging (no gates) and prod (deploy gate, alice or bob, not the requester)."""
    tag = uuid.uuid4().hex[:6]
    staging, prod = f"staging{tag}", f"prod{tag}"
    return Settings(environments={
        staging: EnvironmentSettings(database_url=staging_url, gates=[]),
        # Typed approver names: a rollout's approvals are not signed yet (issue 15 proves single runs).
        prod: EnvironmentSettings(database_url=prod_url, gates=["deploy"], approvers=["alice", "bob"],
                                  allow_self_approval=False, approval_proofs=["ssh", "typed"]),
    }, advisory_lock_timeout=timedelta(seconds=5), _env_file=None), staging, prod


async def test_a_failed_staging_deploy_stops_production(dev_client, pg_server) -> None:
    staging_db, prod_db = await pg_server.create_database("stg"), await pg_server.create_database("prd")
    staging_url, prod_url = pg_server.url(staging_db), pg_server.url(prod_db)
    await apply_by_hand(staging_url, [EFFECTS])
    conn = await asyncpg.connect(staging_url)
    await conn.execute('CREATE TABLE "accounts" ("id" INT)')  # made by hand on staging: the migration fails there
    await conn.close()
    try:
        settings, staging, prod = _settings(staging_url, prod_url)
        async with new_worker(dev_client, settings) as worker:
            handle = await start_rollout(dev_client, worker, request([staging, prod]))
            status = await final_rollout(handle)
            staging_run = await final_status(dev_client.get_workflow_handle(
                f"prisma-deploy-{staging}", run_id=status.waves[0].results[staging].run_id))
        assert status.outcome == "halted"
        assert status.error.startswith(f"stage {staging} failed: no further database was started; {prod} not started")
        result = status.waves[0].results[staging]
        assert result.outcome == "failed_rolled_back" and 'relation "accounts" already exists' in result.error, result
        # Staging's own run recorded the failure and undid it; prod was never planned, let alone touched.
        assert staging_run.outcome == "failed_rolled_back"
        held = await holdings(staging_url)
        assert held["applied"] == {EFFECTS.name: 1} and held["effects"] == {"effects": 1}
        assert (await holdings(prod_url))["tables"] == set() and [w.stage for w in status.waves] == [staging]
        history = (await handle.fetch_history()).to_json()
        assert PG_TEST_PASSWORD not in history and "postgresql://" not in history
    finally:
        await pg_server.drop_database(staging_db)
        await pg_server.drop_database(prod_db)


async def test_prod_gets_the_plan_staging_proved_approved_under_prods_rules(dev_client, pg_server) -> None:
    staging_db, prod_db = await pg_server.create_database("stg"), await pg_server.create_database("prd")
    staging_url, prod_url = pg_server.url(staging_db), pg_server.url(prod_db)
    try:
        settings, staging, prod = _settings(staging_url, prod_url)
        async with new_worker(dev_client, settings) as worker:
            handle = await start_rollout(dev_client, worker, request([staging, prod]))
            status = await wait_rollout(handle, lambda s: s.awaiting is not None, timeout=60)
            assert status.waves[0].results[staging].outcome == "succeeded"
            assert deployed_once(await holdings(staging_url)) and (await holdings(prod_url))["tables"] == set()
            prod_group = status.groups[status.awaiting.groups[0]]
            staging_group = next(g for g in status.groups.values() if g.key != prod_group.key)
            # The same state on two databases: one state fingerprint, whatever their names and row ids.
            assert prod_group.state_fingerprint == staging_group.state_fingerprint
            assert prod_group.plan.fingerprint != staging_group.plan.fingerprint
            assert prod_group.gates == ["deploy"] and staging_group.gates == []
            answer = await handle.execute_update(
                "approve_update", ApprovalPayload(stage="deploy", approver="alice", comment="staging is fine",
                                                  fingerprint=prod_group.state_fingerprint), result_type=ApprovalAnswer)
            assert answer.accepted
            status = await final_rollout(handle)
            prod_run = await final_status(dev_client.get_workflow_handle(
                f"prisma-deploy-{prod}", run_id=status.waves[1].results[prod].run_id))
        assert status.outcome == "succeeded"
        assert deployed_once(await holdings(prod_url))
        # The prod run recorded the rollout's approval, judged by its own rules.
        taken = [r for r in prod_run.approvals if r.via == "rollout"]
        assert [(r.stage, r.approver, r.accepted, r.fingerprint) for r in taken] == [
            ("deploy", "alice", True, prod_group.state_fingerprint)]
        assert [a.name for a in prod_run.applied] == [EFFECTS.name, ACCOUNTS.name]
    finally:
        await pg_server.drop_database(staging_db)
        await pg_server.drop_database(prod_db)
