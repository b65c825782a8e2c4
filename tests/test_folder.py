"""Reading a migrations folder like the Prisma CLI: which entries count, their order, their bytes, bad input."""

import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from domain.prisma.checksum import sha256_hex
from domain.prisma.folder import (
    LocalMigration,
    MigrationFolderError,
    prisma_order_key,
    read_migrations_dir,
)


def make(root: Path, name: str, sql: bytes | str = "SELECT 1;\n", **extra: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "migration.sql").write_bytes(sql.encode() if isinstance(sql, str) else sql)
    for fname, text in extra.items():
        (d / f"{fname}.sql").write_text(text)
    return d


def test_prisma_order_observed_in_s7d(tmp_path: Path) -> None:
    # The order the real Prisma CLI applied these in (REPORT.md §4.4), not byte order.
    expected = [
        "2024010300000_short",
        "20240103000000__x",
        "20240103000000_a",
        "20240103000000_b",
        "20240103000000_B",
        "20240103000000_Z",
        "20240103000000-dash",
        "abc",
    ]
    shuffled = expected[:]
    random.Random(7).shuffle(shuffled)
    for name in shuffled:
        make(tmp_path, name)
    assert [m.name for m in read_migrations_dir(tmp_path)] == expected
    assert sorted(expected) != expected  # byte order would differ


@pytest.mark.oracle
def test_order_key_agrees_with_node_localecompare() -> None:
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    rng = random.Random(3)
    alphabet = [chr(c) for c in range(32, 127)] + ["é", "É", "e\u0301", "ü"]
    names = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(2000)})
    script = "const a=JSON.parse(require('fs').readFileSync(0,'utf8'));a.sort((x,y)=>x.localeCompare(y));console.log(JSON.stringify(a))"
    out = subprocess.run(["node", "-e", script], input=json.dumps(names), capture_output=True, text=True, check=True)
    node_order = json.loads(out.stdout)
    assert sorted(names, key=prisma_order_key) == node_order


def test_only_directories_count_and_optional_files_are_read(tmp_path: Path) -> None:
    make(tmp_path, "20240101000000_init", "CREATE TABLE t (id int);\n", down="DROP TABLE t;\n", verify="SELECT true;\n")
    make(tmp_path, "20240102000000_two")
    (tmp_path / "README.md").write_text("notes")
    (tmp_path / "stray.sql").write_text("SELECT 1;")
    (tmp_path / "migration_lock.toml").write_text('provider = "postgresql"\n')
    os.symlink(tmp_path / "20240102000000_two", tmp_path / "20240103000000_link")  # node: not a directory
    migs = read_migrations_dir(tmp_path)
    assert [m.name for m in migs] == ["20240101000000_init", "20240102000000_two"]
    assert migs[0].down_sql == "DROP TABLE t;\n" and migs[0].verify_sql == "SELECT true;\n"
    assert migs[1].down_sql is None and migs[1].verify_sql is None


def test_bytes_are_kept_exactly(tmp_path: Path) -> None:
    raw = b"\xef\xbb\xbfCREATE TABLE \"caf\xc3\xa9\" (id int);\r\nSELECT 1;"
    make(tmp_path, "20240101000000_bom", raw)
    (m,) = read_migrations_dir(tmp_path)
    assert m.sql.startswith("\ufeff") and "\r\n" in m.sql
    assert m.raw == raw and m.sql.encode() == raw
    assert m.checksum == sha256_hex(raw)
    assert "raw" not in m.model_dump()


def test_local_migration_computes_its_checksum() -> None:
    m = LocalMigration(name="x", sql="SELECT 1;\n")
    assert m.checksum == sha256_hex(b"SELECT 1;\n")


def test_empty_folder_is_no_migrations(tmp_path: Path) -> None:
    assert read_migrations_dir(tmp_path) == []


@pytest.mark.parametrize(
    "setup, code, fragment",
    [
        (lambda p: p / "nope", "not_found", "does not exist"),
        (lambda p: (p / "file").write_text("x") and p / "file", "not_a_directory", "is not a directory"),
    ],
)
def test_unusable_directory(tmp_path: Path, setup, code: str, fragment: str) -> None:
    with pytest.raises(MigrationFolderError) as err:
        read_migrations_dir(setup(tmp_path))
    assert err.value.code == code and fragment in str(err.value)


def test_missing_migration_sql_is_p3015_naming_the_folder(tmp_path: Path) -> None:
    make(tmp_path, "20240101000000_init")
    (tmp_path / "20240102000000_empty_dir").mkdir()
    with pytest.raises(MigrationFolderError) as err:
        read_migrations_dir(tmp_path)
    assert err.value.code == "P3015"
    assert "20240102000000_empty_dir" in str(err.value) and "\n" not in str(err.value)


def test_non_utf8_names_the_file(tmp_path: Path) -> None:
    make(tmp_path, "20240101000000_latin1", "INSERT INTO t VALUES ('café');".encode("latin-1"))
    with pytest.raises(MigrationFolderError) as err:
        read_migrations_dir(tmp_path)
    assert err.value.code == "non_utf8"
    assert "20240101000000_latin1/migration.sql" in str(err.value) and "UTF-8" in str(err.value)


@pytest.mark.parametrize(
    "lock, ok",
    [
        ('provider = "postgresql"\n', True),
        ('# comment\nprovider = "postgresql"\n', True),
        ('provider = "mysql"\n', False),
        ('provider = "cockroachdb"\n', False),
        ("# no provider line\n", False),
    ],
)
def test_lock_file_provider(tmp_path: Path, lock: str, ok: bool) -> None:
    make(tmp_path, "20240101000000_init")
    (tmp_path / "migration_lock.toml").write_text(lock)
    if ok:
        assert len(read_migrations_dir(tmp_path)) == 1
        return
    with pytest.raises(MigrationFolderError) as err:
        read_migrations_dir(tmp_path)
    assert err.value.code == "P3019" and "migration_lock.toml" in str(err.value)


def test_unreadable_migration_file(tmp_path: Path) -> None:
    (tmp_path / "20240101000000_init" / "migration.sql").mkdir(parents=True)  # exists, cannot be read
    with pytest.raises(MigrationFolderError) as err:
        read_migrations_dir(tmp_path)
    assert err.value.code == "unreadable" and "20240101000000_init/migration.sql" in str(err.value)


def test_permission_denied_is_reported(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file; covered by test_unreadable_migration_file")
    make(tmp_path, "20240101000000_init")
    (tmp_path / "20240101000000_init" / "migration.sql").chmod(0)
    with pytest.raises(MigrationFolderError) as err:
        read_migrations_dir(tmp_path)
    assert err.value.code == "unreadable" and "permission denied" in str(err.value)


def test_ten_thousand_migrations_sort_fast() -> None:
    names = [f"2024{i:010d}_m{i % 7}" for i in range(10_000)]
    random.Random(1).shuffle(names)
    prisma_order_key.cache_clear()
    t0 = time.perf_counter()
    ordered = sorted(names, key=prisma_order_key)
    assert time.perf_counter() - t0 < 0.5
    assert ordered == sorted(names)  # same-length digit prefixes: both orders agree
