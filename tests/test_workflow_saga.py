"""Gates, expiry and compensation on the time-skipping server with real PostgreSQL.

Each test compares what the database holds (catalog, every row, the ledger) before and after."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from devstack.incident import LANDING, LEADS, reproduce_incident
from domain.models import DeployInput, DeployResult, Outcome, RunStatus, workflow_id_for
from tests.helpers import (
    StageActivities,
    activity_attempts,
    approval,
    catalog_dump,
    final_status,
    history_json,
    history_state,
    incident_request,
    ledger_rows,
    make_settings,
    migration,
    new_worker,
    request,
    start,
    wait_gate,
)


@pytest.fixture
def client(time_skipping_env):
    return time_skipping_env.client


async def dump(url: str) -> dict:
    conn = await asyncpg.connect(url)
    try:
        return await catalog_dump(conn)
    finally:
        await conn.close()


@pytest.mark.parametrize("gate", ["resolve", "deploy"])
async def test_rejection_at_each_gate_leaves_the_database_unchanged(client, database_url: str, gate: str) -> None:
    await reproduce_incident(database_url)
    before = await dump(database_url)
    settings = make_settings("prod", database_url, gates=["resolve", "deploy"], approvers=["alice"])
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, incident_request("prod"))
        status = await wait_gate(handle, "resolve")
        if gate == "deploy":
            await handle.signal("approve", approval("resolve", "alice", status.plan.fingerprint))
            status = await wait_gate(handle, "deploy")
            assert status.resolved, "resolve ran before the deploy gate"
        await handle.signal("reject", approval(gate, "alice", comment="not today"))
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        final = await final_status(handle)
    assert failure.value.cause.type == "DeployRejected"
    assert "alice rejected the" in failure.value.cause.message
    assert final.outcome == Outcome.rejected
    assert final.applied == []
    if gate == "deploy":
        assert [s.action for s in final.compensation] == ["restored resolve"]
    assert await dump(database_url) == before


async def test_unanswered_gate_expires_and_changes_nothing(client, database_url: str) -> None:
    await reproduce_incident(database_url)
    before = await dump(database_url)
    settings = make_settings("prod", database_url, gates=["deploy"], approval_timeout=timedelta(hours=4))
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, incident_request("prod"))
        final = await final_status(handle)  # the time-skipping server jumps the 4 hours
    assert final.outcome == Outcome.expired
    assert "not approved within 4:00:00" in final.error
    # resolve (no gate) had run; compensation put the failed row back as it was
    assert [s.action for s in final.compensation] == ["restored resolve"]
    assert await dump(database_url) == before


async def test_failing_verify_sql_rolls_back_this_runs_migrations(client, database_url: str) -> None:
    a = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT PRIMARY KEY);')
    b = migration("20250102000000_b", 'CREATE TABLE "b" ("id" INT PRIMARY KEY);\nINSERT INTO "b" VALUES (1), (2);',
                  down='DROP TABLE "b";', verify='SELECT count(*) = 3 FROM "b";')
    settings = make_settings("dev", database_url)
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, request("dev", [a, b]))
        final = await final_status(handle)
    assert final.outcome == Outcome.failed_rolled_back
    assert "verification failed" in final.error and "verify.sql" in final.error
    assert [(s.name, s.action) for s in final.compensation] == [
        (b.name, "ran down.sql"), (a.name, "ran derived rollback")]
    conn = await asyncpg.connect(database_url)
    try:
        tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        rows = await ledger_rows(conn)
    finally:
        await conn.close()
    assert tables == {"_prisma_migrations"}
    assert rows == []  # the ledger as before the run: Prisma's deploy and status both see a and b pending


async def test_migration_failing_mid_file_leaves_no_partial_state(client, database_url: str) -> None:
    """A failure that depends on the live data (rows in an existing table), so the shadow replay,
    which has no data, cannot foresee it: the deploy's transaction leaves nothing of b, and a is undone."""
    t0 = migration("20241231000000_t0", 'CREATE TABLE "t0" ("id" INT PRIMARY KEY);')
    await history_state(database_url, applied=[t0], by_hand='INSERT INTO "t0" VALUES (1)')  # the application's row
    a = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT PRIMARY KEY);', down='DROP TABLE "a";')
    b = migration("20250102000000_b", 'CREATE TABLE "b" ("id" INT);\nINSERT INTO "b" VALUES (1);\n'
                                      'ALTER TABLE "t0" ADD COLUMN "required" INT NOT NULL;\nCREATE TABLE "c" ("id" INT);')
    c = migration("20250103000000_c", 'CREATE TABLE "d" ("id" INT);')
    settings = make_settings("dev", database_url)
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, request("dev", [t0, a, b, c]))
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        final = await final_status(handle)
    assert failure.value.cause.type == "DeployFailedRolledBack"
    assert final.outcome == Outcome.failed_rolled_back
    assert f"migration {b.name} failed" in final.error and "contains null values" in final.error
    assert [x.name for x in final.applied] == [a.name]
    conn = await asyncpg.connect(database_url)
    try:
        tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        rows = await ledger_rows(conn)
    finally:
        await conn.close()
    assert tables == {"_prisma_migrations", "t0"}  # neither b nor c, and a was undone
    # b's failed row (Prisma's, with the error) changed nothing, so it went with a's row: the ledger is
    # as before the run (t0's row only), and the error stays in the run's history and result
    assert [r["migration_name"] for r in rows] == [t0.name]
    assert final.compensation[0].name == b.name and final.compensation[0].action == "removed failed row"


async def test_a_migration_that_cannot_work_stops_the_run_before_any_change(client, database_url: str) -> None:
    """It fails in the shadow replay (a table nobody creates): Prisma would stop there after
    applying a; the run stops at its plan, the database exactly as before."""
    a = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT PRIMARY KEY);', down='DROP TABLE "a";')
    b = migration("20250102000000_b", 'CREATE TABLE "b" ("id" INT);\nINSERT INTO "missing_table" VALUES (1);')
    before = await dump(database_url)
    async with new_worker(client, make_settings("dev", database_url)) as worker:
        final = await final_status(await start(client, worker, request("dev", [a, b])))
    assert final.outcome == Outcome.failed_needs_attention and final.applied == []
    [blocker] = final.plan.blockers
    assert blocker.code == "fails_in_shadow" and blocker.migration == b.name
    assert 'relation "missing_table" does not exist' in final.error and "(2 of 2)" in final.error
    assert await dump(database_url) == before  # not even the ledger table


async def test_deploy_attempt_killed_after_commits_applies_each_migration_exactly_once(client, database_url: str) -> None:
    # Each migration appends a row to a table without a key: a second application would show.
    migs = [migration("20250101000000_log", 'CREATE TABLE "applied_log" ("name" TEXT);', down='DROP TABLE "applied_log";')]
    for i in range(2, 6):
        name = f"2025010{i}000000_m{i}"
        migs.append(migration(name, f"INSERT INTO \"applied_log\" VALUES ('{name}');",
                              down=f"DELETE FROM \"applied_log\" WHERE name = '{name}';"))
    settings = make_settings("dev", database_url)
    real = StageActivities(settings)

    @activity.defn(name="deploy")
    async def deploy_that_crashes_after_three_commits(inp: DeployInput) -> DeployResult:
        # Attempt 1 commits three migrations, then its worker "dies": the result never reaches the
        # workflow and Temporal retries the activity, which must skip what is already applied.
        if activity.info().attempt == 1:
            await real.deploy(inp.model_copy(update={"migrations": inp.migrations[:3]}))
            raise ApplicationError("simulated worker crash after three commits")
        return await real.deploy(inp)

    stages = real.all()
    stages[2] = deploy_that_crashes_after_three_commits
    async with new_worker(client, settings, activities=stages) as worker:
        handle = await start(client, worker, request("dev", migs))
        final: RunStatus = await handle.result()
        history = await history_json(handle)
    assert final.outcome == Outcome.succeeded
    assert activity_attempts(history, "deploy") == 2  # attempt 1 "crashed" after 3 commits
    conn = await asyncpg.connect(database_url)
    try:
        logged = [r[0] for r in await conn.fetch('SELECT name FROM "applied_log" ORDER BY name')]
        rows = await ledger_rows(conn)
    finally:
        await conn.close()
    assert logged == [m.name for m in migs[1:]]
    assert sorted(r["migration_name"] for r in rows) == [m.name for m in migs]
    assert all(r["applied_steps_count"] == 1 and r["logs"] is None for r in rows)
    assert [a.name for a in final.applied] == [m.name for m in migs]


async def test_migration_without_rollback_stops_compensation_for_a_person(client, database_url: str) -> None:
    a = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT PRIMARY KEY, "v" INT);')
    b = migration("20250102000000_b", 'INSERT INTO "a" VALUES (1, 1);\nUPDATE "a" SET "v" = 2;',
                  verify='SELECT false;')
    settings = make_settings("dev", database_url)
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, request("dev", [a, b]))
        final = await final_status(handle)
    assert final.outcome == Outcome.failed_needs_attention
    assert b.name in final.human_action and "no rollback" in final.human_action
    assert a.name in final.human_action  # what is still applied is listed
    assert [(s.name, s.action) for s in final.compensation] == [(b.name, "blocked")]
    conn = await asyncpg.connect(database_url)
    try:
        rows = await ledger_rows(conn)
    finally:
        await conn.close()
    assert all(r["rolled_back_at"] is None for r in rows)  # nothing half-undone


async def test_dry_run_writes_nothing(client, database_url: str) -> None:
    before = await dump(database_url)
    a = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT);')
    settings = make_settings("dev", database_url, gates=["deploy"])
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, request("dev", [a], dry_run=True))
        status = await wait_gate(handle, "deploy")  # gates behave as configured
        await handle.signal("approve", approval("deploy", "erin", status.plan.fingerprint))
        final: RunStatus = await handle.result()
    assert final.outcome == Outcome.succeeded
    assert final.plan.migrations[0].action == "apply"
    assert any("dry run: deploy skipped" in n for n in final.notes)
    assert await dump(database_url) == before  # not even _prisma_migrations


async def test_second_run_on_the_same_environment_is_refused(client, database_url: str) -> None:
    await reproduce_incident(database_url)
    settings = make_settings("prod", database_url, gates=["resolve"])
    async with new_worker(client, settings) as worker:
        first = await start(client, worker, incident_request("prod"), workflow_id=workflow_id_for("prod"))
        await wait_gate(first, "resolve")
        with pytest.raises(WorkflowAlreadyStartedError):
            await start(client, worker, incident_request("prod"), workflow_id=workflow_id_for("prod"))
        await first.signal("reject", approval("resolve", "carol", comment="withdrawn by the requester"))
        final = await final_status(first)
    assert final.outcome == Outcome.rejected


async def test_ledger_changed_after_the_plan_stops_before_any_change(client, database_url: str) -> None:
    await reproduce_incident(database_url)
    settings = make_settings("prod", database_url, gates=["resolve"])
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, incident_request("prod"))
        status = await wait_gate(handle, "resolve")
        # Someone runs `prisma migrate resolve --rolled-back` by hand while the run waits.
        conn = await asyncpg.connect(database_url)
        await conn.execute("UPDATE _prisma_migrations SET rolled_back_at = now() WHERE migration_name = $1", LANDING)
        before = await catalog_dump(conn)
        await handle.signal("approve", approval("resolve", "alice", status.plan.fingerprint))
        final = await final_status(handle)
        after = await catalog_dump(conn)
        await conn.close()
    assert final.outcome == Outcome.failed_needs_attention
    assert "changed since the plan was made" in final.error
    assert after == before
    assert LEADS not in {a.name for a in final.applied}


async def test_cancelling_a_waiting_run_undoes_what_it_did(client, database_url: str) -> None:
    await reproduce_incident(database_url)
    before = await dump(database_url)
    settings = make_settings("prod", database_url, gates=["deploy"])
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, incident_request("prod"))
        status = await wait_gate(handle, "deploy")
        assert status.resolved  # resolve ran (no gate) and changed the ledger
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        final = await handle.query("status", result_type=RunStatus)
    assert "cancel" in str(failure.value.cause).lower()
    assert final.error == "the run was cancelled"
    assert [s.action for s in final.compensation] == ["restored resolve"]
    assert await dump(database_url) == before


async def test_plan_only_returns_the_plan_without_waiting_or_writing(client, database_url: str) -> None:
    await reproduce_incident(database_url)
    before = await dump(database_url)
    settings = make_settings("prod", database_url, gates=["resolve", "deploy"])
    req = incident_request("prod", dry_run=True)
    req.plan_only = True
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, req)
        final: RunStatus = await handle.result()
    assert final.outcome == Outcome.succeeded and final.plan.fingerprint
    assert {m.name: m.action for m in final.plan.migrations}[LANDING] == "reapply"
    assert final.gates_passed == [] and final.approvals == []
    assert await dump(database_url) == before
