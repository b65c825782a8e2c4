"""A long migration history generated from the real corpus's files (../shared/corpus/), that
PostgreSQL really runs from first to last.

The readable histories (documenso, rallly, hoppscotch; formbricks needs pgvector) are repeated in
rounds until N migrations. Each copy is its file byte for byte, run in a schema of its own for its
round and project (`d3` is documenso's third copy): two lines before it create the schema and put
it first on the search_path, one after it resets the search_path (so nothing after the script,
such as the ledger row, sees it). The file's own `"public".` qualifiers name that schema instead,
and `CREATE EXTENSION` installs into public, where every copy finds it.

Names keep the rounds in order: `2030MMDDhhmmss_<round><p>_<original suffix>`, the prefix counting
seconds from 2030-01-01, so Prisma's order is the generation order.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
PROJECTS = ("documenso", "rallly", "hoppscotch")
_EXTENSION = re.compile(r"(CREATE EXTENSION IF NOT EXISTS \"?\w+\"?)\s*;", re.I)
_START = datetime(2030, 1, 1)


def _corpus() -> list[tuple[str, str, str]]:
    """(project, migration name, migration.sql) in each project's Prisma order."""
    from domain.prisma.folder import read_migrations_dir

    return [(p, m.name, m.sql) for p in PROJECTS for m in read_migrations_dir(CORPUS / p / "migrations")]


def in_schema(sql: str, schema: str) -> str:
    body = _EXTENSION.sub(r"\1 SCHEMA public;", sql.replace('"public".', f'"{schema}".'))
    return (f'CREATE SCHEMA IF NOT EXISTS "{schema}";\nSET search_path TO "{schema}", public;\n'
            f"{body}\n;RESET search_path;\n")


def history(n: int) -> list[tuple[str, str]]:
    """(name, SQL) of N migrations in Prisma's order."""
    files = _corpus()
    out: list[tuple[str, str]] = []
    round_no = 0
    while len(out) < n:
        round_no += 1
        for project, name, sql in files:
            if len(out) == n:
                break
            stamp = (_START + timedelta(seconds=len(out))).strftime("%Y%m%d%H%M%S")
            out.append((f"{stamp}_{round_no:02d}{project[0]}_{name.split('_', 1)[1]}",
                        in_schema(sql, f"{project[0]}{round_no}")))
    return out


def write(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "migration_lock.toml").write_text('# generated from ../shared/corpus\nprovider = "postgresql"\n')
    for name, sql in history(n):
        (root / name).mkdir(exist_ok=True)
        (root / name / "migration.sql").write_text(sql)
    return root
