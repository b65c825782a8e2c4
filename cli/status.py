"""`python starter.py status`: a read-only diagnosis of one database against a migrations folder.

Like `prisma migrate status`, but complete: failed migrations are shown even when something is
pending, phantoms (rows with no folder) and edited migrations are reported, and the exit code
says which kind of trouble it is.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from activities.db import DatabaseUnavailable, connect
from activities.ledger import LedgerShapeError, MigrationLedger
from cli.app import app
from domain.dsn import InvalidDsn, check_dsn, redact_dsn, scrub
from domain.models import Finding
from domain.prisma.diagnosis import (
    HistoryDiagnosis,
    MigrationState,
    MigrationStatus,
    diagnose,
)
from domain.prisma.folder import (
    LocalMigration,
    MigrationFolderError,
    MigrationsFolder,
    read_folder,
)
from domain.prisma.folder_rules import NOT_MANAGED_MESSAGE, FolderEntry
from domain.sql.parse import SqlParseError
from domain.sql.rules import analyze_migration, parse_error_finding

EXIT_OK = 0
EXIT_PENDING = 1
EXIT_NEEDS_RESOLUTION = 2
EXIT_ERROR = 3


class StatusError(Exception):
    """Bad input or an unusable database: one line for stderr, exit 3."""


async def read_status(migrations_dir: Path, dsn: str) -> tuple[MigrationsFolder, HistoryDiagnosis]:
    """Read the folder, then the ledger, and compare them. Never writes: the session is read-only."""
    try:
        local = read_folder(migrations_dir)
        check_dsn(dsn)
    except (MigrationFolderError, InvalidDsn) as exc:
        raise StatusError(str(exc)) from None
    try:
        conn = await connect(dsn)
    except DatabaseUnavailable as exc:
        raise StatusError(str(exc)) from None
    try:
        await conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        snapshot = await MigrationLedger(conn).read()
    except LedgerShapeError as exc:
        raise StatusError(f"{exc} ({redact_dsn(dsn)}); it was not created by Prisma, so it cannot be read") from None
    except (asyncpg.PostgresError, OSError) as exc:
        detail = scrub(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__, dsn)
        raise StatusError(f"cannot read the migration ledger of {redact_dsn(dsn)}: {detail}") from None
    finally:
        await conn.close()
    return local, diagnose(local.migrations, snapshot, local.unreadable)


def exit_code(diagnosis: HistoryDiagnosis) -> int:
    if diagnosis.needs_resolution:
        return EXIT_NEEDS_RESOLUTION
    if diagnosis.has_pending or diagnosis.not_managed:  # "not managed": Prisma's status exits 1 too
        return EXIT_PENDING
    return EXIT_OK


def safety_findings(local: list[LocalMigration], diagnosis: HistoryDiagnosis) -> dict[str, list[Finding]]:
    """SQL analysis (offline, PostgreSQL's parser) of what is still to run: pending and failed migrations."""
    todo = set(diagnosis.names(MigrationState.pending)) | set(diagnosis.names(MigrationState.failed))
    found: dict[str, list[Finding]] = {}
    for m in local:
        if m.name not in todo:
            continue
        try:
            found[m.name] = analyze_migration(m.name, m.sql).findings
        except SqlParseError as exc:
            found[m.name] = [parse_error_finding(exc)]
    return found


def to_json(diagnosis: HistoryDiagnosis, findings: dict[str, list[Finding]] | None = None,
            folder_problem: str | None = None) -> dict:
    findings = findings or {}
    return {
        "migrations": [
            {
                "name": m.name,
                "state": m.state.value,
                "out_of_order": m.out_of_order,
                "unreadable": m.unreadable,
                "checksum_local": m.checksum_local,
                "checksum_db": m.checksum_db,
                "attempts": [a.model_dump(mode="json") for a in m.attempts],
                "findings": [f.model_dump(mode="json") for f in findings.get(m.name, [])],
            }
            for m in diagnosis.migrations
        ],
        "summary": diagnosis.summary,
        "problems": diagnosis.problems,
        "needs_baseline": diagnosis.needs_baseline,
        "blocking_tables": diagnosis.blocking_tables,
        "deploy_stop": diagnosis.deploy_stop,
        "status_stop": diagnosis.status_stop,
        "not_managed": diagnosis.not_managed,
        "folder_problem": folder_problem,
    }


_STATE_STYLE = {
    MigrationState.applied: "green",
    MigrationState.pending: "yellow",
    MigrationState.failed: "bold red",
    MigrationState.modified: "magenta",
    MigrationState.missing_locally: "bold magenta",
}


def _attempts_text(m: MigrationStatus) -> str:
    if not m.attempts:
        return "-"
    kinds = Counter(
        "failed" if a.is_failed else "rolled back" if a.is_rolled_back else "applied" for a in m.attempts
    )
    return ", ".join(f"{n} {kind}" for kind, n in kinds.items())


def _next_steps(diagnosis: HistoryDiagnosis) -> list[str]:
    steps: list[str] = []
    first_local = next((m.name for m in diagnosis.migrations if m.state != MigrationState.missing_locally), None)
    if diagnosis.needs_baseline:
        steps.append(
            "Baseline the database: record each migration its schema already contains as applied, e.g. "
            f"`prisma migrate resolve --applied {first_local or '<first migration>'}`, then deploy the rest."
        )
    for name in diagnosis.names(MigrationState.failed):
        steps.append(
            f"Resolve {name}: `prisma migrate resolve --rolled-back {name}` once its partial effects are undone "
            f"(deploy then re-runs it), or `prisma migrate resolve --applied {name}` if its changes are in place; "
            "the deploy workflow (`python starter.py deploy`) can decide and do this with approval."
        )
    if diagnosis.names(MigrationState.missing_locally):
        steps.append("Find the phantom migrations' SQL and commit their folders, or confirm they changed nothing.")
    if diagnosis.names(MigrationState.modified):
        steps.append("Restore the edited migration files to the versions that were applied.")
    if diagnosis.deploy_stop:
        steps.append(f"Restore {diagnosis.deploy_stop}/migration.sql or delete that directory before deploying "
                     "(Prisma stops there with P3015).")
    if diagnosis.has_pending and not diagnosis.needs_resolution:
        steps.append("Apply the pending migrations: `python starter.py deploy` (or `prisma migrate deploy`).")
    elif diagnosis.has_pending:
        steps.append("Then apply the pending migrations.")
    return steps


def _unreadable_short(m: MigrationStatus) -> str:
    """"no migration.sql", "migration.sql is not a file", ... for the table's State column."""
    return FolderEntry(m.name, None, m.unreadable).explain().split(f"{m.name} ", 1)[1].removeprefix("has ")


def render(
    diagnosis: HistoryDiagnosis,
    migrations_dir: Path,
    dsn: str,
    console: Console,
    findings: dict[str, list[Finding]] | None = None,
    folder_problem: str | None = None,
) -> None:
    console.print(f"Database {redact_dsn(dsn)}, migrations in {migrations_dir}", markup=False, soft_wrap=True)
    if folder_problem:
        console.print(f"Warning: {folder_problem}.", markup=False, soft_wrap=True)
    if diagnosis.not_managed:
        console.print(f"{NOT_MANAGED_MESSAGE} (no migrations and no _prisma_migrations table; a deploy would create "
                      "an empty one)", markup=False, soft_wrap=True)
    elif not diagnosis.table_exists:
        console.print(f"No _prisma_migrations table yet{' (the database has other tables)' if diagnosis.needs_baseline else ''}.")
    table = Table(show_lines=False)
    table.add_column("Migration", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Out of order", no_wrap=True)
    table.add_column("Attempts in the ledger")
    for m in diagnosis.migrations:
        style = _STATE_STYLE[m.state]
        state = f"[{style}]{m.state.value}[/]" + (f" ({_unreadable_short(m)})" if m.unreadable else "")
        table.add_row(m.name, state, "yes" if m.out_of_order else "", _attempts_text(m))
    if diagnosis.migrations:
        console.print(table)
    else:
        console.print("No migrations, locally or in the database.")
    summary = ", ".join(f"{n} {state}" for state, n in diagnosis.summary.items() if n)
    console.print(f"Summary: {summary or 'nothing to report'}")
    if diagnosis.problems:
        console.print("\nProblems:")
        for p in diagnosis.problems:
            console.print(f"  - {p}", markup=False, soft_wrap=True)
    notes = [(name, f) for name, fs in (findings or {}).items() for f in fs if f.severity != "info"]
    if notes:
        console.print("\nSafety notes on what is still to run:")
        for name, f in notes:
            where = f" line {f.line}" if f.line else ""
            console.print(f"  - {name}{where}: [{f.severity}] {f.code}: {f.message}", markup=False, soft_wrap=True)
    steps = _next_steps(diagnosis)
    if steps:
        console.print("\nWhat to do next:")
        for s in steps:
            console.print(f"  - {s}", markup=False, soft_wrap=True)
    elif not diagnosis.problems:
        console.print("\nThe database is up to date with the migrations folder.")


@app.command(
    help=(
        "Compare a Prisma migrations folder with a database's _prisma_migrations table (read-only).\n\n"
        "States: applied, pending, failed, modified (applied, file edited since), missing_locally "
        "(in the database, no folder: a phantom); pending migrations older than the last applied one "
        "are flagged out of order.\n\n"
        "Exit codes: 0 up to date; 1 only pending migrations, or no migrations and no ledger (\"not managed by "
        "Prisma Migrate\", as Prisma says); 2 needs resolution (failed, modified, missing_locally, a pending "
        "directory without migration.sql where Prisma's deploy stops, or tables without a ledger: baseline "
        "needed); 3 error (bad input, database unreachable)."
    )
)
def status(
    migrations_dir: Annotated[
        Path, typer.Option("--migrations-dir", help="The prisma/migrations folder.", show_default=False)
    ],
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="PostgreSQL URL of the database to inspect. Default: $DATABASE_URL.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    dsn = database_url or os.environ.get("DATABASE_URL")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not dsn:
        err.print("error: no database given: pass --database-url or set DATABASE_URL", markup=False)
        raise typer.Exit(EXIT_ERROR)
    try:
        local, diagnosis = asyncio.run(read_status(migrations_dir, dsn))
    except StatusError as exc:
        err.print(f"error: {scrub(str(exc), dsn)}", markup=False)
        raise typer.Exit(EXIT_ERROR) from None
    findings = safety_findings(local.migrations, diagnosis)
    if as_json:
        sys.stdout.write(json.dumps(to_json(diagnosis, findings, local.problem)) + "\n")
    else:
        # Piped output keeps whole names and commands on their lines (rich would fold at 80 columns).
        render(diagnosis, migrations_dir, dsn, Console(highlight=False, width=None if sys.stdout.isatty() else 200),
               findings, local.problem)
    raise typer.Exit(exit_code(diagnosis))
