"""Prisma's "schema not empty" rule (P3005) against the real Prisma CLI.

PostGIS is not installed here, so its tables are made as plain tables with PostGIS's names:
Prisma decides by name and relkind only (domain/prisma/baseline.py cites the source). For each
database state: what Prisma's `migrate deploy` does, what domain.prisma.baseline says from the
catalog as Prisma reads it, and what a user expects.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from domain.prisma.baseline import (
    MIGRATIONS_TABLE,
    P3005_MESSAGE,
    POSTGIS_TABLES,
    TABLE_NAMES_SQL,
    blocking_tables,
    deploy_refused_with_p3005,
    ignored_tables,
    schema_is_empty_for_prisma,
    table_should_be_ignored,
)
from tests.oracle import prisma

POSTGIS = [f'CREATE TABLE "{t}" (id int)' for t in POSTGIS_TABLES]
MIXED_CASE = ["SPATIAL_REF_SYS", "Geometry_Columns", "geoGRAPHY_columns", "Raster_Columns", "RASTER_OVERVIEWS"]

# (id, setup statements, ?schema= or None, Prisma deploys?)
CASES = [
    ("postgis-tables-only", POSTGIS, None, True),
    ("postgis-mixed-case", [f'CREATE TABLE "{t}" (id int)' for t in MIXED_CASE], None, True),
    ("postgis-long-s-folds-to-s", ['CREATE TABLE "\u017fpatial_ref_sys" (id int)'], None, True),
    ("dotless-i-does-not-fold", ['CREATE TABLE "spat\u0131al_ref_sys" (id int)'], None, False),
    ("postgis-and-one-user-table", POSTGIS + ["CREATE TABLE customers (id int)"], None, False),
    ("postgis-name-with-suffix", ["CREATE TABLE spatial_ref_sys_backup (id int)"], None, False),
    ("postgis-name-with-trailing-space", ['CREATE TABLE "spatial_ref_sys " (id int)'], None, False),
    ("unlogged-table", ["CREATE UNLOGGED TABLE cache (id int)"], None, False),
    ("views-only", ["CREATE VIEW v AS SELECT 1 AS one", "CREATE MATERIALIZED VIEW mv AS SELECT 1 AS one"], None, True),
    ("partitioned-parent-only", ["CREATE TABLE events (id int) PARTITION BY RANGE (id)"], None, True),
    (
        "partitioned-with-a-partition",
        ["CREATE TABLE events (id int) PARTITION BY RANGE (id)", "CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (10)"],
        None,
        False,
    ),
    (
        "types-sequences-functions-only",
        [
            "CREATE TYPE mood AS ENUM ('ok')",
            "CREATE SEQUENCE s",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE DOMAIN posint AS int CHECK (VALUE > 0)",
        ],
        None,
        True,
    ),
    ("table-in-another-schema-only", ["CREATE SCHEMA other", "CREATE TABLE other.customers (id int)"], None, True),
    ("ledger-name-in-other-case", ['CREATE TABLE "_Prisma_Migrations" (id int)'], None, False),
    ("schema-param-table-in-public-only", ["CREATE TABLE customers (id int)"], "app", True),
    ("schema-param-table-in-that-schema", ["CREATE SCHEMA app", "CREATE TABLE app.customers (id int)"], "app", False),
    ("schema-param-postgis-in-that-schema", ["CREATE SCHEMA app"] + [s.replace('TABLE "', 'TABLE app."') for s in POSTGIS], "app", True),
]


def write_migrations(root: Path) -> Path:
    mdir = root / "migrations"
    (mdir / "20240101000000_init").mkdir(parents=True)
    (mdir / "20240101000000_init" / "migration.sql").write_text("CREATE TABLE first_migration_ran (id int);\n")
    return mdir


async def prisma_table_names(conn: asyncpg.Connection, schema: str) -> list[str]:
    return [r["table_name"] for r in await conn.fetch(TABLE_NAMES_SQL, [schema])]


@pytest.mark.oracle
@pytest.mark.parametrize(("setup", "schema", "deploys"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_first_deploy_matches_prisma(
    tmp_path: Path, database_url: str, db: asyncpg.Connection, setup: list[str], schema: str | None, deploys: bool
) -> None:
    for statement in setup:
        await db.execute(statement)
    tables = await prisma_table_names(db, schema or "public")
    ours_refuses = deploy_refused_with_p3005(tables)

    url = database_url + (f"?schema={schema}" if schema else "")
    result = prisma(url, write_migrations(tmp_path), "deploy")
    output = result.stdout + result.stderr
    if deploys:
        assert result.returncode == 0, output
        assert "All migrations have been successfully applied." in result.stdout
    else:
        assert result.returncode == 1, output
        assert "P3005" in output and P3005_MESSAGE in output
    ledger_schema = schema or "public"
    created = await db.fetchval("SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL", ledger_schema, MIGRATIONS_TABLE)
    assert created == deploys  # P3005 creates nothing; a deploy creates the ledger
    assert ours_refuses == (not deploys), f"tables as Prisma reads them: {tables}"


@pytest.mark.oracle
async def test_existing_ledger_skips_the_check(tmp_path: Path, database_url: str, db: asyncpg.Connection) -> None:
    # Prisma's own table present (after a first deploy), user tables beside it: no P3005.
    mdir = write_migrations(tmp_path)
    assert prisma(database_url, mdir, "deploy").returncode == 0
    await db.execute("CREATE TABLE customers (id int)")
    (mdir / "20240102000000_more").mkdir()
    (mdir / "20240102000000_more" / "migration.sql").write_text("CREATE TABLE second_migration_ran (id int);\n")
    result = prisma(database_url, mdir, "deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    tables = await prisma_table_names(db, "public")
    assert not deploy_refused_with_p3005(tables)
    assert not schema_is_empty_for_prisma(tables)  # not empty, but the ledger exists


def test_names_shown_to_a_user() -> None:
    names = ["spatial_ref_sys", "Raster_Overviews", "customers", MIGRATIONS_TABLE, "geometry_columns_old"]
    assert ignored_tables(names) == ["spatial_ref_sys", "Raster_Overviews"]
    assert blocking_tables(names) == ["customers", "geometry_columns_old"]
    assert schema_is_empty_for_prisma([]) and schema_is_empty_for_prisma(MIXED_CASE)
    assert not table_should_be_ignored("spatial_ref_sys\n")  # Rust's `$` is the end of the text
    assert not table_should_be_ignored("SPATİAL_REF_SYS")  # dotted capital I: Turkic folding, not Rust's
