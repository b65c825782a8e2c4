"""Schema model cost on the real corpus (issue 12): `python -m bench.bench_schema`.

On one durable throwaway PostgreSQL, for each history in ../shared/corpus:
  - `prisma migrate deploy` of the folder on a fresh database (the yardstick; needs the oracle)
  - shadow replay of the same migrations, cold (nothing cached), reading the model once at the end
  - the same replay snapshotting three prefixes (what failed-migration evidence and the drift proof
    ask for in one run), and the same request again from the warm in-process cache
and on documenso after a full deploy: reading the live model (activities.catalog) against
`pg_dump --schema-only` of the same database. Medians of BENCH_RUNS runs (default 3).
formbricks stops at its `CREATE EXTENSION "vector"` migration, in Prisma and in the replay alike.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import asyncpg

from activities.catalog import read_schema_model
from activities.shadow import ReplayCache, expected_schemas
from bench.report import print_table
from devstack.pgcluster import PgCluster
from domain.prisma.folder import LocalMigration
from domain.prisma.order import prisma_sort_key

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
ORACLE = REPO.parent / "shared" / "tools" / "prisma-oracle" / "prisma.sh"
RESULTS = REPO / "bench" / "results"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
HISTORIES = ["documenso", "rallly", "hoppscotch", "formbricks"]


def corpus_migrations(history: str) -> list[LocalMigration]:
    """In Prisma's order, up to the first directory without migration.sql (where Prisma stops)."""
    found = []
    root = CORPUS / history / "migrations"
    for d in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: prisma_sort_key(p.name)):
        if not (d / "migration.sql").is_file():
            break
        found.append(LocalMigration(name=d.name, sql=(d / "migration.sql").read_bytes().decode("utf-8")))
    return found


async def fresh_database(pg: PgCluster, name: str) -> str:
    conn = await asyncpg.connect(pg.url("postgres"))
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return pg.url(name)


def prisma_deploy(dsn: str, folder: Path) -> tuple[float, int] | None:
    if not ORACLE.exists():
        return None
    start = time.perf_counter()
    proc = subprocess.run(
        [str(ORACLE), "deploy"], env={**os.environ, "DATABASE_URL": dsn, "MIGRATIONS_DIR": str(folder)}, capture_output=True
    )
    return time.perf_counter() - start, proc.returncode


async def timed(make) -> float:
    start = time.perf_counter()
    await make()
    return time.perf_counter() - start


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


async def bench_history(pg: PgCluster, history: str) -> dict:
    migrations = corpus_migrations(history)
    n = len(migrations)
    folder = CORPUS / history / "migrations"
    prisma_s, prisma_rc = [], None
    for _ in range(RUNS):
        result = prisma_deploy(await fresh_database(pg, f"bench_prisma_{history}"), folder)
        if result is not None:
            prisma_s.append(result[0])
            prisma_rc = result[1]
    live = pg.url("postgres")
    cold, three, failure = [], [], None
    for _ in range(RUNS):
        replay = await expected_schemas(live, migrations, [n], run_key=f"bench-{history}", cache=None)
        cold.append(replay.seconds)
        failure = replay.failure
        cache = ReplayCache()
        replay = await expected_schemas(live, migrations, [n // 3, 2 * n // 3, n], run_key=f"bench-{history}", cache=cache)
        three.append(replay.seconds)
    warm = await timed(lambda: expected_schemas(live, migrations, [n // 3, 2 * n // 3, n], run_key="w", cache=cache))
    replayed = failure.position - 1 if failure else n
    row = {
        "history": history,
        "migrations": n,
        "replayed": replayed,
        "stops_at": failure.migration if failure else "",
        "prisma_deploy_s": median(prisma_s) if prisma_s else None,
        "prisma_exit": prisma_rc,
        "replay_cold_s": median(cold),
        "replay_3_prefixes_s": median(three),
        "replay_cached_s": round(warm, 4),
    }
    if prisma_s:
        row["replay_over_prisma"] = round(median(cold) / median(prisma_s), 2)
    return row


async def bench_catalog_read(pg: PgCluster) -> dict:
    """Live model read vs pg_dump --schema-only, on documenso fully deployed."""
    migrations = corpus_migrations("documenso")
    dsn = await fresh_database(pg, "bench_read_documenso")
    conn = await asyncpg.connect(dsn)
    for m in migrations:
        await conn.execute(m.sql)
    reads = []
    for _ in range(max(RUNS, 10)):
        start = time.perf_counter()
        model = await read_schema_model(conn)
        reads.append(time.perf_counter() - start)
    await conn.close()
    dumps = []
    for _ in range(max(RUNS, 10)):
        start = time.perf_counter()
        subprocess.run(
            [str(pg.bin / "pg_dump"), "--schema-only", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "bench_read_documenso"],
            capture_output=True, check=True,
        )
        dumps.append(time.perf_counter() - start)
    return {
        "objects": len(model),
        "catalog_read_ms": round(statistics.median(reads) * 1000, 1),
        "pg_dump_schema_only_ms": round(statistics.median(dumps) * 1000, 1),
    }


async def main() -> dict:
    pg = PgCluster(durable=True).start()
    try:
        rows = [await bench_history(pg, h) for h in HISTORIES]
        read = await bench_catalog_read(pg)
    finally:
        pg.destroy()
    print_table(
        f"Shadow replay vs prisma migrate deploy (median of {RUNS})",
        ["history", "migrations", "replayed", "stops_at", "prisma_deploy_s", "replay_cold_s", "replay_over_prisma",
         "replay_3_prefixes_s", "replay_cached_s"],
        rows,
    )
    print_table("Reading the schema of documenso (163 migrations)", ["objects", "catalog_read_ms", "pg_dump_schema_only_ms"], [read])
    return {"histories": rows, "catalog_read": read}


if __name__ == "__main__":
    result = asyncio.run(main())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_schema.json").write_text(json.dumps(result, indent=2))
