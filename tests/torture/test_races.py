"""Case 3: races on real processes — two `starter.py deploy` of one environment at once, a
Prisma-style holder of pg_advisory_lock(72707369) while a run starts, approve and reject arriving
together, an approval sent before its gate (before the plan exists, and for a later gate)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from temporalio.client import WorkflowUpdateFailedError

from domain.models import Outcome
from domain.prisma.ledger import ADVISORY_LOCK_KEY
from tests.helpers import approval
from tests.torture import report, scenario
from tests.torture.harness import (
    ARTIFACTS,
    assert_clean,
    astarter,
    env_config,
    execute,
    fetch,
    make_request,
    new_env_name,
    run_result,
    start_run,
    wait_status,
    write_folder,
)

pytestmark = pytest.mark.torture


@pytest.fixture
async def database(pg_server):
    name = await pg_server.create_database("race")
    yield name, pg_server.url(name)
    await pg_server.drop_database(name)


async def ledger_count(url: str) -> int:
    rows = await fetch(url, "SELECT to_regclass('_prisma_migrations') IS NOT NULL AS t")
    if not rows[0]["t"]:
        return 0
    return (await fetch(url, "SELECT count(*) AS n FROM _prisma_migrations"))[0]["n"]


async def test_two_deploys_of_one_environment_at_once(tclient, workers, temporal_server, database, pg_server) -> None:
    db, url = database
    env = new_env_name("race")
    worker = workers({env: env_config(url, gates=["deploy"])})
    folder = write_folder(ARTIFACTS / "race-folders" / env / "migrations", scenario.bundle())
    cli_env = {"MIGRATOR_TEMPORAL_ADDRESS": temporal_server.address,
               "MIGRATOR_TASK_QUEUE": worker.env["MIGRATOR_TASK_QUEUE"]}
    args = ("deploy", "--env", env, "--migrations-dir", str(folder), "--requested-by", "carol")
    with report.Trial("race: two deploys at once"):
        (rc1, out1, err1), (rc2, out2, err2) = await asyncio.gather(astarter(cli_env, *args), astarter(cli_env, *args))
        results = sorted([(rc1, out1, err1), (rc2, out2, err2)], key=lambda r: r[0])
        (ok_rc, ok_out, _), (bad_rc, _, bad_err) = results
        assert ok_rc == 0 and "started run" in ok_out, results
        assert bad_rc == 3, results
        assert bad_err.strip().count("\n") == 0 and "Traceback" not in bad_err, bad_err
        assert f"a run is already open for environment '{env}'" in bad_err, bad_err
        # The open run is the one that proceeds: it waits at its gate; rejecting it changes nothing.
        handle = tclient.get_workflow_handle(f"prisma-deploy-{env}")
        await wait_status(handle, lambda s: s.awaiting == "deploy", 30, "the deploy gate")
        rc, out, err = await astarter(cli_env, "reject", env, "--stage", "deploy", "--by", "carol", "-m", "race test")
        assert rc == 0, out + err
        final = await run_result(handle)
        assert final.outcome == Outcome.rejected
        assert await ledger_count(url) == 0
        await assert_clean(pg_server.admin_url, db)


async def _hold_lock(url: str) -> asyncpg.Connection:
    holder = await asyncpg.connect(url)
    await holder.execute(f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")
    return holder


async def test_prisma_lock_holder_makes_the_run_wait_then_proceed(tclient, workers, database, pg_server) -> None:
    db, url = database
    env = new_env_name("lock")
    worker = workers({env: env_config(url)})
    with report.Trial("race: advisory lock held, then released"):
        holder = await _hold_lock(url)
        try:
            handle = await start_run(tclient, make_request(env, scenario.bundle()), worker.env["MIGRATOR_TASK_QUEUE"])
            await wait_status(handle, lambda s: s.stage == "deploy", 60, "the deploy stage")
            await asyncio.sleep(3)  # the attempt is waiting for the lock: nothing may be applied meanwhile
            assert await ledger_count(url) == 0
            tables = await fetch(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            assert {r["tablename"] for r in tables} <= {"_prisma_migrations"}, tables
        finally:
            await holder.close()
        final = await run_result(handle)
        assert final.outcome == Outcome.succeeded, final.error
        found = await scenario.count(url)
        assert all(n == 1 for n in found.applied_rows.values()), found
        await assert_clean(pg_server.admin_url, db)


@pytest.mark.torture_full  # ~1 min: five deploy attempts each wait out the lock timeout
@pytest.mark.timeout(600)
async def test_prisma_lock_never_released_fails_clearly(tclient, workers, database, pg_server) -> None:
    db, url = database
    env = new_env_name("lockfail")
    worker = workers({env: env_config(url)}, advisory_lock_timeout="PT2S")
    with report.Trial("race: advisory lock never released"):
        holder = await _hold_lock(url)
        try:
            handle = await start_run(tclient, make_request(env, scenario.bundle()), worker.env["MIGRATOR_TASK_QUEUE"])
            # Release only once the run gave up on deploy and compensates (which needs the lock too).
            await wait_status(handle, lambda s: s.stage in ("compensate", "done"), 300, "the deploy stage to give up")
        finally:
            await holder.close()
        final = await run_result(handle)
        assert final.outcome == Outcome.failed_rolled_back, (final.outcome, final.error)
        assert "held the migration lock pg_advisory_lock(72707369)" in final.error, final.error
        assert "nothing was changed" in final.error
        found = await scenario.count(url)
        assert not any(found.applied_rows.values()) and not found.tables - {"effects"}, found
        await assert_clean(pg_server.admin_url, db)


@pytest.mark.parametrize("via", ["update", "signal"])
async def test_approve_and_reject_arriving_together(tclient, workers, database, pg_server, via: str) -> None:
    """Whatever the order, the run never both passes and honours the rejection: either the
    rejection counts (nothing applied) or the gate passed first and the rejection is refused."""
    db, url = database
    for _ in range(3):
        env = new_env_name("ar")
        worker = workers({env: env_config(url, gates=["deploy"], approvers=["alice", "bob"])})
        with report.Trial(f"race: approve+reject together ({via})"):
            handle = await start_run(tclient, make_request(env, scenario.bundle()), worker.env["MIGRATOR_TASK_QUEUE"])
            st = await wait_status(handle, lambda s: s.awaiting == "deploy", 60, "the deploy gate")
            ok = approval("deploy", "alice", st.plan.fingerprint)
            no = approval("deploy", "bob", st.plan.fingerprint, comment="stop")
            if via == "update":
                answers = await asyncio.gather(handle.execute_update("approve_update", ok),
                                               handle.execute_update("reject_update", no), return_exceptions=True)
                # Lost the race against the run's end: Temporal answers the caller, the run records nothing.
                late = [a for a in answers if isinstance(a, Exception)
                        and ("already completed" in str(a) or "aborted by closing workflow" in str(a))]
                assert len(late) <= 1, answers
            else:
                sent = await asyncio.gather(handle.signal("approve", ok), handle.signal("reject", no),
                                            return_exceptions=True)
                # A signal may only lose the race against the run's own end (then Temporal says so).
                late = [e for e in sent if e is not None]
                assert all("already completed" in str(e) for e in late) and len(late) <= 1, sent
            final = await run_result(handle)
            rejects = [a for a in final.approvals if a.decision == "reject"]
            approves = [a for a in final.approvals if a.decision == "approve"]
            delivered = 2 - len(late)
            assert len(final.approvals) == delivered, final.approvals  # every delivered attempt is recorded
            if late:
                expected = Outcome.rejected if rejects else Outcome.succeeded
                assert final.outcome == expected and final.approvals[0].accepted, final
                assert (await ledger_count(url) == 0) == (expected == Outcome.rejected)
                await execute(url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
                continue
            if via == "update" and not late:  # the CLI's answers agree with what the run did
                reject_answer = answers[1]
                if final.outcome == Outcome.rejected:
                    assert reject_answer["accepted"] is True, answers
                else:
                    assert isinstance(reject_answer, WorkflowUpdateFailedError), answers
            if final.outcome == Outcome.rejected:
                assert rejects[0].accepted
                assert await ledger_count(url) == 0
                assert final.applied == []
            else:
                assert final.outcome == Outcome.succeeded, final.error
                assert approves[0].accepted and not rejects[0].accepted, final.approvals
                assert "already passed" in rejects[0].refusal or "no longer takes" in rejects[0].refusal
            # Each attempt on a clean database.
            await execute(url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            await assert_clean(pg_server.admin_url, db)


async def test_approval_before_the_plan_exists_is_refused_and_recorded(tclient, workers, database, pg_server) -> None:
    db, url = database
    env = new_env_name("early")
    worker = workers({env: env_config(url, gates=["deploy"])})
    with report.Trial("race: approval before the plan exists"):
        req = make_request(env, scenario.bundle())
        from domain.models import RunStatus, workflow_id_for
        from tests.torture.harness import WORKFLOW_NAME, start_options

        options = start_options(req, task_queue=worker.env["MIGRATOR_TASK_QUEUE"], workflow_id=workflow_id_for(env))
        # signal-with-start: the approval is in history before preflight even runs
        handle = await tclient.start_workflow(WORKFLOW_NAME, req, result_type=RunStatus, start_signal="approve",
                                              start_signal_args=[approval("deploy", "alice")], **options)
        st = await wait_status(handle, lambda s: s.awaiting == "deploy", 60, "the deploy gate")
        assert len(st.approvals) == 1 and not st.approvals[0].accepted, st.approvals
        assert "plan is not ready yet" in st.approvals[0].refusal
        await asyncio.sleep(1)
        assert await ledger_count(url) == 0  # the early approval did not open the gate
        await handle.signal("approve", approval("deploy", "alice", st.plan.fingerprint))
        final = await run_result(handle)
        assert final.outcome == Outcome.succeeded, final.error
        await assert_clean(pg_server.admin_url, db)


async def test_approval_for_a_later_gate_counts_when_the_run_gets_there(tclient, workers, database, pg_server) -> None:
    db, url = database
    env = new_env_name("later")
    worker = workers({env: env_config(url, gates=["deploy", "verify"])})
    with report.Trial("race: approval for a later gate"):
        handle = await start_run(tclient, make_request(env, scenario.bundle()), worker.env["MIGRATOR_TASK_QUEUE"])
        st = await wait_status(handle, lambda s: s.awaiting == "deploy", 60, "the deploy gate")
        await handle.signal("approve", approval("verify", "bob", st.plan.fingerprint))
        await wait_status(handle, lambda s: len(s.approvals) == 1, 10, "the early verify approval")
        await handle.signal("approve", approval("deploy", "alice", st.plan.fingerprint))
        final = await run_result(handle)
        assert final.outcome == Outcome.succeeded, final.error
        assert final.gates_passed == ["deploy", "verify"]
        assert all(a.accepted for a in final.approvals), final.approvals
        await assert_clean(pg_server.admin_url, db)
