"""A rollout survives its worker: kill -9 the real worker process while a wave's deploys run, start a
fresh one, and check every database: deployed exactly once (ledger rows and effects counted), by
exactly one DeployWorkflow run, the rollout succeeded, nothing left locked or connected."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time

import pytest

from domain.rollout_models import RolloutStatus
from tests.helpers import activity_attempts
from tests.rollout_helpers import all_holdings, create_fleet, drop_fleet, request, slow
from tests.torture import report
from tests.torture.conftest import seed
from tests.torture.harness import ARTIFACTS, active_queries, assert_clean, wait_for
from workflows.rollout_history import final_rollout_status, query_rollout
from workflows.rollout_start import ROLLOUT_WORKFLOW_NAME, rollout_start_options

pytestmark = pytest.mark.torture

FLEET = 8
SLEEP = 1.5


async def rollout_crash_trial(index: int, rng: random.Random, tclient, workers, pg_server) -> None:
    prefix, names = await create_fleet(pg_server, FLEET)
    fleets = {"tenants": {"discover": {"server_url": pg_server.url("postgres"),
                                       "query": f"SELECT datname FROM pg_database WHERE datname LIKE '{prefix}\\_%' "
                                                "ORDER BY datname"},
                          "rules": {"gates": []}}}
    worker = workers({}, fleets=json.dumps(fleets))
    try:
        with report.Trial("worker kill -9: mid-wave of an 8-database rollout") as trial:
            req = request(["tenants"], slow(SLEEP), waves=["1", "100%"], concurrency=3)
            handle = await tclient.start_workflow(
                ROLLOUT_WORKFLOW_NAME, req, result_type=RolloutStatus,
                **rollout_start_options(req, task_queue=worker.env["MIGRATOR_TASK_QUEUE"]))

            async def wave_two_running() -> bool:
                status = await query_rollout(handle)
                if not any(w.number == 2 and status.running for w in status.waves):
                    return False
                sleeping = [n for n in names if await active_queries(pg_server.admin_url, n, "pg_sleep")]
                return len(sleeping) >= 2

            await wait_for(wave_two_running, 90, "wave 2's deploys to be running")
            time.sleep(rng.uniform(0, SLEEP * 0.8))
            worker.restart()  # kill -9 mid-wave, then a fresh worker on the same task queue
            final = await asyncio.wait_for(final_rollout_status(handle), 240)
            held = await all_holdings(pg_server, names)
            counts = [n for h in held.values() for n in list(h["applied"].values()) + list(h["effects"].values())]
            trial.double_applied = sum(1 for n in counts if n > 1)
            trial.lost = sum(1 for h in held.values() if len(h["applied"]) < 2 or len(h["effects"]) < 2)
            assert final is not None and final.outcome == "succeeded", f"rollout: {final and (final.outcome, final.error)}"
            assert trial.double_applied == 0 and trial.lost == 0, held
            runs = {}
            for n in names:
                runs[n] = [wf async for wf in tclient.list_workflows(f"WorkflowId = 'prisma-deploy-tenants:{n}'")]
            assert all(len(r) == 1 for r in runs.values()), {n: len(r) for n, r in runs.items()}
            assert final.children_started == FLEET
            assert {r.target: r.run_id for r in final.results()} == {
                f"tenants:{n}": runs[n][0].run_id for n in names}
            retried = 0  # the crash really cut running deploys: their activities ran again on the new worker
            for n in names:
                history = (await tclient.get_workflow_handle(f"prisma-deploy-tenants:{n}").fetch_history()).to_json()
                retried += activity_attempts(history, "deploy") > 1
            assert retried >= 2, f"only {retried} deploy(s) were retried after the kill"
            for n in names:
                await assert_clean(pg_server.admin_url, n)
    finally:
        worker.stop()
        (ARTIFACTS / f"rollout-crash-{index}.txt").write_text(worker.log_text()[-20000:])
        await drop_fleet(pg_server, names)


async def test_worker_killed_mid_wave_every_database_deployed_exactly_once(tclient, workers, pg_server) -> None:
    rng = random.Random(seed())
    for i in range(int(os.environ.get("TORTURE_ROLLOUT_SAMPLE", "1"))):
        await rollout_crash_trial(i, rng, tclient, workers, pg_server)


@pytest.mark.torture_full
@pytest.mark.timeout(3600)
async def test_worker_killed_mid_wave_full(tclient, workers, pg_server) -> None:
    rng = random.Random(seed() + 16)
    for i in range(int(os.environ.get("TORTURE_ROLLOUT_TRIALS", "5"))):
        await rollout_crash_trial(100 + i, rng, tclient, workers, pg_server)
