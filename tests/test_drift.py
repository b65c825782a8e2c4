"""The drift proof on real PostgreSQL, from the schema model: the live schema against the shadow
replay of the applied local migrations, over every object kind, as the plan shows it.

The issue's cases: a phantom that added a trigger, a view, row-level security and revoked grants is
unexplained drift naming each (not "changed nothing"); after a phantom hotfix whose effects are
exactly a failed migration's, the difference is explained by the plan's resolve, and the run
succeeds with the live schema equal to the folder.
"""

from __future__ import annotations

import uuid

import asyncpg

from activities.shadow import SHADOW_PREFIX
from domain.drift import DriftVerdict
from domain.models import Action, BlockerCode, Outcome
from domain.schema import ObjectKind
from tests.conftest import PG_TEST_PASSWORD
from tests.helpers import (
    final_status,
    history_state,
    make_settings,
    migration,
    new_worker,
    plan_of,
    request,
    start,
)


def init_granting(role: str):
    return migration("20250101000000_init", f'CREATE TABLE "orders" ("id" INT PRIMARY KEY, "owner" TEXT NOT NULL, '
                     f'"total" INT);\nGRANT SELECT, INSERT ON "orders" TO {role};')


def phantom_sql(role: str) -> str:
    return f"""
CREATE FUNCTION orders_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER orders_audit BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION orders_audit();
CREATE VIEW order_totals AS SELECT owner, sum(total) AS total FROM orders GROUP BY owner;
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_orders ON orders USING (owner = current_user);
REVOKE INSERT ON orders FROM {role};
"""


async def _shadows(conn: asyncpg.Connection) -> list[str]:
    return [r[0] for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", SHADOW_PREFIX + "%")]


async def test_a_phantom_trigger_view_rls_and_revoke_is_unexplained_drift_naming_each(
    database_url: str, db: asyncpg.Connection
) -> None:
    role = f"app_{uuid.uuid4().hex[:8]}"
    await db.execute(f"CREATE ROLE {role}")
    try:
        init = init_granting(role)
        await history_state(database_url, applied=[init], phantoms={"20250102000000_hotfix": phantom_sql(role)},
                            by_hand="INSERT INTO orders VALUES (1, 'alice', 10), (2, 'bob', 20)")
        await db.execute(f"SET ROLE {role}")
        assert await db.fetchval("SELECT count(*) FROM orders") == 0  # what the application then saw
        await db.execute("RESET ROLE")

        plan = await plan_of(make_settings("dev", database_url, required_approvals={"low": 1, "medium": 1, "high": 2}),
                             request("dev", [init]))
        drift = plan.drift
        assert drift.verdict == DriftVerdict.unexplained_drift and plan.risk == "high" and plan.required_approvals == 2
        found = {(d.ref.kind, d.ref.name, d.change) for d in drift.differences}
        assert found == {
            (ObjectKind.function, "orders_audit", "extra"),
            (ObjectKind.trigger, "orders_audit", "extra"),
            (ObjectKind.view, "order_totals", "extra"),
            (ObjectKind.policy, "own_orders", "extra"),
            (ObjectKind.table, "orders", "changed"),  # row level security and the revoked grant
        }
        [table] = [d for d in drift.differences if d.ref.kind == ObjectKind.table]
        assert set(table.attributes) == {"row level security", "grants"}
        assert f"privileges of {role} expected INSERT, SELECT, live has SELECT" in table.sentence
        for text in ("trigger orders_audit on public.orders exists only in the live database",
                     "view public.order_totals exists only in the live database",
                     "policy own_orders on public.orders exists only in the live database",
                     "20250102000000_hotfix may be the cause"):
            assert text in drift.summary
        assert await _shadows(db) == []
    finally:
        await _drop_kept_templates(db)  # the kept replay holds the history's grant to the role
        await db.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


async def _drop_kept_templates(db: asyncpg.Connection) -> None:
    for (name,) in await db.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'migrator_template_%'"):
        await db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


HOTFIX_INIT = migration("20250101000000_init", 'CREATE TABLE "orders" ("id" INT PRIMARY KEY, "total" INT);')
ADD_CODE = migration("20250102000000_add_code",
                     'ALTER TABLE "orders" ADD COLUMN "code" TEXT NOT NULL;\n'
                     'CREATE UNIQUE INDEX "orders_code_key" ON "orders" ("code");')
# The hotfix someone ran by hand after ADD_CODE failed on existing rows: the same schema in the end.
HOTFIX = ('ALTER TABLE "orders" ADD COLUMN "code" TEXT NOT NULL DEFAULT md5(random()::text);\n'
          'ALTER TABLE "orders" ALTER COLUMN "code" DROP DEFAULT;\n'
          'CREATE UNIQUE INDEX "orders_code_key" ON "orders" ("code");')


async def test_the_hotfix_is_explained_by_the_resolve_and_the_run_succeeds(
    time_skipping_env, database_url: str, db: asyncpg.Connection
) -> None:
    await history_state(database_url, applied=[HOTFIX_INIT], failed_by_hand="INSERT INTO orders VALUES (1, 10)",
                        failed=ADD_CODE, phantoms={"20250102100000_hotfix_code": HOTFIX})
    settings = make_settings("dev", database_url, required_approvals={"low": 1, "medium": 1, "high": 2})
    req = request("dev", [HOTFIX_INIT, ADD_CODE])
    plan = await plan_of(settings, req)
    assert {m.name: m.action for m in plan.migrations}[ADD_CODE.name] == Action.resolve_applied
    assert plan.drift.verdict == DriftVerdict.explained_by_resolve and plan.drift.resolved_by == [ADD_CODE.name]
    assert {(d.ref.kind, d.ref.name) for d in plan.drift.explained} == {
        (ObjectKind.column, "code"), (ObjectKind.index, "orders_code_key")}
    assert plan.drift.differences == [] and plan.risk != "high" and plan.required_approvals == 1

    client = time_skipping_env.client
    async with new_worker(client, settings) as worker:
        final = await final_status(await start(client, worker, req))
    assert final.outcome == Outcome.succeeded, final.error
    checks = {c.check: c for c in final.verification}
    assert checks["schema equals the migrations folder"].passed
    assert "equals the replay of the 2 migration(s) of the folder" in checks["schema equals the migrations folder"].detail
    assert await _shadows(db) == []


async def test_a_history_that_does_not_replay_is_no_proof_and_verify_says_so(database_url: str) -> None:
    """The applied history depends on something outside the folder (here a table made by hand
    before it): the shadow cannot rebuild it, so there is no proof either way, and verification
    will not compare schemas (the plan says so)."""
    needs = migration("20250101000000_uses_legacy", 'ALTER TABLE "legacy" ADD COLUMN "x" INT;')
    conn = await asyncpg.connect(database_url)
    await conn.execute('CREATE TABLE "legacy" ("id" INT)')
    await conn.close()
    await history_state(database_url, applied=[needs])
    plan = await plan_of(make_settings("dev", database_url), request("dev", [needs]))
    assert plan.drift.verdict == DriftVerdict.replay_failed
    assert 'relation "legacy" does not exist' in plan.drift.summary and plan.blockers == []
    assert not plan.verify_schema and any("will not compare the schema" in n for n in plan.notes)


async def test_without_createdb_the_plan_says_what_it_could_not_check(pg_server, database_url: str,
                                                                    db: asyncpg.Connection) -> None:
    from urllib.parse import urlsplit, urlunsplit

    role = f"nocreatedb_{uuid.uuid4().hex[:8]}"
    await db.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}' NOCREATEDB")
    await db.execute(f"GRANT ALL ON SCHEMA public TO {role}")
    try:
        parts = urlsplit(database_url)
        url = urlunsplit(parts._replace(netloc=f"{role}:pw-{role}@{parts.netloc.rsplit('@', 1)[-1]}"))
        req = request("dev", [HOTFIX_INIT])
        plan = await plan_of(make_settings("dev", url), req)
        assert plan.drift.verdict == DriftVerdict.unavailable and "CREATEDB" in plan.drift.summary
        assert plan.blockers == [] and not plan.verify_schema
        assert f"pw-{role}" not in plan.model_dump_json() and PG_TEST_PASSWORD not in plan.model_dump_json()
        # An environment that requires the schema checks stops instead.
        plan = await plan_of(make_settings("dev", url, drift_proof="always"), req)
        assert [b.code for b in plan.blockers] == [BlockerCode.schema_unavailable]
    finally:
        await db.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


async def test_a_shadow_a_killed_worker_left_is_dropped_when_the_run_ends(pg_server, database_url: str,
                                                                        db: asyncpg.Connection) -> None:
    """The shadow is named from the run and environment; the end-of-run activity drops exactly it."""
    from temporalio.testing import ActivityEnvironment

    from activities.schema_facts import run_key
    from activities.shadow import shadow_database_name
    from tests.helpers import StageActivities

    env = ActivityEnvironment()
    name = env.run(lambda: shadow_database_name(run_key("dev")))
    assert name == env.run(lambda: shadow_database_name(run_key("dev")))  # every attempt: the same
    assert name != env.run(lambda: shadow_database_name(run_key("staging")))  # another database: another
    other = shadow_database_name("someone-else's-run")
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        for leftover in (name, other):
            await admin.execute(f'CREATE DATABASE "{leftover}"')
        assert await env.run(StageActivities(make_settings("dev", database_url)).drop_shadow, "dev") is None
        assert set(await _shadows(db)) == {other}
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{other}"')
        await admin.close()


async def test_a_preflight_cancelled_during_its_replay_leaves_no_shadow(database_url: str, db: asyncpg.Connection) -> None:
    import asyncio

    from temporalio.testing import ActivityEnvironment

    from tests.helpers import StageActivities

    slow = migration("20250101000000_slow", 'CREATE TABLE "t" ("id" INT);\nSELECT pg_sleep(30);')
    env = ActivityEnvironment()
    task = asyncio.create_task(env.run(StageActivities(make_settings("dev", database_url)).preflight,
                                       request("dev", [slow])))
    for _ in range(200):  # until the replay sleeps in the shadow
        if await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' "
                             "AND datname LIKE 'migrator_shadow_%'"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the replay never started")
    env.cancel()
    try:
        await asyncio.wait_for(task, 15)
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # the activity reports its cancellation as an error of its own kind
        assert "cancel" in type(exc).__name__.lower() or "cancel" in str(exc).lower(), exc
    assert await _shadows(db) == []
