"""How PostgreSQL runs a migration file sent as one script (domain/sql/script.py) and which
statements are safe to repeat (domain/sql/repeatable.py).

Every "will fail" prediction is checked by sending the file to a real server as ONE simple query,
the way Prisma's engine does; every "safe to repeat" claim by running the statement twice and
comparing the database; every "never safe" by showing the second run changes the data or fails.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from domain.sql.parse import split_statements
from domain.sql.repeatable import not_repeatable
from domain.sql.rules import analyze_migration
from domain.sql.script import FAILS_IN_PRISMA, ExecutionMode, script_plan

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"

SETUP = """
CREATE TYPE "Mood" AS ENUM ('happy', 'sad');
CREATE TABLE products (id int PRIMARY KEY, sku text, price numeric, mood "Mood");
INSERT INTO products VALUES (1, 'a', 19.99, 'happy'), (2, 'a', 5.00, 'sad');
CREATE TABLE kv (key text PRIMARY KEY, value text);
"""

# (file, the SQLSTATE PostgreSQL answers when the file is sent as one script)
WILL_FAIL = [
    ("ALTER TABLE products ALTER COLUMN price TYPE numeric USING price / 100.0;\n"
     "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS products_sku_key ON products (sku);", "25001"),
    ("COMMIT;\nCREATE INDEX CONCURRENTLY products_sku ON products (sku);", "25001"),
    ("CREATE TABLE t (id int);\nVACUUM products;", "25001"),
    ("SELECT 1;\nDROP INDEX CONCURRENTLY IF EXISTS nope;", "25001"),
    ("ALTER TYPE \"Mood\" ADD VALUE 'meh';\nUPDATE products SET mood = 'meh' WHERE id = 1;", "55P04"),
    ("CREATE TYPE \"E2\" AS ENUM ('a');\nALTER TYPE \"E2\" ADD VALUE 'b';\nCREATE TABLE t2 (e \"E2\" DEFAULT 'b');",
     "55P04"),
    ("LOCK TABLE products;", "25P01"),
]
# Files that look close but run: no finding.
RUNS = [
    "CREATE INDEX CONCURRENTLY products_sku ON products (sku);",
    "-- comment\nCREATE INDEX CONCURRENTLY products_sku2 ON products (sku);\n-- trailing\n",
    "ALTER TYPE \"Mood\" ADD VALUE 'meh';\nCOMMIT;\nUPDATE products SET mood = 'meh' WHERE id = 1;",
    "ALTER TYPE \"Mood\" ADD VALUE 'ok';\nUPDATE kv SET value = 'x' WHERE key = 'happy';",
    "BEGIN;\nLOCK TABLE products;\nUPDATE products SET price = 1 WHERE id = 2;\nCOMMIT;",
]


async def _fresh(db: asyncpg.Connection) -> None:
    await db.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;" + SETUP)


async def _as_one_script(db: asyncpg.Connection, sql: str) -> str | None:
    try:
        await db.execute(sql)  # no arguments: one simple-query message, as Prisma's engine sends it
    except asyncpg.PostgresError as exc:
        if db.is_in_transaction():
            await db.execute("ROLLBACK")
        return exc.sqlstate
    return None


async def test_files_predicted_to_fail_do_fail_as_one_script(db: asyncpg.Connection) -> None:
    for sql, sqlstate in WILL_FAIL:
        await _fresh(db)
        plan = script_plan(split_statements(sql), sql)
        assert plan.will_fail and plan.failures[0].code == FAILS_IN_PRISMA, sql
        assert await _as_one_script(db, sql) == sqlstate, sql
    # the price conversion before the refused index was not committed: PostgreSQL ran nothing
    await _fresh(db)
    await _as_one_script(db, WILL_FAIL[0][0])
    assert str(await db.fetchval("SELECT price FROM products WHERE id = 1")) == "19.99"


async def test_files_predicted_to_run_do_run(db: asyncpg.Connection) -> None:
    for sql in RUNS:
        await _fresh(db)
        assert not script_plan(split_statements(sql), sql).will_fail, sql
        assert await _as_one_script(db, sql) is None, sql


def test_execution_modes() -> None:
    def mode(sql: str) -> ExecutionMode:
        return script_plan(split_statements(sql), sql).mode

    assert mode("CREATE TABLE a (id int); CREATE TABLE b (id int);") == ExecutionMode.transaction
    assert mode("BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n") == ExecutionMode.transaction
    assert mode("CREATE INDEX CONCURRENTLY i ON a (id);") == ExecutionMode.alone
    assert mode("VACUUM a;") == ExecutionMode.alone
    assert mode("BEGIN;\nALTER TYPE e ADD VALUE 'x';\nCOMMIT;\nUPDATE t SET e = 'x';") == ExecutionMode.script
    assert mode("BEGIN ISOLATION LEVEL SERIALIZABLE;\nCREATE TABLE a (id int);\nCOMMIT;") == ExecutionMode.script
    assert mode("CREATE TABLE a (id int);\nCOMMIT;") == ExecutionMode.script  # a COMMIT without BEGIN


async def test_a_wrapped_file_runs_in_our_transaction_with_the_same_error_position(db: asyncpg.Connection) -> None:
    sql = "BEGIN;\nCREATE TABLE half (id int);\nSELECT nope FROM products;\nCOMMIT;\n"
    plan = script_plan(split_statements(sql), sql)
    assert plan.mode == ExecutionMode.transaction
    assert len(plan.body.encode()) == len(sql.encode()) and plan.body.count("\n") == sql.count("\n")
    assert "BEGIN" not in plan.body and "COMMIT" not in plan.body and "CREATE TABLE half" in plan.body
    await _fresh(db)
    with pytest.raises(asyncpg.PostgresError) as as_file:
        await db.execute(sql)
    await db.execute("ROLLBACK")
    tx = db.transaction()
    await tx.start()
    with pytest.raises(asyncpg.PostgresError) as as_body:
        await db.execute(plan.body)
    await tx.rollback()
    assert (as_body.value.sqlstate, as_body.value.position) == (as_file.value.sqlstate, as_file.value.position)


@pytest.mark.skipif(not CORPUS.exists(), reason="the corpus of real histories is not beside the repo")
def test_no_real_migration_is_predicted_to_fail() -> None:
    """496 files that real Prisma deployed: none may be called a failure. Three commit on their own
    (rallly's enum values, two formbricks clean-ups): those run as scripts."""
    scripts = []
    for path in sorted(CORPUS.glob("*/migrations/*/migration.sql")):
        sql = path.read_text()
        a = analyze_migration(path.parent.name, sql)
        assert FAILS_IN_PRISMA not in a.codes(), path
        if a.execution == ExecutionMode.script:
            scripts.append(path.parent.name)
    assert "20250223160003_set_subscription_status_enum" in scripts and len(scripts) == 3


# -- repeating -------------------------------------------------------------------------------

SAFE = [
    "CREATE TABLE IF NOT EXISTS t (id int)",
    "CREATE INDEX IF NOT EXISTS products_sku ON products (sku)",
    "ALTER TABLE products ADD COLUMN IF NOT EXISTS note text",
    "ALTER TABLE products ALTER COLUMN sku SET DEFAULT 'x'",
    "ALTER TABLE products ALTER COLUMN price TYPE numeric(10, 2)",
    "INSERT INTO kv (key, value) VALUES ('a', 'b') ON CONFLICT (key) DO NOTHING",
    "INSERT INTO kv (key, value) VALUES ('a', 'c') ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    "UPDATE products SET sku = 'z' WHERE price > 1",
    "UPDATE products SET sku = mood::text WHERE id = 1",
    "DROP TABLE IF EXISTS nope",
    "CREATE OR REPLACE VIEW v AS SELECT id FROM products",
]
NEVER = [
    "ALTER TABLE products ALTER COLUMN price TYPE numeric USING price / 100.0",
    "UPDATE products SET price = price / 100",
    "UPDATE products SET sku = 'z' WHERE sku = 'a'",
    "INSERT INTO kv (key, value) SELECT sku || id, 'x' FROM products ON CONFLICT DO NOTHING",
    "INSERT INTO kv (key, value) VALUES ('a', 'b')",
    "INSERT INTO kv (key, value) VALUES (gen_random_uuid()::text, 'b') ON CONFLICT (key) DO NOTHING",
    "DELETE FROM products WHERE id = 2",
    "TRUNCATE kv",
    "CREATE TABLE t (id int)",
    "ALTER TABLE products RENAME COLUMN sku TO code",
]


async def _state(db: asyncpg.Connection) -> list:
    rows = []
    for table in ("products", "kv"):
        rows.append(sorted(tuple(r) for r in await db.fetch(f"SELECT * FROM {table}")))
    rows.append(sorted(tuple(r) for r in await db.fetch(
        "SELECT table_name, column_name, data_type, column_default FROM information_schema.columns "
        "WHERE table_schema = 'public'")))
    return rows


async def test_statements_proven_safe_leave_the_same_database_when_run_twice(db: asyncpg.Connection) -> None:
    for sql in SAFE:
        (stmt,) = split_statements(sql)
        assert not_repeatable(stmt) is None, sql
        await _fresh(db)
        await db.execute(sql)
        once = await _state(db)
        await db.execute(sql)
        assert await _state(db) == once, sql


async def test_statements_never_safe_change_the_data_again_or_fail(db: asyncpg.Connection) -> None:
    for sql in NEVER:
        (stmt,) = split_statements(sql)
        assert not_repeatable(stmt), sql
        await _fresh(db)
        await db.execute("INSERT INTO kv VALUES ('a1', 'old')")
        await db.execute(sql)
        once = await _state(db)
        # what the application does between the two runs
        await db.execute("INSERT INTO products VALUES (2, 'a', 5.00, 'sad'), (3, 'a', 7.00, 'happy') "
                         "ON CONFLICT DO NOTHING")
        await db.execute("INSERT INTO kv VALUES ('app', 'row') ON CONFLICT DO NOTHING")
        after_app = await _state(db)
        try:
            await db.execute(sql)
        except asyncpg.PostgresError:
            continue  # fails a second time
        assert await _state(db) not in (once, after_app), sql


def test_the_price_incident_is_not_called_idempotent() -> None:
    sql = ("ALTER TABLE products ALTER COLUMN price TYPE numeric USING price/100.0;\n"
           "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS products_sku_key ON products (sku);")
    a = analyze_migration("prices", sql)
    assert not a.idempotent
    assert a.repeat_blockers == ["statement 1 (line 1): ALTER COLUMN price TYPE ... USING converts the column's "
                                 "data again on a second run"]
    assert FAILS_IN_PRISMA in a.codes() and a.risk == "high"
