"""Reads and writes `_prisma_migrations` on a live connection, exactly as Prisma does.

Row shapes per operation (REPORT.md §4.2):
- deploy success: new UUIDv4, checksum, started_at, finished_at, logs NULL, applied_steps_count 1
- deploy failure: new UUIDv4, checksum, started_at, finished_at NULL, logs = error text, count 0
- resolve --applied: a new row, logs '', count 0, started_at = finished_at; failed rows of that
  migration get rolled_back_at
- resolve --rolled-back: rolled_back_at on every failed row of that migration; nothing inserted
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import asyncpg

from domain.prisma.baseline import TABLE_NAMES_SQL
from domain.prisma.ledger import (
    CREATE_TABLE_DDL,
    EXPECTED_COLUMNS,
    TABLE,
    LedgerRow,
    LedgerSnapshot,
)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# information_schema.columns' rows for one table, read from pg_catalog with the view's own filters
# (relation kinds, visible to this role): the view costs ~5 ms of planning on every call.
_COLUMNS_SQL = """
SELECT a.attname::text AS column_name
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
  AND c.relkind IN ('r', 'v', 'f', 'p') AND NOT pg_catalog.pg_is_other_temp_schema(n.oid)
  AND (pg_catalog.pg_has_role(c.relowner, 'USAGE')
       OR pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT, INSERT, UPDATE, REFERENCES'))
"""


class LedgerShapeError(RuntimeError):
    """The table exists but is not Prisma's."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class MigrationLedger:
    """The revision store of one target database (the connection's current schema)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def current_schema(self) -> str:
        return await self.conn.fetchval("SELECT current_schema()") or "public"

    async def table_exists(self) -> bool:
        # In the current schema only, where Prisma looks and creates it; not anywhere on search_path.
        return bool(
            await self.conn.fetchval(
                "SELECT CASE WHEN current_schema() IS NULL THEN false"
                " ELSE to_regclass(format('%I.%I', current_schema(), $1::text)) IS NOT NULL END",
                TABLE,
            )
        )

    async def read(self) -> LedgerSnapshot:
        schema = await self.conn.fetchval("SELECT current_schema()")
        if schema is None:
            # search_path names no existing schema (Prisma's `?schema=` before its first deploy): empty.
            path = await self.conn.fetchval("SELECT current_setting('search_path')")
            return LedgerSnapshot(table_exists=False, rows=[], other_tables=[], schema_name=path)
        # Prisma's own catalog query for its "schema not empty" check (P3005): ordinary tables only.
        others = await self.conn.fetch(TABLE_NAMES_SQL, [schema])
        other_tables = sorted(r["table_name"] for r in others if r["table_name"] != TABLE)
        if not await self.table_exists():
            return LedgerSnapshot(table_exists=False, rows=[], other_tables=other_tables, schema_name=schema)
        columns = await self.conn.fetch(_COLUMNS_SQL, schema, TABLE)
        found = {r["column_name"] for r in columns}
        if found != set(EXPECTED_COLUMNS):
            extra = sorted(found - set(EXPECTED_COLUMNS))
            missing = sorted(set(EXPECTED_COLUMNS) - found)
            raise LedgerShapeError(
                f"table {TABLE} does not have Prisma's columns"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unexpected: {', '.join(extra)}" if extra else "")
            )
        rows = await self.conn.fetch(
            f"SELECT {', '.join(EXPECTED_COLUMNS)} FROM {TABLE} ORDER BY started_at, id"
        )
        return LedgerSnapshot(
            table_exists=True, rows=[LedgerRow(**dict(r)) for r in rows], other_tables=other_tables, schema_name=schema
        )

    async def ensure_table(self) -> bool:
        """Create the table with Prisma's DDL if missing. Returns True when it was created."""
        if await self.table_exists():
            return False
        if await self.conn.fetchval("SELECT current_schema()") is None:
            # `?schema=NAME` of a schema that does not exist yet: Prisma creates it first.
            schema = await self.conn.fetchval("SELECT (parse_ident(trim(split_part(current_setting('search_path'), ',', 1))))[1]")
            await self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        await self.conn.execute(CREATE_TABLE_DDL)
        return True

    # -- deploy -------------------------------------------------------------------------------
    async def insert_applied(
        self, name: str, checksum: str, started_at: datetime, finished_at: datetime, row_id: str | None = None
    ) -> str:
        """The row a successful `migrate deploy` leaves. Call inside the migration's transaction
        so the migration and its ledger row commit together (exactly once across crashes).
        `row_id` lets the caller choose the UUID (the workflow does, so a retried attempt can tell
        its own rows apart)."""
        row_id = row_id or str(uuid.uuid4())
        await self.conn.execute(
            f"INSERT INTO {TABLE} (id, checksum, started_at, finished_at, migration_name, logs, applied_steps_count)"
            " VALUES ($1, $2, $3, $4, $5, NULL, 1)",
            row_id,
            checksum,
            started_at,
            finished_at,
            name,
        )
        return row_id

    async def insert_started(self, name: str, checksum: str, started_at: datetime, row_id: str | None = None) -> str:
        """Prisma's first step for a migration: the 'started' row (finished_at NULL)."""
        row_id = row_id or str(uuid.uuid4())
        await self.conn.execute(
            f"INSERT INTO {TABLE} (id, checksum, started_at, migration_name, applied_steps_count)"
            " VALUES ($1, $2, $3, $4, 0)",
            row_id,
            checksum,
            started_at,
            name,
        )
        return row_id

    async def mark_finished(self, row_id: str, finished_at: datetime) -> None:
        """Prisma's two updates after a script (steps + 1, then finished_at) as one statement."""
        await self.conn.execute(
            f"UPDATE {TABLE} SET applied_steps_count = applied_steps_count + 1, finished_at = $2"
            " WHERE id = $1 AND finished_at IS NULL",
            row_id,
            finished_at,
        )

    async def record_failure(self, row_id: str, logs: str) -> None:
        """Prisma's `logs` on a started row whose script failed (one statement)."""
        await self.conn.execute(f"UPDATE {TABLE} SET logs = $2 WHERE id = $1", row_id, logs)

    async def insert_failed(
        self, name: str, checksum: str, started_at: datetime, logs: str, row_id: str | None = None
    ) -> str:
        """The row a failed `migrate deploy` leaves (started, never finished, the error in logs), in ONE
        statement, written after the migration's transaction rolled back: a crash leaves either no
        row (the retry runs the migration again, which fails again) or this one, never a started row
        without its error. A retry that finds the row already written keeps it."""
        row_id = row_id or str(uuid.uuid4())
        await self.conn.execute(
            f"INSERT INTO {TABLE} (id, checksum, started_at, migration_name, logs, applied_steps_count)"
            " SELECT $1::varchar, $2::varchar, $3::timestamptz, $4::varchar, $5::text, 0"
            f" WHERE NOT EXISTS (SELECT 1 FROM {TABLE} WHERE id = $1::varchar)",
            row_id,
            checksum,
            started_at,
            name,
            logs,
        )
        return row_id

    # -- resolve ------------------------------------------------------------------------------
    async def mark_rolled_back(self, name: str, at: datetime | None = None) -> list[str]:
        """`migrate resolve --rolled-back NAME`: rolled_back_at on every failed row of NAME."""
        rows = await self.conn.fetch(
            f"UPDATE {TABLE} SET rolled_back_at = $2"
            " WHERE migration_name = $1 AND finished_at IS NULL AND rolled_back_at IS NULL RETURNING id",
            name,
            at or utcnow(),
        )
        return [r["id"] for r in rows]

    async def resolve_applied(
        self, name: str, checksum: str, at: datetime | None = None, row_id: str | None = None
    ) -> tuple[str, list[str]]:
        """`migrate resolve --applied NAME`: failed rows rolled back, a new row recorded as applied.
        Returns (new row id, ids of the failed rows marked rolled back)."""
        when = at or utcnow()
        rolled = await self.mark_rolled_back(name, when)
        row_id = row_id or str(uuid.uuid4())
        await self.conn.execute(
            f"INSERT INTO {TABLE} (id, checksum, started_at, finished_at, migration_name, logs, applied_steps_count)"
            " VALUES ($1, $2, $3, $3, $4, '', 0)",
            row_id,
            checksum,
            when,
            name,
        )
        return row_id, rolled

    # -- compensation -------------------------------------------------------------------------
    async def mark_row_rolled_back(self, row_id: str, at: datetime | None = None) -> bool:
        """Mark one row this run wrote as rolled back (after its down migration ran)."""
        status = await self.conn.execute(
            f"UPDATE {TABLE} SET rolled_back_at = $2 WHERE id = $1 AND rolled_back_at IS NULL", row_id, at or utcnow()
        )
        return status.endswith(" 1")

    async def restore_rows(self, row_ids: list[str]) -> None:
        """Undo a resolve: clear rolled_back_at on rows a resolve marked."""
        await self.conn.execute(f"UPDATE {TABLE} SET rolled_back_at = NULL WHERE id = ANY($1::text[])", row_ids)

    async def delete_rows(self, row_ids: list[str]) -> None:
        await self.conn.execute(f"DELETE FROM {TABLE} WHERE id = ANY($1::text[])", row_ids)

    async def row(self, row_id: str) -> LedgerRow | None:
        r = await self.conn.fetchrow(f"SELECT {', '.join(EXPECTED_COLUMNS)} FROM {TABLE} WHERE id = $1", row_id)
        return LedgerRow(**dict(r)) if r else None
