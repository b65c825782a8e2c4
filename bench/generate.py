"""Generated Prisma migration folders for the benchmarks: a realistic mix of DDL and data."""

from __future__ import annotations

from pathlib import Path

KINDS = ("create_table", "add_column", "create_index", "insert")


def migration_sql(i: int) -> str:
    """Migration i: a new table every 4th step, then a column, an index and rows on it."""
    table = f"bench_t{i // 4}"
    kind = KINDS[i % 4]
    if kind == "create_table":
        return (
            f'CREATE TABLE "{table}" (\n    "id" SERIAL NOT NULL,\n    "name" TEXT NOT NULL,\n'
            f'    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,\n'
            f'    CONSTRAINT "{table}_pkey" PRIMARY KEY ("id")\n);\n'
        )
    if kind == "add_column":
        return f'ALTER TABLE "{table}" ADD COLUMN "note" TEXT;\n'
    if kind == "create_index":
        return f'CREATE INDEX "{table}_name_idx" ON "{table}"("name");\n'
    values = ", ".join(f"('row {j}')" for j in range(5))
    return f'INSERT INTO "{table}" ("name") VALUES {values};\n'


def migration_name(i: int) -> str:
    return f"2025{i // 86400:04d}{i % 86400:06d}_{KINDS[i % 4]}_{i}"


def write_folder(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for i in range(n):
        d = root / migration_name(i)
        d.mkdir(exist_ok=True)
        (d / "migration.sql").write_text(migration_sql(i))
    return root
