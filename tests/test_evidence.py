"""Failed-migration evidence on real PostgreSQL: per statement, are its effects in the database?"""

from __future__ import annotations

import asyncpg

from activities.evidence import existing_insert_keys, failed_migration_evidence
from devstack.incident import LANDING, MIGRATIONS_DIR, reproduce_incident
from domain.prisma.folder import read_migrations_dir
from domain.sql.parse import split_statements
from domain.sql.rules import analyze_migration

MIGRATION = """
CREATE TYPE "Kind" AS ENUM ('a', 'b');
CREATE TABLE "items" ("id" INT PRIMARY KEY, "kind" "Kind");
CREATE SEQUENCE "items_seq";
ALTER TABLE "base" ADD COLUMN "note" TEXT, ADD CONSTRAINT "base_note_check" CHECK (note <> '');
INSERT INTO "base" ("id", "name") VALUES (10, 'ten'), (11, 'eleven') ON CONFLICT ("id") DO NOTHING;
CREATE INDEX "base_name_idx" ON "base" ("name");
SET lock_timeout = '1s';
"""


async def _setup(db: asyncpg.Connection) -> None:
    await db.execute('CREATE TABLE "base" ("id" INT PRIMARY KEY, "name" TEXT)')


async def test_nothing_applied_is_all_absent(db: asyncpg.Connection) -> None:
    await _setup(db)
    ev = await failed_migration_evidence(db, analyze_migration("m", MIGRATION))
    assert ev.all_absent and not ev.all_present
    assert [s.present for s in ev.statements] == [False] * 6  # SET leaves nothing to look for
    assert "left nothing behind" in ev.summary[-1]


async def test_fully_applied_is_all_present(db: asyncpg.Connection) -> None:
    await _setup(db)
    await db.execute(MIGRATION)
    ev = await failed_migration_evidence(db, analyze_migration("m", MIGRATION))
    assert ev.all_present and not ev.all_absent, ev.summary


async def test_partially_applied_is_neither_and_names_each_statement(db: asyncpg.Connection) -> None:
    await _setup(db)
    statements = split_statements(MIGRATION)
    for s in statements[:2]:  # Prisma 7.8 runs statements one by one: a failure leaves the first ones
        await db.execute(s.text)
    await db.execute("INSERT INTO base VALUES (10, 'ten')")  # one of the two inserted rows
    ev = await failed_migration_evidence(db, analyze_migration("m", MIGRATION))
    assert not ev.all_absent and not ev.all_present
    by_index = {s.index: s for s in ev.statements}
    assert by_index[0].present is True and by_index[1].present is True
    assert by_index[2].present is False and by_index[3].present is False
    assert by_index[4].present is None and "only 1 of 2" in by_index[4].detail
    assert by_index[1].effect == "table public.items exists"
    assert any("partially applied" in line for line in ev.summary)


async def test_invalid_index_from_interrupted_concurrent_build_is_not_present(db: asyncpg.Connection) -> None:
    await db.execute("CREATE TABLE dup (v int); INSERT INTO dup VALUES (1), (1)")
    sql = "CREATE UNIQUE INDEX CONCURRENTLY dup_v_key ON dup (v);"
    try:
        await db.execute(sql)
    except asyncpg.UniqueViolationError:
        pass
    ev = await failed_migration_evidence(db, analyze_migration("m", sql))
    (s,) = ev.statements
    assert s.present is None and "INVALID" in s.detail
    assert not ev.all_absent and not ev.all_present


async def test_incident_failed_migration_left_nothing(database_url: str, db: asyncpg.Connection) -> None:
    await reproduce_incident(database_url)
    sql = next(m.sql for m in read_migrations_dir(MIGRATIONS_DIR) if m.name == LANDING)
    ev = await failed_migration_evidence(db, analyze_migration(LANDING, sql))
    assert ev.all_absent
    assert [s.effect for s in ev.statements] == [
        "1 row(s) of public.landing_page_content keyed by key exist",
        "1 row(s) of public.landing_page_content keyed by key exist",
    ]
    assert await existing_insert_keys(db, sql) == []


async def test_drops_and_enum_values(db: asyncpg.Connection) -> None:
    await db.execute("CREATE TYPE \"Mood\" AS ENUM ('a'); CREATE TABLE gone (id int); CREATE TABLE stays (id int, c int)")
    sql = "DROP TABLE gone; ALTER TYPE \"Mood\" ADD VALUE 'b'; ALTER TABLE stays DROP COLUMN c;"
    before = await failed_migration_evidence(db, analyze_migration("m", sql))
    assert before.all_absent
    for s in split_statements(sql):
        await db.execute(s.text)
    after = await failed_migration_evidence(db, analyze_migration("m", sql))
    assert after.all_present


async def test_existing_insert_keys_reports_rows_a_delete_would_remove(db: asyncpg.Connection) -> None:
    await _setup(db)
    await db.execute("INSERT INTO base VALUES (11, 'already here')")
    found = await existing_insert_keys(db, MIGRATION)
    assert found == ["1 of the rows public.base would receive already exist (keyed by id)"]
