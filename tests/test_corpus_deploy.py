"""Every real history of ../shared/corpus deploys through the workflow exactly as Prisma deploys it:
on a fresh database, and incrementally (the real Prisma CLI applied all but the last 3 first, the
product deploys the rest). What a user checks afterwards: the run succeeded, `prisma migrate
status` says up to date, `prisma migrate deploy` applies nothing, and `pg_dump --schema-only` is
the same as after Prisma's own deploy of the folder (apart from the product's bookkeeping schema).

formbricks cannot be deployed here, by Prisma either: its `CREATE EXTENSION "vector"` (pgvector,
not installed on this machine) fails. The product stops at the same migration for the same
reason, before changing anything, so the database is as it was before the run.

The Prisma-prepared databases are shared with the rest of the session (tests/corpus.py): fresh and
incremental databases are copies of PostgreSQL templates, and each Prisma CLI call is made once.
"""

from __future__ import annotations

import pytest

from cli.deploy import bundle_folder
from domain.backup_items import BOOKKEEPING_SCHEMA
from domain.models import BlockerCode, DeployRequest, Operation, Outcome, RunStatus
from tests.corpus import CORPUS, INCREMENT, VECTOR_MIGRATION, pg_dump_schema
from tests.helpers import final_status, ledger_rows, make_settings, new_worker, start
from tests.oracle import prisma

pytestmark = pytest.mark.oracle


@pytest.fixture
def client(time_skipping_env):
    return time_skipping_env.client


async def product_deploy(client, url: str, history: str) -> RunStatus:
    """A full run without gates of the history's folder, bundled as `starter.py deploy` bundles it."""
    bundle, parts = bundle_folder(CORPUS / history / "migrations")
    assert parts == []  # every corpus history travels inline
    req = DeployRequest(environment="corpus", operation=Operation.full, requested_by="ci", bundle=bundle)
    async with new_worker(client, make_settings("corpus", url)) as worker:
        return await final_status(await start(client, worker, req))


async def tables_in(url: str, schema: str) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)]
    finally:
        await conn.close()


async def ledger(url: str) -> list[tuple]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT to_regclass('_prisma_migrations') IS NOT NULL"):
            return []
        return [(r["migration_name"], r["checksum"], r["finished_at"] is not None, r["rolled_back_at"] is not None)
                for r in await ledger_rows(conn)]
    finally:
        await conn.close()


@pytest.mark.parametrize("history", ["documenso", "rallly", "hoppscotch"])
@pytest.mark.parametrize("begin", ["fresh", "incremental"])
async def test_the_history_deploys_as_prisma_deploys_it(corpus, client, history: str, begin: str) -> None:
    prepared = await corpus.prepared(history)
    url = await corpus.copy_of("template0" if begin == "fresh" else prepared.base, f"{begin}_{history}")
    final = await product_deploy(client, url, history)

    assert final.outcome == Outcome.succeeded, final.error
    n = len(prepared.migrations)
    assert len(final.applied) == (n if begin == "fresh" else INCREMENT)
    schema = next(c for c in final.verification if c.check == "schema equals the migrations folder")
    assert schema.passed and not schema.skipped, schema.detail
    assert final.plan.drift.verdict == "no_drift"

    folder = CORPUS / history / "migrations"
    status = prisma(url, folder, "status")
    assert status.returncode == 0 and "Database schema is up to date!" in status.stdout, status.stdout + status.stderr
    again = prisma(url, folder, "deploy")
    assert again.returncode == 0 and "No pending migrations to apply." in again.stdout, again.stdout + again.stderr
    # The same schema as Prisma's own deploy, apart from this product's bookkeeping schema (backups
    # of the data the run destroyed, undo records; as Prisma's ledger table is Prisma's).
    assert pg_dump_schema(url, exclude=(BOOKKEEPING_SCHEMA,)) == prepared.reference_dump
    kept = set(await tables_in(url, BOOKKEEPING_SCHEMA)) - {"backups", "writes", "runs", "undone", "undo_progress"}
    assert all(name.startswith("b_") for name in kept), kept  # only backups besides the bookkeeping


@pytest.mark.parametrize("begin", ["fresh", "incremental"])
async def test_formbricks_stops_where_prisma_stops_leaving_the_database_as_it_was(corpus, client, begin: str) -> None:
    prepared = await corpus.prepared("formbricks")
    # Prisma's own deploy of the folder stops at the vector migration, with this error.
    assert prepared.reference_result.returncode != 0
    assert VECTOR_MIGRATION in prepared.reference_result.stderr
    assert 'extension "vector" is not available' in prepared.reference_result.stderr

    url = await corpus.copy_of("template0" if begin == "fresh" else prepared.base, f"{begin}_formbricks")
    dump, rows = pg_dump_schema(url), await ledger(url)
    final = await product_deploy(client, url, "formbricks")

    assert final.outcome == Outcome.failed_needs_attention and final.applied == []
    blocker = final.plan.blockers[0]  # the first place Prisma's deploy stops, and why
    assert blocker.code == BlockerCode.extension_unavailable and blocker.migration == VECTOR_MIGRATION
    assert "creates extension vector, which this PostgreSQL server does not have" in blocker.message
    # The shadow replay stopped there too, for the server's own reason (the plan says it once).
    assert 'extension "vector" is not available' in final.plan.verify_schema_skipped
    assert not any(b.code == BlockerCode.fails_in_shadow for b in final.plan.blockers)
    assert final.stage_times.keys() == {"preflight"}  # no stage after the plan ran
    assert pg_dump_schema(url) == dump and await ledger(url) == rows  # as before the run
