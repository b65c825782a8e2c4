"""`starter.py lint DIR`: offline analysis of a migrations folder, exit code by severity threshold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_TEST_PASSWORD

ROOT = Path(__file__).resolve().parent.parent
INCIDENT = ROOT / "examples" / "incident" / "prisma" / "migrations"


def _lint(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "starter.py"), "lint", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


def _folder(tmp_path: Path, migrations: dict[str, str]) -> Path:
    root = tmp_path / "migrations"
    root.mkdir()
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for name, sql in migrations.items():
        (root / name).mkdir()
        (root / name / "migration.sql").write_text(sql)
    return root


def test_incident_folder_is_clean_at_default_threshold() -> None:
    result = _lint(str(INCIDENT))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "20241226000000_add_leads_questionnaire_models" in result.stdout
    assert "creates-only" in result.stdout and "no finding at or above error" in result.stdout


def test_threshold_decides_the_exit_code(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"20250101000000_a": "CREATE TABLE t (id int);", "20250102000000_b": "CREATE INDEX i ON users (email);"})
    assert _lint(str(folder)).returncode == 0  # a warning only
    warn = _lint(str(folder), "--fail-on", "warning")
    assert warn.returncode == 1 and "index-not-concurrent" in warn.stdout


def test_destructive_migration_fails_and_json_is_machine_readable(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"20250101000000_drop": "-- bye\nALTER TABLE users DROP COLUMN email;\nDROP TABLE old;"})
    result = _lint(str(folder), "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["failed"] is True and data["fail_on"] == "error"
    (m,) = data["migrations"]
    assert m["risk"] == "high"
    assert [(f["code"], f["line"]) for f in m["findings"]] == [("drop-column", 2), ("drop-table", 3)]


def test_parse_error_is_a_finding_with_its_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"20250101000000_ok": "CREATE TABLE t (id int);", "20250102000000_bad": "SELECT 1;\n\nCREATE TABLE (x int);"})
    result = _lint(str(folder), "--json")
    assert result.returncode == 1
    bad = {m["name"]: m for m in json.loads(result.stdout)["migrations"]}["20250102000000_bad"]
    assert bad["parses"] is False
    assert [(f["code"], f["line"]) for f in bad["findings"]] == [("parse-error", 3)]
    human = _lint(str(folder))
    assert "does not parse" in human.stdout and "Traceback" not in human.stdout + human.stderr


@pytest.mark.parametrize("path", ["does-not-exist", "pyproject.toml"])
def test_unreadable_folder_is_one_line_and_exit_3(tmp_path: Path, path: str) -> None:
    target = ROOT / path if path == "pyproject.toml" else tmp_path / path
    result = _lint(str(target))
    assert result.returncode == 3
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


# -- what is linted: --base (a pull request), --database-url / --env (not yet applied) ----------

CORPUS = ROOT.parent / "shared" / "corpus"
HISTORIES = ["documenso", "formbricks", "rallly", "hoppscotch"]
CLEAN = 'CREATE TABLE "PullRequestThing" (\n    "id" TEXT NOT NULL,\n    CONSTRAINT "PullRequestThing_pkey" PRIMARY KEY ("id")\n);\n'
DESTRUCTIVE = 'DROP TABLE "PullRequestThing";\n'
GIT_ENV = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "T",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env={"PATH": "/usr/bin:/bin", **GIT_ENV}, check=True, capture_output=True)


def _repo(tmp_path: Path, history: str) -> tuple[Path, Path]:
    import shutil

    source = CORPUS / history / "migrations"
    if not source.is_dir():
        pytest.fail(f"the corpus is missing: {source}")
    repo = tmp_path / "app"
    mdir = repo / "prisma" / "migrations"
    shutil.copytree(source, mdir)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "history")
    _git(repo, "checkout", "-q", "-b", "feature")
    return repo, mdir


def _add(repo: Path, mdir: Path, name: str, sql: str) -> None:
    (mdir / name).mkdir()
    (mdir / name / "migration.sql").write_text(sql)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", name)


@pytest.mark.parametrize("history", HISTORIES)
def test_base_lints_only_what_the_pull_request_adds(tmp_path: Path, history: str) -> None:
    repo, mdir = _repo(tmp_path, history)
    total = sum(1 for p in mdir.iterdir() if p.is_dir())
    _add(repo, mdir, "29990101000000_add_pull_request_thing", CLEAN)

    result = _lint(str(mdir), "--base", "main", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert [m["name"] for m in data["migrations"]] == ["29990101000000_add_pull_request_thing"]
    assert data["scope"] == {"base": "main", "database": None, "linted": 1, "total": total + 1, "removed": []}
    human = _lint(str(mdir), "--base", "main")
    assert human.returncode == 0 and f"linted 1 of {total + 1} migration(s): those changed since main" in human.stdout

    _add(repo, mdir, "29990102000000_drop_it", DESTRUCTIVE)  # the change itself has an error now
    result = _lint(str(mdir), "--base", "main", "--json")
    assert result.returncode == 1
    found = {m["name"]: [f["code"] for f in m["findings"]] for m in json.loads(result.stdout)["migrations"]}
    assert found == {"29990101000000_add_pull_request_thing": ["creates-only"], "29990102000000_drop_it": ["drop-table"]}


def test_whole_real_histories_fail_without_base() -> None:
    """Why --base exists: every real history has old destructive migrations."""
    for history in ("documenso", "rallly", "hoppscotch"):
        assert _lint(str(CORPUS / history / "migrations")).returncode == 1


def test_base_errors_are_one_line(tmp_path: Path) -> None:
    repo, mdir = _repo(tmp_path, "hoppscotch")
    result = _lint(str(mdir), "--base", "origin/nope")
    assert result.returncode == 3 and "origin/nope" in result.stderr and len(result.stderr.strip().splitlines()) == 1


async def test_database_url_and_env_lint_only_what_is_not_applied(tmp_path: Path, db, database_url: str) -> None:
    from activities.ledger import MigrationLedger
    from domain.prisma.folder import read_migrations_dir

    folder = _folder(tmp_path, {"20250101000000_old_drop": "CREATE TABLE t (id int); DROP TABLE t;",
                                "20250102000000_new": "CREATE TABLE u (id int);"})
    ledger = MigrationLedger(db)
    await ledger.ensure_table()
    old = read_migrations_dir(folder)[0]
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    await ledger.insert_applied(old.name, old.checksum, now, now)
    assert _lint(str(folder)).returncode == 1  # the applied one has an error
    result = _lint(str(folder), "--database-url", database_url, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [m["name"] for m in data["migrations"]] == ["20250102000000_new"]
    assert "***" in data["scope"]["database"] and PG_TEST_PASSWORD not in result.stdout

    env = {"MIGRATOR_ENVIRONMENTS": json.dumps({"ci": {"database_url": database_url}})}
    proc = subprocess.run([sys.executable, str(ROOT / "starter.py"), "lint", str(folder), "--env", "ci", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", **env})
    assert proc.returncode == 0, proc.stderr
    assert [m["name"] for m in json.loads(proc.stdout)["migrations"]] == ["20250102000000_new"]
    unknown = _lint(str(folder), "--env", "nope")
    assert unknown.returncode == 3 and "unknown environment 'nope'" in unknown.stderr


def test_base_flags_a_new_migration_that_sorts_before_the_base_in_prismas_order(tmp_path: Path) -> None:
    repo, mdir = _repo(tmp_path, "hoppscotch")
    last = sorted(p.name for p in mdir.iterdir() if p.is_dir())[-1]
    stamp = last.split("_", 1)[0]
    early = f"{stamp}_a_is_early"
    _add(repo, mdir, early, CLEAN)
    result = _lint(str(mdir), "--base", "main", "--json")
    found = {m["name"]: [f["code"] for f in m["findings"]] for m in json.loads(result.stdout)["migrations"]}
    assert result.returncode == 1 and found[early][0] == "out-of-order", result.stdout
    later = f"{stamp}_Q_is_later"  # after "_published…" for Prisma, before it in byte order
    assert later.encode() < last.encode()
    _add(repo, mdir, later, CLEAN)
    found = {m["name"]: [f["code"] for f in m["findings"]]
             for m in json.loads(_lint(str(mdir), "--base", "main", "--json").stdout)["migrations"]}
    assert "out-of-order" not in found[later]


def test_a_file_postgresql_refuses_as_one_script_fails_lint_with_the_reason(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {
        "20250101000000_prices": "ALTER TABLE products ALTER COLUMN price TYPE numeric USING price / 100.0;\n"
                                 "CREATE UNIQUE INDEX CONCURRENTLY products_sku_key ON products (sku);\n",
        "20250102000000_enum": "ALTER TYPE \"Role\" ADD VALUE 'owner';\nUPDATE users SET role = 'owner' WHERE id = 1;\n",
    })
    result = _lint(str(folder), "--json")
    assert result.returncode == 1
    by = {m["name"]: m for m in json.loads(result.stdout)["migrations"]}
    prices = [f for f in by["20250101000000_prices"]["findings"] if f["code"] == "fails-in-prisma"]
    assert [(f["line"], f["severity"]) for f in prices] == [(2, "error")]
    assert "cannot run inside a transaction block" in prices[0]["message"]
    enum = [f for f in by["20250102000000_enum"]["findings"] if f["code"] == "fails-in-prisma"]
    assert [f["line"] for f in enum] == [2] and "unsafe use of new value" in enum[0]["message"]
    assert by["20250101000000_prices"]["idempotent"] is False


def test_lint_says_which_lock_each_statement_takes(tmp_path: Path) -> None:
    """ADD COLUMN is low risk (no rewrite), yet it takes ACCESS EXCLUSIVE: reads and writes of the
    table queue behind it while it waits. Lint says so per statement, in the table and in JSON."""
    folder = _folder(tmp_path, {
        "20250101000000_a": '-- a column\nALTER TABLE "users" ADD COLUMN "nick" TEXT;\n',
        "20250101000001_i": 'CREATE INDEX CONCURRENTLY "users_nick_idx" ON "users"("nick");\n',
        "20250102000000_b": "DO $$ BEGIN PERFORM 1; END $$;\nINSERT INTO \"audit\" SELECT * FROM \"events\";\n"})
    data = json.loads(_lint(str(folder), "--json").stdout)
    a, i, b = data["migrations"]
    assert a["risk"] == "low"
    assert a["locks"] == [
        {"line": 2, "statement": 'ALTER TABLE "users" ADD COLUMN "nick" TEXT',
         "locks": ["takes ACCESS EXCLUSIVE on public.users (blocks reads and writes while it waits and runs)"]}]
    assert i["locks"] == [
        {"line": 1, "statement": 'CREATE INDEX CONCURRENTLY "users_nick_idx" ON "users"("nick…',
         "locks": ["takes SHARE UPDATE EXCLUSIVE on public.users (blocks other schema changes and VACUUM, "
                   "not reads or writes)"]}]
    assert [st["locks"] for st in b["locks"]] == [
        ["locks unknown: DO runs code whose locks cannot be read from the SQL"],
        ["takes ROW EXCLUSIVE on public.audit (does not block reads or writes; waits for and blocks schema changes)",
         "takes ACCESS SHARE on public.events (does not block reads or writes; waits for ACCESS EXCLUSIVE locks)"]]
    text = _lint(str(folder)).stdout
    assert "takes ACCESS EXCLUSIVE on public.users (blocks reads and writes while it waits and runs)" in text
