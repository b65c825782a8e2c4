"""Comparing the local history with the ledger: where the migrations folder and `_prisma_migrations` disagree.

Contract (other modules rely on it):

    class MigrationState(StrEnum): applied, pending, failed, modified, missing_locally
    class MigrationStatus(BaseModel): name, state, out_of_order: bool, checksum_local, checksum_db,
        attempts: list[LedgerRow]
    class HistoryDiagnosis(BaseModel): migrations: list[MigrationStatus], summary: dict[str, int],
        problems: list[str], needs_baseline: bool (P3005)
    def diagnose(local: list[LocalMigration] | list[BundledMigration], snapshot: LedgerSnapshot) -> HistoryDiagnosis

Classification of one migration name from all its ledger rows (REPORT.md §4.2, §4.5, §4.6):
- failed: some row has finished_at and rolled_back_at NULL (Prisma's P3009 blocks every deploy);
  this wins over an applied row of the same name, because deploy refuses to run either way.
- applied / modified: some row is finished and not rolled back; modified when the local file no
  longer matches that row's checksum (Prisma's own comparison, domain.prisma.checksum).
- missing_locally: applied or failed in the database, but no local folder (the "phantom").
- pending: no row, or only rolled-back rows (deploy re-runs it). Rolled-back rows stay in `attempts`.
A pending migration that sorts before the last migration the database has applied is out of order:
Prisma applies it anyway, after later ones, which is worth a human's look.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, Field

from domain.prisma.checksum import checksum_matches
from domain.prisma.folder import prisma_order_key
from domain.prisma.ledger import TABLE, LedgerRow, LedgerSnapshot


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


class HistoryDiagnosis(BaseModel):
    migrations: list[MigrationStatus]
    summary: dict[str, int]
    problems: list[str]
    needs_baseline: bool = False
    table_exists: bool = True

    def names(self, state: MigrationState) -> list[str]:
        return [m.name for m in self.migrations if m.state == state]

    @property
    def needs_resolution(self) -> bool:
        """Something a person must decide before deploying (status exit code 2)."""
        blocking = (MigrationState.failed, MigrationState.modified, MigrationState.missing_locally)
        return self.needs_baseline or any(self.summary.get(s, 0) for s in blocking)

    @property
    def has_pending(self) -> bool:
        return self.summary.get(MigrationState.pending, 0) > 0


class _Migration(Protocol):
    name: str
    sql: str
    checksum: str


def _raw(migration: _Migration) -> bytes:
    raw = getattr(migration, "raw", None)
    return raw if isinstance(raw, bytes) else migration.sql.encode("utf-8")


def _classify(local: _Migration | None, rows: list[LedgerRow]) -> tuple[MigrationState, str | None]:
    """(state, the database checksum that state is about)."""
    failed = [r for r in rows if r.is_failed]
    applied = [r for r in rows if r.is_applied]
    if local is None:
        return MigrationState.missing_locally, (failed or applied or rows)[-1].checksum
    if failed:
        return MigrationState.failed, failed[-1].checksum
    if applied:
        # The latest completed run is what the database holds. (Prisma's own `editedMigrationNames`
        # looks at the first row of any state, so it also flags a file fixed after a rolled-back
        # failure; we do not: that is the normal way to repair a failed migration.)
        row = applied[-1]
        if row.checksum == local.checksum or checksum_matches(row.checksum, _raw(local)):
            return MigrationState.applied, row.checksum
        return MigrationState.modified, row.checksum
    return MigrationState.pending, (rows[-1].checksum if rows else None)


def _problems(statuses: list[MigrationStatus], last_applied: str | None) -> list[str]:
    problems: list[str] = []
    for m in statuses:
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


def diagnose(local: Sequence[_Migration], snapshot: LedgerSnapshot) -> HistoryDiagnosis:
    rows_by_name: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in snapshot.rows:  # already ordered by started_at
        rows_by_name[row.migration_name].append(row)
    local_by_name = {m.name: m for m in local}

    names = sorted(set(local_by_name) | set(rows_by_name), key=prisma_order_key)
    statuses: list[MigrationStatus] = []
    for name in names:
        mig = local_by_name.get(name)
        rows = rows_by_name.get(name, [])
        state, checksum_db = _classify(mig, rows)
        statuses.append(
            MigrationStatus(
                name=name,
                state=state,
                checksum_local=mig.checksum if mig is not None else None,
                checksum_db=checksum_db,
                attempts=rows,
            )
        )

    # "Applied" for ordering means: the database ran it to completion (phantoms included).
    applied_keys = [prisma_order_key(s.name) for s in statuses if any(r.is_applied for r in s.attempts)]
    last_key = max(applied_keys) if applied_keys else None
    last_applied = last_key[-1] if last_key else None
    if last_key is not None:
        for s in statuses:
            if s.state == MigrationState.pending and prisma_order_key(s.name) < last_key:
                s.out_of_order = True

    needs_baseline = not snapshot.table_exists and bool(snapshot.other_tables)
    problems = _problems(statuses, last_applied)
    if needs_baseline:
        shown = ", ".join(snapshot.other_tables[:5]) + (", ..." if len(snapshot.other_tables) > 5 else "")
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
    )
