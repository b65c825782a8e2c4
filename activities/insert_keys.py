"""Before deploy: do rows a migration inserts already exist? A derived rollback DELETEs the keys a
migration inserts, which only undoes the migration when those rows are new. Read-only."""

from __future__ import annotations

import asyncpg

from domain.sql.parse import DEFAULT_SCHEMA
from domain.sql.rollback import InsertKey, insert_keys, select_keys_sql


async def _present(conn: asyncpg.Connection, key: InsertKey) -> int:
    try:
        found = await conn.fetch(select_keys_sql(key))
    except asyncpg.UndefinedTableError:
        return 0
    return len({tuple(r) for r in found})


async def existing_insert_keys(conn: asyncpg.Connection, sql: str, schema: str = DEFAULT_SCHEMA) -> list[str]:
    """Inserted keys that already exist (a derived DELETE would remove them); empty means the
    derived rollback's DELETEs touch only rows this migration adds."""
    found = []
    for key in insert_keys(sql, schema):
        present = await _present(conn, key)
        if present:
            found.append(f"{present} of the rows {key.table} would receive already exist (keyed by {', '.join(key.key_columns)})")
    return found
