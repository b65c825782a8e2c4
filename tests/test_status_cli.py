"""`python starter.py status` end to end: real PostgreSQL, a real process, its exit code and output."""

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from activities.ledger import MigrationLedger
from domain.prisma.folder import read_migrations_dir
from tests.conftest import PG_TEST_PASSWORD
from domain.prisma.folder_rules import NOT_MANAGED_MESSAGE, P3015_MESSAGE
from tests.oracle import engine_diagnosis, prisma

REPO = Path(__file__).resolve().parent.parent
T = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
INIT, POSTS, TAGS = "20250101000000_init", "20250102000000_posts", "20250103000000_tags"


def run_status(migrations_dir: Path | str, database_url: str | None, *extra: str, via_env: bool = False):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    args = [sys.executable, "starter.py", "status", "--migrations-dir", str(migrations_dir), *extra]
    if database_url and via_env:
        env["DATABASE_URL"] = database_url
    elif database_url:
        args += ["--database-url", database_url]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def as_json(migrations_dir: Path, database_url: str):
    proc = run_status(migrations_dir, database_url, "--json")
    assert proc.stderr == "", proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    root = tmp_path / "prisma" / "migrations"
    root.mkdir(parents=True)
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for name, sql in {
        INIT: 'CREATE TABLE "users" ("id" INT PRIMARY KEY);\n',
        POSTS: 'CREATE TABLE "posts" ("id" INT PRIMARY KEY, "user_id" INT REFERENCES "users");\n',
        TAGS: 'CREATE TABLE "tags" ("id" INT PRIMARY KEY);\n',
    }.items():
        (root / name).mkdir()
        (root / name / "migration.sql").write_text(sql)
    return root


async def apply(db: asyncpg.Connection, mdir: Path, *names: str) -> None:
    """Deploy the named migrations the way Prisma does (script and row), with our ledger."""
    ledger = MigrationLedger(db)
    await ledger.ensure_table()
    local = {m.name: m for m in read_migrations_dir(mdir)}
    for i, name in enumerate(names):
        async with db.transaction():
            await db.execute(local[name].sql)
            await ledger.insert_applied(name, local[name].checksum, T + timedelta(minutes=i), T + timedelta(minutes=i, seconds=1))


def states(doc: dict) -> dict[str, str]:
    return {m["name"]: m["state"] for m in doc["migrations"]}


# -- states and exit codes -----------------------------------------------------------------------


async def test_empty_database_all_pending_exit_1_and_nothing_written(db, database_url, mdir) -> None:
    code, doc = as_json(mdir, database_url)
    assert code == 1
    assert states(doc) == {INIT: "pending", POSTS: "pending", TAGS: "pending"}
    assert doc["summary"] == {"applied": 0, "pending": 3, "failed": 0, "modified": 0, "missing_locally": 0}
    assert doc["problems"] == []
    assert await db.fetchval("SELECT to_regclass('_prisma_migrations')") is None  # read-only: no ledger created


async def test_up_to_date_exit_0(db, database_url, mdir) -> None:
    await apply(db, mdir, INIT, POSTS, TAGS)
    code, doc = as_json(mdir, database_url)
    assert code == 0 and set(states(doc).values()) == {"applied"}
    m = doc["migrations"][0]
    assert set(m) == {"name", "state", "out_of_order", "unreadable", "checksum_local", "checksum_db", "attempts", "findings"}
    assert m["findings"] == []  # applied migrations are history: no safety notes
    assert m["checksum_local"] == m["checksum_db"] and m["attempts"][0]["applied_steps_count"] == 1
    human = run_status(mdir, database_url)
    assert human.returncode == 0 and "up to date" in human.stdout and INIT in human.stdout


async def test_only_pending_exit_1(db, database_url, mdir) -> None:
    await apply(db, mdir, INIT)
    code, doc = as_json(mdir, database_url)
    assert code == 1 and states(doc) == {INIT: "applied", POSTS: "pending", TAGS: "pending"}


async def test_failed_exit_2_even_with_pending(db, database_url, mdir) -> None:
    await apply(db, mdir, INIT)
    ledger = MigrationLedger(db)
    await ledger.insert_failed(POSTS, "f" * 64, T + timedelta(hours=1), "ERROR: boom")
    code, doc = as_json(mdir, database_url)
    assert code == 2 and states(doc) == {INIT: "applied", POSTS: "failed", TAGS: "pending"}
    assert doc["migrations"][1]["attempts"][0]["logs"] == "ERROR: boom"
    human = run_status(mdir, database_url)
    assert human.returncode == 2
    assert f"prisma migrate resolve --rolled-back {POSTS}" in human.stdout  # what to do next


async def test_rolled_back_is_pending_with_history_exit_1(db, database_url, mdir) -> None:
    await apply(db, mdir, INIT, POSTS)
    ledger = MigrationLedger(db)
    await ledger.insert_failed(TAGS, "f" * 64, T + timedelta(hours=1), "ERROR: boom")
    await ledger.mark_rolled_back(TAGS)
    code, doc = as_json(mdir, database_url)
    assert code == 1 and states(doc)[TAGS] == "pending"
    assert doc["migrations"][2]["attempts"][0]["rolled_back_at"] is not None


async def test_modified_exit_2(db, database_url, mdir) -> None:
    await apply(db, mdir, INIT, POSTS, TAGS)
    (mdir / POSTS / "migration.sql").write_text('CREATE TABLE "posts" ("id" BIGINT PRIMARY KEY);\n')
    code, doc = as_json(mdir, database_url)
    assert code == 2 and states(doc)[POSTS] == "modified"
    posts = doc["migrations"][1]
    assert posts["checksum_local"] != posts["checksum_db"]
    # converting line endings is not an edit (Prisma's rule)
    sql = (mdir / INIT / "migration.sql").read_bytes()
    (mdir / INIT / "migration.sql").write_bytes(sql.replace(b"\n", b"\r\n"))
    _, doc = as_json(mdir, database_url)
    assert states(doc)[INIT] == "applied"


async def test_phantom_and_out_of_order_exit_2(db, database_url, mdir) -> None:
    await apply(db, mdir, INIT, TAGS)
    (mdir / TAGS / "migration.sql").unlink()
    (mdir / TAGS).rmdir()
    code, doc = as_json(mdir, database_url)
    assert code == 2
    assert states(doc) == {INIT: "applied", POSTS: "pending", TAGS: "missing_locally"}
    assert [m["out_of_order"] for m in doc["migrations"]] == [False, True, False]
    assert any("phantom" in p for p in doc["problems"])


async def test_tables_without_ledger_need_baseline_exit_2(db, database_url, mdir) -> None:
    await db.execute('CREATE TABLE "users" ("id" INT PRIMARY KEY)')
    code, doc = as_json(mdir, database_url)
    assert code == 2 and doc["needs_baseline"] is True
    assert f"prisma migrate resolve --applied {INIT}" in doc["problems"][0]
    human = run_status(mdir, database_url)
    assert human.returncode == 2 and "Baseline" in human.stdout and "P3005" in human.stdout
    assert await db.fetchval("SELECT to_regclass('_prisma_migrations')") is None


@pytest.mark.oracle
@pytest.mark.parametrize("folder", ["empty", "missing"])
async def test_no_migrations_and_no_ledger_is_not_managed_as_prisma_says(database_url, tmp_path, folder) -> None:
    mdir = tmp_path / "migrations"
    if folder == "empty":
        mdir.mkdir()
    code, doc = as_json(mdir, database_url)
    theirs = prisma(database_url, mdir, "status")
    assert code == theirs.returncode == 1 and doc["migrations"] == [] and doc["not_managed"]
    assert NOT_MANAGED_MESSAGE in theirs.stderr
    assert (doc["folder_problem"] is None) == (folder == "empty")
    text = run_status(mdir, database_url)
    assert NOT_MANAGED_MESSAGE in text.stdout and text.returncode == 1
    if folder == "missing":
        assert f"Warning: migrations directory {mdir} does not exist; Prisma reads it as an empty folder" in text.stdout


async def test_empty_folder_with_a_ledger_is_up_to_date(db, database_url, tmp_path) -> None:
    await MigrationLedger(db).ensure_table()
    code, doc = as_json(tmp_path, database_url)
    assert code == 0 and doc["migrations"] == [] and not doc["not_managed"]


async def test_database_url_from_environment(db, database_url, mdir) -> None:
    proc = run_status(mdir, database_url, "--json", via_env=True)
    assert proc.returncode == 1 and json.loads(proc.stdout)["summary"]["pending"] == 3


def test_help_documents_exit_codes() -> None:
    out = subprocess.run([sys.executable, "starter.py", "status", "--help"], cwd=REPO, capture_output=True, text=True)
    text = " ".join(out.stdout.split())
    assert out.returncode == 0
    for fragment in ("0 up to date", "1 only pending", "2 needs resolution", "3 error"):
        assert fragment in text


# -- bad input: one line on stderr, exit 3, no traceback, no password -----------------------------


def assert_one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert PG_TEST_PASSWORD not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def with_parts(url: str, **changes) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if "password" in changes:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':')[0]}:{changes['password']}@{host}"
    if "port" in changes:
        netloc = netloc.rsplit(":", 1)[0] + f":{changes['port']}"
    path = "/" + changes["database"] if "database" in changes else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


@pytest.mark.oracle
async def test_directory_without_migration_sql_is_pending_and_named_as_where_deploy_stops(database_url, mdir) -> None:
    half = "20250102120000_half"  # between posts and tags: Prisma applies init and posts, then stops
    (mdir / half).mkdir()
    (mdir / half / "migration.ts").write_text("// applied by another runner\n")
    code, doc = as_json(mdir, database_url)
    theirs = prisma(database_url, mdir, "status")
    assert theirs.returncode == 1 and half in theirs.stdout  # Prisma lists it as pending
    assert [m["name"] for m in doc["migrations"]] == [INIT, POSTS, half, TAGS]
    assert states(doc)[half] == "pending" and doc["migrations"][2]["unreadable"] == "missing"
    assert doc["deploy_stop"] == half and doc["status_stop"] is None
    assert code == 2  # a deploy cannot succeed until someone acts
    assert any(half in p and "P3015" in p and "no migration.sql" in p for p in doc["problems"])
    text = run_status(mdir, database_url).stdout
    assert "pending (no migration.sql)" in text and f"Restore {half}/migration.sql" in text


@pytest.mark.oracle
async def test_directory_without_migration_sql_recorded_by_another_tool(db, database_url, mdir) -> None:
    """Another runner (formbricks' data migrations) recorded the directory: deploys skip it, but
    Prisma's own status fails on it; ours says so and is otherwise up to date."""
    half = "20250104000000_data"
    (mdir / half).mkdir()
    await apply(db, mdir, INIT, POSTS, TAGS)
    await db.execute("INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, started_at, "
                     "applied_steps_count) VALUES ('other-runner', 'x', now(), $1, now(), 1)", half)
    code, doc = as_json(mdir, database_url)
    theirs = prisma(database_url, mdir, "status")
    assert theirs.returncode == 1 and P3015_MESSAGE in theirs.stderr
    assert code == 0 and states(doc)[half] == "applied" and doc["status_stop"] == half and doc["deploy_stop"] is None
    assert any(half in p and "prisma migrate status` fails on it with P3015" in p for p in doc["problems"])


async def test_non_utf8_sql(database_url, mdir) -> None:
    (mdir / POSTS / "migration.sql").write_bytes(b"INSERT INTO t VALUES ('caf\xe9');\n")
    assert_one_line_error(run_status(mdir, database_url), "UTF-8", f"{POSTS}/migration.sql")


async def test_wrong_provider(database_url, mdir) -> None:
    (mdir / "migration_lock.toml").write_text('provider = "mysql"\n')
    assert_one_line_error(run_status(mdir, database_url), "P3019", "mysql")


def test_unreachable_database(mdir, pg_server) -> None:
    from devstack.pgcluster import free_port

    url = with_parts(pg_server.url("app"), port=free_port())
    assert_one_line_error(run_status(mdir, url), "cannot reach")


async def test_wrong_password(database_url, mdir) -> None:
    proc = run_status(mdir, with_parts(database_url, password="not-the-password"))
    assert_one_line_error(proc, "authentication failed", "***")
    assert "not-the-password" not in proc.stderr


async def test_database_does_not_exist(database_url, mdir) -> None:
    assert_one_line_error(run_status(mdir, with_parts(database_url, database="no_such_db")), "no_such_db", "does not exist")


async def test_dsn_without_database_name(database_url, mdir) -> None:
    assert_one_line_error(run_status(mdir, with_parts(database_url, database="")), "names no database")


async def test_ledger_with_unexpected_columns(db, database_url, mdir) -> None:
    await db.execute("CREATE TABLE _prisma_migrations (id serial, version text)")
    assert_one_line_error(run_status(mdir, database_url), "_prisma_migrations", "unexpected: version")


def test_no_database_given(mdir) -> None:
    assert_one_line_error(run_status(mdir, None), "DATABASE_URL")


# -- agreement with the real Prisma CLI ----------------------------------------------------------


def prisma_view(diag: dict, local_names: list[str], rolled_back_only: set[str]) -> dict[str, str]:
    """Our states, as implied by Prisma's engine diagnosis (diagnoseMigrationHistory)."""
    history = diag.get("history") or {}
    unapplied = set(history.get("unappliedMigrationNames", []))
    phantoms = set(history.get("unpersistedMigrationNames", []))
    view = {}
    for name in local_names:
        if name in diag["failedMigrationNames"]:
            view[name] = "failed"
        elif name in unapplied or name in rolled_back_only:  # Prisma counts a rolled-back row as "present"
            view[name] = "pending"
        elif name in diag["editedMigrationNames"]:
            view[name] = "modified"
        else:
            view[name] = "applied"
    view.update({p: "missing_locally" for p in phantoms})
    return view


@pytest.mark.oracle
async def test_status_agrees_with_prisma_across_scenarios(db, database_url, mdir) -> None:
    def check(expected: dict[str, str], rolled_back_only: set[str] = frozenset()) -> dict:
        local = [m.name for m in read_migrations_dir(mdir)]
        theirs = prisma_view(engine_diagnosis(database_url, mdir), local, set(rolled_back_only))
        code, doc = as_json(mdir, database_url)
        assert states(doc) == theirs == expected
        return doc

    # 1. nothing applied
    check({INIT: "pending", POSTS: "pending", TAGS: "pending"})
    # 2. Prisma deploys everything: all applied
    assert prisma(database_url, mdir, "deploy").returncode == 0
    check({INIT: "applied", POSTS: "applied", TAGS: "applied"})
    # 3. an edited file
    original = (mdir / TAGS / "migration.sql").read_text()
    (mdir / TAGS / "migration.sql").write_text(original + "-- edited\n")
    check({INIT: "applied", POSTS: "applied", TAGS: "modified"})
    (mdir / TAGS / "migration.sql").write_text(original)
    # 4. a failed migration, then resolved as rolled back by Prisma: pending again
    fail = "20250104000000_fail"
    (mdir / fail).mkdir()
    (mdir / fail / "migration.sql").write_text("SELECT 1/0;\n")
    assert prisma(database_url, mdir, "deploy").returncode == 1
    check({INIT: "applied", POSTS: "applied", TAGS: "applied", fail: "failed"})
    assert prisma(database_url, mdir, "resolve", "--rolled-back", fail).returncode == 0
    doc = check({INIT: "applied", POSTS: "applied", TAGS: "applied", fail: "pending"}, {fail})
    assert doc["migrations"][3]["attempts"][0]["rolled_back_at"] is not None
    # 5. resolved as applied by Prisma
    assert prisma(database_url, mdir, "resolve", "--applied", fail).returncode == 0
    check({INIT: "applied", POSTS: "applied", TAGS: "applied", fail: "applied"})
    # 6. a phantom: the folder disappears
    (mdir / TAGS / "migration.sql").unlink()
    (mdir / TAGS).rmdir()
    doc = check({INIT: "applied", POSTS: "applied", TAGS: "missing_locally", fail: "applied"})
    assert doc["summary"]["missing_locally"] == 1


async def test_prisma_schema_parameter_selects_the_schema(db, database_url, mdir) -> None:
    await db.execute('CREATE TABLE public."unrelated" ("id" INT)')
    # the schema does not exist yet: Prisma would create it on deploy; nothing is there, all pending
    code, doc = as_json(mdir, database_url + "?schema=app")
    assert code == 1 and doc["needs_baseline"] is False and doc["summary"]["pending"] == 3
    await db.execute("CREATE SCHEMA app; SET search_path = app")
    await apply(db, mdir, INIT)
    code, doc = as_json(mdir, database_url + "?schema=app")
    assert code == 1 and states(doc)[INIT] == "applied"
    assert await db.fetchval("SELECT to_regclass('public._prisma_migrations')") is None


async def test_status_shows_safety_findings_for_what_is_still_to_run(database_url: str, tmp_path) -> None:
    """Applied migrations are history; pending ones get PostgreSQL-parser findings in both outputs."""
    import json as _json
    import subprocess as _sp
    import sys as _sys
    from pathlib import Path as _Path

    folder = tmp_path / "migrations"
    (folder / "20240101000000_init").mkdir(parents=True)
    (folder / "20240101000000_init" / "migration.sql").write_text('CREATE TABLE "t" ("id" INT, "old" TEXT);\n')
    (folder / "20240102000000_drop").mkdir()
    (folder / "20240102000000_drop" / "migration.sql").write_text('ALTER TABLE "t" DROP COLUMN "old";\n')
    repo = _Path(__file__).resolve().parent.parent
    run = lambda *a: _sp.run([_sys.executable, str(repo / "starter.py"), "status", "--migrations-dir", str(folder), *a],  # noqa: E731
                             env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    as_json = _json.loads(run("--json").stdout)
    by_name = {m["name"]: m for m in as_json["migrations"]}
    assert [f["code"] for f in by_name["20240102000000_drop"]["findings"]] == ["drop-column"]
    human = run().stdout
    assert "Safety notes" in human and "20240102000000_drop line 1: [error] drop-column" in human
