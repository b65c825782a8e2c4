"""The shipped incident example: its folder, the reproduced production state, and `status` on it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from devstack.incident import (
    INIT,
    LANDING,
    LEADS,
    MIGRATIONS_DIR,
    PHANTOM,
    reproduce_incident,
)
from domain.prisma.folder import read_migrations_dir
from tests.conftest import PG_TEST_PASSWORD
from tests.oracle import engine_diagnosis, prisma

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, database_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    return subprocess.run(
        [sys.executable, *args, "--database-url", database_url], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_example_folder_matches_the_write_up() -> None:
    migs = {m.name: m for m in read_migrations_dir(MIGRATIONS_DIR)}
    assert list(migs) == [INIT, LEADS, LANDING]
    assert PHANTOM not in migs
    assert '"slug" TEXT NOT NULL' in migs[INIT].sql and '"customers_slug_key"' in migs[INIT].sql
    for table in ("leads", "questionnaire_questions", "questionnaire_responses", "lead_page_views"):
        assert f'CREATE TABLE "{table}"' in migs[LEADS].sql
    assert 'CREATE TYPE "QuestionType"' in migs[LEADS].sql and migs[LEADS].down_sql
    assert migs[LANDING].sql.count('ON CONFLICT ("key") DO NOTHING') == 2
    assert migs[LANDING].verify_sql and migs[LANDING].down_sql


async def test_reproduced_state_is_the_incident(db: asyncpg.Connection, database_url: str) -> None:
    proc = run("-m", "devstack.incident", "reproduce", database_url=database_url)
    assert proc.returncode == 0, proc.stderr

    # init really ran, the failed landing migration left nothing behind, the pending one has not run
    keys = await db.fetch('SELECT "key" FROM landing_page_content ORDER BY sort_order')
    assert [r["key"] for r in keys] == ["hero", "features", "cta"]
    assert await db.fetchval("SELECT to_regclass('leads')") is None
    assert await db.fetchval("SELECT to_regclass('customers_slug_key')") is not None

    status = run("starter.py", "status", "--migrations-dir", str(MIGRATIONS_DIR), "--json", database_url=database_url)
    assert status.returncode == 2, status.stderr
    doc = json.loads(status.stdout)
    assert [(m["name"], m["state"], m["out_of_order"]) for m in doc["migrations"]] == [
        (INIT, "applied", False),
        (LEADS, "pending", True),
        (PHANTOM, "missing_locally", False),
        (LANDING, "failed", False),
    ]
    landing = doc["migrations"][3]["attempts"]
    assert len(landing) == 1 and landing[0]["finished_at"] is None and "lock timeout" in landing[0]["logs"]
    assert doc["summary"] == {"applied": 1, "pending": 1, "failed": 1, "modified": 0, "missing_locally": 1}

    human = run("starter.py", "status", "--migrations-dir", str(MIGRATIONS_DIR), database_url=database_url)
    assert human.returncode == 2
    for name in (INIT, LEADS, PHANTOM, LANDING):
        assert name in human.stdout
    assert PG_TEST_PASSWORD not in human.stdout + human.stderr


async def test_reproduce_refuses_a_database_in_use(db: asyncpg.Connection, database_url: str) -> None:
    await db.execute("CREATE TABLE precious (id int)")
    proc = run("-m", "devstack.incident", "reproduce", database_url=database_url)
    assert proc.returncode == 3 and "precious" in proc.stderr and "Traceback" not in proc.stderr
    assert await db.fetchval("SELECT to_regclass('_prisma_migrations')") is None


@pytest.mark.oracle
async def test_prisma_sees_the_incident_too(database_url: str) -> None:
    await reproduce_incident(database_url)
    diag = engine_diagnosis(database_url, MIGRATIONS_DIR)
    assert diag["failedMigrationNames"] == [LANDING]
    assert diag["history"]["unpersistedMigrationNames"] == [PHANTOM]
    assert diag["history"]["unappliedMigrationNames"] == [LEADS]
    assert diag["editedMigrationNames"] == []
    deploy = prisma(database_url, MIGRATIONS_DIR, "deploy")
    assert deploy.returncode == 1 and "P3009" in deploy.stderr and LANDING in deploy.stderr
