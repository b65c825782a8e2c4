"""Shadow replay (activities.shadow) on real PostgreSQL, judged by the real Prisma CLI.

The faithfulness proof: for every corpus history, the live model of a database deployed by
`prisma migrate deploy` equals the model replayed in the shadow database (zero differences).
Then the replay's own contract: one replay for several prefixes, the checksum-chain cache, the
deterministic shadow name dropped before and after use (also on cancellation), typed failures
without secrets, `?schema=`, role mapping, and failed-migration evidence from the models.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from activities.catalog import read_schema_model
from activities.shadow import (
    ReplayCache,
    ShadowError,
    expected_schemas,
    shadow_database_name,
)
from domain.prisma.folder import LocalMigration
from domain.schema import EffectsVerdict, ObjectState, compare, migration_effects
from tests.conftest import PG_TEST_PASSWORD
from tests.corpus import VECTOR_MIGRATION, corpus_migrations, write_folder
from tests.oracle import prisma

def mig(name: str, sql: str) -> LocalMigration:
    return LocalMigration(name=name, sql=sql)


async def live_model(url: str):
    conn = await asyncpg.connect(url)
    try:
        return await read_schema_model(conn)
    finally:
        await conn.close()


async def database_exists(pg_server, name: str) -> bool:
    conn = await asyncpg.connect(pg_server.admin_url)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def prisma_deployed(corpus) -> dict:
    """history -> (database URL, Prisma's result): Prisma's own deploy of each history, shared with
    the rest of the session (tests/corpus.py)."""
    deployed = {}
    for history in ("documenso", "rallly", "hoppscotch", "formbricks"):
        prepared = await corpus.prepared(history)
        deployed[history] = (prepared.reference_url, prepared.reference_result)
    return deployed


# -- the model is faithful: Prisma's deploy == our replay, on every real history ------------


@pytest.mark.oracle
@pytest.mark.parametrize("history", ["documenso", "rallly", "hoppscotch"])
async def test_replay_equals_prisma_deploy(history: str, prisma_deployed: dict) -> None:
    url, result = prisma_deployed[history]
    assert result.returncode == 0, result.stderr[-2000:]
    migrations = corpus_migrations(history)
    n = len(migrations)
    replay = await expected_schemas(url, migrations, [n // 2, n], run_key=f"faithful-{history}", cache=ReplayCache())
    assert replay.failure is None and replay.replayed == n  # two prefixes, one replay
    live = await live_model(url)
    assert len(live.tables) > 10 and len(live.indexes) > 20  # a real schema, not an empty one
    assert compare(replay.after(n), live) == []
    assert compare(replay.after(n // 2), live) != []  # history goes on after the middle


@pytest.mark.oracle
async def test_formbricks_stops_where_prisma_stops_and_the_rest_is_equal(prisma_deployed: dict) -> None:
    url, result = prisma_deployed["formbricks"]
    assert result.returncode != 0 and 'extension "vector" is not available' in result.stderr
    migrations = corpus_migrations("formbricks")
    replay = await expected_schemas(url, migrations, [len(migrations)], run_key="faithful-formbricks", cache=ReplayCache())
    failure = replay.failure
    assert failure is not None and failure.migration == VECTOR_MIGRATION and failure.sqlstate == "0A000"
    assert failure.sentence == (
        f"migration {VECTOR_MIGRATION} ({failure.position} of {len(migrations)}) failed when replayed in the shadow "
        'database: extension "vector" is not available (SQLSTATE 0A000)'
    )
    assert replay.models == {}  # the requested prefix was never reached
    before = failure.position - 1
    replay = await expected_schemas(url, migrations[:before], [before], run_key="faithful-formbricks", cache=ReplayCache())
    assert compare(replay.after(before), await live_model(url)) == []


@pytest.mark.oracle
async def test_each_prefix_equals_prisma_deploying_that_prefix(pg_server, tmp_path: Path) -> None:
    migrations = corpus_migrations("hoppscotch")
    name = await pg_server.create_database("shadow_src")
    cache = ReplayCache()
    try:
        replay = await expected_schemas(pg_server.url(name), migrations, [0, 5, 12], run_key="prefixes", cache=cache)
        assert replay.replayed == 12 and sorted(replay.models) == [0, 5, 12]
        for k in (5, 12):
            db_name = await pg_server.create_database(f"prefix{k}")
            try:
                url = pg_server.url(db_name)
                result = prisma(url, write_folder(tmp_path / str(k), migrations[:k]), "deploy")
                assert result.returncode == 0, result.stderr[-2000:]
                assert compare(replay.after(k), await live_model(url)) == []
            finally:
                await pg_server.drop_database(db_name)
        assert replay.after(0).tables == () and [s.ref.name for s in replay.after(0).schemas] == ["public"]
    finally:
        await pg_server.drop_database(name)


# -- the replay's contract ----------------------------------------------------------------------

HISTORY = [
    mig("m1", 'CREATE TABLE "User" ("id" SERIAL PRIMARY KEY, "email" TEXT NOT NULL);'),
    mig("m2", 'ALTER TABLE "User" ADD COLUMN "name" TEXT;'),
    mig("m3", 'CREATE INDEX "User_name_idx" ON "User"("name");'),
    mig("m4", 'CREATE TYPE "Role" AS ENUM (\'USER\', \'ADMIN\');'),
]


async def test_the_cache_is_keyed_by_the_checksum_chain(database_url: str) -> None:
    cache = ReplayCache()
    first = await expected_schemas(database_url, HISTORY, [2, 4], run_key="cache", cache=cache)
    assert first.replayed == 4 and first.from_cache == ()
    again = await expected_schemas(database_url, HISTORY, [2, 4], run_key="cache-other-run", cache=cache)
    assert again.replayed == 0 and again.from_cache == (2, 4) and again.models == first.models
    edited = HISTORY[:2] + [mig("m3", 'CREATE UNIQUE INDEX "User_name_idx" ON "User"("name");')] + HISTORY[3:]
    changed = await expected_schemas(database_url, edited, [2, 4], run_key="cache", cache=cache)
    assert changed.from_cache == (2,) and changed.replayed == 4
    [diff] = compare(first.after(4), changed.after(4))
    assert str(diff.ref) == 'index public."User_name_idx" on public."User"'


async def test_runs_of_one_history_at_once_replay_it_once(database_url: str) -> None:
    """A fleet's first wave: eight runs of the same folder on one server start together; one
    replays, the others wait for it and take its models from the cache."""
    cache = ReplayCache()
    replays = await asyncio.gather(*(expected_schemas(database_url, HISTORY, [2, 4], run_key=f"wave-{i}", cache=cache)
                                     for i in range(8)))
    assert sorted(r.replayed for r in replays) == [0] * 7 + [4]
    assert all(r.models == replays[0].models for r in replays)
    other = await asyncio.gather(  # another history is not held up by this one's lock
        expected_schemas(database_url, HISTORY[:3], [3], run_key="other", cache=cache),
        expected_schemas(database_url, HISTORY, [4], run_key="again", cache=cache))
    assert other[0].replayed == 3 and other[1].replayed == 0


async def test_a_leftover_shadow_is_dropped_first_and_none_is_left_after(pg_server, database_url: str) -> None:
    name = shadow_database_name("run-42")
    assert name == shadow_database_name("run-42") != shadow_database_name("run-43")
    assert name.startswith("migrator_shadow_") and len(name) < 63
    # A killed worker left its shadow behind, with a table in it and a session still open.
    admin = await asyncpg.connect(pg_server.admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    stale_url = urlunsplit(urlsplit(pg_server.admin_url)._replace(path="/" + name))
    stale = await asyncpg.connect(stale_url)
    await stale.execute('CREATE TABLE "leftover" ("x" INT)')
    replay = await expected_schemas(database_url, HISTORY, [4], run_key="run-42", cache=None)
    assert replay.shadow_database == name and "leftover" not in {t.ref.name for t in replay.after(4).tables}
    assert not await database_exists(pg_server, name)
    stale.terminate()


async def test_a_second_attempt_of_the_same_run_waits_for_the_first(database_url: str) -> None:
    """The advisory lock on the shadow's name: an attempt never drops a shadow another one uses."""
    from activities.shadow import _LOCK_CLASS, _lock_key

    holder = await asyncpg.connect(database_url)
    try:
        name = shadow_database_name("busy-run")
        await holder.execute("SELECT pg_advisory_lock($1::int, $2::int)", _LOCK_CLASS, _lock_key(name))
        with pytest.raises(ShadowError) as caught:
            await expected_schemas(database_url, HISTORY, [1], run_key="busy-run", cache=None, lock_wait=0.3)
        assert str(caught.value) == f"another replay of this run is still using the shadow database {name}; try again"
    finally:
        await holder.close()
    assert (await expected_schemas(database_url, HISTORY, [1], run_key="busy-run", cache=None)).failure is None


async def test_cancellation_drops_the_shadow(pg_server, database_url: str) -> None:
    slow = HISTORY[:1] + [mig("m2_slow", "SELECT pg_sleep(60);")]
    name = shadow_database_name("cancel-me")
    task = asyncio.create_task(expected_schemas(database_url, slow, [2], run_key="cancel-me", cache=None))
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        for _ in range(200):  # until the slow migration runs in the shadow
            if await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%pg_sleep%'", name
            ):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the slow migration never started in the shadow database")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not await database_exists(pg_server, name)
    finally:
        await admin.close()


async def test_a_failing_migration_is_a_typed_result_naming_it(pg_server, database_url: str) -> None:
    broken = HISTORY[:1] + [mig("m2_broken", 'CREATE TABLE "Post" ("id" INT'), *HISTORY[2:]]
    replay = await expected_schemas(database_url, broken, [1, 4], run_key="broken", cache=None)
    assert sorted(replay.models) == [1] and replay.replayed == 1
    assert replay.failure is not None
    assert (replay.failure.migration, replay.failure.position, replay.failure.sqlstate) == ("m2_broken", 2, "42601")
    assert replay.failure.sentence.startswith("migration m2_broken (2 of 4) failed when replayed in the shadow database: syntax error")
    assert PG_TEST_PASSWORD not in replay.model_dump_json() and database_url not in replay.failure.sentence
    assert not await database_exists(pg_server, replay.shadow_database)


async def test_each_migration_is_one_simple_query_script_as_prisma_sends_it(database_url: str) -> None:
    """PostgreSQL's implicit transaction applies: CONCURRENTLY alone in a script runs, beside other
    statements it fails (as in Prisma), and BEGIN/COMMIT inside a script work."""
    history = [
        mig("m1", 'BEGIN;\nCREATE TABLE "t" ("id" INT);\nCOMMIT;'),
        mig("m2", 'CREATE INDEX CONCURRENTLY "t_id_idx" ON "t"("id");'),
        mig("m3", 'CREATE TABLE "u" ("id" INT);\nCREATE INDEX CONCURRENTLY "u_id_idx" ON "u"("id");'),
    ]
    replay = await expected_schemas(database_url, history, [2, 3], run_key="protocol", cache=None)
    assert [i.ref.name for i in replay.after(2).indexes] == ["t_id_idx"]
    assert replay.failure is not None and (replay.failure.migration, replay.failure.sqlstate) == ("m3", "25001")


async def test_shadow_problems_are_one_sentence_without_the_password(pg_server) -> None:
    parts = urlsplit(pg_server.admin_url)
    wrong = urlunsplit(parts._replace(netloc=f"{parts.username}:not-the-pw-123@{parts.hostname}:{parts.port}"))
    with pytest.raises(ShadowError) as caught:
        await expected_schemas(wrong, HISTORY, [1], run_key="pw", cache=None)
    assert "not-the-pw-123" not in str(caught.value) and "authentication failed" in str(caught.value)
    role = f"nocreatedb_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_server.admin_url)
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'role-pw-456'")
    try:
        url = urlunsplit(parts._replace(netloc=f"{role}:role-pw-456@{parts.hostname}:{parts.port}"))
        with pytest.raises(ShadowError) as caught:
            await expected_schemas(url, HISTORY, [1], run_key="createdb", cache=None)
        assert "needs CREATEDB" in str(caught.value) and "role-pw-456" not in str(caught.value)
    finally:
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


@pytest.mark.oracle
async def test_prisma_schema_parameter_is_honoured(database_url: str, tmp_path: Path) -> None:
    url = database_url + "?schema=app"
    history = HISTORY[:3]
    result = prisma(url, write_folder(tmp_path, history), "deploy")
    assert result.returncode == 0, result.stderr[-2000:]
    replay = await expected_schemas(url, history, [3], run_key="schema-param", cache=None)
    assert [str(t.ref) for t in replay.after(3).tables] == ['table app."User"']
    assert compare(replay.after(3), await live_model(database_url)) == []


async def test_roles_map_a_live_database_built_by_another_role(pg_server, database_url: str, db: asyncpg.Connection) -> None:
    role = f"owner_{uuid.uuid4().hex[:8]}"
    await db.execute(f"CREATE ROLE {role}")
    try:
        await db.execute(f'ALTER DATABASE "{urlsplit(database_url).path[1:]}" OWNER TO {role}')
        await db.execute(f"SET ROLE {role}")
        for m in HISTORY:
            await db.execute(m.sql)
        await db.execute("RESET ROLE")
        replay = await expected_schemas(database_url, HISTORY, [4], run_key="roles", cache=None)
        live = await read_schema_model(db)
        owners = [d for d in compare(replay.after(4), live) if "owner" in d.attributes]
        assert owners and all(f"live has {role}" in d.sentence for d in owners)
        user = urlsplit(pg_server.admin_url).username
        assert compare(replay.after(4), live, roles={user: role}) == []
    finally:
        await db.execute(f"DROP OWNED BY {role}")
        await db.execute(f'ALTER DATABASE "{urlsplit(database_url).path[1:]}" OWNER TO CURRENT_USER')
        await db.execute(f"DROP ROLE {role}")


# -- failed-migration evidence, from shadow models and the live catalog -----------------------

INIT = mig("m1_init", 'CREATE TABLE "User" ("id" SERIAL PRIMARY KEY, "email" TEXT NOT NULL);')
ORDERS = mig(
    "m2_orders",
    """CREATE TABLE "orders" ("id" SERIAL PRIMARY KEY, "userId" INTEGER NOT NULL, "ref" TEXT NOT NULL);
CREATE UNIQUE INDEX "orders_ref_key" ON "orders"("ref");
ALTER TABLE "orders" ADD CONSTRAINT "orders_userId_fkey" FOREIGN KEY ("userId") REFERENCES "User"("id");""",
)


async def _effects(database_url: str, db: asyncpg.Connection, failed: LocalMigration):
    replay = await expected_schemas(database_url, [INIT, failed], [1, 2], run_key=f"evidence-{failed.name}", cache=None)
    return migration_effects(replay.after(1), replay.after(2), await read_schema_model(db))


async def test_evidence_all_when_the_migration_ran(database_url: str, db: asyncpg.Connection) -> None:
    await db.execute(INIT.sql)
    await db.execute(ORDERS.sql)
    assert (await _effects(database_url, db, ORDERS)).verdict == EffectsVerdict.all


async def test_evidence_none_when_the_migration_rolled_back(database_url: str, db: asyncpg.Connection) -> None:
    failed = mig("m2_age", 'ALTER TABLE "User" ADD COLUMN "age" INTEGER NOT NULL;\nCREATE INDEX "User_age_idx" ON "User"("age");')
    await db.execute(INIT.sql)
    await db.execute("INSERT INTO \"User\" (\"email\") VALUES ('a@x')")
    with pytest.raises(asyncpg.NotNullViolationError):
        await db.execute(failed.sql)  # as Prisma sends it: one script, rolled back whole
    effects = await _effects(database_url, db, failed)
    assert effects.verdict == EffectsVerdict.none
    assert effects.sentence == "none of its effects are in the database (2 objects as before it)"


async def test_evidence_invalid_index_is_partial(database_url: str, db: asyncpg.Connection) -> None:
    failed = mig("m2_unique_email", 'CREATE UNIQUE INDEX CONCURRENTLY "User_email_key" ON "User"("email");')
    await db.execute(INIT.sql)
    await db.execute("INSERT INTO \"User\" (\"email\") VALUES ('a@x'), ('a@x')")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(failed.sql)
    effects = await _effects(database_url, db, failed)
    assert effects.verdict == EffectsVerdict.partial
    assert effects.sentence.endswith(
        'index public."User_email_key" on public."User" differs in validity: expected valid, live has INVALID'
    )


async def test_evidence_hand_patch_with_other_definitions_is_partial_naming_each(database_url: str, db: asyncpg.Connection) -> None:
    await db.execute(INIT.sql)
    await db.execute(
        """CREATE TABLE "orders" ("id" SERIAL PRIMARY KEY, "userId" INTEGER NOT NULL, "ref" TEXT NOT NULL);
           CREATE INDEX "orders_ref_key" ON "orders"("ref");
           ALTER TABLE "orders" ADD CONSTRAINT "orders_userId_fkey" CHECK (true);"""
    )
    effects = await _effects(database_url, db, ORDERS)
    assert effects.verdict == EffectsVerdict.partial
    states = {str(o.ref): o.state for o in effects.objects}
    assert states == {"sequence public.orders_id_seq": ObjectState.applied, "table public.orders": ObjectState.differs}
    [touched] = effects.differing
    assert [str(d.ref) for d in touched.differences] == [
        'constraint "orders_userId_fkey" on public.orders',
        "index public.orders_ref_key on public.orders",
    ]
    assert "live has CHECK (true)" in effects.sentence and "live has CREATE INDEX orders_ref_key" in effects.sentence


async def test_a_kept_replay_spares_the_next_run_the_migrations_it_holds(pg_server, database_url: str) -> None:
    """With keep_template, a replay that reaches its end stays on the server as its template; the
    next run (another run key, no in-process cache) copies it and replays only what it adds. A
    different history, or a request for a prefix before it, replays from scratch. No shadow is left."""
    from activities.shadow_template import TEMPLATE_PREFIX

    first = await expected_schemas(database_url, HISTORY[:3], [0, 3], run_key="keep-1", cache=None, keep_template=True)
    assert first.replayed == 3
    later = await expected_schemas(database_url, HISTORY, [3, 4], run_key="keep-2", cache=None, keep_template=True)
    assert later.replayed == 1 and later.after(3) == first.after(3)  # only m4 ran
    fresh = await expected_schemas(database_url, HISTORY, [4], run_key="keep-3", cache=None)
    assert later.after(4) == fresh.after(4) and fresh.replayed == 4
    again = await expected_schemas(database_url, HISTORY, [2, 4], run_key="keep-4", cache=None, keep_template=True)
    assert again.replayed == 4  # prefix 2 comes before what the template holds
    other = [mig("m1", 'CREATE TABLE "Other" ("id" INT);'), *HISTORY[1:2]]
    assert (await expected_schemas(database_url, other, [2], run_key="keep-5", cache=None,
                                   keep_template=True)).failure is not None  # m2 needs "User": not from the template
    conn = await asyncpg.connect(pg_server.admin_url)
    try:
        names = [r[0] for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'migrator_%'")]
    finally:
        await conn.close()
    assert [n for n in names if not n.startswith(TEMPLATE_PREFIX)] == []  # templates kept, no shadow left
    assert any(n.startswith(TEMPLATE_PREFIX) for n in names)
