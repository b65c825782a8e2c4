"""MigrationLedger on real PostgreSQL: Prisma's DDL and row shapes, and the real Prisma CLI accepting our rows."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

from activities.ledger import LedgerShapeError, MigrationLedger, utcnow
from domain.prisma.diagnosis import diagnose
from domain.prisma.folder import read_migrations_dir
from domain.prisma.ledger import CREATE_TABLE_DDL
from tests.oracle import engine_diagnosis, prisma

T = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def write_folder(root: Path, migrations: dict[str, str]) -> Path:
    mdir = root / "prisma" / "migrations"
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for name, sql in migrations.items():
        (mdir / name).mkdir(exist_ok=True)
        (mdir / name / "migration.sql").write_text(sql)
    return mdir


async def test_table_has_prismas_exact_shape(db: asyncpg.Connection) -> None:
    ledger = MigrationLedger(db)
    assert (await ledger.read()).table_exists is False
    assert await ledger.ensure_table() is True
    assert await ledger.ensure_table() is False
    cols = await db.fetch(
        "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_name = '_prisma_migrations' ORDER BY ordinal_position"
    )
    # pg_dump of the table Prisma 6.19.3 created (REPORT.md §4.1)
    assert [tuple(c) for c in cols] == [
        ("id", "character varying", 36, "NO", None),
        ("checksum", "character varying", 64, "NO", None),
        ("finished_at", "timestamp with time zone", None, "YES", None),
        ("migration_name", "character varying", 255, "NO", None),
        ("logs", "text", None, "YES", None),
        ("rolled_back_at", "timestamp with time zone", None, "YES", None),
        ("started_at", "timestamp with time zone", None, "NO", "now()"),
        ("applied_steps_count", "integer", None, "NO", "0"),
    ]
    pk = await db.fetchval(
        "SELECT conname FROM pg_constraint WHERE conrelid = '_prisma_migrations'::regclass AND contype = 'p'"
    )
    assert pk == "_prisma_migrations_pkey"


async def test_rows_per_operation(db: asyncpg.Connection) -> None:
    ledger = MigrationLedger(db)
    await ledger.ensure_table()
    ok = await ledger.insert_applied("m1", "c1", T, T + timedelta(milliseconds=20))
    bad = await ledger.insert_failed("m2", "c2", T + timedelta(seconds=1), "ERROR: division by zero")
    rows = {r.id: r for r in (await ledger.read()).rows}
    assert rows[ok].logs is None and rows[ok].applied_steps_count == 1 and rows[ok].finished_at is not None
    assert rows[bad].is_failed and rows[bad].logs == "ERROR: division by zero" and rows[bad].applied_steps_count == 0

    new_id, rolled = await ledger.resolve_applied("m2", "c2b", at=T + timedelta(seconds=5))
    assert rolled == [bad]
    rows = {r.id: r for r in (await ledger.read()).rows}
    assert rows[bad].rolled_back_at == T + timedelta(seconds=5)
    resolved = rows[new_id]
    assert resolved.logs == "" and resolved.applied_steps_count == 0
    assert resolved.started_at == resolved.finished_at == T + timedelta(seconds=5)
    assert len(new_id) == 36 and new_id == new_id.lower()

    again = await ledger.insert_failed("m3", "c3", T + timedelta(seconds=6), "boom")
    assert await ledger.mark_rolled_back("m3") == [again]
    assert await ledger.mark_rolled_back("m3") == []  # nothing failed is left
    snapshot = await ledger.read()
    assert [r.started_at for r in snapshot.rows] == sorted(r.started_at for r in snapshot.rows)


async def test_foreign_table_of_the_same_name_is_refused(db: asyncpg.Connection) -> None:
    await db.execute("CREATE TABLE _prisma_migrations (id int, name text, applied_at timestamptz)")
    with pytest.raises(LedgerShapeError) as err:
        await MigrationLedger(db).read()
    assert "missing: applied_steps_count" in str(err.value) and "unexpected: applied_at, name" in str(err.value)


async def test_other_tables_are_listed_for_the_baseline_check(db: asyncpg.Connection) -> None:
    await db.execute("CREATE TABLE customers (id int); CREATE TABLE users (id int)")
    snapshot = await MigrationLedger(db).read()
    assert not snapshot.table_exists and snapshot.other_tables == ["customers", "users"]


async def test_missing_search_path_schema_reads_as_empty(pg_server, database_url: str) -> None:
    # Prisma's `?schema=NAME` for a schema that does not exist yet: nothing there, nothing pending elsewhere.
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "not_there"})
    try:
        await conn.execute("CREATE TABLE public.elsewhere (id int)")
        snapshot = await MigrationLedger(conn).read()
    finally:
        await conn.close()
    assert not snapshot.table_exists and snapshot.other_tables == []


@pytest.mark.oracle
async def test_first_deploy_into_a_prisma_schema_that_does_not_exist_yet(database_url: str, tmp_path: Path) -> None:
    """`?schema=app` on an empty database: like Prisma, the schema is created, then the ledger in it."""
    from activities.db import connect

    mdir = write_folder(tmp_path, {"20240101000000_init": 'CREATE TABLE "t" ("id" INT);'})
    conn = await connect(database_url + "?schema=app")
    try:
        ledger = MigrationLedger(conn)
        assert await ledger.ensure_table() is True
        (m,) = read_migrations_dir(mdir)
        async with conn.transaction():
            await conn.execute(m.sql)
            now = utcnow()
            await ledger.insert_applied(m.name, m.checksum, now, now)
        assert await conn.fetchval("SELECT to_regclass('app._prisma_migrations') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('app.t') IS NOT NULL")
    finally:
        await conn.close()
    result = prisma(database_url + "?schema=app", mdir, "status")
    assert result.returncode == 0 and "up to date" in result.stdout


# -- the real Prisma CLI reads what we write ---------------------------------------------------


@pytest.mark.oracle
async def test_prisma_accepts_our_deploy_and_resolve_rows(db: asyncpg.Connection, database_url: str, tmp_path: Path) -> None:
    mdir = write_folder(
        tmp_path,
        {
            "20250101000000_init": 'CREATE TABLE "t" ("id" INT PRIMARY KEY);\n',
            "20250102000000_broken": 'INSERT INTO "t" VALUES (1);\nSELECT 1/0;\n',
            "20250103000000_later": 'CREATE TABLE "u" ("id" INT);\n',
        },
    )
    local = {m.name: m for m in read_migrations_dir(mdir)}
    ledger = MigrationLedger(db)
    await ledger.ensure_table()
    init, broken = local["20250101000000_init"], local["20250102000000_broken"]
    async with db.transaction():  # our deploy: the script and its row commit together
        await db.execute(init.sql)
        await ledger.insert_applied(init.name, init.checksum, T, T + timedelta(milliseconds=5))
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with db.transaction():
            await db.execute(broken.sql)
    await ledger.insert_failed(broken.name, broken.checksum, T + timedelta(seconds=1), "ERROR: division by zero")

    diag = engine_diagnosis(database_url, mdir)
    assert diag["failedMigrationNames"] == [broken.name] and diag["editedMigrationNames"] == []
    assert diag["history"]["unappliedMigrationNames"] == ["20250103000000_later"]
    deploy = prisma(database_url, mdir, "deploy")
    assert deploy.returncode == 1 and "P3009" in deploy.stderr and broken.name in deploy.stderr

    # resolve --rolled-back (ours), fix the file, and Prisma's deploy re-runs it and goes on.
    await ledger.mark_rolled_back(broken.name)
    (mdir / broken.name / "migration.sql").write_text('INSERT INTO "t" VALUES (1);\n')
    deploy = prisma(database_url, mdir, "deploy")
    assert deploy.returncode == 0, deploy.stderr
    assert await db.fetchval('SELECT count(*) FROM "t"') == 1
    status = prisma(database_url, mdir, "status")
    assert status.returncode == 0 and "up to date" in status.stdout

    ours = diagnose(read_migrations_dir(mdir), await ledger.read())
    assert {m.name: m.state.value for m in ours.migrations} == {
        init.name: "applied",
        broken.name: "applied",
        "20250103000000_later": "applied",
    }
    assert [a.is_rolled_back for a in ours.migrations[1].attempts] == [True, False]


@pytest.mark.oracle
async def test_prisma_accepts_our_resolve_applied(db: asyncpg.Connection, database_url: str, tmp_path: Path) -> None:
    mdir = write_folder(tmp_path, {"20250101000000_init": 'CREATE TABLE "t" ("id" INT);\n'})
    (init,) = read_migrations_dir(mdir)
    ledger = MigrationLedger(db)
    await ledger.ensure_table()
    await db.execute(init.sql)  # fixed by hand, as in a hotfix
    await ledger.insert_failed(init.name, init.checksum, T, "ERROR: lock timeout")
    await ledger.resolve_applied(init.name, init.checksum)

    status = prisma(database_url, mdir, "status")
    assert status.returncode == 0 and "up to date" in status.stdout
    deploy = prisma(database_url, mdir, "deploy")
    assert deploy.returncode == 0 and "No pending migrations to apply" in deploy.stdout
    again = prisma(database_url, mdir, "resolve", "--applied", init.name)
    assert again.returncode == 1 and "P3008" in again.stderr  # Prisma sees our row as applied


@pytest.mark.oracle
async def test_we_read_what_prisma_writes(db: asyncpg.Connection, database_url: str, tmp_path: Path) -> None:
    mdir = write_folder(
        tmp_path,
        {"20250101000000_init": 'CREATE TABLE "t" ("id" INT);\r\n', "20250102000000_fail": "SELECT 1/0;\n"},
    )
    deploy = prisma(database_url, mdir, "deploy")
    assert deploy.returncode == 1
    snapshot = await MigrationLedger(db).read()
    ours = diagnose(read_migrations_dir(mdir), snapshot)
    assert {m.name: m.state.value for m in ours.migrations} == {
        "20250101000000_init": "applied",
        "20250102000000_fail": "failed",
    }
    init_row = ours.migrations[0].attempts[0]
    assert init_row.checksum == ours.migrations[0].checksum_local  # CRLF bytes hashed as they are
    assert init_row.logs is None and init_row.applied_steps_count == 1
    assert CREATE_TABLE_DDL  # our DDL and Prisma's table are compared in test_table_has_prismas_exact_shape


async def test_connect_applies_session_timeouts_and_prisma_schema(database_url: str) -> None:
    from activities.db import connect

    conn = await connect(database_url + "?schema=app&connection_limit=5", lock_timeout=2.5, statement_timeout=60)
    try:
        assert await conn.fetchval("SHOW lock_timeout") == "2500ms"
        assert await conn.fetchval("SHOW statement_timeout") == "1min"
        assert await conn.fetchval("SHOW search_path") == '"app"'
    finally:
        await conn.close()
