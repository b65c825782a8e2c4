"""The crash scenario: four migrations whose every effect can be counted.

Before the run, schema `shop` holds table `items` (3 rows, the application's data; not in the
public schema, so the database needs no baseline). m1 creates `effects` (one row per applied
migration body), table `a` (one row) and a function the index build may sleep in; m2 is
transactional, with `app_data` updates every `shop.items` note (so it is backed up first, in its
transaction), and may sleep right after that backup or at its end; m3 is `CREATE INDEX CONCURRENTLY` alone (Prisma
runs it outside a transaction), whose build may be slowed by the function; m4 has a verify.sql
(that may sleep, or fail to trigger compensation) and a down.sql (that may sleep). Every migration
has a down.sql. A trigger on `shop.items` may sleep while compensation writes the backup back.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from domain.models import BundledMigration
from tests.helpers import migration

NAMES = ["20240101000000_m1", "20240102000000_m2", "20240103000000_m3", "20240104000000_m4"]


ITEMS = {1: "red", 2: "green", 3: "blue"}


async def setup(url: str, *, sleep_restore: float = 0) -> None:
    """The application's data that exists before the run (and the trigger that slows a restore)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE SCHEMA shop; CREATE TABLE shop.items (id int PRIMARY KEY, note text NOT NULL);"
            "INSERT INTO shop.items VALUES " + ", ".join(f"({k}, '{v}')" for k, v in ITEMS.items()) + ";"
            "CREATE FUNCTION shop.slow_restore() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF OLD.note = 'm2' AND NEW.note <> 'm2' THEN PERFORM pg_sleep({sleep_restore}); END IF; "
            "RETURN NEW; END $$;"
            "CREATE TRIGGER slow_restore BEFORE UPDATE ON shop.items FOR EACH ROW EXECUTE FUNCTION shop.slow_restore();")
    finally:
        await conn.close()


def bundle(*, sleep_m2: float = 0, sleep_after_backup: float = 0, sleep_m3: float = 0, sleep_verify: float = 0,
           sleep_down4: float = 0, verify_fails: bool = False, app_data: bool = False) -> list[BundledMigration]:
    """`app_data`: m2 also updates shop.items (call `setup` first)."""
    m1 = migration(
        NAMES[0],
        "CREATE TABLE effects (id serial PRIMARY KEY, migration text NOT NULL, at timestamptz DEFAULT clock_timestamp());\n"
        "CREATE TABLE a (x int);\nINSERT INTO a VALUES (1);\nINSERT INTO effects (migration) VALUES ('m1');\n"
        "CREATE FUNCTION slow_id(v int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN "
        f"PERFORM pg_sleep({sleep_m3}); RETURN v; END $$;\n",
        down="DROP TABLE a;\nDROP FUNCTION slow_id(int);\nDROP TABLE effects;\n",  # undone last
    )
    m2 = migration(
        NAMES[1],
        (f"SELECT pg_sleep({sleep_after_backup});\n" if sleep_after_backup else "")
        + "CREATE TABLE b (id int);\nINSERT INTO effects (migration) VALUES ('m2');\n"
        + ("UPDATE shop.items SET note = 'm2';\n" if app_data else "")
        + (f"SELECT pg_sleep({sleep_m2});\n" if sleep_m2 else ""),
        down="DROP TABLE b;\nDELETE FROM effects WHERE migration = 'm2';\n",  # shop.items: from its backup
    )
    m3 = migration(NAMES[2], "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_x_idx ON a ((slow_id(x)));\n",
                   down="DROP INDEX CONCURRENTLY IF EXISTS a_x_idx;\n")
    verify = "SELECT false AS ok;\n" if verify_fails else (
        f"SELECT true AS ok FROM pg_sleep({sleep_verify});\n" if sleep_verify else
        "SELECT count(*) = 1 AS ok FROM effects WHERE migration = 'm4';\n")
    m4 = migration(
        NAMES[3],
        "CREATE TABLE c (id int);\nINSERT INTO effects (migration) VALUES ('m4');\n",
        down=(f"SELECT pg_sleep({sleep_down4});\n" if sleep_down4 else "")
        + "DROP TABLE c;\nDELETE FROM effects WHERE migration = 'm4';\n",
        verify=verify,
    )
    return [m1, m2, m3, m4]


@dataclass
class Count:
    """What the database holds after a run, per migration."""

    effects: dict[str, int]  # rows in `effects` per migration (transactional bodies)
    applied_rows: dict[str, int]  # ledger rows finished and not rolled back
    failed_rows: dict[str, int]  # ledger rows neither finished nor rolled back (Prisma's "failed")
    rolled_back_rows: dict[str, int]
    tables: set[str]
    index: bool
    bad_applied_rows: list[str]  # applied rows not shaped like Prisma's (logs NULL, 1 step)
    items: dict[int, str]  # shop.items: id -> note (the application's data m2 updates)
    invalid_indexes: int  # INVALID indexes left in the database
    # The run's backups in _migrator_backup: (migration, table backed up, the rows the backup
    # table holds as {id: note}, restored), one per backup taken in a committed transaction.
    backups: list[tuple[str, str, dict[int, str], bool]]


async def count(url: str) -> Count:
    conn = await asyncpg.connect(url)
    try:
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        effects = {n: 0 for n in ("m1", "m2", "m4")}
        if "effects" in tables:
            for r in await conn.fetch("SELECT migration, count(*) AS n FROM effects GROUP BY 1"):
                effects[r["migration"]] = r["n"]
        rows = await conn.fetch("SELECT * FROM _prisma_migrations") if "_prisma_migrations" in tables else []
        index = bool(await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexname = 'a_x_idx'"))
        has_items = await conn.fetchval("SELECT to_regclass('shop.items') IS NOT NULL")
        items = {r["id"]: r["note"] for r in await conn.fetch("SELECT id, note FROM shop.items")} if has_items else {}
        invalid = await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
        backups = []
        if await conn.fetchval("SELECT to_regclass('_migrator_backup.backups') IS NOT NULL"):
            for b in await conn.fetch("SELECT migration_name, source_schema, source_table, backup_table, restored_at "
                                      "FROM _migrator_backup.backups ORDER BY created_at, item"):
                held = await conn.fetch(f'SELECT id, note FROM _migrator_backup."{b["backup_table"]}" ORDER BY id')
                backups.append((b["migration_name"], f"{b['source_schema']}.{b['source_table']}",
                                {r["id"]: r["note"] for r in held}, b["restored_at"] is not None))
    finally:
        await conn.close()
    short = {n: n.split("_")[1] for n in NAMES}
    applied = {s: 0 for s in short.values()}
    failed = dict(applied)
    rolled = dict(applied)
    bad = []
    for r in rows:
        s = short.get(r["migration_name"], r["migration_name"])
        if r["rolled_back_at"] is not None:
            rolled[s] = rolled.get(s, 0) + 1
        elif r["finished_at"] is not None:
            applied[s] = applied.get(s, 0) + 1
            if r["logs"] is not None or r["applied_steps_count"] != 1:
                bad.append(f"{s}: logs={r['logs']!r} steps={r['applied_steps_count']}")
        else:
            failed[s] = failed.get(s, 0) + 1
    return Count(effects, applied, failed, rolled, tables - {"_prisma_migrations"}, index, bad, items, invalid,
                 backups)
