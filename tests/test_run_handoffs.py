"""What one run's activities hand each other on a worker, on real PostgreSQL (ActivityEnvironment,
no Temporal server): the bundle preflight received (verify then reads no history), keyed by run;
and whether the run's shadow database is gone (the workflow then skips its end-of-run drop)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timezone

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.bundle_store import RunBundles
from activities.shadow import shadow_database_name
from domain.models import DeployInput, RunMarks, VerifyInput
from domain.plan import RUNS_IN_DEPLOY
from tests.helpers import StageActivities, make_settings, migration, request

A = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT PRIMARY KEY, "v" TEXT);')
B = migration("20250102000000_b", 'ALTER TABLE "a" ADD COLUMN "w" INT;')


def activity_env(activity_type: str, run_id: str, attempt: int = 1) -> ActivityEnvironment:
    """An activity of run `run_id` of workflow `wf`, without a Temporal client (so reading the
    run's history back would raise)."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, activity_type=activity_type, workflow_id="wf", workflow_run_id=run_id,
                                   attempt=attempt)
    return env


async def _shadows(db: asyncpg.Connection) -> list[str]:
    return [r[0] for r in await db.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'migrator_shadow_%'")]


async def test_verify_uses_the_bundle_preflight_received_and_a_run_that_replayed_leaves_no_shadow(
        database_url: str, db: asyncpg.Connection) -> None:
    a = StageActivities(make_settings("t", database_url))
    run = f"run-{uuid.uuid4()}"
    result = await activity_env("preflight", run).run(a.preflight, request("t", [A, B]))
    plan = result.plan
    assert plan.verify_schema and result.shadow_clean and await _shadows(db) == []
    marks = RunMarks(deploy_ids={m.name: str(uuid.uuid4()) for m in plan.by_action(*RUNS_IN_DEPLOY)},
                     resolve_at=datetime.now(timezone.utc))
    await activity_env("deploy", run).run(a.deploy, DeployInput(environment="t", plan=plan, migrations=[A, B], marks=marks))
    # As the workflow sends it: no SQL (the run's history holds it once); this worker remembers it.
    slim = [m.model_copy(update={"sql": ""}) for m in (A, B)]
    inp = VerifyInput(environment="t", plan=plan, migrations=slim, compare_schema=True,
                      expected_sequence=plan.expected_sequence)
    verified = await activity_env("verify", run).run(a.verify, inp)
    assert verified.passed and verified.shadow_clean
    assert any(c.check == "schema equals the migrations folder" and not c.skipped for c in verified.checks)
    # Another run's verify has no bundle here: it must read its own run's history (no client: it fails).
    with pytest.raises(ApplicationError, match="No client available"):
        await activity_env("verify", f"run-{uuid.uuid4()}").run(a.verify, inp)


async def test_a_retried_attempt_or_a_shadow_still_there_is_not_called_clean(database_url: str,
                                                                             db: asyncpg.Connection) -> None:
    a = StageActivities(make_settings("t", database_url))
    run = f"run-{uuid.uuid4()}"
    # The attempt before may have been killed mid-replay (its session may still be creating the shadow).
    retried = await activity_env("preflight", run, attempt=2).run(a.preflight, request("t", [A]))
    assert not retried.shadow_clean
    left = shadow_database_name(f"wf/{run}/t")  # activities/schema_facts.py run_key
    await db.execute(f'CREATE DATABASE "{left}"')
    try:
        assert not (await activity_env("preflight", run).run(a.preflight, request("t", [A]))).shadow_clean
    finally:
        await db.execute(f'DROP DATABASE "{left}"')
    # A rollout's read-only pre-plan calls preflight inside another activity: never a verdict for a run.
    assert not (await activity_env("plan_targets", run).run(a.preflight, request("t", [A]))).shadow_clean


def test_runs_with_equal_bundles_share_one_copy_within_the_size_bound() -> None:
    bundles = RunBundles(keep=3, max_bytes=15_000)
    big = [migration(f"2025010100000{i}_m", "SELECT 1;" + " " * 3000) for i in range(2)]
    for run in ("r1", "r2", "r3"):
        bundles._put(("wf", run), [m.model_copy() for m in big])
    assert len(bundles._bundles) == 1 and len(bundles._runs) == 3  # one copy for three runs
    bundles._put(("wf", "r4"), [migration("20250101000009_other", "SELECT 2;" + " " * 6000)])
    assert list(bundles._runs) == [("wf", "r2"), ("wf", "r3"), ("wf", "r4")] and len(bundles._bundles) == 2
    bundles._put(("wf", "r5"), [migration("20250101000010_third", "SELECT 3;" + " " * 6000)])
    assert list(bundles._runs) == [("wf", "r4"), ("wf", "r5")]  # over 15,000 bytes: the oldest runs go
    bundles._put(("wf", "r6"), [migration("20250101000011_huge", "SELECT 4;" + " " * 20_000)])
    assert list(bundles._runs) == [("wf", "r6")]  # the newest is always kept
