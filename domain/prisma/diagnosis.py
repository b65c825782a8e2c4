"""Comparing the local history with the ledger: where the migrations folder and `_prisma_migrations` disagree.

Contract (other modules rely on it):

    class MigrationState(StrEnum): applied, pending, failed, modified, missing_locally
    class MigrationStatus(BaseModel): name, state, out_of_order: bool, checksum_local, checksum_db,
        attempts: list[LedgerRow], unreadable: str | None (why Prisma cannot read its migration.sql)
    class HistoryDiagnosis(BaseModel): migrations: list[MigrationStatus], summary: dict[str, int],
        problems: list[str], needs_baseline: bool (P3005), blocking_tables: list[str],
        deploy_stop / status_stop: str | None (P3015), not_managed: bool
    def diagnose(local: list[LocalMigration] | list[BundledMigration], snapshot: LedgerSnapshot,
                 unreadable: Sequence[<name, reason>] = ()) -> HistoryDiagnosis

Classification of one migration name from all its ledger rows (REPORT.md §4.2, §4.5, §4.6):
- failed: some row has finished_at and rolled_back_at NULL (Prisma's P3009 blocks every deploy);
  this wins over an applied row of the same name, because deploy refuses to run either way.
- applied / modified: some row is finished and not rolled back; modified when the local file no
  longer matches that row's checksum (Prisma's own comparison, domain.prisma.checksum).
- missing_locally: applied or failed in the database, but no local folder (the "phantom").
- pending: no row, or only rolled-back rows (deploy re-runs it). Rolled-back rows stay in `attempts`.
A pending migration that sorts before the last migration the database has applied is out of order:
Prisma applies it anyway, after later ones, which is worth a human's look.

Directories without a readable migration.sql (`unreadable`, domain/prisma/folder_rules.py) are
migrations too: pending, or in whatever state their rows say (their checksum cannot be compared;
Prisma's deploy never reads them once applied). `deploy_stop` is the first pending one, where
Prisma's deploy stops with P3015; `status_stop` the first with a row, on which Prisma's own
`migrate status` fails. P3005 counts only the tables Prisma counts (domain/prisma/baseline.py:
ordinary tables, PostGIS's own ignored).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, Field

from domain.prisma.baseline import blocking_tables
from domain.prisma.checksum import checksum_matches
from domain.prisma.folder_rules import P3015_MESSAGE, FolderEntry, deploy_stop, status_not_managed, status_stop
from domain.prisma.ledger import TABLE, LedgerRow, LedgerSnapshot
from domain.prisma.order import prisma_sort_key, prisma_sorted


class MigrationState(StrEnum):
    applied = "applied"
    pending = "pending"
    failed = "failed"
    modified = "modified"
    missing_locally = "missing_locally"


class MigrationStatus(BaseModel):
    name: str
    state: MigrationState
    out_of_order: bool = False
    checksum_local: str | None = None
    checksum_db: str | None = None
    attempts: list[LedgerRow] = Field(default_factory=list)  # every ledger row of this name, oldest first
    # Set for a directory whose migration.sql Prisma cannot read: missing | not_a_file | unreadable.
    unreadable: str | None = None


class HistoryDiagnosis(BaseModel):
    migrations: list[MigrationStatus]
    summary: dict[str, int]
    problems: list[str]
    needs_baseline: bool = False
    table_exists: bool = True
    blocking_tables: list[str] = Field(default_factory=list)  # what makes the database "not empty" (P3005)
    deploy_stop: str | None = None  # the pending directory Prisma's deploy stops on (P3015)
    status_stop: str | None = None  # the directory with a row on which Prisma's status fails (P3015)
    not_managed: bool = False  # no migrations and no _prisma_migrations (Prisma's status: exit 1)

    def names(self, state: MigrationState) -> list[str]:
        return [m.name for m in self.migrations if m.state == state]

    @property
    def needs_resolution(self) -> bool:
        """Something a person must decide before deploying (status exit code 2)."""
        blocking = (MigrationState.failed, MigrationState.modified, MigrationState.missing_locally)
        return self.needs_baseline or self.deploy_stop is not None or any(self.summary.get(s, 0) for s in blocking)

    @property
    def has_pending(self) -> bool:
        return self.summary.get(MigrationState.pending, 0) > 0


class _Migration(Protocol):
    name: str
    sql: str
    checksum: str


class _Unreadable(Protocol):
    name: str
    reason: str | None


def _raw(migration: _Migration) -> bytes:
    raw = getattr(migration, "raw", None)
    return raw if isinstance(raw, bytes) else migration.sql.encode("utf-8")


def _classify(local: _Migration | None, rows: list[LedgerRow], exists: bool) -> tuple[MigrationState, str | None]:
    """(state, the database checksum that state is about). `exists`: the directory is there
    (`local` is None for one whose migration.sql cannot be read)."""
    failed = [r for r in rows if r.is_failed]
    applied = [r for r in rows if r.is_applied]
    if not exists:
        return MigrationState.missing_locally, (failed or applied or rows)[-1].checksum
    if failed:
        return MigrationState.failed, failed[-1].checksum
    if applied and local is None:
        return MigrationState.applied, applied[-1].checksum  # nothing to compare; Prisma never reads it again
    if applied:
        # The latest completed run is what the database holds. (Prisma's own `editedMigrationNames`
        # looks at the first row of any state, so it also flags a file fixed after a rolled-back
        # failure; we do not: that is the normal way to repair a failed migration.)
        row = applied[-1]
        if row.checksum == local.checksum or checksum_matches(row.checksum, _raw(local)):
            return MigrationState.applied, row.checksum
        return MigrationState.modified, row.checksum
    return MigrationState.pending, (rows[-1].checksum if rows else None)


def _unreadable_text(m: MigrationStatus) -> str:
    return FolderEntry(m.name, None, m.unreadable).explain()


def _problems(statuses: list[MigrationStatus], last_applied: str | None, first_stop: str | None) -> list[str]:
    problems: list[str] = []
    for m in statuses:
        if m.unreadable and m.state == MigrationState.pending:
            where = (f"Prisma's next deploy applies the pending migrations before it and stops there with P3015 "
                     f"(\"{P3015_MESSAGE}\")") if m.name == first_stop else \
                "a later deploy stops there with P3015 once the earlier stops are fixed"
            problems.append(
                f"The {_unreadable_text(m)}: {where}; restore its migration.sql, delete the directory, or let "
                "the tool that applies it record it in _prisma_migrations."
            )
        elif m.unreadable:
            problems.append(
                f"The {_unreadable_text(m)} but is recorded in {TABLE}: deploys skip it, but `prisma migrate "
                "status` fails on it with P3015."
            )
        failed_rows = [r for r in m.attempts if r.is_failed]
        if m.state == MigrationState.failed:
            row = failed_rows[-1]
            problems.append(
                f"Migration {m.name} failed (attempt started {row.started_at:%Y-%m-%d %H:%M:%S %Z}) and blocks every "
                f"deploy (Prisma P3009): undo its partial effects and mark it rolled back to re-run it "
                f"(prisma migrate resolve --rolled-back {m.name}), or, if its changes are in place, "
                f"mark it applied (prisma migrate resolve --applied {m.name})."
            )
            if any(r.is_applied for r in m.attempts):
                problems.append(
                    f"Migration {m.name} has both a finished row and an unfinished one in {TABLE}; "
                    "someone re-ran it by hand or edited the table."
                )
        if len(failed_rows) > 1:
            problems.append(
                f"Migration {m.name} has {len(failed_rows)} unfinished rows that are not rolled back "
                f"(ids {', '.join(r.id for r in failed_rows)}); Prisma never writes more than one, "
                f"so {TABLE} was edited or written concurrently."
            )
        if m.state == MigrationState.modified:
            problems.append(
                f"Migration {m.name} was changed after it was applied: the local migration.sql "
                f"(sha256 {m.checksum_local}) no longer matches the database's checksum {m.checksum_db}; "
                "restore the applied version, or put the change in a new migration."
            )
        if m.state == MigrationState.missing_locally:
            what = "failed" if failed_rows else "applied" if any(r.is_applied for r in m.attempts) else "rolled back"
            problems.append(
                f"Migration {m.name} is recorded as {what} in the database but has no folder in the migrations "
                "directory (a phantom, e.g. applied by hand and never committed); restore its folder from "
                "whoever applied it, or confirm its changes are covered by other migrations."
            )
        if m.out_of_order:
            problems.append(
                f"Migration {m.name} is pending but sorts before {last_applied}, which the database has already "
                "applied; it will run after it, out of order."
            )
    return problems


def _folder_entries(local: Sequence[_Migration], unreadable: Sequence[_Unreadable],
                    names: Sequence[str]) -> list[FolderEntry]:
    sql = {m.name: m.sql for m in local}
    reasons = {u.name: u.reason or "unreadable" for u in unreadable}
    return [FolderEntry(n, sql.get(n), reasons.get(n)) for n in names if n in sql or n in reasons]


def diagnose(local: Sequence[_Migration], snapshot: LedgerSnapshot,
             unreadable: Sequence[_Unreadable] = ()) -> HistoryDiagnosis:
    rows_by_name: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in snapshot.rows:  # already ordered by started_at
        rows_by_name[row.migration_name].append(row)
    local_by_name = {m.name: m for m in local}
    unreadable_by_name = {u.name: u.reason or "unreadable" for u in unreadable}

    names = prisma_sorted(set(local_by_name) | set(unreadable_by_name) | set(rows_by_name))
    statuses: list[MigrationStatus] = []
    for name in names:
        mig = local_by_name.get(name)
        rows = rows_by_name.get(name, [])
        state, checksum_db = _classify(mig, rows, exists=mig is not None or name in unreadable_by_name)
        statuses.append(
            MigrationStatus(
                name=name,
                state=state,
                checksum_local=mig.checksum if mig is not None else None,
                checksum_db=checksum_db,
                attempts=rows,
                unreadable=unreadable_by_name.get(name),
            )
        )

    # "Applied" for ordering means: the database ran it to completion (phantoms included).
    applied_keys = [prisma_sort_key(s.name) for s in statuses if any(r.is_applied for r in s.attempts)]
    last_key = max(applied_keys) if applied_keys else None
    last_applied = last_key.name if last_key else None
    if last_key is not None:
        for s in statuses:
            if s.state == MigrationState.pending and prisma_sort_key(s.name) < last_key:
                s.out_of_order = True

    entries = _folder_entries(local, unreadable, names)
    live = {r.migration_name for r in snapshot.rows if not r.is_rolled_back}
    stop = deploy_stop(entries, live)
    status_fails = status_stop(entries, set(rows_by_name))
    blocking = blocking_tables(snapshot.other_tables)
    needs_baseline = not snapshot.table_exists and bool(blocking)
    problems = _problems(statuses, last_applied, stop.name if stop else None)
    if needs_baseline:
        shown = ", ".join(blocking[:5]) + (f", ... ({len(blocking)} in all)" if len(blocking) > 5 else "")
        how = f"prisma migrate resolve --applied {names[0] if names else '<first migration>'}"
        problems.insert(
            0,
            f"The database has tables ({shown}) but no {TABLE} table, so Prisma refuses to deploy (P3005): "
            f"baseline it first by recording the migrations its schema already contains as applied, "
            f"e.g. `{how}`.",
        )

    summary = {state.value: 0 for state in MigrationState}
    for s in statuses:
        summary[s.state.value] += 1
    return HistoryDiagnosis(
        migrations=statuses,
        summary=summary,
        problems=problems,
        needs_baseline=needs_baseline,
        table_exists=snapshot.table_exists,
        blocking_tables=blocking,
        deploy_stop=stop.name if stop else None,
        status_stop=status_fails.name if status_fails else None,
        not_managed=status_not_managed(entries, snapshot.table_exists),
    )
