"""The worker's bookkeeping in a target database (activities/bookkeeping.py) on real PostgreSQL:
what a deploy drops once an environment's `backup_retention` has passed, and what it keeps."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from activities import bookkeeping

S = bookkeeping.SCHEMA
OLD, NEW, THIS_RUN = "old-ledger-row", "new-ledger-row", "this-runs-row"


async def _records(conn: asyncpg.Connection) -> dict[str, set[str]]:
    out = {}
    for table, key in (("backups", "ledger_id"), ("writes", "ledger_id"), ("undo_progress", "ledger_id"),
                       ("undone", "ledger_id"), ("runs", "run_key")):
        out[table] = {r[0] for r in await conn.fetch(f"SELECT {key} FROM {S}.{table}")}
    return out


async def test_expired_backups_and_records_are_dropped_and_the_rest_kept(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await bookkeeping.ensure(conn)
        for ledger_id, age in ((OLD, "30 days"), (NEW, "1 hour"), (THIS_RUN, "30 days")):
            backup = f"b_{ledger_id.replace('-', '_')}_0"
            await conn.execute(f"CREATE TABLE {S}.{backup} (id int)")
            at = f"now() - interval '{age}'"
            await conn.execute(
                f"INSERT INTO {S}.backups (ledger_id, item, migration_name, reason, source_schema, source_table, kind,"
                f" columns, key_columns, backup_table, rows, created_at) VALUES ($1, 0, 'm', 'drop', 'public', 't',"
                f" 'table', '{{}}', '{{}}', $2, 0, {at})", ledger_id, backup)
            await conn.execute(f"INSERT INTO {S}.writes (ledger_id, xid, created_at) VALUES ($1, 1, {at})", ledger_id)
            await conn.execute(f"INSERT INTO {S}.undo_progress (ledger_id, step, created_at) VALUES ($1, 0, {at})",
                               ledger_id)
            await conn.execute(f"INSERT INTO {S}.undone (ledger_id, migration_name, action, detail, created_at)"
                               f" VALUES ($1, 'm', 'a', 'd', {at})", ledger_id)
            await conn.execute(f"INSERT INTO {S}.runs (run_key, schema_before, created_at) VALUES ($1, '{{}}', {at})",
                               ledger_id)

        dropped = await bookkeeping.drop_expired(conn, timedelta(days=7), keep={THIS_RUN})

        assert dropped == 1
        assert await _records(conn) == {table: {NEW, THIS_RUN} for table in
                                        ("backups", "writes", "undo_progress", "undone", "runs")}
        tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1",
                                                 bookkeeping.BOOKKEEPING_SCHEMA)}
        assert "b_old_ledger_row_0" not in tables
        assert {"b_new_ledger_row_0", "b_this_runs_row_0"} <= tables
    finally:
        await conn.close()
