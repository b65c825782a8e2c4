"""Static analysis speed: 1,000 generated Prisma-style migration files, read and analysed.

Target: under 1 s for the whole folder (issue 5). A benchmark, not a test: it prints a table and
writes bench/results/bench_analysis.json. `python -m bench.bench_analysis` (BENCH_ANALYSIS_FILES
changes the count).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from domain.sql.rules import analyze_migration

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
FILES = int(os.environ.get("BENCH_ANALYSIS_FILES", "1000"))
TARGET_S = 1.0


def _create_table(rng: random.Random, t: str) -> str:
    cols = [f'    "col_{j}" {rng.choice(["TEXT", "INTEGER", "BOOLEAN NOT NULL DEFAULT false", "TIMESTAMP(3)", "JSONB"])}'
            for j in range(rng.randint(3, 12))]
    return (f'-- CreateTable\nCREATE TABLE "{t}" (\n    "id" TEXT NOT NULL,\n' + ",\n".join(cols)
            + f',\n    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,\n\n    CONSTRAINT "{t}_pkey" PRIMARY KEY ("id")\n);\n')


def migration_sql(i: int) -> str:
    """A realistic mix: mostly creates (Prisma's bread and butter), some alters, data and drops."""
    rng = random.Random(i)
    parts: list[str] = []
    tables = [f"m{i}_t{k}" for k in range(rng.randint(1, 4))]
    if rng.random() < 0.3:
        parts.append(f'-- CreateEnum\nCREATE TYPE "M{i}Kind" AS ENUM (\'A\', \'B\', \'C\');\n')
    for t in tables:
        parts.append(_create_table(rng, t))
        parts.append(f'-- CreateIndex\nCREATE UNIQUE INDEX "{t}_col_0_key" ON "{t}"("col_0");\n')
    for a, b in zip(tables, tables[1:]):
        parts.append(f'-- AddForeignKey\nALTER TABLE "{b}" ADD CONSTRAINT "{b}_fk" FOREIGN KEY ("col_1") '
                     f'REFERENCES "{a}"("id") ON DELETE CASCADE ON UPDATE CASCADE;\n')
    roll = rng.random()
    if roll < 0.25:
        parts.append(f'-- AlterTable\nALTER TABLE "users" ADD COLUMN "f{i}" TEXT, ALTER COLUMN "name" SET NOT NULL;\n')
    elif roll < 0.45:
        rows = ", ".join(f"('k{i}_{j}', 'value {j}', {j})" for j in range(rng.randint(1, 6)))
        parts.append(f'INSERT INTO "settings" ("key", "value", "n") VALUES {rows} ON CONFLICT ("key") DO NOTHING;\n')
    elif roll < 0.55:
        parts.append(f'CREATE INDEX CONCURRENTLY "users_f{i}_idx" ON "users" ("email");\n')
    elif roll < 0.6:
        parts.append(f'ALTER TABLE "users" DROP COLUMN "legacy_{i}";\nDROP TABLE IF EXISTS "old_{i}";\n')
    return "\n".join(parts)


def write_folder(root: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        d = root / f"2025{i:010d}_m{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "migration.sql").write_text(migration_sql(i))
        paths.append(d / "migration.sql")
    return paths


def run(n: int = FILES) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as tmp:
        paths = write_folder(Path(tmp), n)
        analyze_migration("warm-up", migration_sql(0))
        per_file: list[float] = []
        statements = findings = with_rollback = 0
        start = time.perf_counter()
        for path in paths:
            t0 = time.perf_counter()
            analysis = analyze_migration(path.parent.name, path.read_text())
            per_file.append(time.perf_counter() - t0)
            statements += len(analysis.statements)
            findings += len(analysis.findings)
            with_rollback += analysis.derived_rollback is not None
        total = time.perf_counter() - start
    import platform

    return {
        "files": n,
        "statements": statements,
        "findings": findings,
        "derived_rollbacks": with_rollback,
        "total_s": round(total, 4),
        "statements_per_s": round(statements / total),
        "per_file_ms_median": round(statistics.median(per_file) * 1000, 3),
        "per_file_ms_p99": round(sorted(per_file)[int(len(per_file) * 0.99) - 1] * 1000, 3),
        "target_s": TARGET_S,
        "under_target": total < TARGET_S,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }


def render(result: dict) -> None:
    table = Table(title=f"SQL analysis of {result['files']} migration files (read + parse + rules + derived rollback)")
    for col in ("files", "statements", "findings", "derived rollbacks", "total", "statements/s", "median/file", "p99/file", "target"):
        table.add_column(col, justify="right")
    verdict = "[green]met[/]" if result["under_target"] else "[bold red]missed[/]"
    table.add_row(
        str(result["files"]), str(result["statements"]), str(result["findings"]), str(result["derived_rollbacks"]),
        f"{result['total_s']:.3f} s", f"{result['statements_per_s']:,}", f"{result['per_file_ms_median']:.2f} ms",
        f"{result['per_file_ms_p99']:.2f} ms", f"< {result['target_s']:g} s {verdict}",
    )
    Console().print(table)


if __name__ == "__main__":
    res = run()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_analysis.json").write_text(json.dumps(res, indent=2))
    render(res)
    sys.exit(0)
