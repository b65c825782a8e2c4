"""Prisma's folder rules (domain.prisma.folder_rules, read by domain.prisma.folder_scan) against
the real Prisma CLI: a directory without migration.sql (synthetic and formbricks' 25), a missing
folder, an empty folder, stray entries and the lock file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import asyncpg
import pytest

from domain.prisma.baseline import MIGRATIONS_TABLE
from domain.prisma.folder_rules import (
    NOT_MANAGED_MESSAGE,
    P3015_MESSAGE,
    P3017_TEMPLATE,
    P3019_TEMPLATE,
    PROVIDER_NOT_FOUND,
    deploy_stop,
    folder_entries,
    lock_file_error,
    resolve_applied_error,
    status_not_managed,
    status_stop,
    unreadable_pending,
)
from domain.prisma.folder_scan import scan_folder
from tests.oracle import PrismaResult, prisma

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
FORMBRICKS = CORPUS / "formbricks" / "migrations"
VECTOR_MIGRATION = "20241017124431_add_documents_and_insights"

pytestmark = pytest.mark.oracle


def mk(root: Path, name: str, sql: str | None = "SELECT 1;\n") -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    if sql is not None:
        (d / "migration.sql").write_text(sql)
    return d


def found_count(result: PrismaResult) -> int:
    if "No migration found in prisma/migrations" in result.stdout:
        return 0
    m = re.search(r"^(\d+) migrations? found in prisma/migrations$", result.stdout, re.M)
    assert m, result.stdout + result.stderr
    return int(m.group(1))


def pending_listed(result: PrismaResult) -> list[str]:
    """The names `prisma migrate status` lists as not yet applied, in its order."""
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"Following migrations? have not yet been applied:", line))
    out = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        out.append(line)
    return out


async def ledger_names(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(f"SELECT migration_name FROM {MIGRATIONS_TABLE} WHERE finished_at IS NOT NULL ORDER BY started_at")
    return [r["migration_name"] for r in rows]


async def table_exists(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{MIGRATIONS_TABLE}")


def three_with_a_hole(root: Path) -> Path:
    mdir = root / "migrations"
    mk(mdir, "20240101000000_one", "CREATE TABLE one (id int);\n")
    (mk(mdir, "20240102000000_no_sql", None) / ".gitkeep").write_text("")
    mk(mdir, "20240103000000_three", "CREATE TABLE three (id int);\n")
    return mdir


async def test_directory_without_migration_sql_is_pending_and_stops_deploy(
    tmp_path: Path, database_url: str, db: asyncpg.Connection
) -> None:
    mdir = three_with_a_hole(tmp_path)
    entries = folder_entries(scan_folder(mdir).entries)
    assert [(e.name, e.reason) for e in entries] == [
        ("20240101000000_one", None),
        ("20240102000000_no_sql", "missing"),
        ("20240103000000_three", None),
    ]

    status = prisma(database_url, mdir, "status")
    assert status.returncode == 1 and found_count(status) == 3
    assert pending_listed(status) == [e.name for e in entries]  # Prisma's status reads the folder
    assert status_stop(entries, set()) is None

    deploy = prisma(database_url, mdir, "deploy")
    assert deploy.returncode == 1 and "P3015" in deploy.stderr and P3015_MESSAGE in deploy.stderr
    stop = deploy_stop(entries, set())
    assert stop is not None and stop.name == "20240102000000_no_sql"
    assert await ledger_names(db) == ["20240101000000_one"]  # the earlier one was applied
    assert [e.name for e in unreadable_pending(entries, {"20240101000000_one"})] == ["20240102000000_no_sql"]

    again = prisma(database_url, mdir, "status")
    assert pending_listed(again) == ["20240102000000_no_sql", "20240103000000_three"]


async def test_a_row_for_the_directory_makes_status_fail_and_deploy_skip_it(
    tmp_path: Path, database_url: str, db: asyncpg.Connection
) -> None:
    # As when another runner recorded its own data migration under that name.
    mdir = three_with_a_hole(tmp_path)
    entries = folder_entries(scan_folder(mdir).entries)
    assert prisma(database_url, mdir, "deploy").returncode == 1
    await db.execute(
        f"INSERT INTO {MIGRATIONS_TABLE} (id, checksum, finished_at, migration_name, started_at, applied_steps_count) "
        "VALUES ('external-1', 'x', now(), '20240102000000_no_sql', now(), 1)"
    )
    names_with_rows = {"20240101000000_one", "20240102000000_no_sql"}

    status = prisma(database_url, mdir, "status")
    assert status.returncode == 1 and P3015_MESSAGE in status.stderr
    assert status_stop(entries, names_with_rows).name == "20240102000000_no_sql"

    deploy = prisma(database_url, mdir, "deploy")
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert deploy_stop(entries, names_with_rows) is None
    assert await ledger_names(db) == ["20240101000000_one", "20240102000000_no_sql", "20240103000000_three"]


async def test_migration_sql_that_is_a_directory_and_resolve_of_such_a_directory(tmp_path: Path, database_url: str) -> None:
    mdir = tmp_path / "migrations"
    mk(mdir, "20240101000000_one")
    (mdir / "20240102000000_odd" / "migration.sql").mkdir(parents=True)
    entries = folder_entries(scan_folder(mdir).entries)
    assert entries[1].reason == "not_a_file" and entries[1].prisma_stops_here

    deploy = prisma(database_url, mdir, "deploy")
    assert deploy.returncode == 1 and P3015_MESSAGE in deploy.stderr
    assert deploy_stop(entries, set()) == entries[1]

    resolve = prisma(database_url, mdir, "resolve", "--applied", "20240102000000_odd")
    expected = resolve_applied_error(entries, "20240102000000_odd")
    assert resolve.returncode == 1 and "P3017" in resolve.stderr
    assert expected == P3017_TEMPLATE.format(name="20240102000000_odd") and expected in resolve.stderr
    assert resolve_applied_error(entries, "20240101000000_one") is None


async def test_formbricks_history_status_reads_it_and_deploy_stops_at_the_first_directory_without_sql(
    tmp_path: Path, database_url: str, db: asyncpg.Connection
) -> None:
    if not FORMBRICKS.is_dir():
        pytest.fail(f"the corpus is missing: {FORMBRICKS}")
    mdir = tmp_path / "migrations"
    shutil.copytree(FORMBRICKS, mdir)
    entries = folder_entries(scan_folder(mdir).entries)
    without_sql = [e.name for e in entries if e.sql is None]
    assert len(entries) == 192 and len(without_sql) == 25
    assert all(e.reason == "missing" for e in entries if e.sql is None)

    status = prisma(database_url, mdir, "status")
    assert status.returncode == 1 and found_count(status) == 192
    assert pending_listed(status) == [e.name for e in entries]

    stop = deploy_stop(entries, set())
    assert stop is not None and stop.name == without_sql[0] == "20241209104738_xm_user_identification"
    before_stop = [e.name for e in entries[: entries.index(stop)]]

    deploy = prisma(database_url, mdir, "deploy")
    has_pgvector = await db.fetchval("SELECT count(*) > 0 FROM pg_available_extensions WHERE name = 'vector'")
    if not has_pgvector:
        # Plain PostgreSQL has no pgvector: Prisma stops at that migration first (corpus README).
        # A DBA without pgvector marks it applied and carries on; Prisma then reaches the hole.
        assert deploy.returncode == 1 and "vector" in deploy.stdout + deploy.stderr
        assert await ledger_names(db) == before_stop[: before_stop.index(VECTOR_MIGRATION)]
        resolved = prisma(database_url, mdir, "resolve", "--applied", VECTOR_MIGRATION)
        assert resolved.returncode == 0, resolved.stdout + resolved.stderr
        deploy = prisma(database_url, mdir, "deploy")

    assert deploy.returncode == 1 and "P3015" in deploy.stderr and P3015_MESSAGE in deploy.stderr
    assert sorted(await ledger_names(db)) == sorted(before_stop)
    applied = set(before_stop)
    assert [e.name for e in unreadable_pending(entries, applied)] == without_sql

    after = prisma(database_url, mdir, "status")
    assert after.returncode == 1 and pending_listed(after) == [e.name for e in entries if e.name not in applied]


@pytest.mark.parametrize("kind", ["missing", "a_file"])
async def test_missing_folder_reads_as_empty(tmp_path: Path, database_url: str, db: asyncpg.Connection, kind: str) -> None:
    mdir = tmp_path / "migrations"
    if kind == "a_file":
        mdir.write_text("not a folder")
    listing = scan_folder(mdir)
    assert listing.entries == [] and listing.state == ("missing" if kind == "missing" else "not_a_directory")
    assert str(mdir) in listing.problem()

    status = prisma(database_url, mdir, "status")
    assert status.returncode == 1 and found_count(status) == 0 and NOT_MANAGED_MESSAGE in status.stderr
    assert status_not_managed(folder_entries(listing.entries), table_exists=await table_exists(db))

    deploy = prisma(database_url, mdir, "deploy")
    assert deploy.returncode == 0 and "No pending migrations to apply." in deploy.stdout
    assert await table_exists(db) and await ledger_names(db) == []


async def test_empty_folder_on_an_empty_database(tmp_path: Path, database_url: str, db: asyncpg.Connection) -> None:
    mdir = tmp_path / "migrations"
    mdir.mkdir()
    entries = folder_entries(scan_folder(mdir).entries)

    status = prisma(database_url, mdir, "status")
    assert status.returncode == 1 and NOT_MANAGED_MESSAGE in status.stderr
    assert status_not_managed(entries, table_exists=False)

    deploy = prisma(database_url, mdir, "deploy")
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert await table_exists(db) and await ledger_names(db) == []  # an empty ledger, created

    up_to_date = prisma(database_url, mdir, "status")
    assert up_to_date.returncode == 0 and "Database schema is up to date!" in up_to_date.stdout
    assert not status_not_managed(entries, table_exists=True)


async def test_empty_folder_on_a_database_with_tables(tmp_path: Path, database_url: str, db: asyncpg.Connection) -> None:
    mdir = tmp_path / "migrations"
    mdir.mkdir()
    await db.execute("CREATE TABLE customers (id int)")
    assert NOT_MANAGED_MESSAGE in prisma(database_url, mdir, "status").stderr
    deploy = prisma(database_url, mdir, "deploy")
    assert deploy.returncode == 1 and "P3005" in deploy.stderr  # even with nothing to apply
    assert not await table_exists(db)


async def test_stray_entries(tmp_path: Path, database_url: str) -> None:
    mdir = tmp_path / "migrations"
    mk(mdir, "20240101000000_one")
    (mdir / "README.md").write_text("notes")
    (mdir / "x.sql").write_text("SELECT 1;")
    (mdir / "20240101000001_a_file").write_text("SELECT 1;")
    (mdir / "20240101000002_link").symlink_to(mdir / "20240101000000_one", target_is_directory=True)
    mk(mdir, ".hidden")  # counts: it is a directory
    mk(mdir / "20240101000003_nested", "inner")  # counts, with no migration.sql of its own
    (mdir / "migration_lock.toml").mkdir()  # a directory: a migration, and no lock check
    listing = scan_folder(mdir)
    entries = folder_entries(listing.entries)
    assert listing.lock_file is None and lock_file_error(listing.lock_file) is None

    status = prisma(database_url, mdir, "status")
    assert status.returncode == 1 and found_count(status) == len(entries) == 4
    assert pending_listed(status) == [e.name for e in entries]
    assert [e.name for e in entries] == [".hidden", "20240101000000_one", "20240101000003_nested", "migration_lock.toml"]


LOCK_FILES = [
    ('provider = "postgresql"\n', None),
    ('# Please do not edit\r\nprovider = "postgresql"\r\n', None),
    ('provider = "postgresql"', None),
    ('provider = provider = "postgresql"\n', None),
    ('# café in Latin-1: \xe9\nprovider = "postgresql"\n', None),
    ('provider = "mysql"\n', "mysql"),
    ('provider = "cockroachdb"\n', "cockroachdb"),
    ("", PROVIDER_NOT_FOUND),
    ('  provider = "postgresql"\n', PROVIDER_NOT_FOUND),
    ('# x\x0bprovider = "postgresql"\n', PROVIDER_NOT_FOUND),
    ('provider="postgresql"\n', 'provider="postgresql'),
    ("provider = 'postgresql'\n", "'postgresql'"),
    ('provider = "postgresql" # comment\n', 'postgresql" # comment'),
    ('provider = "postgresql"\r', 'postgresql"\r'),
    ('provider = "postgresql\xff"\n', "postgresql\ufffd"),
]


@pytest.mark.parametrize(("content", "found"), LOCK_FILES, ids=[repr(c)[:40] for c, _ in LOCK_FILES])
async def test_lock_file_as_prisma_reads_it(tmp_path: Path, database_url: str, content: str, found: str | None) -> None:
    mdir = tmp_path / "migrations"
    mk(mdir, "20240101000000_one")
    (mdir / "migration_lock.toml").write_bytes(content.encode("latin-1") if "\xe9" in content or "\xff" in content else content.encode())
    ours = lock_file_error(scan_folder(mdir).lock_file)
    status = prisma(database_url, mdir, "status")
    if found is None:
        assert ours is None
        assert status.returncode == 1 and pending_listed(status) == ["20240101000000_one"], status.stderr
    else:
        assert ours == P3019_TEMPLATE.format(provider="postgresql", found=found)
        assert status.returncode == 1 and "P3019" in status.stderr
        # (the oracle helper reads output as text, which turns a "\r" into "\n")
        assert ours.replace("\r", "\n") in status.stderr
