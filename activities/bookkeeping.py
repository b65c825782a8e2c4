"""The worker's own bookkeeping in each target database, in schema `_migrator_backup`
(domain.backup_items.BOOKKEEPING_SCHEMA, left out of the schema model like the ledger):

- `backups`: one row per backup taken before a destructive statement (the data itself is in a
  table `b_<ledger id>_<n>` beside it), written in the migration's transaction;
- `writes`: the transaction id a migration ran in, written in that transaction, so compensation
  can tell the rows the migration wrote from rows the application wrote later (xmin);
- `runs`: the schema model before a run's first change, so compensation can prove it returned the
  schema to it, or name what differs;
- `undo_progress`: which statements of a rollback outside a transaction are done, so a retried
  compensation does not run them twice;
- `undone`: each ledger row compensation removed and what it did, written with the removal, so a
  retried compensation reports the steps an earlier attempt finished.
Kept for the environment's `backup_retention`, then dropped by the next deploy.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from activities.ledger import quote_ident
from domain.backup_items import BOOKKEEPING_SCHEMA

SCHEMA = quote_ident(BOOKKEEPING_SCHEMA)

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.backups (
    ledger_id varchar(36) NOT NULL, item int NOT NULL, migration_name text NOT NULL, reason text NOT NULL,
    source_schema text NOT NULL, source_table text NOT NULL, kind text NOT NULL, columns text[] NOT NULL,
    key_columns text[] NOT NULL, backup_table text NOT NULL, rows bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), restored_at timestamptz, PRIMARY KEY (ledger_id, item));
CREATE TABLE IF NOT EXISTS {SCHEMA}.writes (
    ledger_id varchar(36) PRIMARY KEY, xid bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS {SCHEMA}.runs (
    run_key varchar(36) PRIMARY KEY, schema_before jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS {SCHEMA}.undone (
    ledger_id varchar(36) PRIMARY KEY, migration_name text NOT NULL, action text NOT NULL, detail text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS {SCHEMA}.undo_progress (
    ledger_id varchar(36) NOT NULL, step int NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ledger_id, step));
"""


class BookkeepingError(RuntimeError):
    """The bookkeeping schema cannot be created (one sentence)."""


NO_PRIVILEGE = (f"cannot create schema {BOOKKEEPING_SCHEMA} for backups and undo records: permission denied; grant "
                "the migration role CREATE on the database, or create the schema for it")


async def ensure(conn: asyncpg.Connection) -> bool:
    """Create the schema and its tables if missing. False when the role may not (the deploy then
    runs without backups, which it refuses when the plan has any; see activities/apply.py)."""
    if await exists(conn):
        return True
    try:
        async with conn.transaction():
            await conn.execute(_DDL)
    except asyncpg.InsufficientPrivilegeError:
        return False
    return True


async def exists(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{SCHEMA}.undone"))


# -- writes (xmin of a migration's transaction) ---------------------------------------------------
async def record_write(conn: asyncpg.Connection, ledger_id: str) -> None:
    """Inside a migration's transaction: remember its transaction id."""
    await conn.execute(f"INSERT INTO {SCHEMA}.writes (ledger_id, xid) VALUES ($1, txid_current())"
                       " ON CONFLICT (ledger_id) DO NOTHING", ledger_id)


async def write_xid(conn: asyncpg.Connection, ledger_id: str) -> int | None:
    if not await exists(conn):
        return None
    return await conn.fetchval(f"SELECT xid FROM {SCHEMA}.writes WHERE ledger_id = $1", ledger_id)


# -- runs (schema before) -------------------------------------------------------------------------
async def remember_schema(conn: asyncpg.Connection, run_key: str, model_json: str) -> None:
    """The schema before the run's first change; the first attempt's stays (a retry's would not be before)."""
    await conn.execute(f"INSERT INTO {SCHEMA}.runs (run_key, schema_before) VALUES ($1, $2::jsonb)"
                       " ON CONFLICT (run_key) DO NOTHING", run_key, model_json)


async def schema_before(conn: asyncpg.Connection, run_key: str) -> str | None:
    if not await exists(conn):
        return None
    return await conn.fetchval(f"SELECT schema_before::text FROM {SCHEMA}.runs WHERE run_key = $1", run_key)


# -- undo progress -------------------------------------------------------------------------------
async def undo_steps_done(conn: asyncpg.Connection, ledger_id: str) -> set[int]:
    if not await exists(conn):
        return set()
    rows = await conn.fetch(f"SELECT step FROM {SCHEMA}.undo_progress WHERE ledger_id = $1", ledger_id)
    return {r["step"] for r in rows}


async def mark_undo_step(conn: asyncpg.Connection, ledger_id: str, step: int) -> None:
    if not await exists(conn):
        return  # a role that may not create the schema: no record (a retry may repeat the step)
    await conn.execute(f"INSERT INTO {SCHEMA}.undo_progress (ledger_id, step) VALUES ($1, $2)"
                       " ON CONFLICT DO NOTHING", ledger_id, step)


async def record_undone(conn: asyncpg.Connection, ledger_id: str, migration: str, action: str, detail: str) -> None:
    """In the transaction that removes the ledger row: what compensation did to it."""
    await conn.execute(f"DELETE FROM {SCHEMA}.undo_progress WHERE ledger_id = $1", ledger_id)
    await conn.execute(f"DELETE FROM {SCHEMA}.writes WHERE ledger_id = $1", ledger_id)
    await conn.execute(f"INSERT INTO {SCHEMA}.undone (ledger_id, migration_name, action, detail) VALUES ($1, $2, $3, $4)"
                       " ON CONFLICT (ledger_id) DO NOTHING", ledger_id, migration, action, detail)


async def undone(conn: asyncpg.Connection, ledger_id: str) -> tuple[str, str] | None:
    """(action, detail) when an earlier compensation attempt removed this ledger row."""
    if not await exists(conn):
        return None
    row = await conn.fetchrow(f"SELECT action, detail FROM {SCHEMA}.undone WHERE ledger_id = $1", ledger_id)
    return (row["action"], row["detail"]) if row else None


# -- retention ------------------------------------------------------------------------------------
async def drop_expired(conn: asyncpg.Connection, retention: timedelta, keep: set[str]) -> int:
    """Drop backups and records older than `retention`, except those of ledger rows in `keep`
    (this run's). Returns the number of backup tables dropped. (Ids travel as text[], which asyncpg
    encodes without looking the type up on each new session, unlike varchar[].)"""
    if not await exists(conn):
        return 0
    cutoff = f"now() - make_interval(secs => {retention.total_seconds()})"
    async with conn.transaction():
        old = await conn.fetch(f"DELETE FROM {SCHEMA}.backups WHERE created_at < {cutoff}"
                               " AND NOT ledger_id = ANY($1::text[]) RETURNING backup_table", list(keep))
        for r in old:
            await conn.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{quote_ident(r['backup_table'])}")
        # The records in one statement (one round trip; a fleet's deploys each make it).
        records = [f"{table} AS (DELETE FROM {SCHEMA}.{table} WHERE created_at < {cutoff} AND NOT {key} = ANY($1::text[]))"
                   for table, key in (("writes", "ledger_id"), ("undo_progress", "ledger_id"), ("undone", "ledger_id"),
                                      ("runs", "run_key"))]
        await conn.execute(f"WITH {', '.join(records)} SELECT 1", list(keep))
    return len(old)
