"""The real histories of ../shared/corpus as test data, and databases the real Prisma CLI prepared
from them, shared by the whole test session (Prisma's deploy of documenso takes seconds).

`CorpusDatabases.prepared(history)` makes, once per session:
- `base`: Prisma's `migrate deploy` of all but the last 3 migrations it can deploy, on a fresh
  database, kept as a template (CREATE DATABASE ... TEMPLATE base copies it in milliseconds);
- `reference`: a copy of `base` on which Prisma deployed the whole folder, i.e. Prisma's own
  deploy of the folder (for formbricks: up to where Prisma stops), with its CLI result;
- its `pg_dump --schema-only`, the yardstick of "equal to Prisma's deploy".
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from domain.prisma.folder import LocalMigration
from domain.prisma.order import prisma_sort_key
from tests.oracle import PrismaResult, prisma

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
HISTORIES = ("documenso", "rallly", "hoppscotch", "formbricks")
# formbricks: pgvector is not installed here, so Prisma (and the product) stop at this migration.
VECTOR_MIGRATION = "20241017124431_add_documents_and_insights"
INCREMENT = 3  # the incremental case: Prisma applied all but the last 3, the product deploys the rest


def corpus_migrations(history: str) -> list[LocalMigration]:
    """The history's migrations in Prisma's order, up to the first directory without a
    migration.sql (formbricks' data-only migrations), which is where Prisma's deploy stops at the
    latest (P3015)."""
    root = CORPUS / history / "migrations"
    found = []
    for d in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: prisma_sort_key(p.name)):
        if not (d / "migration.sql").is_file():
            break
        found.append(LocalMigration(name=d.name, sql=(d / "migration.sql").read_bytes().decode("utf-8")))
    return found


def deployable(history: str) -> int:
    """How many of the history's migrations Prisma can deploy on this machine."""
    migrations = corpus_migrations(history)
    names = [m.name for m in migrations]
    return names.index(VECTOR_MIGRATION) if VECTOR_MIGRATION in names else len(migrations)


def write_folder(root: Path, migrations: list[LocalMigration]) -> Path:
    folder = root / "migrations"
    folder.mkdir(parents=True)
    (folder / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for m in migrations:
        (folder / m.name).mkdir()
        (folder / m.name / "migration.sql").write_bytes(m.sql.encode("utf-8"))
    return folder


_RESTRICT = re.compile(r"^\\(un)?restrict .*$", re.M)  # pg_dump >= 15.14 writes a random key per dump


def pg_dump_schema(url: str, *, exclude: tuple[str, ...] = ()) -> str:
    """`pg_dump --schema-only` of the database, as text to compare (its random \\restrict key left
    out), without the schemas in `exclude`."""
    from devstack.pgcluster import find_pg_bin

    binary = find_pg_bin() / "pg_dump"
    if not binary.exists():
        binary = Path(shutil.which("pg_dump") or "pg_dump")
    args = [str(binary), "--schema-only", f"--dbname={url}", *(f"--exclude-schema={name}" for name in exclude)]
    proc = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120)
    return _RESTRICT.sub("", proc.stdout)


@dataclass
class Prepared:
    history: str
    migrations: list[LocalMigration]  # up to the first directory without migration.sql
    base: str  # database name: Prisma deployed all but the last INCREMENT deployable migrations
    reference_url: str
    reference_result: PrismaResult
    reference_dump: str
    base_count: int


class CorpusDatabases:
    def __init__(self, pg_server, tmp: Path) -> None:
        self.pg = pg_server
        self.tmp = tmp
        self._prepared: dict[str, Prepared] = {}
        self._databases: list[str] = []

    async def prepared(self, history: str) -> Prepared:
        if history not in self._prepared:
            self._prepared[history] = await self._prepare(history)
        return self._prepared[history]

    async def copy_of(self, template: str, prefix: str) -> str:
        """A new database copied from `template` (empty: template0); its URL. Dropped at the end."""
        import uuid

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(self.pg.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await conn.close()
        self._databases.append(name)
        return self.pg.url(name)

    async def _prepare(self, history: str) -> Prepared:
        migrations = corpus_migrations(history)
        count = deployable(history) - INCREMENT
        folder = write_folder(self.tmp / f"{history}-base", migrations[:count])
        base_url = await self.copy_of("template0", f"base_{history}")
        result = prisma(base_url, folder, "deploy")
        assert result.returncode == 0, result.stderr[-2000:]
        base = base_url.rsplit("/", 1)[-1]
        reference_url = await self.copy_of(base, f"prisma_{history}")
        reference = prisma(reference_url, CORPUS / history / "migrations", "deploy")
        return Prepared(history=history, migrations=migrations, base=base, reference_url=reference_url,
                        reference_result=reference, reference_dump=pg_dump_schema(reference_url), base_count=count)

    async def close(self) -> None:
        for name in self._databases:
            await self.pg.drop_database(name)
