"""Drift proof on real PostgreSQL: shadow replay of the applied history vs the live catalog."""

from __future__ import annotations

import asyncpg
import pytest

from activities.drift import SHADOW_PREFIX, drift_proof, read_catalog
from devstack.incident import INIT, MIGRATIONS_DIR, PHANTOM, reproduce_incident
from domain.catalog import Catalog, Change, Column, DriftVerdict, Table, compare, judge
from domain.prisma.folder import read_migrations_dir
from tests.conftest import PG_TEST_PASSWORD


def _local(name: str) -> tuple[str, str]:
    (m,) = [m for m in read_migrations_dir(MIGRATIONS_DIR) if m.name == name]
    return m.name, m.sql


async def _shadow_exists(conn: asyncpg.Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name))


async def test_incident_drift_is_explained_by_the_phantom(database_url: str, db: asyncpg.Connection) -> None:
    await reproduce_incident(database_url)
    report = await drift_proof(database_url, [_local(INIT)], [PHANTOM])
    assert report.verdict == DriftVerdict.explained_by_phantom, report.summary
    assert report.differences == []
    assert "explained by phantom: no unexplained drift" in report.summary
    assert PHANTOM in report.summary and report.replayed == [INIT]
    assert report.shadow_database and report.shadow_database.startswith(SHADOW_PREFIX)
    assert not await _shadow_exists(db, report.shadow_database)
    assert PG_TEST_PASSWORD not in report.model_dump_json()


async def test_hand_made_column_is_unexplained_drift_naming_it(database_url: str, db: asyncpg.Connection) -> None:
    await reproduce_incident(database_url)
    await db.execute('ALTER TABLE "customers" ADD COLUMN "nickname" TEXT')
    report = await drift_proof(database_url, [_local(INIT)], [PHANTOM], live_conn=db)
    assert report.verdict == DriftVerdict.unexplained_drift
    assert [(d.kind, d.name, d.change) for d in report.differences] == [("column", "customers.nickname", Change.extra)]
    assert "customers.nickname" in report.summary and "unexplained drift" in report.summary
    assert not await _shadow_exists(db, report.shadow_database)
    assert not db.is_closed()  # a borrowed connection is left open


async def test_no_drift_without_phantoms_including_non_transactional_migration(
    database_url: str, db: asyncpg.Connection
) -> None:
    history = [
        ("m1", 'CREATE TYPE "Kind" AS ENUM (\'a\', \'b\');\nCREATE TABLE "t" ("id" SERIAL PRIMARY KEY, "k" "Kind" NOT NULL DEFAULT \'a\', "n" INT CHECK (n > 0));'),
        ("m2", 'CREATE INDEX CONCURRENTLY "t_n_idx" ON "t" ("n");'),
    ]
    for _, sql in history:
        for stmt in sql.split(";\n"):  # the live side runs them by hand, as a DBA would
            if stmt.strip():
                await db.execute(stmt)
    report = await drift_proof(database_url, history, [])
    assert report.verdict == DriftVerdict.no_drift, report.summary
    assert report.replayed == ["m1", "m2"]


async def test_shadow_is_dropped_when_replay_fails(database_url: str, db: asyncpg.Connection) -> None:
    history = [("m1", "CREATE TABLE a (id int);"), ("m2", "ALTER TABLE missing ADD COLUMN x int;")]
    report = await drift_proof(database_url, history, [])
    assert report.verdict == DriftVerdict.replay_failed
    assert "m2" in report.summary and report.replayed == ["m1"]
    assert not await _shadow_exists(db, report.shadow_database)
    leftovers = await db.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", report.shadow_database)
    assert leftovers == 0


async def test_unprivileged_user_gets_unavailable_not_an_exception(pg_server, database_url: str, db: asyncpg.Connection) -> None:
    await db.execute("DROP ROLE IF EXISTS drift_nocreatedb")
    await db.execute("CREATE ROLE drift_nocreatedb LOGIN PASSWORD 'pw-nocreatedb' NOCREATEDB")
    try:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(database_url)
        host = parts.netloc.rsplit("@", 1)[-1]
        url = urlunsplit(parts._replace(netloc=f"drift_nocreatedb:pw-nocreatedb@{host}"))
        report = await drift_proof(url, [("m1", "CREATE TABLE a (id int);")], [])
        assert report.verdict == DriftVerdict.unavailable
        assert "CREATEDB" in report.summary and "pw-nocreatedb" not in report.model_dump_json()
    finally:
        await db.execute("DROP ROLE drift_nocreatedb")


async def test_catalog_reader_sees_every_kind_of_object(db: asyncpg.Connection) -> None:
    await db.execute(
        """
        CREATE TYPE "Mood" AS ENUM ('happy', 'sad');
        CREATE TABLE a (id int PRIMARY KEY, m "Mood" DEFAULT 'happy', name text NOT NULL);
        CREATE TABLE b (id int GENERATED ALWAYS AS IDENTITY, a_id int REFERENCES a (id));
        CREATE UNIQUE INDEX a_name_key ON a (name);
        CREATE TABLE _prisma_migrations (id text);
        """
    )
    cat = await read_catalog(db)
    assert set(cat.tables) == {"a", "b"}
    assert cat.tables["a"].columns["m"] == Column(type='"Mood"', nullable=True, default="'happy'::\"Mood\"")
    assert cat.tables["a"].columns["name"].nullable is False
    assert "IDENTITY" in cat.tables["b"].columns["id"].type
    assert cat.indexes["a_name_key"] == "CREATE UNIQUE INDEX a_name_key ON public.a USING btree (name)"
    assert cat.constraints["b.b_a_id_fkey"] == "FOREIGN KEY (a_id) REFERENCES a(id)"
    assert cat.enums == {"Mood": ["happy", "sad"]}


def _cat(**kw) -> Catalog:
    return Catalog(**kw)


def test_compare_names_each_kind_of_difference() -> None:
    base = dict(
        tables={"t": Table(columns={"a": Column(type="integer", nullable=False), "b": Column(type="text", nullable=True)})},
        indexes={"t_a": "CREATE INDEX t_a ON public.t USING btree (a)"},
        constraints={"t.t_pkey": "PRIMARY KEY (a)"},
        enums={"E": ["x", "y"]},
    )
    assert compare(_cat(**base), _cat(**base)) == []
    live = _cat(
        tables={
            "t": Table(columns={"a": Column(type="bigint", nullable=False), "c": Column(type="text", nullable=True)}),
            "extra": Table(),
        },
        indexes={"t_a": "CREATE INDEX t_a ON public.t USING btree (a) INVALID"},
        constraints={},
        enums={"E": ["x", "y", "z"]},
    )
    found = {(d.kind, d.name, d.change) for d in compare(_cat(**base), live)}
    assert found == {
        ("table", "extra", Change.extra),
        ("column", "t.a", Change.changed),
        ("column", "t.b", Change.missing),
        ("column", "t.c", Change.extra),
        ("index", "t_a", Change.changed),
        ("constraint", "t.t_pkey", Change.missing),
        ("enum", "E", Change.changed),
    }


@pytest.mark.parametrize(
    ("diffs", "phantoms", "verdict"),
    [([], [], DriftVerdict.no_drift), ([], ["p"], DriftVerdict.explained_by_phantom)],
)
def test_judge_without_differences(diffs, phantoms, verdict) -> None:
    assert judge(diffs, phantoms, ["m"]).verdict == verdict


def test_judge_with_differences_never_blames_the_phantom_as_proof() -> None:
    live = _cat(tables={"x": Table()})
    report = judge(compare(_cat(), live), ["p"], ["m"])
    assert report.verdict == DriftVerdict.unexplained_drift
    assert "table x" in report.summary and "nothing proves it" in report.summary


async def test_shadow_is_dropped_when_the_caller_is_cancelled(database_url: str, db: asyncpg.Connection) -> None:
    import asyncio

    history = [("slow", "CREATE TABLE a (id int);\nSELECT pg_sleep(30);")]
    task = asyncio.create_task(drift_proof(database_url, history, []))
    shadow = None
    for _ in range(200):  # wait until the shadow exists and the replay is running
        shadow = await db.fetchval(f"SELECT datname FROM pg_database WHERE datname LIKE '{SHADOW_PREFIX}%' LIMIT 1")
        if shadow:
            break
        await asyncio.sleep(0.05)
    assert shadow, "the shadow database was never created"
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not await _shadow_exists(db, shadow)
