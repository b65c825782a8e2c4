"""`python starter.py lint DIR`: offline safety analysis of a Prisma migrations folder (for PR checks).

No database is needed. Exit 0 when no finding reaches --fail-on, 1 when one does (parse errors
count as errors), 3 when the folder cannot be read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli.app import app
from domain.models import Finding
from domain.prisma.folder import MigrationFolderError, read_migrations_dir
from domain.risk import Risk, Severity, severity_rank
from domain.sql.parse import SqlParseError
from domain.sql.rules import MigrationAnalysis, analyze_migration, parse_error_finding

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 3
_STYLE = {"info": "cyan", "warning": "yellow", "error": "bold red", "low": "green", "medium": "yellow", "high": "bold red"}


def lint_folder(path: Path) -> list[tuple[str, MigrationAnalysis | None, list[Finding]]]:
    """(name, analysis or None when it does not parse, findings) per migration, in Prisma's order."""
    results = []
    for migration in read_migrations_dir(path):
        try:
            analysis = analyze_migration(migration.name, migration.sql)
            results.append((migration.name, analysis, analysis.findings))
        except SqlParseError as exc:
            results.append((migration.name, None, [parse_error_finding(exc)]))
    return results


def _as_json(results, threshold: Severity, failed: bool) -> str:
    migrations = []
    for name, analysis, findings in results:
        entry = {"name": name, "parses": analysis is not None, "findings": [f.model_dump() for f in findings]}
        if analysis:
            entry |= analysis.model_dump(include={"risk", "in_transaction", "idempotent", "creates",
                                                  "derived_rollback", "rollback_blockers"})
        else:
            entry["risk"] = Risk.high
        migrations.append(entry)
    return json.dumps({"fail_on": threshold, "failed": failed, "migrations": migrations}, indent=2, default=str)


def _print_tables(console: Console, results, threshold: Severity, failed: bool) -> None:
    summary = Table(title="Migrations", title_justify="left")
    for col in ("migration", "risk", "transaction", "idempotent", "derived rollback"):
        summary.add_column(col)
    details = Table(title="Findings", title_justify="left")
    for col in ("migration", "line", "severity", "code", "message"):
        details.add_column(col, overflow="fold")
    for name, analysis, findings in results:
        if analysis is None:
            summary.add_row(name, "[bold red]does not parse[/]", "-", "-", "-")
        else:
            summary.add_row(
                name,
                f"[{_STYLE[analysis.risk]}]{analysis.risk}[/]",
                "yes" if analysis.in_transaction else "[yellow]no[/]",
                "yes" if analysis.idempotent else "no",
                "yes" if analysis.derived_rollback else "no",
            )
        for f in findings:
            details.add_row(name, str(f.line or ""), f"[{_STYLE[f.severity]}]{f.severity}[/]", f.code, f.message)
    console.print(summary)
    if details.row_count:
        console.print(details)
    verdict = f"findings at or above {threshold}" if failed else f"no finding at or above {threshold}"
    console.print(f"[{'bold red' if failed else 'green'}]{verdict}[/]")


@app.command()
def lint(
    directory: Annotated[Path, typer.Argument(help="The migrations folder (e.g. prisma/migrations).", show_default=False)],
    fail_on: Annotated[
        Severity, typer.Option("--fail-on", help="Exit 1 when a finding has this severity or worse.")
    ] = Severity.error,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Static safety analysis of every migration in a folder (offline; no database)."""
    try:
        results = lint_folder(directory)
    except MigrationFolderError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    failed = any(severity_rank(f.severity) >= severity_rank(fail_on) for _, _, fs in results for f in fs)
    if as_json:
        typer.echo(_as_json(results, fail_on, failed))
    else:
        # Piped output (CI logs, PR checks) keeps whole lines instead of folding at 80 columns.
        _print_tables(Console(highlight=False, width=None if sys.stdout.isatty() else 200), results, fail_on, failed)
    raise typer.Exit(EXIT_FINDINGS if failed else EXIT_OK)
