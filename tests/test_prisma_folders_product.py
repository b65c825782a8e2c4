"""The product's status, plan and deploy on folders and databases Prisma treats specially, each
judged by the real Prisma CLI on the same folder: a directory without migration.sql, a missing
and an empty folder, PostGIS's tables, formbricks' real folder. (Prisma's rules alone:
tests/test_prisma_folder_rules.py, test_prisma_baseline.py, test_prisma_order.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest

from domain.bundle import build_bundle
from domain.models import BlockerCode, DeployRequest, Outcome
from domain.prisma.baseline import POSTGIS_TABLES
from domain.prisma.folder import read_folder
from tests.helpers import catalog_dump, final_status, make_settings, new_worker, start
from tests.oracle import prisma

pytestmark = pytest.mark.oracle

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def folder_request(mdir: Path, *, plan_only: bool = False) -> DeployRequest:
    folder = read_folder(mdir)
    bundle = build_bundle(folder.migrations, revision="test", source=str(mdir), unreadable=folder.unreadable,
                          folder_problem=folder.problem)
    return DeployRequest(environment="dev", requested_by="carol", bundle=bundle, plan_only=plan_only,
                         dry_run=plan_only)


async def run(client, database_url: str, mdir: Path, **kwargs):
    async with new_worker(client, make_settings("dev", database_url)) as worker:
        return await final_status(await start(client, worker, folder_request(mdir, **kwargs)))


def mk(mdir: Path, name: str, sql: str | None) -> None:
    (mdir / name).mkdir(parents=True)
    if sql is not None:
        (mdir / name / "migration.sql").write_text(sql)


async def ledger_table(db: asyncpg.Connection) -> bool:
    return await db.fetchval("SELECT to_regclass('public._prisma_migrations') IS NOT NULL")


@pytest.mark.parametrize("kind", ["empty", "missing"])
async def test_nothing_to_apply_on_an_empty_database_creates_the_ledger_as_prisma_does(
    dev_client, database_url: str, db: asyncpg.Connection, tmp_path: Path, kind: str
) -> None:
    mdir = tmp_path / "migrations"
    if kind == "empty":
        mdir.mkdir()
    final = await run(dev_client, database_url, mdir)
    assert final.outcome == Outcome.succeeded, final.error
    assert await ledger_table(db) and await db.fetchval("SELECT count(*) FROM _prisma_migrations") == 0
    assert any("deploy creates it" in n for n in final.plan.notes)
    if kind == "missing":
        assert f"migrations directory {mdir} does not exist; Prisma reads it as an empty folder" in final.plan.notes
    theirs = prisma(database_url, mdir, "status")  # Prisma agrees with what the run left
    assert theirs.returncode == 0 and "Database schema is up to date!" in theirs.stdout


async def test_an_empty_folder_on_a_database_with_tables_is_p3005_like_prisma(
    dev_client, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    mdir = tmp_path / "migrations"
    mdir.mkdir()
    await db.execute("CREATE TABLE customers (id int)")
    theirs = prisma(database_url, mdir, "deploy")
    assert theirs.returncode == 1 and "P3005" in theirs.stderr
    final = await run(dev_client, database_url, mdir)
    assert final.outcome == Outcome.failed_needs_attention
    assert [b.code for b in final.plan.blockers] == [BlockerCode.needs_baseline]
    assert not await ledger_table(db)


async def test_postgis_tables_do_not_make_a_database_need_a_baseline(
    dev_client, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """After `CREATE EXTENSION postgis` (its tables made by hand here: PostGIS is not installed),
    Prisma deploys; so does the product, and both leave the same ledger."""
    for i, table in enumerate(POSTGIS_TABLES):
        await db.execute(f'CREATE TABLE "{table.upper() if i % 2 else table}" (id int)')
    mdir = tmp_path / "migrations"
    mk(mdir, "20240101000000_init", 'CREATE TABLE "places" ("id" INT PRIMARY KEY);\n')
    final = await run(dev_client, database_url, mdir)
    assert final.outcome == Outcome.succeeded, final.error
    assert [a.name for a in final.applied] == ["20240101000000_init"]
    theirs = prisma(database_url, mdir, "status")
    assert theirs.returncode == 0 and "Database schema is up to date!" in theirs.stdout

    # One table of its own beside PostGIS's, on a new database: both refuse, and the product names it.
    fresh = await db.fetchval("SELECT current_database()") + "_fresh"
    await db.execute(f'CREATE DATABASE "{fresh}"')
    url = database_url.rsplit("/", 1)[0] + f"/{fresh}"
    other = await asyncpg.connect(url)
    try:
        await other.execute('CREATE TABLE "spatial_ref_sys" (id int); CREATE TABLE customers (id int)')
        assert "P3005" in prisma(url, mdir, "deploy").stderr
        final = await run(dev_client, url, mdir)
        assert [b.code for b in final.plan.blockers] == [BlockerCode.needs_baseline]
        assert "the database has tables (customers) but no _prisma_migrations table" in final.plan.blockers[0].message
    finally:
        await other.close()
        await db.execute(f'DROP DATABASE "{fresh}" WITH (FORCE)')


async def test_a_pending_directory_without_migration_sql_refuses_the_deploy_before_any_change(
    dev_client, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    mdir = tmp_path / "migrations"
    mk(mdir, "20240101000000_one", 'CREATE TABLE "one" ("id" INT);\n')
    mk(mdir, "20240102000000_data_only", None)
    (mdir / "20240102000000_data_only" / "migration.ts").write_text("// another runner applies this\n")
    mk(mdir, "20240103000000_three", 'CREATE TABLE "three" ("id" INT);\n')
    before = await catalog_dump(db)

    final = await run(dev_client, database_url, mdir)
    assert final.outcome == Outcome.failed_needs_attention
    (blocker,) = final.plan.blockers
    assert blocker.code == BlockerCode.missing_migration_file and blocker.migration == "20240102000000_data_only"
    assert "apply the 1 pending migration(s) before it and stop with P3015 there" in blocker.message
    assert final.applied == [] and await catalog_dump(db) == before

    theirs = prisma(database_url, mdir, "deploy")  # Prisma: applies `one`, then stops at the same place
    assert theirs.returncode == 1 and "P3015" in theirs.stderr
    assert [r["migration_name"] for r in await db.fetch("SELECT migration_name FROM _prisma_migrations")] == [
        "20240101000000_one"]

    # Once another tool records the directory, the product deploys the rest, as Prisma would.
    await db.execute("INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, started_at, "
                     "applied_steps_count) VALUES ('other-runner', 'x', now(), '20240102000000_data_only', now(), 1)")
    final = await run(dev_client, database_url, mdir)
    assert final.outcome == Outcome.succeeded, final.error
    assert [a.name for a in final.applied] == ["20240103000000_three"]


async def test_formbricks_folder_stops_where_prisma_stops_and_for_the_same_reason(
    dev_client, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    source = CORPUS / "formbricks" / "migrations"
    if not source.is_dir():
        pytest.fail(f"the corpus is missing: {source}")
    mdir = tmp_path / "migrations"
    shutil.copytree(source, mdir)
    plan = (await run(dev_client, database_url, mdir, plan_only=True)).plan
    assert plan is not None  # the folder reads: 192 directories, 25 without migration.sql
    assert len(plan.migrations) == 192

    theirs = prisma(database_url, mdir, "deploy")
    has_vector = await db.fetchval("SELECT count(*) > 0 FROM pg_available_extensions WHERE name = 'vector'")
    first = plan.blockers[0]
    if has_vector:
        assert first.code == BlockerCode.missing_migration_file and first.migration == "20241209104738_xm_user_identification"
        assert "P3015" in theirs.stderr
    else:
        assert first.code == BlockerCode.extension_unavailable
        assert first.migration == "20241017124431_add_documents_and_insights"
        assert 'extension "vector" is not available' in theirs.stdout + theirs.stderr
        assert "20241017124431_add_documents_and_insights" in theirs.stdout + theirs.stderr
    # Every other directory without migration.sql is named too (other kinds of blocker may follow).
    assert len([b for b in plan.blockers if b.code == BlockerCode.missing_migration_file]) == 25
