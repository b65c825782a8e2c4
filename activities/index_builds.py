"""The INVALID index a failed or interrupted CREATE INDEX CONCURRENTLY leaves behind.

PostgreSQL commits the new index's catalog entry before it builds it; when the build fails (a
duplicate key for a UNIQUE index, a lock timeout, a killed worker) the index stays, marked
INVALID: unused by queries, still maintained on every write, and in the way of the next attempt
(`42P07 relation ... already exists`, or skipped by IF NOT EXISTS). When such a build is a
migration's only statement, that index is the migration's only effect, so dropping it returns the
database to its state before the migration.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import asyncpg

from activities.ledger import quote_ident


class IndexTarget(NamedTuple):
    """The index a CREATE INDEX statement names, and the schema it lands in (its table's)."""

    schema: str | None  # None: the table's schema is the session's current schema
    name: str


class IndexState(NamedTuple):
    oid: int
    valid: bool


def index_target(kind: str, node: dict[str, Any]) -> IndexTarget | None:
    """The named index a CREATE INDEX CONCURRENTLY statement builds, or None."""
    if kind != "IndexStmt" or not node.get("concurrent") or not node.get("idxname"):
        return None
    return IndexTarget(node.get("relation", {}).get("schemaname"), node["idxname"])


async def index_state(conn: asyncpg.Connection, target: IndexTarget) -> IndexState | None:
    row = await conn.fetchrow(
        "SELECT c.oid, x.indisvalid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_index x ON x.indexrelid = c.oid WHERE n.nspname = coalesce($1, current_schema()) AND c.relname = $2",
        target.schema, target.name,
    )
    return IndexState(row["oid"], row["indisvalid"]) if row else None


async def drop_if_invalid(conn: asyncpg.Connection, target: IndexTarget, before: IndexState | None) -> bool:
    """Drop the index when it is INVALID and is not the one that existed before the build
    (`before`). True when it dropped one."""
    now = await index_state(conn, target)
    if now is None or now.valid or (before is not None and before.oid == now.oid):
        return False
    schema = target.schema or await conn.fetchval("SELECT current_schema()")
    await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quote_ident(schema)}.{quote_ident(target.name)}")
    return True
