"""Case 2: PostgreSQL restarted mid-deploy, and the Temporal dev server (history persisted in its
database file) restarted mid-run: the run resumes and completes, each migration applied once."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from devstack.pgcluster import PgCluster
from devstack.services import TemporalDevServer
from domain.models import Outcome, RunStatus
from tests.torture import report, scenario
from tests.torture.harness import (
    ARTIFACTS,
    active_queries,
    assert_clean,
    connect_client,
    env_config,
    make_request,
    new_env_name,
    run_result,
    start_run,
    wait_for,
)

pytestmark = pytest.mark.torture


def assert_applied_once(found: scenario.Count) -> None:
    assert all(n == 1 for n in found.applied_rows.values()), found
    assert all(n == 1 for n in found.effects.values()), found
    assert not any(found.failed_rows.values()), found
    assert found.index and found.tables == {"effects", "a", "b", "c"}, found


async def test_postgres_restart_mid_deploy(tclient, workers) -> None:
    cluster = PgCluster(password="restart-pw-1").start()
    try:
        admin = cluster.url("postgres")
        conn = await asyncpg.connect(admin)
        await conn.execute("CREATE DATABASE target")
        await conn.close()
        url = cluster.url("target")
        env = new_env_name("pgr")
        worker = workers({env: env_config(url)})
        with report.Trial("restart: PostgreSQL mid-deploy"):
            handle = await start_run(tclient, make_request(env, scenario.bundle(sleep_m2=3)),
                                     worker.env["MIGRATOR_TASK_QUEUE"])
            await wait_for(lambda: active_queries(admin, "target", "pg_sleep"), 60, "m2 running")
            await asyncio.to_thread(cluster.restart)  # fast shutdown: m2's transaction is aborted
            final = await run_result(handle, 180)
            assert final.outcome == Outcome.succeeded, final.error
            assert_applied_once(await scenario.count(url))
            await assert_clean(admin, "target")
    finally:
        cluster.destroy()


async def test_temporal_server_restart_mid_run(workers, pg_server) -> None:
    db_file = ARTIFACTS / f"temporal-restart-{new_env_name('')}.db"
    server = TemporalDevServer(db_file=db_file, log_file=ARTIFACTS / "temporal-restart.log").start()
    name = await pg_server.create_database("tr")
    url = pg_server.url(name)
    try:
        client = await connect_client(server.address)
        env = new_env_name("tsr")
        worker = workers({env: env_config(url)}, address=server.address)
        with report.Trial("restart: Temporal server mid-run"):
            handle = await start_run(client, make_request(env, scenario.bundle(sleep_m2=4)),
                                     worker.env["MIGRATOR_TASK_QUEUE"])
            await wait_for(lambda: active_queries(pg_server.admin_url, name, "pg_sleep"), 60, "m2 running")
            server.stop()
            time.sleep(2)
            server.start()  # same ports, same database file: the history is still there
            client = await connect_client(server.address)
            final = await run_result(client.get_workflow_handle(handle.id, result_type=RunStatus), 180)
            assert final.outcome == Outcome.succeeded, final.error
            assert_applied_once(await scenario.count(url))
            await assert_clean(pg_server.admin_url, name)
    finally:
        server.stop()  # the worker is stopped by the `workers` fixture
        await pg_server.drop_database(name)
