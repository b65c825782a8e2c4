"""Derived rollbacks on real PostgreSQL: apply, roll back, and the schema model (every object kind,
owners and grants included) is exactly as before."""

from __future__ import annotations

import asyncpg
import pytest

from activities.catalog import read_schema_model as read_catalog
from devstack.incident import INIT, LANDING, LEADS, MIGRATIONS_DIR
from domain.prisma.folder import read_migrations_dir
from domain.schema import compare
from domain.sql.rollback import InsertKey, delete_keys_sql, insert_keys, select_keys_sql
from domain.sql.rules import analyze_migration

BASE = """
CREATE TABLE existing (id int PRIMARY KEY, name text);
CREATE TABLE kv ("Key" text PRIMARY KEY, value text, n int, flag boolean);
INSERT INTO existing VALUES (1, 'one');
INSERT INTO kv VALUES ('kept', 'v', 1, true);
"""

MIXED = """
CREATE TYPE "Status" AS ENUM ('NEW', 'DONE');
CREATE SEQUENCE "ticket_seq";
CREATE TABLE "Tickets" ("id" INT NOT NULL DEFAULT nextval('ticket_seq'), "status" "Status" NOT NULL, "existing_id" INT,
                        CONSTRAINT "Tickets_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "Tickets_status_key" ON "Tickets" ("status", "id");
ALTER TABLE "Tickets" ADD CONSTRAINT "Tickets_existing_fkey" FOREIGN KEY ("existing_id") REFERENCES existing (id);
ALTER TABLE existing ADD COLUMN "Nick Name" TEXT, ADD CONSTRAINT existing_name_check CHECK (name <> '') NOT VALID;
CREATE VIEW open_tickets AS SELECT id FROM "Tickets" WHERE status = 'NEW';
INSERT INTO "Tickets" (id, status) VALUES (1, 'NEW');
INSERT INTO kv ("Key", value, n, flag) VALUES ('it''s', 'x', 2, false), ('b', now()::text, -3, true);
INSERT INTO kv ("Key", value) VALUES ('c', 'y') ON CONFLICT ("Key") DO NOTHING;
"""


async def _rows(conn: asyncpg.Connection, table: str) -> list:
    return [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1")]


async def _apply(conn: asyncpg.Connection, sql: str) -> None:
    async with conn.transaction():
        await conn.execute(sql)


async def test_mixed_migration_rolls_back_to_the_exact_catalog(db: asyncpg.Connection) -> None:
    await db.execute(BASE)
    before = await read_catalog(db)
    rows_before = {t: await _rows(db, t) for t in ("existing", "kv")}

    analysis = analyze_migration("mixed", MIXED)
    assert analysis.rollback_blockers == []
    await _apply(db, MIXED)
    assert await read_catalog(db) != before
    await _apply(db, analysis.derived_rollback)

    assert compare(before, await read_catalog(db)) == []
    assert {t: await _rows(db, t) for t in ("existing", "kv")} == rows_before


def _local(name: str) -> str:
    return next(m.sql for m in read_migrations_dir(MIGRATIONS_DIR) if m.name == name)


async def test_incident_migrations_roll_back_exactly(db: asyncpg.Connection) -> None:
    await _apply(db, _local(INIT))
    before = await read_catalog(db)
    content_before = await _rows(db, "landing_page_content")
    leads, landing = analyze_migration(LEADS, _local(LEADS)), analyze_migration(LANDING, _local(LANDING))
    for m in (leads, landing):
        assert m.derived_rollback, m.rollback_blockers

    # the keys the landing migration inserts did not exist before (the caller's precondition)
    keys = insert_keys(_local(LANDING))
    assert [k.values for k in keys] == [[("how-it-works",)], [("social-proof",)]]
    assert [await db.fetch(select_keys_sql(k)) for k in keys] == [[], []]

    await _apply(db, _local(LEADS))
    await _apply(db, _local(LANDING))
    assert len(await _rows(db, "landing_page_content")) == len(content_before) + 2
    await _apply(db, landing.derived_rollback)
    await _apply(db, leads.derived_rollback)

    assert compare(before, await read_catalog(db)) == []
    assert await _rows(db, "landing_page_content") == content_before


def test_rollback_sql_is_reverse_order_and_quoted() -> None:
    a = analyze_migration("m", MIXED)
    lines = a.derived_rollback.splitlines()
    assert lines[0].startswith("DELETE FROM public.kv")
    assert lines[-1] == 'DROP TYPE public."Status";'
    assert 'ALTER TABLE public.existing DROP CONSTRAINT existing_name_check, DROP COLUMN "Nick Name";' in lines
    # Rows inserted into a table the migration creates go with the table: no DELETE for them.
    assert not any(line.startswith('DELETE FROM public."Tickets"') for line in lines)


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("DROP TABLE existing", "DropStmt"),
        ("ALTER TABLE existing ALTER COLUMN name TYPE varchar(10)", "AlterColumnType"),
        ("CREATE TABLE IF NOT EXISTS t (id int)", "may have existed"),
        ("CREATE INDEX ON existing (name)", "without a name"),
        ("INSERT INTO kv (\"Key\", value) SELECT name, name FROM existing", "literal VALUES"),
        ("INSERT INTO kv VALUES ('a', 'b')", "names no columns"),
        ("INSERT INTO kv (\"Key\", value) VALUES (md5('x'), 'b') ON CONFLICT (\"Key\") DO NOTHING", "not a literal"),
        ("ALTER TYPE \"Mood\" ADD VALUE 'x'", "cannot remove a value"),
        ("UPDATE kv SET value = 'x' WHERE \"Key\" = 'a'", "UpdateStmt"),
        ("ALTER TABLE existing ADD COLUMN IF NOT EXISTS c int", "cannot be undone"),
    ],
)
def test_irreversible_statements_block_the_derived_rollback(sql: str, reason: str) -> None:
    a = analyze_migration("m", "CREATE TABLE fine (id int);\n" + sql)
    assert a.derived_rollback is None
    assert len(a.rollback_blockers) == 1
    assert a.rollback_blockers[0].startswith("statement 2 (line 2)")
    assert reason.replace("Stmt", "") in a.rollback_blockers[0]


def test_insert_keys() -> None:
    keys = insert_keys(
        "CREATE TABLE fresh (id int); INSERT INTO fresh (id) VALUES (1);"
        "INSERT INTO kv (\"Key\", value, n) VALUES ('a', now()::text, 1), ('a', 'z', 1) ON CONFLICT (\"Key\") DO NOTHING;"
        "INSERT INTO app.kv (a, b, c) VALUES (1, 'x', '{}'::jsonb);"
    )
    assert keys == [
        InsertKey("public.kv", ("Key",), [("a",)]),
        InsertKey("app.kv", ("a", "b"), [(1, "x")]),
    ]
    assert delete_keys_sql(keys[1]) == "DELETE FROM app.kv WHERE a = 1 AND b = 'x'"


async def test_select_keys_finds_exactly_the_existing_rows(db: asyncpg.Connection) -> None:
    await db.execute(BASE)
    key = InsertKey("public.kv", ("Key", "n"), [("kept", 1), ("kept", 2), ("new", 1)])
    assert [tuple(r) for r in await db.fetch(select_keys_sql(key))] == [("kept", 1)]


def test_fast_drop_printer_matches_pglasts_printer() -> None:
    from pglast import ast, enums
    from pglast.stream import RawStream

    from domain.sql.rollback import _drop, _fast_print, _rangevar

    O = enums.ObjectType
    nodes = [
        _drop(O.OBJECT_TABLE, "public", "Tickets"),
        _drop(O.OBJECT_TABLE, "my schema", "user"),
        _drop(O.OBJECT_INDEX, "app", 'we"ird'),
        _drop(O.OBJECT_TYPE, "public", "QuestionType"),
        _drop(O.OBJECT_DOMAIN, "public", "d"),
        _drop(O.OBJECT_SEQUENCE, "public", "select"),
        _drop(O.OBJECT_VIEW, "public", "v"),
        _drop(O.OBJECT_MATVIEW, "public", "mv"),
        _drop(O.OBJECT_SCHEMA, "Accounting"),
        ast.AlterTableStmt(
            relation=_rangevar("public.Order"),
            objtype=O.OBJECT_TABLE,
            cmds=(
                ast.AlterTableCmd(subtype=enums.AlterTableType.AT_DropConstraint, name="Order_fk",
                                  behavior=enums.DropBehavior.DROP_RESTRICT),
                ast.AlterTableCmd(subtype=enums.AlterTableType.AT_DropColumn, name="from",
                                  behavior=enums.DropBehavior.DROP_RESTRICT),
            ),
        ),
    ]
    for node in nodes:
        assert _fast_print(node) == RawStream()(node)
