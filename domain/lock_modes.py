"""PostgreSQL's table-level lock modes: names, the conflict table, and what each does to the
application. Pure; the vocabulary shared by lint (domain/lock_levels.py), the wait reports
(domain/lock_waits.py) and the executor (activities/locks.py).

From PostgreSQL 15's "Explicit Locking" chapter (13.3.1); the numbering is lockdefs.h's, which is
also what LOCK TABLE's parse tree carries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum


class LockMode(IntEnum):
    """PostgreSQL's eight table-level lock modes, numbered as in lockdefs.h (LOCK TABLE's parse tree)."""

    ACCESS_SHARE = 1
    ROW_SHARE = 2
    ROW_EXCLUSIVE = 3
    SHARE_UPDATE_EXCLUSIVE = 4
    SHARE = 5
    SHARE_ROW_EXCLUSIVE = 6
    EXCLUSIVE = 7
    ACCESS_EXCLUSIVE = 8

    @property
    def label(self) -> str:
        """As the documentation writes it: "ACCESS EXCLUSIVE"."""
        return self.name.replace("_", " ")

    @property
    def pg_name(self) -> str:
        """As `pg_locks.mode` shows it: "AccessExclusiveLock"."""
        return "".join(part.capitalize() for part in self.name.split("_")) + "Lock"

    @classmethod
    def from_pg_name(cls, name: str) -> LockMode | None:
        return _BY_PG_NAME.get(name)

    def conflicts_with(self, other: LockMode) -> bool:
        return other in CONFLICTS[self]


_A = LockMode
# The conflict table of "Explicit Locking" (symmetric).
CONFLICTS: dict[LockMode, frozenset[LockMode]] = {
    _A.ACCESS_SHARE: frozenset({_A.ACCESS_EXCLUSIVE}),
    _A.ROW_SHARE: frozenset({_A.EXCLUSIVE, _A.ACCESS_EXCLUSIVE}),
    _A.ROW_EXCLUSIVE: frozenset({_A.SHARE, _A.SHARE_ROW_EXCLUSIVE, _A.EXCLUSIVE, _A.ACCESS_EXCLUSIVE}),
    _A.SHARE_UPDATE_EXCLUSIVE: frozenset(
        {_A.SHARE_UPDATE_EXCLUSIVE, _A.SHARE, _A.SHARE_ROW_EXCLUSIVE, _A.EXCLUSIVE, _A.ACCESS_EXCLUSIVE}),
    _A.SHARE: frozenset(
        {_A.ROW_EXCLUSIVE, _A.SHARE_UPDATE_EXCLUSIVE, _A.SHARE_ROW_EXCLUSIVE, _A.EXCLUSIVE, _A.ACCESS_EXCLUSIVE}),
    _A.SHARE_ROW_EXCLUSIVE: frozenset(
        {_A.ROW_EXCLUSIVE, _A.SHARE_UPDATE_EXCLUSIVE, _A.SHARE, _A.SHARE_ROW_EXCLUSIVE, _A.EXCLUSIVE,
         _A.ACCESS_EXCLUSIVE}),
    _A.EXCLUSIVE: frozenset(set(LockMode) - {_A.ACCESS_SHARE}),
    _A.ACCESS_EXCLUSIVE: frozenset(LockMode),
}
_BY_PG_NAME = {m.pg_name: m for m in LockMode}
# The modes ordinary application traffic takes: SELECT, SELECT ... FOR UPDATE/SHARE, INSERT/UPDATE/DELETE.
APPLICATION_MODES = frozenset({_A.ACCESS_SHARE, _A.ROW_SHARE, _A.ROW_EXCLUSIVE})

# What a queued or granted lock of this mode does to the application, for lint and plans.
IMPACT = {
    _A.ACCESS_EXCLUSIVE: "blocks reads and writes while it waits and runs",
    _A.EXCLUSIVE: "blocks writes and SELECT ... FOR UPDATE while it waits and runs; plain reads go on",
    _A.SHARE_ROW_EXCLUSIVE: "blocks writes while it waits and runs; reads go on",
    _A.SHARE: "blocks writes while it waits and runs; reads go on",
    _A.SHARE_UPDATE_EXCLUSIVE: "blocks other schema changes and VACUUM, not reads or writes",
    _A.ROW_EXCLUSIVE: "does not block reads or writes; waits for and blocks schema changes",
    _A.ROW_SHARE: "does not block reads or writes; waits for EXCLUSIVE and ACCESS EXCLUSIVE locks",
    _A.ACCESS_SHARE: "does not block reads or writes; waits for ACCESS EXCLUSIVE locks",
}


def conflicting_modes(modes: Iterable[LockMode]) -> frozenset[LockMode]:
    """Every mode that conflicts with at least one of `modes` (a statement may take several)."""
    out: set[LockMode] = set()
    for mode in modes:
        out |= CONFLICTS[mode]
    return frozenset(out)


def blocks_application(modes: Iterable[LockMode]) -> bool:
    """Whether waiting for (or holding) these modes stalls ordinary reads or writes."""
    return bool(conflicting_modes(modes) & APPLICATION_MODES)


@dataclass(frozen=True)
class RelationLock:
    """One lock a statement takes. `schema` is None when the SQL leaves it to the search_path.
    `is_index`: the name is an index; `table_mode` is then the lock taken on its table (found in
    the catalog), None when the table is not locked."""

    schema: str | None
    name: str
    mode: LockMode
    reason: str
    is_index: bool = False
    table_mode: LockMode | None = None

    def qualified(self, default_schema: str = "public") -> str:
        return f"{self.schema or default_schema}.{self.name}"

    def lint_sentence(self, default_schema: str = "public") -> str:
        if not self.is_index:
            return f"takes {self.mode.label} on {self.qualified(default_schema)} ({IMPACT[self.mode]})"
        on_table = f" and {self.table_mode.label} on its table" if self.table_mode else ""
        impact = IMPACT[max(self.mode, self.table_mode or self.mode)]
        return f"takes {self.mode.label} on index {self.qualified(default_schema)}{on_table} ({impact})"


@dataclass(frozen=True)
class StatementLocks:
    """The locks of one statement of a script. `multi_transaction`: PostgreSQL runs it in several
    transactions of its own (the CONCURRENTLY family), so a lock timeout part-way can leave a
    trace (an INVALID index) and it must not be retried blindly. `unknown`: why its locks cannot
    be read from the SQL (empty when they can)."""

    index: int
    line: int
    kind: str
    locks: tuple[RelationLock, ...]
    multi_transaction: bool = False
    unknown: str = ""
