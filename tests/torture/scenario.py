"""The crash scenario: four migrations whose every effect can be counted.

m1 creates `effects` (one row per applied migration body) and table `a`; m2 is transactional and
may sleep; m3 runs outside a transaction (CREATE INDEX CONCURRENTLY) and may sleep after its index
is built, i.e. between its statements and its ledger update; m4 has a verify.sql (that may sleep,
or fail to trigger compensation) and a down.sql (that may sleep). Every migration has a down.sql.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from domain.models import BundledMigration
from tests.helpers import migration

NAMES = ["20240101000000_m1", "20240102000000_m2", "20240103000000_m3", "20240104000000_m4"]


def bundle(*, sleep_m2: float = 0, sleep_m3: float = 0, sleep_verify: float = 0, sleep_down4: float = 0,
           verify_fails: bool = False) -> list[BundledMigration]:
    m1 = migration(
        NAMES[0],
        "CREATE TABLE effects (id serial PRIMARY KEY, migration text NOT NULL, at timestamptz DEFAULT clock_timestamp());\n"
        "CREATE TABLE a (x int);\nINSERT INTO effects (migration) VALUES ('m1');\n",
        down="DROP TABLE a;\nDROP TABLE effects;\n",  # undone last: the other downs already deleted their rows
    )
    m2 = migration(
        NAMES[1],
        "CREATE TABLE b (id int);\nINSERT INTO effects (migration) VALUES ('m2');\n"
        + (f"SELECT pg_sleep({sleep_m2});\n" if sleep_m2 else ""),
        down="DROP TABLE b;\nDELETE FROM effects WHERE migration = 'm2';\n",
    )
    m3 = migration(
        NAMES[2],
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS a_x_idx ON a (x);\n"
        + (f"SELECT pg_sleep({sleep_m3});\n" if sleep_m3 else ""),
        down="DROP INDEX CONCURRENTLY IF EXISTS a_x_idx;\n",
    )
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
    return Count(effects, applied, failed, rolled, tables - {"_prisma_migrations"}, index, bad)
