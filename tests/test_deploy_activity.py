"""The deploy activities on real PostgreSQL (ActivityEnvironment, no Temporal server): Prisma's row
shapes, the advisory lock, exactly-once retries, the ledger-changed guard, non-transactional
migrations, error classification and secret scrubbing."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from domain.models import (
    CompensateInput,
    DeployInput,
    RunMarks,
    UndoStep,
)
from domain.plan import RUNS_IN_DEPLOY
from domain.prisma.ledger import ADVISORY_LOCK_KEY
from tests.conftest import PG_TEST_PASSWORD
from tests.helpers import (
    StageActivities,
    ledger_rows,
    make_settings,
    migration,
    request,
)

A = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT PRIMARY KEY, "v" TEXT);', down='DROP TABLE "a";')
B = migration("20250102000000_b", """INSERT INTO "a" ("id", "v") VALUES (1, 'one');""")
BAD = migration("20250103000000_bad", 'CREATE TABLE "half" ("id" INT);\nSELECT 1 / 0;')


def acts(database_url: str, **env) -> StageActivities:
    return StageActivities(make_settings("t", database_url, **env))


async def plan_and_marks(a: StageActivities, migs, **kwargs):
    result = await ActivityEnvironment().run(a.preflight, request("t", list(migs), **kwargs))
    plan = result.plan
    marks = RunMarks(deploy_ids={m.name: str(uuid.uuid4()) for m in plan.by_action(*RUNS_IN_DEPLOY)},
                     resolve_at=datetime.now(timezone.utc))
    bundle = {m.name: m for m in migs}
    return plan, marks, [bundle[m.name] for m in plan.by_action(*RUNS_IN_DEPLOY)]


async def test_rows_are_written_as_prisma_writes_them(database_url: str, db: asyncpg.Connection) -> None:
    a = acts(database_url)
    plan, marks, todo = await plan_and_marks(a, [A, B, BAD])
    beats: list = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details[0])
    result = await env.run(a.deploy, DeployInput(environment="t", plan=plan, migrations=todo, marks=marks))
    assert [x.name for x in result.applied] == [A.name, B.name]
    assert result.failed.name == BAD.name and "22012" in result.failed.error  # division_by_zero
    rows = await ledger_rows(db)
    assert [(r["migration_name"], r["applied_steps_count"], r["logs"] is None, r["finished_at"] is not None)
            for r in rows] == [(A.name, 1, True, True), (B.name, 1, True, True), (BAD.name, 0, False, False)]
    assert [r["id"] for r in rows] == [marks.deploy_ids[m.name] for m in (A, B, BAD)]
    assert rows[2]["logs"].startswith("A migration failed to apply.") and "Database error code: 22012" in rows[2]["logs"]
    assert rows[0]["checksum"] == A.checksum
    assert await db.fetchval("SELECT to_regclass('half')") is None  # the failed file left nothing
    assert beats and beats[0] == {"done": 0, "total": 3, "current": None}


async def test_a_retried_attempt_skips_what_it_already_applied(database_url: str, db: asyncpg.Connection) -> None:
    a = acts(database_url)
    plan, marks, todo = await plan_and_marks(a, [A, B])
    inp = DeployInput(environment="t", plan=plan, migrations=todo, marks=marks)
    first = await ActivityEnvironment().run(a.deploy, inp)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2)
    again = await env.run(a.deploy, inp)  # as if attempt 1's result had been lost
    assert [x.ledger_id for x in again.applied] == [x.ledger_id for x in first.applied]
    assert await db.fetchval("SELECT count(*) FROM a") == 1
    assert await db.fetchval("SELECT count(*) FROM _prisma_migrations") == 2


async def test_deploy_stops_when_someone_else_changed_the_ledger(database_url: str, db: asyncpg.Connection) -> None:
    a = acts(database_url)
    plan, marks, todo = await plan_and_marks(a, [A, B])
    # Prisma (or a person) deploys A behind the plan's back.
    await ActivityEnvironment().run(a.deploy, DeployInput(environment="t", plan=plan, migrations=todo[:1],
                                                          marks=RunMarks(deploy_ids={A.name: "someone-else"})))
    before = await ledger_rows(db)
    result = await ActivityEnvironment().run(a.deploy, DeployInput(environment="t", plan=plan, migrations=todo, marks=marks))
    assert result.applied == [] and "changed since the plan was made" in result.stopped
    assert await ledger_rows(db) == before


async def test_the_advisory_lock_excludes_a_concurrent_deploy(database_url: str, db: asyncpg.Connection) -> None:
    a = acts(database_url)
    plan, marks, todo = await plan_and_marks(a, [A])
    await db.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)  # as a running `prisma migrate deploy`
    try:
        with pytest.raises(ApplicationError) as err:
            await ActivityEnvironment().run(a.deploy, DeployInput(environment="t", plan=plan, migrations=todo, marks=marks))
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    assert err.value.type == "AdvisoryLockTimeout" and not err.value.non_retryable
    assert "pg_advisory_lock(72707369)" in err.value.message and "nothing was changed" in err.value.message
    assert await db.fetchval("SELECT to_regclass('a')") is None


async def test_a_lock_held_past_the_budget_fails_the_migration_naming_the_holder_and_records_nothing(
        database_url: str, db: asyncpg.Connection) -> None:
    await db.execute('CREATE TABLE "busy" ("id" INT)')
    a = acts(database_url, lock_wait_budget="2s")
    m = migration("20250101000000_touch_busy", 'ALTER TABLE "busy" ADD COLUMN "x" INT;')
    plan, marks, todo = await plan_and_marks(a, [m])
    holder = await asyncpg.connect(database_url, server_settings={"application_name": "nightly-report"})
    tx = holder.transaction()
    await tx.start()
    await holder.execute('LOCK TABLE "busy" IN ACCESS SHARE MODE')
    try:
        result = await ActivityEnvironment().run(
            a.deploy, DeployInput(environment="t", plan=plan, migrations=todo, marks=marks))
    finally:
        await tx.rollback()
        await holder.close()
    failed = result.failed
    assert failed.name == m.name and failed.ledger_id is None and not failed.partial
    assert failed.error.startswith("could not take the lock on public.busy within 2s: pid ")
    assert "(application 'nightly-report', idle in transaction for " in failed.error
    assert failed.error.endswith("holds it; nothing of it was changed")
    assert failed.lock_wait.waited_s >= 1.9 and failed.lock_wait.blockers[0].startswith("pid ")
    assert await db.fetchval("SELECT count(*) FROM _prisma_migrations") == 0
    assert await db.fetchval("SELECT count(*) FROM information_schema.columns WHERE table_name = 'busy'") == 1


async def test_non_transactional_migration_follows_prismas_sequence(database_url: str, db: asyncpg.Connection) -> None:
    base = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT);')
    conc = migration("20250102000000_idx", 'CREATE INDEX CONCURRENTLY "a_id" ON "a" ("id");')
    a = acts(database_url)
    plan, marks, todo = await plan_and_marks(a, [base, conc])
    assert [m.in_transaction for m in plan.migrations] == [True, False]
    result = await ActivityEnvironment().run(a.deploy, DeployInput(environment="t", plan=plan, migrations=todo, marks=marks))
    assert [x.name for x in result.applied] == [base.name, conc.name]
    row = (await ledger_rows(db))[1]
    assert row["finished_at"] is not None and row["applied_steps_count"] == 1 and row["logs"] is None
    assert await db.fetchval("SELECT to_regclass('a_id')") is not None


async def test_a_retry_after_a_crash_mid_index_build_looks_at_the_index(database_url: str, db: asyncpg.Connection) -> None:
    """A started row without logs: the attempt died during CREATE INDEX CONCURRENTLY. The retry
    finishes a valid index without building it again, drops an INVALID one and builds it, builds a
    missing one; a statement that is not safe to repeat is left for a person."""
    await db.execute('CREATE TABLE "a" ("id" INT)')
    await db.execute("CREATE TABLE _prisma_migrations (id VARCHAR(36) PRIMARY KEY NOT NULL, checksum VARCHAR(64) NOT NULL,"
                     " finished_at TIMESTAMPTZ, migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ,"
                     " started_at TIMESTAMPTZ NOT NULL DEFAULT now(), applied_steps_count INTEGER NOT NULL DEFAULT 0)")
    idx = migration("20250102000000_idx", 'CREATE INDEX CONCURRENTLY "a_id" ON "a" ("id");')
    cases = {"valid": 'CREATE INDEX "a_id" ON "a" ("id")', "invalid": "INVALID", "absent": None}
    for case, setup in cases.items():
        await db.execute("DELETE FROM _prisma_migrations")
        await db.execute('DROP INDEX IF EXISTS "a_id"')
        a = acts(database_url)
        plan, marks, todo = await plan_and_marks(a, [idx])
        if setup == "INVALID":
            await db.execute("INSERT INTO a VALUES (1), (1)")
            with pytest.raises(asyncpg.UniqueViolationError):
                await db.execute('CREATE UNIQUE INDEX CONCURRENTLY "a_id" ON "a" ("id")')  # leaves it INVALID
            await db.execute("DELETE FROM a")
        elif setup:
            await db.execute(setup)
        oid = await db.fetchval("SELECT 'a_id'::regclass::oid") if setup else None
        # attempt 1 "crashed" during the build, after writing its started row
        await db.execute("INSERT INTO _prisma_migrations (id, checksum, migration_name) VALUES ($1, $2, $3)",
                         marks.deploy_ids[idx.name], idx.checksum, idx.name)
        result = await ActivityEnvironment().run(a.deploy, DeployInput(environment="t", plan=plan, migrations=todo, marks=marks))
        assert [x.name for x in result.applied] == [idx.name], case
        state = await db.fetchrow("SELECT c.oid, x.indisvalid, x.indisunique FROM pg_class c "
                                  "JOIN pg_index x ON x.indexrelid = c.oid WHERE c.relname = 'a_id'")
        assert state["indisvalid"] and not state["indisunique"], case
        assert (state["oid"] == oid) == (case == "valid"), case  # only the valid one was kept as it was
        (row,) = await ledger_rows(db)
        assert row["finished_at"] is not None and row["applied_steps_count"] == 1 and row["logs"] is None

    drop_idx = migration("20250103000000_drop", 'DROP INDEX CONCURRENTLY "a_id";')
    await db.execute("DELETE FROM _prisma_migrations")
    a = acts(database_url)
    plan, marks, todo = await plan_and_marks(a, [drop_idx])
    await db.execute("INSERT INTO _prisma_migrations (id, checksum, migration_name) VALUES ($1, $2, $3)",
                     marks.deploy_ids[drop_idx.name], drop_idx.checksum, drop_idx.name)
    result = await ActivityEnvironment().run(a.deploy, DeployInput(environment="t", plan=plan, migrations=todo, marks=marks))
    assert result.applied == [] and "not safe to repeat" in result.needs_attention


async def test_compensation_is_idempotent(database_url: str, db: asyncpg.Connection) -> None:
    a = acts(database_url)
    plan, marks, todo = await plan_and_marks(a, [A, B])
    await ActivityEnvironment().run(a.deploy, DeployInput(environment="t", plan=plan, migrations=todo, marks=marks))
    by = {m.name: m for m in plan.migrations}
    undo = [UndoStep(name=n, ledger_id=marks.deploy_ids[n], rollback=by[n].rollback, rollback_sql=by[n].rollback_sql)
            for n in (B.name, A.name)]
    inp = CompensateInput(environment="t", undo=undo, marks=marks)
    first = await ActivityEnvironment().run(a.compensate, inp)
    second = await ActivityEnvironment().run(a.compensate, inp)
    assert [(s.name, s.action) for s in first.steps] == [(B.name, "ran derived rollback"), (A.name, "ran down.sql")]
    # the rows are gone: a retried attempt undoes nothing again and reports what the first one did
    assert second.steps == first.steps
    assert first.complete and second.complete
    assert await db.fetchval("SELECT to_regclass('a')") is None
    assert await ledger_rows(db) == []  # the ledger as before the run (the audit is in history)


async def test_preflight_reads_only_and_handles_inserts_into_tables_created_earlier(database_url: str, db: asyncpg.Connection) -> None:
    a = acts(database_url)
    result = await ActivityEnvironment().run(a.preflight, request("t", [A, B], dry_run=True))
    assert [m.action for m in result.plan.migrations] == ["apply", "apply"]
    assert result.plan.migrations[1].rollback == "derived"
    assert await db.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    assert result.policy.approval_timeout == timedelta(hours=24)


async def test_errors_never_carry_the_password(database_url: str) -> None:
    wrong = database_url.replace(PG_TEST_PASSWORD, "not-" + PG_TEST_PASSWORD) if PG_TEST_PASSWORD in database_url else None
    if wrong is None:
        pytest.skip("the suite runs against an external server without the test password")
    a = StageActivities(make_settings("t", wrong))
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(a.preflight, request("t", [A]))
    assert err.value.type == "DatabaseRefused" and err.value.non_retryable  # a wrong password is not retried
    assert "authentication failed" in err.value.message
    assert PG_TEST_PASSWORD not in err.value.message and err.value.__cause__ is None
    with pytest.raises(ApplicationError) as unknown:
        await ActivityEnvironment().run(a.preflight, request("nope", [A]))
    assert unknown.value.type == "UnknownEnvironment" and unknown.value.non_retryable
    no_such_db = StageActivities(make_settings("t", database_url.rsplit("/", 1)[0] + "/no_such_database"))
    with pytest.raises(ApplicationError) as missing:
        await ActivityEnvironment().run(no_such_db.preflight, request("t", [A]))
    assert missing.value.type == "DatabaseRefused" and missing.value.non_retryable
    assert "database no_such_database does not exist" in missing.value.message


async def test_unfinished_sql_is_cancelled_with_the_activity(database_url: str, db: asyncpg.Connection) -> None:
    slow = migration("20250101000000_slow", "SELECT pg_sleep(30);")
    a = acts(database_url)
    plan, marks, todo = await plan_and_marks(a, [slow])
    env = ActivityEnvironment()
    task = asyncio.create_task(env.run(a.deploy, DeployInput(environment="t", plan=plan, migrations=todo, marks=marks)))
    for _ in range(100):
        if await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'"):
            break
        await asyncio.sleep(0.05)
    env.cancel()
    with pytest.raises(BaseException):
        await task
    for _ in range(100):
        if not await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' AND state = 'active'"):
            break
        await asyncio.sleep(0.05)
    assert not await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' AND state = 'active'")
    assert await db.fetchval("SELECT count(*) FROM _prisma_migrations") == 0


async def test_verify_checks_ledger_schema_and_verify_sql(database_url: str, db: asyncpg.Connection) -> None:
    from domain.models import VerifyInput

    idx = migration("20250102000000_idx", 'CREATE INDEX "a_v" ON "a" ("v");\nALTER TABLE "a" ADD COLUMN "w" INT;',
                    verify="SELECT true, 1;\nSELECT count(*) > 0 FROM a;")
    a = acts(database_url)
    plan, marks, todo = await plan_and_marks(a, [A, idx])
    await ActivityEnvironment().run(a.deploy, DeployInput(environment="t", plan=plan, migrations=todo, marks=marks))
    inp = VerifyInput(environment="t", plan=plan, migrations=[A, idx], compare_schema=plan.verify_schema,
                      expected_sequence=plan.expected_sequence, accepted_drift=plan.drift.accepted)
    good = await ActivityEnvironment().run(a.verify, inp)
    by_check = {c.check: c for c in good.checks if not c.check.startswith("verify.sql")}
    assert by_check["schema equals the migrations folder"].passed
    assert [c.passed for c in good.checks if c.check == "applied exactly once"] == [True, True]
    assert [c.passed for c in good.checks if c.check.startswith("verify.sql")] == [True, False]  # a is empty
    await db.execute('DROP INDEX "a_v"')
    await db.execute("INSERT INTO a (id, v) VALUES (1, 'x')")
    await db.execute("UPDATE _prisma_migrations SET rolled_back_at = now() WHERE migration_name = $1", A.name)
    bad = await ActivityEnvironment().run(a.verify, inp)
    failed = {c.check: c for c in bad.checks if not c.passed}
    assert set(failed) == {"schema equals the migrations folder", "applied exactly once"}
    assert failed["applied exactly once"].migration == A.name
    assert failed["schema equals the migrations folder"].detail == (
        "1 object(s) differ from the replay of the 2 migration(s) of the folder: index public.a_v on public.a is "
        "missing from the live database: expected CREATE INDEX a_v ON public.a USING btree (v)")


async def test_a_role_that_may_not_create_the_bookkeeping_schema(database_url: str, db: asyncpg.Connection) -> None:
    """Without CREATE on the database the deploy goes on without its bookkeeping, unless the plan
    backs something up: then it stops before any change and says what to grant."""
    role = f"limited_{uuid.uuid4().hex[:8]}"
    await db.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'; GRANT USAGE, CREATE ON SCHEMA public TO {role}")
    url = database_url.replace(database_url.split("://", 1)[1].split("@", 1)[0], f"{role}:pw")
    a = acts(url)
    plan, marks, todo = await plan_and_marks(a, [A])
    result = await ActivityEnvironment().run(a.deploy, DeployInput(environment="t", plan=plan, migrations=todo, marks=marks))
    assert [m.name for m in result.applied] == [A.name]
    assert await db.fetchval("SELECT to_regnamespace('_migrator_backup')") is None
    drop = migration("20250102000000_drop_v", 'ALTER TABLE "a" DROP COLUMN "v";', down='ALTER TABLE "a" ADD COLUMN "v" TEXT;')
    plan, marks, todo = await plan_and_marks(a, [A, drop])
    assert plan.migrations[1].backups  # the plan says it backs up the column first
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(a.deploy, DeployInput(environment="t", plan=plan, migrations=todo, marks=marks))
    assert err.value.type == "BookkeepingError" and err.value.non_retryable
    assert "grant the migration role CREATE on the database" in err.value.message and "nothing was changed" in err.value.message
    assert await db.fetchval("SELECT count(*) FROM information_schema.columns WHERE table_name = 'a' AND column_name = 'v'")
    await db.execute("DROP TABLE a, _prisma_migrations; DROP OWNED BY " + role + "; DROP ROLE " + role)
