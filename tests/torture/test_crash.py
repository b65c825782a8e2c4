"""Case 1: kill -9 the worker at randomized points of a deploy, start a new one, and check the
database: right outcome, every migration applied exactly once (ledger rows and effects counted),
the ledger consistent (the real Prisma CLI agrees when installed), no advisory lock held, no
connection left. Seeded: TORTURE_SEED picks the points' timing; the points cycle so every one is
covered by every sample of at least len(POINTS) (7) trials. TORTURE_POINTS=between_backup_and_statement,during_restore
runs only the points named."""

from __future__ import annotations

import os
import random
import time

import asyncpg
import pytest

from domain.models import Outcome
from domain.prisma.ledger import ADVISORY_LOCK_KEY
from tests.oracle import oracle_script, prisma
from tests.torture import report, scenario
from tests.torture.conftest import seed, trials
from tests.torture.harness import (
    ARTIFACTS,
    HAS_HEARTBEAT_SETTING,
    active_queries,
    assert_clean,
    env_config,
    make_request,
    new_env_name,
    run_result,
    start_run,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.torture

POINTS = [
    "before_migration",  # deploy attempt started, waiting for Prisma's lock, nothing applied yet
    "inside_slow_migration",  # m2's transaction is running (pg_sleep at its end)
    "between_backup_and_statement",  # m2's backup of shop.items taken in its transaction, its script sleeping
    "between_migration_and_ledger",  # m3 (alone, no transaction): started row written, index being built
    "during_verification",  # verify.sql is running
    "during_compensation",  # verification failed; m4's down.sql is running
    "during_restore",  # verification failed; m2's backup being written back to shop.items
]
# What is running at each point (pg_stat_activity.query), the moment to kill the worker in.
WATCH = {"between_migration_and_ledger": "a_x_idx", "during_restore": "_migrator_backup"}
COMPENSATING = {"during_compensation", "during_restore"}
SLEEP = 2.0
# A dead worker's attempt is re-dispatched after the heartbeat timeout (30 s unless configurable).
RUN_TIMEOUT = 120 if HAS_HEARTBEAT_SETTING else 240


def oracle_ready() -> bool:
    from tests.oracle import _installed

    script = oracle_script()
    return script is not None and _installed(script)


async def crash_trial(case: str, index: int, rng: random.Random, point: str, tclient, workers, pg_server) -> None:
    db = await pg_server.create_database("torture")
    url = pg_server.url(db)
    admin = pg_server.admin_url
    env = new_env_name("crash")
    compensation = point in COMPENSATING
    await scenario.setup(url, sleep_restore=SLEEP / 3 if point == "during_restore" else 0)  # 3 rows
    migs = scenario.bundle(
        sleep_m2=SLEEP if point == "inside_slow_migration" else 0,
        sleep_after_backup=SLEEP if point == "between_backup_and_statement" else 0,
        sleep_m3=SLEEP if point == "between_migration_and_ledger" else 0,
        sleep_verify=SLEEP if point == "during_verification" else 0,
        sleep_down4=SLEEP if point == "during_compensation" else 0,
        verify_fails=compensation,
        app_data=True,
    )
    worker = workers({env: env_config(url)})
    holder: asyncpg.Connection | None = None
    with report.Trial(case) as trial:
        try:
            if point == "before_migration":
                holder = await asyncpg.connect(url)  # a Prisma CLI holding the migration lock
                await holder.execute(f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")
            handle = await start_run(tclient, make_request(env, migs), worker.env["MIGRATOR_TASK_QUEUE"])
            if point == "before_migration":
                await wait_status(handle, lambda s: s.stage == "deploy", 60, "the deploy stage")
                await wait_for(lambda: _deploy_started(handle), 30, "the deploy attempt to start")
            else:
                watch = WATCH.get(point, "pg_sleep")
                await wait_for(lambda: active_queries(admin, db, watch), 60, f"{point}: the slow statement")
            time.sleep(rng.uniform(0, SLEEP * 0.8))  # somewhere inside the slow statement / the lock wait
            worker.restart()  # kill -9, then a fresh worker on the same task queue
            if holder is not None:
                time.sleep(rng.uniform(0, 1))
                await holder.close()
                holder = None
            final = await run_result(handle, RUN_TIMEOUT)
            found = await scenario.count(url)

            expected = Outcome.failed_rolled_back if compensation else Outcome.succeeded
            counts = list(found.applied_rows.values()) + list(found.effects.values())
            trial.double_applied = sum(1 for n in counts if n > 1)
            if not compensation:
                trial.lost = sum(1 for n in counts if n == 0) + (0 if found.index else 1)
            assert final.outcome == expected, f"outcome {final.outcome} ({final.error}), expected {expected}"
            assert trial.double_applied == 0, f"applied more than once: {found}"
            assert not found.failed_rows or not any(found.failed_rows.values()), f"unfinished ledger rows: {found}"
            assert found.invalid_indexes == 0, f"INVALID index left: {found}"
            # m2's backup of shop.items exists once, with the rows as they were before it: an attempt
            # killed after taking it (between backup and statement) left no second copy; a restore
            # killed midway was finished by the next attempt and marked as done.
            assert found.backups == [(scenario.NAMES[1], "shop.items", scenario.ITEMS, compensation)], found.backups
            if compensation:
                # Undone newest first by each down.sql, m2's backup put back; the ledger as before the run.
                assert found.tables == set() and not found.index, f"left after compensation: {found}"
                assert all(n == 0 for n in found.effects.values()), found.effects
                assert all(n == 0 for n in found.applied_rows.values()), found.applied_rows
                assert all(n == 0 for n in found.rolled_back_rows.values()), found.rolled_back_rows
                assert found.items == scenario.ITEMS, f"shop.items not restored: {found.items}"
                assert [s.name for s in final.compensation if s.ok] == list(reversed(scenario.NAMES)), final.compensation
            else:
                assert trial.lost == 0, f"missing: {found}"
                assert found.tables == {"effects", "a", "b", "c"}, found.tables
                assert all(n == 1 for n in found.applied_rows.values()), found.applied_rows
                assert found.items == {k: "m2" for k in scenario.ITEMS}, found.items
                assert not found.bad_applied_rows, found.bad_applied_rows
                assert [a.name for a in final.applied] == scenario.NAMES
            await assert_clean(admin, db)
            if oracle_ready():
                folder = scenario_folder(index, migs)
                res = prisma(url, folder, "status")
                said = " | ".join(ln for ln in (res.stdout + res.stderr).splitlines()
                                  if ln.strip() and "schema loaded" not in ln and "Datasource" not in ln)
                if compensation:
                    # The ledger is as before the run: Prisma's status lists all four as pending, and
                    # its deploy re-applies exactly those four from the state compensation left.
                    assert res.returncode == 1 and all(n in said for n in scenario.NAMES), f"prisma status: {said}"
                    again = prisma(url, folder, "deploy")
                    assert again.returncode == 0, f"prisma deploy: {again.stdout[-400:]} {again.stderr[-400:]}"
                    assert all(n in again.stdout for n in scenario.NAMES), again.stdout
                    redone = await scenario.count(url)
                    assert all(n == 1 for n in redone.applied_rows.values()), redone
                    assert all(n == 1 for n in redone.effects.values()), redone
                else:
                    assert res.returncode == 0 and "up to date" in said, f"prisma status: {said}"
        finally:
            if holder is not None:
                await holder.close()
    await pg_server.drop_database(db)


async def _deploy_started(handle) -> bool:
    desc = await handle.describe()
    return any(p.activity_type.name == "deploy" and p.state == 2  # PENDING_ACTIVITY_STATE_STARTED
               for p in desc.raw_description.pending_activities)


def scenario_folder(index: int, migs):
    from tests.torture.harness import write_folder

    root = ARTIFACTS / "crash-folders" / f"trial-{index}"
    return write_folder(root / "migrations", migs)


def chosen_points() -> list[str]:
    """TORTURE_POINTS=a,b runs only those crash points (one engineer's check of one window)."""
    names = [p.strip() for p in os.environ.get("TORTURE_POINTS", "").split(",") if p.strip()]
    unknown = sorted(set(names) - set(POINTS))
    assert not unknown, f"TORTURE_POINTS names no crash point {', '.join(unknown)} (they are: {', '.join(POINTS)})"
    return names or POINTS


async def run_trials(case: str, n: int, tclient, workers, pg_server) -> None:
    rng = random.Random(seed())
    points = chosen_points()
    failures = []
    for i in range(n):
        point = points[i % len(points)]
        try:
            await crash_trial(f"worker kill -9: {point}", i, rng, point, tclient, workers, pg_server)
        except AssertionError as exc:
            failures.append(f"trial {i} ({point}): {str(exc).splitlines()[0]}")
    assert not failures, f"{len(failures)}/{n} trials failed:\n" + "\n".join(failures)


async def test_worker_kill_sample(tclient, workers, pg_server) -> None:
    """The seeded sample `make test` runs: one trial per crash point."""
    await run_trials("sample", int(os.environ.get("TORTURE_SAMPLE", len(chosen_points()))), tclient, workers, pg_server)


@pytest.mark.torture_full
@pytest.mark.timeout(7200)
async def test_worker_kill_full(tclient, workers, pg_server) -> None:
    """`make torture`: TORTURE_TRIALS crash trials (default 50), points cycling, timings seeded."""
    await run_trials("full", trials(), tclient, workers, pg_server)
