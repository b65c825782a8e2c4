"""Reading a migrations folder like the Prisma CLI: which entries count, their order, their bytes, bad input.

(Prisma's rules themselves are checked against the real CLI in tests/test_prisma_folder_rules.py and
tests/test_prisma_order.py; reading speed is bench/folder_order.py.)"""

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from domain.prisma.checksum import sha256_hex
from domain.prisma.folder import (
    LocalMigration,
    MigrationFolderError,
    read_folder,
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
def test_folder_is_read_in_node_localecompare_order(tmp_path: Path) -> None:
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    rng = random.Random(3)
    alphabet = [chr(c) for c in range(32, 127) if chr(c) not in "/."] + ["é", "É", "e\u0301", "ü", "ß", "æ", "ø", "ł", "Ｚ"]
    names = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(500)})
    for name in names:
        make(tmp_path, name)
    script = "const a=JSON.parse(require('fs').readFileSync(0,'utf8'));a.sort((x,y)=>x.localeCompare(y));console.log(JSON.stringify(a))"
    out = subprocess.run(["node", "-e", script], input=json.dumps(sorted(names, key=lambda n: n.encode())),
                         capture_output=True, text=True, check=True, env={**os.environ, "LANG": "C.UTF-8"})
    assert [m.name for m in read_migrations_dir(tmp_path)] == json.loads(out.stdout)


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
    folder = read_folder(tmp_path)
    assert folder.migrations == [] and folder.entries == [] and folder.problem is None


@pytest.mark.parametrize(
    "setup, fragment",
    [
        (lambda p: p / "nope", "does not exist"),
        (lambda p: (p / "file").write_text("x") and p / "file", "is not a directory"),
    ],
)
def test_unusable_directory_reads_as_empty_as_prisma_does(tmp_path: Path, setup, fragment: str) -> None:
    path = setup(tmp_path)
    folder = read_folder(path)
    assert folder.migrations == [] and folder.entries == []
    assert folder.problem == f"migrations directory {path} {fragment}; Prisma reads it as an empty folder"


def test_directory_without_migration_sql_is_a_migration_prisma_cannot_read(tmp_path: Path) -> None:
    make(tmp_path, "20240101000000_init")
    (tmp_path / "20240102000000_empty_dir").mkdir()
    (tmp_path / "20240103000000_odd" / "migration.sql").mkdir(parents=True)  # exists, is not a file
    make(tmp_path, "20240104000000_last")
    folder = read_folder(tmp_path)
    assert folder.names == ["20240101000000_init", "20240102000000_empty_dir", "20240103000000_odd", "20240104000000_last"]
    assert [m.name for m in folder.migrations] == ["20240101000000_init", "20240104000000_last"]
    assert [(e.name, e.reason, e.prisma_stops_here) for e in folder.unreadable] == [
        ("20240102000000_empty_dir", "missing", True), ("20240103000000_odd", "not_a_file", True)]
    assert folder.unreadable[0].explain() == "directory 20240102000000_empty_dir has no migration.sql"


def test_non_utf8_names_the_file(tmp_path: Path) -> None:
    make(tmp_path, "20240101000000_latin1", "INSERT INTO t VALUES ('café');".encode("latin-1"))
    with pytest.raises(MigrationFolderError) as err:
        read_migrations_dir(tmp_path)
    assert err.value.code == "non_utf8"
    assert "20240101000000_latin1/migration.sql" in str(err.value) and "UTF-8" in str(err.value)
    assert "byte 0xe9 at offset 26" in str(err.value)


def test_non_utf8_down_sql_names_the_file(tmp_path: Path) -> None:
    d = make(tmp_path, "20240101000000_init")
    (d / "down.sql").write_bytes(b"DELETE FROM t WHERE n = 'caf\xe9';")
    with pytest.raises(MigrationFolderError) as err:
        read_migrations_dir(tmp_path)
    assert err.value.code == "non_utf8" and "20240101000000_init/down.sql" in str(err.value)


@pytest.mark.parametrize(
    "lock, found",
    [
        ('provider = "postgresql"\n', None),
        ('# comment\nprovider = "postgresql"\n', None),
        ('provider = "mysql"\n', "mysql"),
        ('provider = "cockroachdb"\n', "cockroachdb"),
        ("# no provider line\n", "<PROVIDER NOT FOUND>"),
    ],
)
def test_lock_file_provider(tmp_path: Path, lock: str, found: str | None) -> None:
    make(tmp_path, "20240101000000_init")
    (tmp_path / "migration_lock.toml").write_text(lock)
    if found is None:
        assert len(read_migrations_dir(tmp_path)) == 1
        return
    with pytest.raises(MigrationFolderError) as err:
        read_migrations_dir(tmp_path)
    assert err.value.code == "P3019" and "migration_lock.toml" in str(err.value)
    assert f"`{found}`" in str(err.value) and "\n" not in str(err.value)


def _unreadable_as_another_user(root: Path) -> list[tuple[str, str]]:
    """Root reads any file: read the folder in a child process demoted to the `postgres` OS user
    (the one the test clusters run as), the way a CI runner without root sees it."""
    import pickle
    import pwd

    pw = pwd.getpwnam("postgres")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, read, send the result, leave without pytest's teardown
        status = 1
        try:
            os.close(read_end)
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            found = [(e.name, e.reason) for e in read_folder(root).unreadable]
            os.write(write_end, pickle.dumps(found))
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, "the demoted child could not read the folder"
    return pickle.loads(data)


def test_permission_denied_is_a_directory_prisma_cannot_read() -> None:
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="unreadable-"))  # beside pytest's 0700 folders: others may enter
    try:
        root.chmod(0o755)
        make(root, "20240101000000_init")
        (root / "20240101000000_init").chmod(0o755)
        (root / "20240101000000_init" / "migration.sql").chmod(0)
        found = (_unreadable_as_another_user(root) if os.geteuid() == 0
                 else [(e.name, e.reason) for e in read_folder(root).unreadable])
        assert found == [("20240101000000_init", "unreadable")]
    finally:
        shutil.rmtree(root, ignore_errors=True)
