"""Drift proof: replay the applied local history into a shadow database and compare catalogs.

The shadow database `migrator_shadow_<uuid>` is created on the live server (never touching live
data), filled by replaying the migrations the ledger says are applied, read, and always dropped,
also when the replay fails or the caller is cancelled. The DSN is a parameter only: it is never
logged, and errors are scrubbed of it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg
import structlog

from activities.db import DatabaseUnavailable, connect
from domain.catalog import (
    Catalog,
    Column,
    DriftReport,
    DriftVerdict,
    Table,
    compare,
    judge,
)
from domain.dsn import scrub
from domain.sql.parse import SqlParseError, split_statements
from domain.sql.rules import analyze_migration

log = structlog.get_logger(__name__)

LEDGER_TABLE = "_prisma_migrations"
SHADOW_PREFIX = "migrator_shadow_"


# -- catalog reader --------------------------------------------------------------------------

_COLUMNS = """
SELECT c.relname AS table_name, a.attname AS column_name,
       format_type(a.atttypid, a.atttypmod) AS type,
       NOT a.attnotnull AS nullable,
       pg_get_expr(d.adbin, d.adrelid) AS column_default,
       a.attidentity::text AS attidentity, a.attgenerated::text AS attgenerated
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname <> $2
ORDER BY c.relname, a.attnum
"""

_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname <> $2
"""

_INDEXES = """
SELECT i.relname AS name, pg_get_indexdef(x.indexrelid) AS definition, x.indisvalid AS valid
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE n.nspname = $1 AND t.relname <> $2
"""

# NOT NULL constraints (contype 'n', PostgreSQL 18+) are covered by the columns' nullability.
_CONSTRAINTS = """
SELECT t.relname AS table_name, c.conname AS name, pg_get_constraintdef(c.oid) AS definition
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = $1 AND t.relname <> $2 AND c.contype <> 'n'
"""

_ENUMS = """
SELECT t.typname AS name, array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
JOIN pg_enum e ON e.enumtypid = t.oid
WHERE n.nspname = $1
GROUP BY t.typname
"""


async def read_catalog(conn: asyncpg.Connection, schema: str = "public") -> Catalog:
    """Tables, columns, indexes, constraints and enums of `schema`, without Prisma's ledger table."""
    catalog = Catalog(schema_name=schema)
    for row in await conn.fetch(_TABLES, schema, LEDGER_TABLE):
        catalog.tables[row["relname"]] = Table()
    for row in await conn.fetch(_COLUMNS, schema, LEDGER_TABLE):
        col_type = row["type"]
        identity, generated = row["attidentity"], row["attgenerated"]  # "" when none
        if identity:
            col_type += " GENERATED " + ("ALWAYS" if identity == "a" else "BY DEFAULT") + " AS IDENTITY"
        if generated:
            col_type += " GENERATED " + ("STORED" if generated == "s" else "VIRTUAL")
        catalog.tables[row["table_name"]].columns[row["column_name"]] = Column(
            type=col_type, nullable=row["nullable"], default=row["column_default"]
        )
    for row in await conn.fetch(_INDEXES, schema, LEDGER_TABLE):
        catalog.indexes[row["name"]] = row["definition"] + ("" if row["valid"] else " INVALID")
    for row in await conn.fetch(_CONSTRAINTS, schema, LEDGER_TABLE):
        catalog.constraints[f"{row['table_name']}.{row['name']}"] = row["definition"]
    for row in await conn.fetch(_ENUMS, schema):
        catalog.enums[row["name"]] = list(row["labels"])
    return catalog


# -- shadow replay ---------------------------------------------------------------------------


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


def _schema_of(dsn: str) -> str:
    return next((v for k, v in parse_qsl(urlsplit(dsn).query) if k == "schema"), None) or "public"


async def replay(conn: asyncpg.Connection, name: str, sql: str) -> None:
    """Run one migration as deploy would: in one transaction, unless it cannot run inside one."""
    try:
        in_transaction = analyze_migration(name, sql).in_transaction
        statements = [s.text for s in split_statements(sql)]
    except SqlParseError:
        in_transaction, statements = True, []  # let the server give its own error
    if in_transaction:
        async with conn.transaction():
            await conn.execute(sql)
    else:
        for statement in statements:
            await conn.execute(statement)


async def _drop_shadow(admin: asyncpg.Connection, shadow: str) -> None:
    force = " WITH (FORCE)" if admin.get_server_version().major >= 13 else ""
    await admin.execute(f'DROP DATABASE IF EXISTS "{shadow}"{force}')


class ShadowCleanupError(RuntimeError):
    """The shadow database could not be dropped; one sentence naming it (never the DSN)."""


async def _always_drop(live: asyncpg.Connection, shadow: str, dsn: str) -> None:
    # A cancelled activity must still leave no shadow database behind: the drop runs to its end
    # even when the caller is cancelled meanwhile, then the cancellation goes on.
    task = asyncio.ensure_future(_drop_shadow(live, shadow))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
    except (asyncpg.PostgresError, OSError) as exc:
        reason = scrub(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__, dsn)
        raise ShadowCleanupError(f"could not drop the shadow database {shadow} ({reason}); drop it by hand") from None
    log.info("drift_shadow_dropped", shadow=shadow)


async def drift_proof(
    dsn: str,
    migrations: Sequence[tuple[str, str]],
    phantoms: Sequence[str] = (),
    *,
    live_conn: asyncpg.Connection | None = None,
    schema: str | None = None,
) -> DriftReport:
    """Compare the live schema with a replay of `migrations` (name, sql), in ledger order.

    `migrations` must be the local migrations the ledger records as applied (not pending ones);
    `phantoms` the applied ledger rows that have no local folder. `dsn` is the live database's
    URL: the shadow database is created on the same server through it. Never raises for replay or
    permission problems: those become the verdicts replay_failed / unavailable.
    """
    schema = schema or _schema_of(dsn)
    phantoms = list(phantoms)
    names = [name for name, _ in migrations]
    own_live = live_conn is None
    try:
        live = live_conn or await connect(dsn)
    except DatabaseUnavailable as exc:
        return DriftReport(verdict=DriftVerdict.unavailable, summary=f"drift not checked: {exc}", error=str(exc),
                           phantoms=phantoms)
    shadow = f"{SHADOW_PREFIX}{uuid.uuid4().hex}"
    try:
        try:
            await live.execute(f'CREATE DATABASE "{shadow}" TEMPLATE template0')
        except asyncpg.PostgresError as exc:
            reason = scrub(str(exc).splitlines()[0], dsn)
            return DriftReport(
                verdict=DriftVerdict.unavailable,
                summary=f"drift not checked: cannot create a shadow database on the server ({reason}); "
                "the database user needs the CREATEDB privilege",
                error=reason,
                phantoms=phantoms,
            )
        log.info("drift_shadow_created", shadow=shadow, migrations=len(names))
        try:
            return await _replay_and_compare(dsn, live, shadow, migrations, phantoms, schema)
        finally:
            await _always_drop(live, shadow, dsn)
    finally:
        if own_live:
            await live.close()


async def _replay_and_compare(
    dsn: str, live: asyncpg.Connection, shadow: str, migrations: Sequence[tuple[str, str]], phantoms: list[str], schema: str
) -> DriftReport:
    names = [name for name, _ in migrations]
    try:
        shadow_conn = await connect(_with_database(dsn, shadow))
    except DatabaseUnavailable as exc:
        return DriftReport(verdict=DriftVerdict.unavailable, summary=f"drift not checked: {exc}", error=str(exc),
                           phantoms=phantoms, shadow_database=shadow)
    try:
        if schema != "public":
            await shadow_conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        for i, (name, sql) in enumerate(migrations):
            try:
                await replay(shadow_conn, name, sql)
            except asyncpg.PostgresError as exc:
                reason = scrub(str(exc).splitlines()[0], dsn)
                return DriftReport(
                    verdict=DriftVerdict.replay_failed,
                    summary=f"drift not proven: replaying the local history failed at {name} ({reason}); "
                    "the local migrations do not rebuild the schema on their own",
                    error=reason,
                    phantoms=phantoms,
                    replayed=names[:i],
                    shadow_database=shadow,
                )
        expected = await read_catalog(shadow_conn, schema)
    finally:
        await shadow_conn.close()
    actual = await read_catalog(live, schema)
    return judge(compare(expected, actual), phantoms, names, shadow)
