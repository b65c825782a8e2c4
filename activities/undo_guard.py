"""Before a rollback destroys data: is any of it data the migration did not write itself?

A rollback (down.sql or derived) that drops a table or a column, truncates or deletes, destroys
whatever those hold. Rows the migration wrote itself are its own effect and go with it; rows the
application wrote afterwards (or rewrote: an UPDATE gives the row a new version) are not, and a
rollback must never take them. PostgreSQL tells them apart: every row version carries the id of
the transaction that wrote it (xmin), and the deploy recorded its migration's transaction id
(activities/bookkeeping.py `writes`). Without that record (a migration outside a transaction, or
applied by an older version) every row counts as someone else's.
"""

from __future__ import annotations

import asyncpg

from activities.ledger import quote_ident
from domain.backup import destroyed_data, where_text
from domain.sql.parse import split_statements

_XID_MASK = (1 << 32) - 1


async def foreign_data(conn: asyncpg.Connection, rollback_sql: str, xid: int | None) -> list[str]:
    """One sentence per table or column the rollback would destroy that holds data the migration
    did not write; empty when the rollback destroys only the migration's own."""
    schema = await conn.fetchval("SELECT current_schema()") or "public"
    xmin = (xid & _XID_MASK) if xid is not None else -1
    found = []
    for stmt in split_statements(rollback_sql):
        for table, (kind, columns, reason) in destroyed_data(stmt, schema):
            if stmt.kind == "UpdateStmt" or "ALTER COLUMN" in reason:
                continue  # overwrites, it does not destroy rows or columns
            target_schema, _, name = table.partition(".")
            if not await conn.fetchval("SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL",
                                       target_schema, name):
                continue
            rel = f"{quote_ident(target_schema)}.{quote_ident(name)}"
            condition = where_text(stmt) if stmt.kind == "DeleteStmt" else None
            if kind == "rows":
                where = f"({condition}) AND " if condition else ""
                count = await conn.fetchval(f"SELECT count(*) FROM {rel} WHERE {where}xmin::text::bigint <> $1", xmin)
                if count:
                    found.append(f"{reason} would destroy {count} row(s) of {table} that the migration did not write")
            else:
                for column in columns:
                    default = await conn.fetchval(
                        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a"
                        " ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
                        " WHERE d.adrelid = to_regclass(format('%I.%I', $1::text, $2::text)) AND a.attname = $3",
                        target_schema, name, column)
                    count = await conn.fetchval(
                        f"SELECT count(*) FROM {rel} WHERE xmin::text::bigint <> $1"
                        f" AND {quote_ident(column)} IS DISTINCT FROM ({default or 'NULL'})", xmin)
                    if count:
                        found.append(f"{reason} would destroy values in {count} row(s) that the migration did not "
                                     "write")
    return found
