"""The incident, end to end on the real Temporal dev server and real PostgreSQL: both gates approved
(one by signal, as from the Web UI, one by update, as from the CLI), then the real Prisma CLI agrees
the database is up to date."""

from __future__ import annotations

import asyncpg
import pytest

from devstack.incident import INIT, LANDING, LEADS, PHANTOM, reproduce_incident
from domain.models import Action, Outcome
from tests.conftest import PG_TEST_PASSWORD
from tests.helpers import (
    INCIDENT_DIR,
    approval,
    final_status,
    history_json,
    incident_request,
    ledger_rows,
    make_settings,
    new_worker,
    start,
    wait_gate,
)

NEW_TABLES = ["leads", "questionnaire_questions", "questionnaire_responses", "lead_page_views"]


async def test_incident_resolved_with_both_gates_approved(dev_client, database_url: str) -> None:
    await reproduce_incident(database_url)
    settings = make_settings("prod", database_url, gates=["resolve", "deploy"], approvers=["alice", "bob"],
                             allow_self_approval=False)
    async with new_worker(dev_client, settings) as worker:
        handle = await start(dev_client, worker, incident_request("prod", requested_by="carol"))
        status = await wait_gate(handle, "resolve")
        plan = status.plan
        actions = {m.name: m.action for m in plan.migrations}
        assert actions == {
            INIT: Action.already_applied,
            LEADS: Action.apply,
            PHANTOM: Action.leave_phantom,
            LANDING: Action.reapply,
        }
        # The Web UI way: a signal with the JSON payload shown in the run's details.
        await handle.signal("approve", approval("resolve", "alice", plan.fingerprint))
        status = await wait_gate(handle, "deploy")
        assert status.resolved and status.resolved[0].name == LANDING
        # The CLI way: an update, answered at once.
        answer = await handle.execute_update("approve_update", approval("deploy", "bob", plan.fingerprint))
        assert answer["accepted"] if isinstance(answer, dict) else answer.accepted
        final = await final_status(handle)
        history = await history_json(handle)

    assert final.outcome == Outcome.succeeded, final.error
    assert [a.name for a in final.applied] == [LEADS, LANDING]
    assert all(c.passed for c in final.verification) and final.verification
    assert any(PHANTOM in n for n in final.plan.notes)

    conn = await asyncpg.connect(database_url)
    try:
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert set(NEW_TABLES) <= tables
        assert await conn.fetchval("SELECT count(*) FROM landing_page_content") == 5
        rows = await ledger_rows(conn)
    finally:
        await conn.close()
    landing = [r for r in rows if r["migration_name"] == LANDING]
    assert len(landing) == 2
    old, new = landing
    assert old["finished_at"] is None and old["rolled_back_at"] is not None  # resolved --rolled-back
    assert new["finished_at"] is not None and new["rolled_back_at"] is None and new["logs"] is None
    assert new["applied_steps_count"] == 1
    phantom = [r for r in rows if r["migration_name"] == PHANTOM]
    assert len(phantom) == 1 and phantom[0]["rolled_back_at"] is None  # left alone

    # No database password anywhere in the run's history.
    assert PG_TEST_PASSWORD not in history
    assert database_url not in history

    # The real Prisma CLI agrees.
    from tests.oracle import prisma

    status_out = prisma(database_url, INCIDENT_DIR, "status")
    assert status_out.returncode == 0, status_out.stdout + status_out.stderr
    deploy_out = prisma(database_url, INCIDENT_DIR, "deploy")
    assert deploy_out.returncode == 0, deploy_out.stdout + deploy_out.stderr
    assert "No pending migrations to apply" in deploy_out.stdout


@pytest.mark.parametrize("max_cached", [0])
async def test_incident_with_every_task_replayed(dev_client, database_url: str, max_cached: int) -> None:
    """max_cached_workflows=0: every workflow task replays the whole history, so any
    non-determinism in the workflow code fails the run."""
    await reproduce_incident(database_url)
    settings = make_settings("staging", database_url, gates=["deploy"])
    async with new_worker(dev_client, settings, max_cached_workflows=max_cached) as worker:
        handle = await start(dev_client, worker, incident_request("staging"))
        status = await wait_gate(handle, "deploy")
        await handle.signal("approve", approval("deploy", "dave", status.plan.fingerprint))
        final = await final_status(handle)
    assert final.outcome == Outcome.succeeded, final.error
    assert [d.name for d in final.resolved] == [LANDING]
    assert final.gates_passed == ["deploy"]
