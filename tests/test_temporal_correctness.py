"""Issue 13 item 6, each reproduced: a wrong password or an unknown database is not retried;
refused approval attempts cannot grow the run's result; a compensation that stopped says resolve
decisions were left only when the run resolved something; compensating statements outside a
transaction twice (a retry after a crash) does not run them twice."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

from domain.attempts import MAX_REFUSED_KEPT
from domain.models import CompensateInput, DeployInput, Outcome, RunMarks, UndoStep
from domain.stages import RUNS_IN_DEPLOY
from tests.conftest import PG_TEST_PASSWORD
from tests.helpers import (
    StageActivities,
    activity_attempts,
    final_status,
    history_json,
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


@pytest.mark.parametrize("broken", ["password", "database"])
async def test_a_refused_connection_is_not_retried(client, database_url: str, broken: str) -> None:
    if broken == "password" and PG_TEST_PASSWORD not in database_url:
        pytest.skip("the suite runs against an external server without the test password")
    url = (database_url.replace(PG_TEST_PASSWORD, "wrong-" + PG_TEST_PASSWORD) if broken == "password"
           else database_url.rsplit("/", 1)[0] + "/no_such_database")
    async with new_worker(client, make_settings("dev", url)) as worker:
        handle = await start(client, worker, request("dev", [migration("20250101000000_a", "CREATE TABLE a (id int);")]))
        final = await final_status(handle)
        history = await history_json(handle)
    assert final.outcome == Outcome.failed_no_changes
    assert ("authentication failed" if broken == "password" else "does not exist") in final.error
    assert activity_attempts(history, "preflight") == 1
    assert PG_TEST_PASSWORD not in history


async def test_refused_approvals_cannot_grow_the_result(client, database_url: str) -> None:
    settings = make_settings("prod", database_url, gates=["deploy"], approvers=["alice"])
    huge = "x" * 20_000
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, request("prod", [migration("20250101000000_a", "CREATE TABLE a (id int);")]))
        status = await wait_gate(handle, "deploy")
        for i in range(60):
            await handle.signal("approve", {"stage": "deploy", "approver": f"mallory{i}", "comment": huge})
        await handle.signal("approve", {"stage": "deploy", "approver": "alice", "fingerprint": status.plan.fingerprint})
        final = await final_status(handle)
        history = await history_json(handle)
    assert final.outcome == Outcome.succeeded
    refused = [r for r in final.approvals if not r.accepted]
    assert len(refused) == MAX_REFUSED_KEPT and final.refused_not_kept == 60 - MAX_REFUSED_KEPT
    assert refused[-1].approver == "mallory59" and all(len(r.comment) <= 500 for r in refused)
    assert [r.approver for r in final.approvals if r.accepted] == ["alice"]
    assert len(final.model_dump_json()) < 100_000
    signals = [e for e in json.loads(history)["events"] if e["eventType"] in (
        "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED", "WorkflowExecutionSignaled")]
    assert len(signals) == 61  # every attempt, in full, in history


async def test_a_blocked_compensation_mentions_resolve_only_when_the_run_resolved(client, database_url: str) -> None:
    a = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT PRIMARY KEY, "v" INT);')
    b = migration("20250102000000_b", 'INSERT INTO "a" VALUES (1, 1);\nUPDATE "a" SET "v" = 2;', verify="SELECT false;")
    async with new_worker(client, make_settings("dev", database_url)) as worker:
        final = await final_status(await start(client, worker, request("dev", [a, b])))
    assert final.outcome == Outcome.failed_needs_attention and "no rollback" in final.human_action
    assert "resolve decisions" not in final.human_action


async def test_compensation_outside_a_transaction_runs_each_statement_once(database_url: str, db: asyncpg.Connection) -> None:
    base = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT);', down='DROP TABLE "a";')
    idx = migration("20250102000000_idx", 'CREATE INDEX CONCURRENTLY "a_id" ON "a" ("id");',
                    down='DROP INDEX CONCURRENTLY "a_id";\nSELECT pg_sleep(30);\nCREATE TABLE "undone" ("id" INT);')
    a = StageActivities(make_settings("t", database_url))
    plan = (await ActivityEnvironment().run(a.preflight, request("t", [base, idx]))).plan
    marks = RunMarks(deploy_ids={m.name: str(uuid.uuid4()) for m in plan.by_action(*RUNS_IN_DEPLOY)},
                     resolve_at=datetime.now(timezone.utc))
    await ActivityEnvironment().run(a.deploy, DeployInput(environment="t", plan=plan, migrations=[base, idx], marks=marks))
    by = {m.name: m for m in plan.migrations}
    undo = [UndoStep(name=n, ledger_id=marks.deploy_ids[n], rollback=by[n].rollback, rollback_sql=by[n].rollback_sql,
                     in_transaction=by[n].in_transaction) for n in (idx.name, base.name)]
    inp = CompensateInput(environment="t", undo=undo, marks=marks)
    env = ActivityEnvironment()
    first = asyncio.create_task(env.run(a.compensate, inp))
    for _ in range(200):  # attempt 1 dropped the index and is inside the sleep when it "crashes"
        if await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'"):
            break
        await asyncio.sleep(0.05)
    assert await db.fetchval("SELECT to_regclass('a_id')") is None
    env.cancel()
    with pytest.raises(BaseException):
        await first
    second = await ActivityEnvironment().run(a.compensate, inp.model_copy(update={"undo": undo}))
    # The retry did not drop the index again (that would fail: no IF EXISTS), went on, and finished.
    assert [(s.name, s.action) for s in second.steps] == [(idx.name, "ran down.sql"), (base.name, "ran down.sql")]
    assert await ledger_rows(db) == []
    assert await db.fetchval("SELECT to_regclass('undone')") is not None
    # ...and the comparison with the schema before the run names what this odd down.sql left behind.
    assert not second.complete and second.schema_differences == ["table public.undone exists only in the live database"]
