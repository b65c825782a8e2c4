"""Backups before destruction: read the facts they are planned from, take them inside the
migration's transaction, put the data back during compensation.

Each BackupItem (domain/backup.py decides them) becomes a table
`_migrator_backup.b_<ledger id>_<n>` created by `CREATE TABLE ... AS SELECT` from the source
table, plus a row in `_migrator_backup.backups`, both in the migration's own transaction, before
its script: a crash before COMMIT leaves neither the migration nor its backup, and the retry takes
both again. Restoring runs in compensation's transaction, after the rollback SQL put the schema
back: whole rows are inserted again (those whose key is not there), column values are written
back by key.
"""

from __future__ import annotations

import asyncpg

from activities.bookkeeping import SCHEMA, exists
from activities.ledger import quote_ident
from domain.backup_items import BackupItem, TableFacts

_FACTS = """
SELECT n.nspname AS schema_name, c.relname AS name, pg_table_size(c.oid) AS bytes,
       greatest(c.reltuples, 0)::bigint AS rows,
       array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
             AND NOT a.attisdropped ORDER BY a.attnum) AS columns,
       array(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = c.oid
             AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS types,
       coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index x
                 CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                 WHERE x.indexrelid = (
                   SELECT x2.indexrelid FROM pg_index x2 WHERE x2.indrelid = c.oid AND x2.indisunique
                   AND x2.indisvalid AND x2.indpred IS NULL AND x2.indexprs IS NULL
                   AND NOT EXISTS (SELECT 1 FROM unnest(x2.indkey) k2(n) JOIN pg_attribute a2
                                   ON a2.attrelid = c.oid AND a2.attnum = k2.n WHERE NOT a2.attnotnull)
                   ORDER BY x2.indisprimary DESC, x2.indnatts, x2.indexrelid LIMIT 1)), '{}') AS key,
       coalesce((SELECT json_object_agg(s.attname, s.avg_width) FROM pg_stats s
                 WHERE s.schemaname = n.nspname AND s.tablename = c.relname), '{}')::text AS widths
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
"""


async def table_facts(conn: asyncpg.Connection, qualified_tables: list[str]) -> dict[str, TableFacts]:
    """Facts of each `schema.table` that exists (absent tables are left out)."""
    import json

    out: dict[str, TableFacts] = {}
    for qualified in qualified_tables:
        schema, _, name = qualified.partition(".")
        row = await conn.fetchrow(_FACTS, schema, name)
        if row is not None:
            out[qualified] = TableFacts(
                schema_name=row["schema_name"], name=row["name"], bytes=row["bytes"], rows=row["rows"],
                columns=list(row["columns"]), types=dict(zip(row["columns"], row["types"])), key=list(row["key"]),
                widths={k: int(v) for k, v in json.loads(row["widths"]).items()},
            )
    return out


async def existing_objects(conn: asyncpg.Connection, targets: list[str]) -> frozenset[str]:
    """Which of `schema:name` / `type:schema.name` exist in the database now."""
    found = set()
    for t in targets:
        kind, _, name = t.partition(":")
        if kind == "schema":
            ok = await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", name)
        else:
            schema, _, typ = name.partition(".")
            ok = await conn.fetchval("SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
                                     " WHERE n.nspname = $1 AND t.typname = $2", schema, typ)
        if ok:
            found.add(t)
    return frozenset(found)


def backup_table_name(ledger_id: str, n: int, item: BackupItem) -> str:
    """`b_<ledger id>_<n>_<table>`: n is the item's place among the migration's backups, so one
    statement that changes two columns' types (two items, one statement) gets two tables."""
    return f"b_{ledger_id.replace('-', '')}_{n}_{item.table[:12]}"


def _source(item: BackupItem) -> str:
    return f"{quote_ident(item.schema_name)}.{quote_ident(item.table)}"


def _cols(columns: list[str], prefix: str = "") -> str:
    return ", ".join(prefix + quote_ident(c) for c in columns)


async def take(conn: asyncpg.Connection, ledger_id: str, migration: str, items: list[BackupItem]) -> list[int]:
    """Inside the migration's transaction: save each item's data. Returns the rows saved per item."""
    saved = []
    for n, item in enumerate(items, start=1):
        table = backup_table_name(ledger_id, n, item)
        columns = item.columns if item.kind == "rows" else [*item.key, *item.columns]
        where = f" WHERE {item.where}" if item.where else ""
        status = await conn.execute(f"CREATE TABLE {SCHEMA}.{quote_ident(table)} AS "
                                    f"SELECT {_cols(columns)} FROM {_source(item)}{where}")
        rows = int(status.split()[-1])
        await conn.execute(
            f"INSERT INTO {SCHEMA}.backups (ledger_id, item, migration_name, reason, source_schema, source_table,"
            " kind, columns, key_columns, backup_table, rows) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            ledger_id, n, migration, item.reason, item.schema_name, item.table, item.kind, item.columns, item.key,
            table, rows)
        saved.append(rows)
    return saved


async def restore(conn: asyncpg.Connection, ledger_id: str) -> list[str]:
    """Inside compensation's transaction, after the rollback SQL: put back every backup of this
    ledger row, newest statement first. Returns one sentence per backup restored; raises
    RestoreImpossible when the schema no longer has what a backup needs."""
    if not await exists(conn):
        return []
    done = []
    rows = await conn.fetch(f"SELECT * FROM {SCHEMA}.backups WHERE ledger_id = $1 AND restored_at IS NULL"
                            " ORDER BY item DESC", ledger_id)
    for r in rows:
        target = f"{quote_ident(r['source_schema'])}.{quote_ident(r['source_table'])}"
        backup = f"{SCHEMA}.{quote_ident(r['backup_table'])}"
        current = await _current_columns(conn, r["source_schema"], r["source_table"])
        wanted = list(r["columns"]) + list(r["key_columns"])
        missing = [c for c in wanted if c not in current]
        if current is None or missing:
            what = f"table {target}" if current is None else f"column(s) {', '.join(missing)} of {target}"
            raise RestoreImpossible(f"the backup of {r['reason']} ({r['rows']} row(s), in {backup}) cannot be put "
                                    f"back: the rollback did not re-create {what}")
        if r["kind"] == "rows":
            writable = [c for c in r["columns"] if not current[c][1]]
            key = list(r["key_columns"])
            missing_only = (" WHERE NOT EXISTS (SELECT 1 FROM " + target + " t WHERE "
                            + " AND ".join(f"t.{quote_ident(k)} = b.{quote_ident(k)}" for k in key) + ")") if key else ""
            status = await conn.execute(
                f"INSERT INTO {target} ({_cols(writable)}) OVERRIDING SYSTEM VALUE "
                f"SELECT {_cols(writable, 'b.')} FROM {backup} b{missing_only}")
        else:
            sets = ", ".join(f"{quote_ident(c)} = CAST(b.{quote_ident(c)} AS {current[c][0]})" for c in r["columns"])
            match = " AND ".join(f"t.{quote_ident(k)} = b.{quote_ident(k)}" for k in r["key_columns"])
            status = await conn.execute(f"UPDATE {target} t SET {sets} FROM {backup} b WHERE {match}")
        await conn.execute(f"UPDATE {SCHEMA}.backups SET restored_at = now() WHERE ledger_id = $1 AND item = $2",
                           ledger_id, r["item"])
        done.append(f"{r['reason']}: {status.split()[-1]} of {r['rows']} row(s) put back from {backup}")
    return done


async def backups_of(conn: asyncpg.Connection, ledger_id: str) -> list[asyncpg.Record]:
    if not await exists(conn):
        return []
    return await conn.fetch(f"SELECT * FROM {SCHEMA}.backups WHERE ledger_id = $1 ORDER BY item", ledger_id)


class RestoreImpossible(RuntimeError):
    """A backup cannot be put back (one sentence)."""


async def _current_columns(conn: asyncpg.Connection, schema: str, table: str) -> dict[str, tuple[str, bool]] | None:
    """column -> (format_type, generated) of the table now, or None when it does not exist."""
    rows = await conn.fetch(
        "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attgenerated <> '' AS generated"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped", schema, table)
    if not rows:
        exists_ = await conn.fetchval("SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL", schema, table)
        return {} if exists_ else None
    return {r["name"]: (r["type"], r["generated"]) for r in rows}
