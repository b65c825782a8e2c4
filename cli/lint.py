"""`python starter.py lint DIR`: offline safety analysis of a Prisma migrations folder (for PR checks).

No database is needed. What is linted:

- every migration (default);
- `--base REF`: only the migrations whose files differ between git ref REF and the working tree
  (committed since, staged, unstaged or untracked — as `atlas migrate lint --git-base` does), so a
  pull request is judged by what it adds, not by the history it builds on (cli/git_changes.py);
  a migration it adds that sorts, in Prisma's order, before one REF already has is an error
  (`out-of-order`: wherever that one is applied, Prisma runs the new one after it);
- `--database-url URL` / `--env ENV`: only the migrations not applied on that database (read-only,
  like `status`); with `--base` too, only those that are both.

Exit 0 when no linted finding reaches --fail-on, 1 when one does (parse errors count as errors), 3
when the folder, the git ref or the database cannot be read. A directory without migration.sql is
a warning (`no-migration-file`): Prisma's deploy stops there.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from cli.app import app
from cli.git_changes import GitChangesError, migration_changes
from domain.dsn import redact_dsn, scrub
from domain.lock_levels import statement_locks, strongest_locks
from domain.models import Finding
from domain.prisma.diagnosis import MigrationState
from domain.prisma.folder import MigrationFolderError, MigrationsFolder, read_folder
from domain.prisma.order import prisma_sort_key
from domain.risk import Risk, Severity, severity_rank
from domain.sql.parse import SqlParseError
from domain.sql.rules import MigrationAnalysis, analyze_migration, parse_error_finding

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 3
_STYLE = {"info": "cyan", "warning": "yellow", "error": "bold red", "low": "green", "medium": "yellow", "high": "bold red"}
_NOT_APPLIED = (MigrationState.pending, MigrationState.failed)


class LintError(Exception):
    """The folder, the ref or the database cannot be read: one line, exit 3."""


@dataclass
class Selection:
    """Which migrations are linted, and why the others are not."""

    names: list[str]  # in Prisma's order
    total: int
    base: str | None = None
    removed: list[str] = field(default_factory=list)  # changed since --base, gone from the folder
    late: dict[str, str] = field(default_factory=dict)  # added since --base -> the base's last migration it sorts before
    database: str | None = None  # redacted URL or environment name


def _read(path: Path) -> MigrationsFolder:
    try:
        folder = read_folder(path)
    except MigrationFolderError as exc:
        raise LintError(str(exc)) from None
    if folder.problem:  # Prisma reads that as empty; a PR check on a wrong path should say so
        raise LintError(folder.problem.split(";")[0])
    return folder


def _env_database_url(env: str) -> str:
    from runtime.settings import Settings, UnknownEnvironment

    try:
        return Settings().environment(env).database_url.get_secret_value()
    except UnknownEnvironment as exc:
        raise LintError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise LintError(f"invalid settings ({'.'.join(str(p) for p in first['loc'])}): {first['msg']}") from None


def _not_applied(path: Path, dsn: str) -> set[str]:
    from cli.status import StatusError, read_status

    try:
        _, diagnosis = asyncio.run(read_status(path, dsn))
    except StatusError as exc:
        raise LintError(scrub(str(exc), dsn)) from None
    return {m.name for m in diagnosis.migrations if m.state in _NOT_APPLIED}


def select(folder: MigrationsFolder, path: Path, base: str | None, dsn: str | None, label: str | None) -> Selection:
    names = folder.names
    selection = Selection(names=names, total=len(names), base=base, database=label)
    if base is not None:
        try:
            changes = migration_changes(path, base)
        except GitChangesError as exc:
            raise LintError(str(exc)) from None
        selection.names = [n for n in selection.names if n in changes.changed]
        selection.removed = sorted(changes.removed)
        existing = [n for n in names if n in changes.at_base]
        if existing:
            last = prisma_sort_key(existing[-1])
            selection.late = {n: last.name for n in changes.added if prisma_sort_key(n) < last}
    if dsn is not None:
        todo = _not_applied(path, dsn)
        selection.names = [n for n in selection.names if n in todo]
    return selection


def lint_folder(folder: MigrationsFolder, names: list[str] | None = None, late: dict[str, str] | None = None,
                base: str | None = None) -> list[tuple[str, MigrationAnalysis | None, list[Finding]]]:
    """(name, analysis or None when it does not parse or has no script, findings) per migration, in
    Prisma's order; `names` limits it to those; `late`: added migrations that sort before `base`'s last."""
    wanted = set(folder.names if names is None else names)
    sql = {m.name: m.sql for m in folder.migrations}
    unreadable = {e.name: e for e in folder.unreadable}
    results = []
    for name in folder.names:
        if name not in wanted:
            continue
        if name in unreadable:
            finding = Finding(code="no-migration-file", severity=Severity.warning,
                              message=f"{unreadable[name].explain()}: Prisma's deploy stops here with P3015 "
                              "unless another tool records it in _prisma_migrations")
            results.append((name, None, [finding]))
            continue
        try:
            analysis = analyze_migration(name, sql[name])
            results.append((name, analysis, list(analysis.findings)))
        except SqlParseError as exc:
            results.append((name, None, [parse_error_finding(exc)]))
        if late and name in late:
            results[-1][2].insert(0, Finding(code="out-of-order", severity=Severity.error, message=(
                f"{name} is new but sorts before {late[name]}, already on {base}: on every database that applied "
                f"{late[name]}, Prisma applies it out of order; rename its directory with a later timestamp")))
    return results


STATEMENT_SHOWN = 60


def statement_locks_of(analysis: MigrationAnalysis) -> list[dict]:
    """Per statement: the table-level locks it takes (strongest per relation), each as one sentence
    saying what it does to the application, or why its locks cannot be read from the SQL."""
    out = []
    for st in analysis.statements:
        locks = statement_locks(st.kind, st.node(), st.index, st.line)
        sentences = [lock.lint_sentence() for lock in strongest_locks(locks.locks)]
        if locks.unknown:
            sentences.append(f"locks unknown: {locks.unknown}")
        if not sentences:
            continue
        first = " ".join(st.text.split())
        text = first if len(first) <= STATEMENT_SHOWN else first[:STATEMENT_SHOWN - 1] + "…"
        out.append({"line": st.line, "statement": text, "locks": sentences})
    return out


def _scope_text(sel: Selection) -> str:
    what = []
    if sel.base is not None:
        what.append(f"changed since {sel.base}")
    if sel.database is not None:
        what.append(f"not applied on {sel.database}")
    if not what:
        return f"linted all {sel.total} migration(s)"
    return f"linted {len(sel.names)} of {sel.total} migration(s): those {' and '.join(what)}"


def _as_json(results, threshold: Severity, failed: bool, sel: Selection) -> str:
    migrations = []
    for name, analysis, findings in results:
        entry = {"name": name, "parses": analysis is not None, "findings": [f.model_dump() for f in findings]}
        if analysis:
            entry |= analysis.model_dump(include={"risk", "in_transaction", "idempotent",
                                                  "derived_rollback", "rollback_blockers"})
            entry["locks"] = statement_locks_of(analysis)
            entry["creates"] = [str(ref) for ref in analysis.creates]
        else:
            entry["risk"] = Risk.high if any(f.code == "parse-error" for f in findings) else Risk.medium
        migrations.append(entry)
    scope = {"base": sel.base, "database": sel.database, "linted": len(sel.names), "total": sel.total,
             "removed": sel.removed}
    return json.dumps({"fail_on": threshold, "failed": failed, "scope": scope, "migrations": migrations},
                      indent=2, default=str)


def _print_tables(console: Console, results, threshold: Severity, failed: bool, sel: Selection) -> None:
    summary = Table(title="Migrations", title_justify="left")
    for col in ("migration", "risk", "transaction", "idempotent", "derived rollback"):
        summary.add_column(col)
    details = Table(title="Findings", title_justify="left")
    for col in ("migration", "line", "severity", "code", "message"):
        details.add_column(col, overflow="fold")
    locks = Table(title="Locks (what each statement does to the application while it waits and runs)",
                  title_justify="left")
    for col in ("migration", "line", "statement", "lock"):
        locks.add_column(col, overflow="fold")
    for name, analysis, findings in results:
        if analysis is None:
            parse_error = any(f.code == "parse-error" for f in findings)
            summary.add_row(name, "[bold red]does not parse[/]" if parse_error else "[yellow]no migration.sql[/]",
                            "-", "-", "-")
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
        for st in statement_locks_of(analysis) if analysis is not None else []:
            locks.add_row(name, str(st["line"]), st["statement"], "\n".join(st["locks"]))
    console.print(_scope_text(sel), markup=False)
    for name in sel.removed:
        console.print(f"removed since {sel.base}: {name} (not linted; where it was applied, Prisma now sees a phantom)",
                      markup=False)
    if summary.row_count:
        console.print(summary)
    if details.row_count:
        console.print(details)
    if locks.row_count:
        console.print(locks)
    verdict = f"findings at or above {threshold}" if failed else f"no finding at or above {threshold}"
    console.print(f"[{'bold red' if failed else 'green'}]{verdict}[/]")


@app.command()
def lint(
    directory: Annotated[Path, typer.Argument(help="The migrations folder (e.g. prisma/migrations).", show_default=False)],
    fail_on: Annotated[
        Severity, typer.Option("--fail-on", help="Exit 1 when a finding has this severity or worse.")
    ] = Severity.error,
    base: Annotated[str | None, typer.Option(
        "--base", help="Lint only migrations whose files differ from this git ref (committed since, staged, "
        "unstaged or untracked), e.g. the pull request's base commit.", show_default=False)] = None,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Lint only migrations not applied on this database (read-only).",
        show_default=False)] = None,
    env: Annotated[str | None, typer.Option(
        "--env", help="Like --database-url, with the URL of this environment from MIGRATOR_ENVIRONMENTS.",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Static safety analysis of the migrations in a folder (offline unless --database-url/--env)."""
    try:
        if database_url and env:
            raise LintError("pass --database-url or --env, not both")
        dsn = database_url or (_env_database_url(env) if env else None)
        label = redact_dsn(dsn) if database_url else env
        folder = _read(directory)
        selection = select(folder, directory, base, dsn, label)
    except LintError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    results = lint_folder(folder, selection.names, selection.late, selection.base)
    failed = any(severity_rank(f.severity) >= severity_rank(fail_on) for _, _, fs in results for f in fs)
    if as_json:
        typer.echo(_as_json(results, fail_on, failed, selection))
    else:
        # Piped output (CI logs, PR checks) keeps whole lines instead of folding at 80 columns.
        width = None if sys.stdout.isatty() else 200
        _print_tables(Console(highlight=False, width=width), results, fail_on, failed, selection)
    raise typer.Exit(EXIT_FINDINGS if failed else EXIT_OK)
