"""Each migration runs exactly as Prisma's engine runs it (one simple-query script), judged side by
side with the real Prisma 6.19.3 CLI on an identical database: the incidents of issue 13 where
the product ran files statement by statement.

- prices: `ALTER ... USING price / 100.0` beside `CREATE UNIQUE INDEX CONCURRENTLY`: refused by
  PostgreSQL as one script, nothing committed, the real error recorded;
- a file wrapped in BEGIN/COMMIT failing on a unique violation: the real 23505 recorded, nothing left;
- a CONCURRENTLY unique index alone in its file failing on duplicates: no INVALID index left
  behind (Prisma leaves one), so the next run succeeds once the duplicates are gone.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

from domain.models import DeployInput, RunMarks
from domain.stages import RUNS_IN_DEPLOY
from tests.helpers import StageActivities, ledger_rows, make_settings, migration, request
from tests.oracle import prisma, require_oracle
from tests.torture.harness import write_folder

PRODUCTS = migration("20250101000000_products",
                     "CREATE TABLE products (id int PRIMARY KEY, sku text NOT NULL, price numeric NOT NULL);\n"
                     "INSERT INTO products VALUES (1, 'a', 19.99), (2, 'a', 5.00), (3, 'b', 7.50);\n")
PRICES = migration("20250102000000_prices",
                   "ALTER TABLE products ALTER COLUMN price TYPE numeric USING price / 100.0;\n"
                   "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS products_sku_key ON products (sku);\n")
WRAPPED = migration("20250102000000_wrapped",
                    "BEGIN;\nCREATE TABLE half (id int);\nCREATE UNIQUE INDEX products_sku_key ON products (sku);\nCOMMIT;\n")
SKU_INDEX = migration("20250102000000_sku_index",
                      "CREATE UNIQUE INDEX CONCURRENTLY products_sku_key ON products (sku);\n")


async def _deploy_directly(database_url: str, migs) -> tuple:
    """The deploy activity on the plan's migrations, bypassing the plan's blockers (as an older
    plan or a hand-built input would): what the executor itself does with the file."""
    a = StageActivities(make_settings("t", database_url))
    plan = (await ActivityEnvironment().run(a.preflight, request("t", list(migs)))).plan
    marks = RunMarks(deploy_ids={m.name: str(uuid.uuid4()) for m in plan.by_action(*RUNS_IN_DEPLOY)},
                     resolve_at=datetime.now(timezone.utc))
    bundle = {m.name: m for m in migs}
    todo = [bundle[m.name] for m in plan.by_action(*RUNS_IN_DEPLOY)]
    result = await ActivityEnvironment().run(a.deploy, DeployInput(environment="t", plan=plan, migrations=todo,
                                                                    marks=marks))
    return plan, result


async def _state(url: str) -> dict:
    conn = await asyncpg.connect(url)
    try:
        return {
            "prices": [str(r[0]) for r in await conn.fetch("SELECT price FROM products ORDER BY id")]
            if await conn.fetchval("SELECT to_regclass('products') IS NOT NULL") else None,
            "tables": sorted(r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")),
            "indexes": sorted((r[0], r[1]) for r in await conn.fetch(
                "SELECT c.relname, x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                "AND c.relname <> '_prisma_migrations_pkey'")),
            "ledger": [(r["migration_name"], r["finished_at"] is not None, r["applied_steps_count"], r["logs"] is None)
                       for r in await ledger_rows(conn)],
            "logs": [r["logs"] for r in await ledger_rows(conn) if r["logs"]],
        }
    finally:
        await conn.close()


@pytest.fixture
async def prisma_url(pg_server):
    """A second, identical database for the real Prisma CLI."""
    name = await pg_server.create_database("prisma")
    try:
        yield pg_server.url(name)
    finally:
        await pg_server.drop_database(name)


async def _prisma_deploys(url: str, tmp_path: Path, migs) -> dict:
    require_oracle()
    folder = write_folder(tmp_path / f"prisma-{uuid.uuid4().hex[:6]}" / "migrations", list(migs))
    prisma(url, folder, "deploy")
    return await _state(url)


@pytest.mark.oracle
async def test_prices_file_is_refused_whole_and_nothing_is_divided(database_url, prisma_url, tmp_path) -> None:
    plan, result = await _deploy_directly(database_url, [PRODUCTS, PRICES])
    assert [b.code for b in plan.blockers] == ["fails_in_prisma"]  # the plan says so before anything runs
    assert result.failed.name == PRICES.name and result.failed.error.startswith("25001")
    ours = await _state(database_url)
    theirs = await _prisma_deploys(prisma_url, tmp_path, [PRODUCTS, PRICES])
    assert ours["prices"] == theirs["prices"] == ["19.99", "5.00", "7.50"]  # the ALTER was not committed
    assert ours["indexes"] == theirs["indexes"] == [("products_pkey", True)]
    assert ours["ledger"] == theirs["ledger"] == [(PRODUCTS.name, True, 1, True), (PRICES.name, False, 0, False)]
    assert "Database error code: 25001" in ours["logs"][0]
    assert "CREATE INDEX CONCURRENTLY cannot run inside a transaction block" in ours["logs"][0]


@pytest.mark.oracle
async def test_begin_commit_file_records_the_real_error_and_leaves_nothing(database_url, prisma_url, tmp_path) -> None:
    _, result = await _deploy_directly(database_url, [PRODUCTS, WRAPPED])
    assert result.failed.name == WRAPPED.name and result.failed.error.startswith("23505")
    assert "could not create unique index" in result.failed.error and "aborted" not in result.failed.error
    ours = await _state(database_url)
    theirs = await _prisma_deploys(prisma_url, tmp_path, [PRODUCTS, WRAPPED])
    assert ours["tables"] == theirs["tables"] == ["_prisma_migrations", "products"]  # no table "half"
    assert ours["ledger"] == theirs["ledger"] == [(PRODUCTS.name, True, 1, True), (WRAPPED.name, False, 0, False)]
    (logs,) = ours["logs"]
    assert "Database error code: 23505" in logs and 'could not create unique index "products_sku_key"' in logs
    assert "Key (sku)=(a) is duplicated." in logs
    assert "Unique constraint failed" in theirs["logs"][0]  # the oracle's (wasm) wording of the same error


@pytest.mark.oracle
async def test_failed_concurrent_unique_index_leaves_no_invalid_index(database_url, prisma_url, tmp_path) -> None:
    _, result = await _deploy_directly(database_url, [PRODUCTS, SKU_INDEX])
    assert result.failed.name == SKU_INDEX.name and result.failed.error.startswith("23505")
    assert result.failed.invalid_index_dropped and not result.failed.partial
    ours = await _state(database_url)
    theirs = await _prisma_deploys(prisma_url, tmp_path, [PRODUCTS, SKU_INDEX])
    assert ours["indexes"] == [("products_pkey", True)]
    assert theirs["indexes"] == [("products_pkey", True), ("products_sku_key", False)]
    assert ours["ledger"] == theirs["ledger"] == [(PRODUCTS.name, True, 1, True), (SKU_INDEX.name, False, 0, False)]
    assert "Database error code: 23505" in ours["logs"][0]

    # Someone removes the duplicate; the next run re-applies the failed migration and succeeds
    # (Prisma's own next attempt fails with 42P07: the INVALID index is in the way).
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DELETE FROM products WHERE id = 2")
    finally:
        await conn.close()
    plan, again = await _deploy_directly(database_url, [PRODUCTS, SKU_INDEX])
    assert [m.action for m in plan.migrations] == ["already_applied", "reapply"]
    # (the activity alone does not resolve: the run's resolve stage marks the old row first)
    assert again.stopped is None and [m.name for m in again.applied] == [SKU_INDEX.name]
    assert (await _state(database_url))["indexes"] == [("products_pkey", True), ("products_sku_key", True)]


ENUM_SETUP = migration("20250101000000_subs", "CREATE TYPE status AS ENUM ('active');\n"
                       "CREATE TABLE subs (id int PRIMARY KEY, status text NOT NULL);\n"
                       "INSERT INTO subs VALUES (1, 'active'), (2, 'unpaid');\n")
# rallly's 20250223160003_set_subscription_status_enum, shortened: its own COMMIT splits it in two.
ENUM_VALUES = migration("20250102000000_status_enum",
                        "BEGIN;\nALTER TYPE status ADD VALUE 'unpaid';\nCOMMIT;\n"
                        "ALTER TABLE subs ADD COLUMN status_enum status;\n"
                        "UPDATE subs SET status_enum = status::status;\n")


@pytest.mark.oracle
async def test_a_file_with_its_own_commit_runs_as_one_script_like_prisma(database_url, prisma_url, tmp_path) -> None:
    plan, result = await _deploy_directly(database_url, [ENUM_SETUP, ENUM_VALUES])
    assert plan.blockers == [] and [m.execution for m in plan.migrations] == ["transaction", "script"]
    assert [m.name for m in result.applied] == [ENUM_SETUP.name, ENUM_VALUES.name]
    ours = await _state(database_url)
    theirs = await _prisma_deploys(prisma_url, tmp_path, [ENUM_SETUP, ENUM_VALUES])
    assert ours["ledger"] == theirs["ledger"] == [(ENUM_SETUP.name, True, 1, True), (ENUM_VALUES.name, True, 1, True)]


@pytest.mark.oracle
async def test_a_script_failing_after_its_commit_is_recorded_as_partly_applied(database_url, prisma_url, tmp_path) -> None:
    bad = migration(ENUM_VALUES.name, ENUM_VALUES.sql.replace("status::status", "status::status, nope = 1"))
    _, result = await _deploy_directly(database_url, [ENUM_SETUP, bad])
    assert result.failed.name == bad.name and result.failed.partial and result.failed.error.startswith("42703")
    theirs = await _prisma_deploys(prisma_url, tmp_path, [ENUM_SETUP, bad])
    conn = await asyncpg.connect(database_url)
    try:  # the transaction before its COMMIT stays, as with Prisma: the enum has the new value
        assert await conn.fetchval("SELECT enum_range(NULL::status)::text") == "{active,unpaid}"
    finally:
        await conn.close()
    assert (await _state(database_url))["ledger"] == theirs["ledger"] == [
        (ENUM_SETUP.name, True, 1, True), (bad.name, False, 0, False)]
