"""`starter.py lint DIR`: offline analysis of a migrations folder, exit code by severity threshold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
