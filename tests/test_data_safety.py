"""Issue 13's incidents, end to end (time-skipping Temporal, real PostgreSQL, the real Prisma CLI
as the judge of the ledger after every compensation):

- prices: the state an older executor left (the conversion committed, the index failed) is not
  re-run: the plan stops with the state and what to do; nothing is divided twice;
- application rows written into a table the run created, then the verify gate rejected or
  expired: the rollback would drop them, so it does not run; the rows stay, the run says so;
- a dropped column's data: backed up in the migration's transaction, put back by compensation,
  and only then is the outcome `failed_rolled_back`;
- after compensation Prisma's `status` lists exactly what its `deploy` applies.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from domain.models import BlockerCode, Outcome
from tests.customers import CUSTOMERS, DROP_PHONE, LATER
from tests.helpers import (
    approval,
    final_status,
    ledger_rows,
    make_settings,
    migration,
    new_worker,
    request,
    start,
    wait_gate,
)
from tests.oracle import assert_status_and_deploy_agree, prisma, require_oracle
from tests.torture.harness import write_folder


@pytest.fixture
def client(time_skipping_env):
    return time_skipping_env.client


async def sql(url: str, text: str, *args):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(text, *args)
    finally:
        await conn.close()


async def run(client, url: str, migs, **env):
    async with new_worker(client, make_settings("dev", url, **env)) as worker:
        return await final_status(await start(client, worker, request("dev", list(migs))))


PRODUCTS = migration("20250101000000_products",
                     "CREATE TABLE products (id int PRIMARY KEY, sku text NOT NULL, price numeric NOT NULL);\n"
                     "INSERT INTO products VALUES (1, 'a', 19.99), (2, 'a', 5.00), (3, 'b', 7.50);\n")
PRICES = migration("20250102000000_prices",
                   "ALTER TABLE products ALTER COLUMN price TYPE numeric USING price / 100.0;\n"
                   "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS products_sku_key ON products (sku);\n")


async def test_prices_are_not_divided_twice(client, database_url: str, tmp_path: Path) -> None:
    assert (await run(client, database_url, [PRODUCTS])).outcome == Outcome.succeeded
    # The file as it is: refused before anything runs (PostgreSQL would refuse it whole).
    first = await run(client, database_url, [PRODUCTS, PRICES])
    assert first.outcome == Outcome.failed_needs_attention
    assert first.plan.blockers[0].code == BlockerCode.fails_in_prisma
    assert [str(r[0]) for r in await sql(database_url, "SELECT price FROM products ORDER BY id")] == ["19.99", "5.00", "7.50"]

    # What the old statement-by-statement executor left: the ALTER committed, the index failed.
    await sql(database_url, "UPDATE products SET price = price / 100.0")
    await sql(database_url, "INSERT INTO _prisma_migrations (id, checksum, migration_name, logs) VALUES "
                            "('old-run', $1, $2, 'index failed: duplicate key')", PRICES.checksum, PRICES.name)
    await sql(database_url, "DELETE FROM products WHERE id = 2")  # the duplicates are removed
    second = await run(client, database_url, [PRODUCTS, PRICES])
    assert second.outcome == Outcome.failed_needs_attention
    (blocker,) = second.plan.blockers
    assert blocker.code == BlockerCode.failed_needs_human and blocker.migration == PRICES.name
    assert "converts the column's data again" in blocker.message
    assert "prisma migrate resolve --applied" in blocker.message and "prisma migrate resolve --rolled-back" in blocker.message
    assert [str(r[0].normalize()) for r in await sql(database_url, "SELECT price FROM products ORDER BY id")] == [
        "0.1999", "0.075"]  # divided once, by the old run; not again


NOTES = migration("20250101000000_notes", "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);")


@pytest.mark.parametrize("ending", ["rejected", "expired"])
async def test_application_rows_survive_a_verify_gate_that_does_not_pass(client, database_url: str, tmp_path: Path,
                                                                       ending: str) -> None:
    settings = make_settings("dev", database_url, gates=["verify"], approval_timeout=timedelta(hours=1))
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, request("dev", [NOTES]))
        await wait_gate(handle, "verify")
        await sql(database_url, "INSERT INTO notes (body) VALUES ('written by the app'), ('and another')")
        if ending == "rejected":
            await handle.signal("reject", approval("verify", "alice", comment="looks wrong"))
        final = await final_status(handle)  # expired: the time-skipping server jumps past the hour
    assert final.outcome == Outcome.failed_needs_attention
    assert "would destroy 2 row(s) of public.notes that the migration did not write" in final.human_action
    assert [(s.name, s.action) for s in final.compensation] == [(NOTES.name, "blocked")]
    assert [r[0] for r in await sql(database_url, "SELECT body FROM notes ORDER BY id")] == [
        "written by the app", "and another"]
    rows = await ledger_rows(await asyncpg.connect(database_url))
    assert [(r["migration_name"], r["finished_at"] is not None) for r in rows] == [(NOTES.name, True)]  # still applied
    require_oracle()
    reading = assert_status_and_deploy_agree(database_url, write_folder(tmp_path / "m", [NOTES]))
    assert reading.pending == [] and reading.applied_by_deploy == []




async def test_a_dropped_columns_data_is_restored_before_the_run_says_rolled_back(client, database_url: str,
                                                                                 tmp_path: Path) -> None:
    assert (await run(client, database_url, [CUSTOMERS])).outcome == Outcome.succeeded
    before = [tuple(r) for r in await sql(database_url, "SELECT id, name, phone FROM customers ORDER BY id")]
    final = await run(client, database_url, [CUSTOMERS, DROP_PHONE, LATER])
    assert final.outcome == Outcome.failed_rolled_back, final.human_action
    assert "verification failed" in final.error
    by = {m.name: m for m in final.plan.migrations}
    (item,) = by[DROP_PHONE.name].backups
    assert item.reason == "DROP COLUMN public.customers.phone" and item.key == ["id"] and item.columns == ["phone"]
    assert any("backs up DROP COLUMN public.customers.phone" in n for n in final.plan.notes)
    steps = {s.name: s for s in final.compensation}
    assert steps[DROP_PHONE.name].action == "ran down.sql"
    assert "DROP COLUMN public.customers.phone: 3 of 3 row(s) put back" in steps[DROP_PHONE.name].detail
    assert [tuple(r) for r in await sql(database_url, "SELECT id, name, phone FROM customers ORDER BY id")] == before
    require_oracle()
    reading = assert_status_and_deploy_agree(database_url, write_folder(tmp_path / "m", [CUSTOMERS, DROP_PHONE, LATER]))
    assert reading.pending == [DROP_PHONE.name, LATER.name]


async def test_a_backup_over_the_limit_needs_an_explicit_no_backup(client, database_url: str) -> None:
    assert (await run(client, database_url, [CUSTOMERS])).outcome == Outcome.succeeded
    await sql(database_url, "ANALYZE customers")
    final = await run(client, database_url, [CUSTOMERS, DROP_PHONE], backup_max_bytes=10)
    assert final.outcome == Outcome.failed_needs_attention and final.applied == []
    (blocker,) = final.plan.blockers
    assert blocker.code == BlockerCode.no_backup_needs_approval and blocker.migration == DROP_PHONE.name
    assert "exceed backup_max_bytes" in blocker.message and final.plan.no_backup == [DROP_PHONE.name]
    assert "it has no deploy gate" in blocker.message  # nobody could approve running it without a backup
    assert len(await sql(database_url, "SELECT phone FROM customers WHERE phone IS NOT NULL")) == 2


CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


@pytest.mark.oracle
@pytest.mark.parametrize("project", ["documenso", "rallly", "hoppscotch"])
async def test_after_compensation_prisma_status_and_deploy_agree_on_real_histories(
        client, database_url: str, tmp_path: Path, project: str) -> None:
    """The history up to its last 3 migrations deployed by the real Prisma CLI; a run applies the
    last 3 and one more whose verify.sql fails, and compensates. Whatever it could undo, Prisma then
    reads the ledger consistently: status lists exactly what deploy applies."""
    if not (CORPUS / project).exists():
        pytest.skip("the corpus of real histories is not beside the repo")
    require_oracle()
    from domain.bundle import build_bundle
    from domain.prisma.folder import read_migrations_dir

    history = build_bundle(read_migrations_dir(CORPUS / project / "migrations"), revision="t", source=project).migrations
    failing = migration("29991231000000_check", "CREATE TABLE zz_check (id int);\n", down="DROP TABLE zz_check;\n",
                        verify="SELECT false;\n")
    migs = [*history, failing]
    prisma(database_url, write_folder(tmp_path / "before", history[:-3]), "deploy")
    final = await run(client, database_url, migs)
    assert final.outcome in (Outcome.failed_rolled_back, Outcome.failed_needs_attention), final.error
    assert [a.name for a in final.applied] == [m.name for m in migs[-4:]]
    undone = [s.name for s in final.compensation if s.ok]
    reading = assert_status_and_deploy_agree(database_url, write_folder(tmp_path / "after", migs))
    assert reading.pending == list(reversed(undone))  # what compensation undid is pending again, nothing else


NICKNAME = migration("20250102000000_nickname", "ALTER TABLE customers ADD COLUMN nickname text DEFAULT 'none';\n")


async def test_an_added_column_the_application_filled_is_not_dropped(client, database_url: str, tmp_path: Path) -> None:
    assert (await run(client, database_url, [CUSTOMERS])).outcome == Outcome.succeeded
    settings = make_settings("dev", database_url, gates=["verify"])
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, request("dev", [CUSTOMERS, NICKNAME]))
        await wait_gate(handle, "verify")
        await sql(database_url, "UPDATE customers SET nickname = 'annie' WHERE id = 1")
        await handle.signal("reject", approval("verify", "alice", comment="no"))
        final = await final_status(handle)
    assert final.outcome == Outcome.failed_needs_attention
    assert "DROP COLUMN public.customers.nickname would destroy values in 1 row(s)" in final.human_action
    assert [tuple(r) for r in await sql(database_url, "SELECT id, nickname FROM customers ORDER BY id")] == [
        (1, "annie"), (2, "none"), (3, "none")]
    require_oracle()
    assert_status_and_deploy_agree(database_url, write_folder(tmp_path / "m", [CUSTOMERS, NICKNAME]))


RENAME_AND_DROP = [migration("20250102000000_clients", "ALTER TABLE customers RENAME TO clients;\n"
                             "ALTER TABLE clients DROP COLUMN phone;\n",
                             down="ALTER TABLE clients ADD COLUMN phone text;\nALTER TABLE clients RENAME TO customers;\n")]
RENAME_THEN_DROP = [migration("20250102000000_clients", "ALTER TABLE customers RENAME TO clients;\n",
                              down="ALTER TABLE clients RENAME TO customers;\n"),
                    migration("20250103000000_no_phone", 'ALTER TABLE "clients" DROP COLUMN "phone";\n',
                              down="ALTER TABLE clients ADD COLUMN phone text;\n")]


@pytest.mark.parametrize("migs", [RENAME_AND_DROP, RENAME_THEN_DROP], ids=["one-migration", "two-migrations"])
async def test_a_renamed_tables_dropped_column_is_backed_up_and_restored(client, database_url: str, tmp_path: Path,
                                                                         migs) -> None:
    """A live table renamed by the run holds the application's rows under its new name: the column
    dropped from it is backed up, and a rejected verify gate puts every value back."""
    assert (await run(client, database_url, [CUSTOMERS])).outcome == Outcome.succeeded
    before = [tuple(r) for r in await sql(database_url, "SELECT id, name, phone FROM customers ORDER BY id")]
    async with new_worker(client, make_settings("dev", database_url, gates=["verify"])) as worker:
        handle = await start(client, worker, request("dev", [CUSTOMERS, *migs]))
        await wait_gate(handle, "verify")
        assert [r[0] for r in await sql(database_url, "SELECT count(*) FROM _migrator_backup.backups")] == [1]
        await handle.signal("reject", approval("verify", "alice", comment="not tonight"))
        final = await final_status(handle)
    (item,) = [i for m in final.plan.migrations for i in m.backups]
    assert item.reason == "DROP COLUMN public.clients.phone" and item.columns == ["phone"] and item.key == ["id"]
    assert final.outcome == Outcome.rejected, final.human_action  # undone: schema and data as before
    assert any("3 of 3 row(s) put back" in s.detail for s in final.compensation)
    assert [tuple(r) for r in await sql(database_url, "SELECT id, name, phone FROM customers ORDER BY id")] == before
    require_oracle()
    reading = assert_status_and_deploy_agree(database_url, write_folder(tmp_path / "m", [CUSTOMERS, *migs]))
    assert reading.pending == [m.name for m in migs]
