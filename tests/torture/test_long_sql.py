"""Case 6: long SQL and timeouts.

- statement_timeout (the environment's policy): PostgreSQL cancels the statement, the migration is
  recorded as Prisma's failed row, never retried, compensated (the row removed); nothing runs on.
- a worker frozen (SIGSTOP) for longer than the heartbeat timeout during a long migration: Temporal
  times the attempt out, and the moment the worker runs again its attempt is cancelled and asyncpg
  cancels the query in PostgreSQL — no zombie keeps running, the retry applies the migration once.
- a worker killed (-9) during a long migration: the orphaned backend is noticed by PostgreSQL
  (client_connection_check_interval) and its query cancelled within seconds, so it neither keeps
  running nor keeps Prisma's lock from the retry.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from domain.models import Outcome
from tests.helpers import migration
from tests.torture import report
from tests.torture.harness import (
    HEARTBEAT_S,
    active_queries,
    assert_clean,
    env_config,
    execute,
    fetch,
    make_request,
    new_env_name,
    run_result,
    start_run,
    wait_for,
)

pytestmark = pytest.mark.torture

# m0 creates a knob the test turns: how long m1 sleeps. The ledger exists after m0, so no P3005.
# The knob's value is data the test writes into the live database (as an application would), so
# m1 is long on the live database only, like a backfill: the shadow replay has no rows to wait on.
M0 = migration("20240301000000_knob", "CREATE TABLE knob (s float NOT NULL);\n")
M1 = migration("20240302000000_slow",
               "CREATE TABLE slow_done (id int);\nSELECT pg_sleep((SELECT s FROM knob));\n",
               down="DROP TABLE slow_done;\n")


@pytest.fixture
async def knob_db(pg_server, tclient, workers):
    name = await pg_server.create_database("long")
    url = pg_server.url(name)
    yield name, url
    await pg_server.drop_database(name)


async def _apply_m0(tclient, worker, env: str, url: str) -> None:
    handle = await start_run(tclient, make_request(env, [M0]), worker.env["MIGRATOR_TASK_QUEUE"])
    assert (await run_result(handle)).outcome == Outcome.succeeded
    await execute(url, "INSERT INTO knob VALUES (60)")


async def _slow_pids(admin: str, db: str) -> set[int]:
    return {r["pid"] for r in await active_queries(admin, db, "pg_sleep")}


async def test_statement_timeout_cancels_and_fails_as_policy_says(tclient, workers, knob_db, pg_server) -> None:
    db, url = knob_db
    env = new_env_name("stmt")
    worker = workers({env: env_config(url, statement_timeout="1s")})
    with report.Trial("long SQL: statement_timeout"):
        await _apply_m0(tclient, worker, env, url)
        started = time.monotonic()
        handle = await start_run(tclient, make_request(env, [M0, M1]), worker.env["MIGRATOR_TASK_QUEUE"])
        final = await run_result(handle)
        assert time.monotonic() - started < 30
        assert final.outcome == Outcome.failed_rolled_back, final.error
        assert "statement timeout" in final.error, final.error
        rows = await fetch(url, "SELECT migration_name FROM _prisma_migrations WHERE migration_name = $1", M1.name)
        # Prisma's failed row (the error in the run's result), removed by compensation since the failure
        # changed nothing: the ledger is as before the run. One attempt only.
        assert rows == [] and "57014" in final.error, (rows, final.error)
        assert [(s.name, s.action) for s in final.compensation] == [(M1.name, "removed failed row")]
        assert not await fetch(url, "SELECT 1 FROM pg_tables WHERE tablename = 'slow_done'")
        assert not await _slow_pids(pg_server.admin_url, db)
        await assert_clean(pg_server.admin_url, db)


async def test_frozen_worker_past_the_heartbeat_timeout_leaves_no_zombie(tclient, workers, knob_db, pg_server) -> None:
    db, url = knob_db
    admin = pg_server.admin_url
    env = new_env_name("frozen")
    worker = workers({env: env_config(url)})
    with report.Trial("long SQL: worker frozen past heartbeat timeout"):
        await _apply_m0(tclient, worker, env, url)
        handle = await start_run(tclient, make_request(env, [M0, M1]), worker.env["MIGRATOR_TASK_QUEUE"])
        first = await wait_for(lambda: _slow_pids(admin, db), 60, "the slow migration")
        worker.pause()
        try:
            await asyncio.sleep(HEARTBEAT_S * 3)  # the server times the silent attempt out
            await execute(url, "UPDATE knob SET s = 0")  # the retry will not sleep
            assert await _slow_pids(admin, db) == first, "the frozen attempt's query should still be running"
        finally:
            worker.resume()
        # Resumed: its next heartbeat learns the attempt is gone, the task is cancelled, and asyncpg
        # cancels the query — long before the 60 s sleep would end.
        await wait_for(lambda: _gone(admin, db, first), 15, "the timed-out attempt's query to be cancelled")
        final = await run_result(handle)
        assert final.outcome == Outcome.succeeded, final.error
        rows = await fetch(url, "SELECT finished_at, rolled_back_at FROM _prisma_migrations WHERE migration_name = $1",
                           M1.name)
        assert len(rows) == 1 and rows[0]["finished_at"] is not None, rows
        await assert_clean(admin, db)


async def test_killed_worker_long_query_is_cancelled_by_postgres(tclient, workers, knob_db, pg_server) -> None:
    db, url = knob_db
    admin = pg_server.admin_url
    env = new_env_name("orphan")
    worker = workers({env: env_config(url)})
    with report.Trial("long SQL: worker killed mid-statement"):
        await _apply_m0(tclient, worker, env, url)
        handle = await start_run(tclient, make_request(env, [M0, M1]), worker.env["MIGRATOR_TASK_QUEUE"])
        first = await wait_for(lambda: _slow_pids(admin, db), 60, "the slow migration")
        await execute(url, "UPDATE knob SET s = 0")
        worker.kill()
        killed_at = time.monotonic()
        await wait_for(lambda: _gone(admin, db, first), 15, "the orphaned query to be cancelled by PostgreSQL")
        assert time.monotonic() - killed_at < 15
        worker.start()
        final = await run_result(handle)
        assert final.outcome == Outcome.succeeded, final.error
        rows = await fetch(url, "SELECT finished_at FROM _prisma_migrations WHERE migration_name = $1", M1.name)
        assert len(rows) == 1 and rows[0]["finished_at"] is not None, rows
        await assert_clean(admin, db)


async def _gone(admin: str, db: str, pids: set[int]) -> bool:
    rows = await fetch(admin, "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[])", list(pids))
    return not rows
