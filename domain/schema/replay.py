"""Which local migrations a run replays into its shadow database, in which order, and what a failed
replay looks like. Pure: activities.shadow does the replay, activities.schema_facts asks for it.

One run replays ONE sequence, once, and reads the model at several prefixes of it:

- first the migrations the ledger says are applied, in the order the database applied them (the
  position of each one's effective ledger row): prefix `applied` is what the live schema should
  be (the drift proof);
- then what the run will bring in, in the order it plans it (the diagnosis order: failed
  migrations to resolve and pending ones, as Prisma sorts them): the prefix before and after each
  failed migration gives its expected effects (failed-migration evidence), and the whole sequence
  is the expected schema after the run (verification; a pending migration that fails here would
  fail on deploy too).

After the deploy, verification compares the live schema with the replay of this same sequence
(the plan carries it as `expected_sequence`), which the worker's cache of the preflight's replay
usually answers without replaying anything.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from domain.prisma.diagnosis import HistoryDiagnosis, MigrationState
from domain.prisma.ledger import LedgerRow


class ReplayFailure(BaseModel):
    """Migration `position` of `total` failed in the shadow database (as it would in Prisma)."""

    model_config = ConfigDict(frozen=True)

    migration: str
    position: int
    total: int
    sqlstate: str | None = None
    error: str
    detail: str | None = None

    @property
    def sentence(self) -> str:
        code = f" (SQLSTATE {self.sqlstate})" if self.sqlstate else ""
        return (
            f"migration {self.migration} ({self.position} of {self.total}) failed when replayed "
            f"in the shadow database: {self.error}{code}"
        )


class ReplaySequence(BaseModel):
    """The migrations a run replays, in order, and where the prefixes it needs end."""

    model_config = ConfigDict(frozen=True)

    names: tuple[str, ...] = ()
    applied: int = 0  # names[:applied] are what the ledger says the database holds
    failed: dict[str, int] = Field(default_factory=dict)  # failed migration -> its 1-based position

    def prefixes(self) -> list[int]:
        """Every prefix whose model the run needs: the applied history, before and after each
        failed migration, and the whole sequence."""
        wanted = {self.applied, len(self.names)}
        for position in self.failed.values():
            wanted |= {position - 1, position}
        return sorted(wanted)

    def position(self, name: str) -> int | None:
        """1-based position of `name`, or None when it is not replayed."""
        try:
            return self.names.index(name) + 1
        except ValueError:
            return None


def replay_sequence(diagnosis: HistoryDiagnosis, local: Iterable[str]) -> ReplaySequence:
    """The sequence for a run's preflight: the applied local migrations in ledger order, then
    failed and pending ones in the order the plan takes them. Phantoms have no SQL to replay."""
    available = set(local)
    applied = applied_order(
        [r for s in diagnosis.migrations for r in s.attempts if s.name in available],
        available,
        states={s.name: s.state for s in diagnosis.migrations},
    )
    names = list(applied)
    already = set(applied)  # a set: a long history has thousands of applied names
    failed: dict[str, int] = {}
    for status in diagnosis.migrations:
        if status.name not in available or status.name in already:
            continue
        if status.state in (MigrationState.failed, MigrationState.pending):
            names.append(status.name)
            if status.state == MigrationState.failed:
                failed[status.name] = len(names)
    return ReplaySequence(names=tuple(names), applied=len(applied), failed=failed)


def applied_order(
    rows: Iterable[LedgerRow], available: set[str], *, states: dict[str, MigrationState] | None = None
) -> list[str]:
    """Names with an applied row, ordered by the position of their last applied row (rows come
    ordered by started_at, as the ledger reads them). A failed migration is not applied, even
    when an older attempt of it finished (Prisma's P3009 wins)."""
    last: dict[str, int] = {}
    for index, row in enumerate(sorted(rows, key=lambda r: (r.started_at, r.id))):
        if row.is_applied and row.migration_name in available:
            last[row.migration_name] = index
    if states is not None:
        last = {n: i for n, i in last.items() if states.get(n) in (MigrationState.applied, MigrationState.modified)}
    return sorted(last, key=last.__getitem__)
