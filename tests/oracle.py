"""The real Prisma 6.19.3 CLI (offline oracle, ../shared/tools/prisma-oracle) as a test helper.

Located beside the repo (`../shared/tools/prisma-oracle/prisma.sh`) or at $PRISMA_ORACLE (the
folder or the script). Tests that use it are marked `oracle` and skip when it is not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def oracle_script() -> Path | None:
    configured = os.environ.get("PRISMA_ORACLE")
    candidates = [Path(configured)] if configured else []
    candidates.append(REPO.parent / "shared" / "tools" / "prisma-oracle")
    for c in candidates:
        script = c / "prisma.sh" if c.is_dir() else c
        if script.is_file():
            return script
    return None


def _installed(script: Path) -> bool:
    if not shutil.which("node"):
        return False
    home = os.environ.get("ORACLE_HOME")
    places = [Path(home)] if home else []
    places += [script.parent / "p6", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prisma-oracle"]
    return any((p / "node_modules" / "prisma").is_dir() for p in places)


def require_oracle() -> Path:
    script = oracle_script()
    if script is None or not _installed(script):
        pytest.skip("the Prisma oracle is not installed (../shared/tools/prisma-oracle/setup.sh)")
    return script


@dataclass
class PrismaResult:
    returncode: int
    stdout: str
    stderr: str


def prisma(database_url: str, migrations_dir: Path, *args: str, debug: bool = False) -> PrismaResult:
    """Run `prisma migrate <args>` through prisma.sh; `debug` adds the engine's status diagnostics."""
    script = require_oracle()
    env = {**os.environ, "DATABASE_URL": database_url, "MIGRATIONS_DIR": str(migrations_dir), "ORACLE_OUTPUT": "native"}
    if debug:
        env["DEBUG"] = "prisma:migrate:status"
    proc = subprocess.run(
        [str(script), *args], env=env, capture_output=True, text=True, timeout=120, cwd=migrations_dir.parent
    )
    return PrismaResult(proc.returncode, proc.stdout, proc.stderr)


def engine_diagnosis(database_url: str, migrations_dir: Path) -> dict:
    """`prisma migrate status`'s engine answer (diagnoseMigrationHistory): history, failedMigrationNames,
    editedMigrationNames, hasMigrationsTable; plus the CLI's exit code under "exit"."""
    result = prisma(database_url, migrations_dir, "status", debug=True)
    # The debug logger prints `prisma:migrate:status {` ... `} +12ms` around a JSON object whose
    # "diagnoseResult" is itself JSON text.
    blocks = re.findall(r"prisma:migrate:status (\{.*?\n\})(?: \+\d+m?s)?\n", result.stderr, re.S)
    for block in blocks:
        outer = json.loads(block)
        if "diagnoseResult" in outer:
            found = json.loads(outer["diagnoseResult"])
            found["exit"] = result.returncode
            return found
    raise AssertionError(f"no diagnoseMigrationHistory output from prisma status:\n{result.stderr[-3000:]}")


@dataclass
class LedgerReading:
    """What the real Prisma CLI makes of a database: `migrate status`'s pending and failed lists,
    and what `migrate deploy` then applies (or its error code)."""

    status_exit: int
    pending: list[str]
    failed: list[str]
    deploy_exit: int
    applied_by_deploy: list[str]
    deploy_error: str | None


def _names_after(header: str, text: str) -> list[str]:
    match = re.search(header + r"[^\n]*\n((?:\d{14}_[^\n]+\n?)+)", text)
    return match.group(1).split() if match else []


def status_then_deploy(database_url: str, migrations_dir: Path) -> LedgerReading:
    """Run `prisma migrate status`, then `prisma migrate deploy` (which changes the database)."""
    status = prisma(database_url, migrations_dir, "status")
    said = status.stdout + status.stderr
    deploy = prisma(database_url, migrations_dir, "deploy")
    error = re.search(r"Error: (P\d{4})", deploy.stdout + deploy.stderr)
    return LedgerReading(
        status_exit=status.returncode,
        pending=_names_after(r"Following migrations? have not yet been applied:", said),
        failed=_names_after(r"Following migrations? have failed:", said),
        deploy_exit=deploy.returncode,
        applied_by_deploy=re.findall(r"└─ (\d{14}_[^/\s]+)/", deploy.stdout),
        deploy_error=error.group(1) if error else None,
    )


def assert_status_and_deploy_agree(database_url: str, migrations_dir: Path) -> LedgerReading:
    """The ledger is one Prisma reads consistently: `status` lists exactly what `deploy` applies,
    a failed migration shown by `status` is what stops `deploy` (P3009), and afterwards `status`
    says up to date when deploy succeeded."""
    reading = status_then_deploy(database_url, migrations_dir)
    if reading.failed:
        assert reading.deploy_error == "P3009" and reading.applied_by_deploy == [], reading
    else:
        assert reading.deploy_exit == 0, reading
        assert reading.applied_by_deploy == reading.pending, reading
        assert (reading.status_exit == 0) == (reading.pending == []), reading
        after = prisma(database_url, migrations_dir, "status")
        assert after.returncode == 0 and "up to date" in after.stdout, after
    return reading
