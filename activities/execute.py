"""The executor the deploy and compensate activities send SQL through, and the locks each piece takes.

The activities decide *what* runs and in which transaction (activities/apply.py,
activities/compensate.py); the executor decides *how* it is sent to PostgreSQL: the lock-polite
executor (activities/locks.py `LockPoliteExecutor`, issue 13 item 5) asks for the locks with
short lock timeouts, retries within the environment's budget, and waits without queueing while
a long transaction holds a conflicting lock, watching pg_locks from a second connection.

The contract (a retry must never repeat committed work):
- `run_atomic(attempt, locks, what=)`: `attempt()` is all-or-nothing on the connection: the deploy
  passes a function that opens ONE transaction holding the backups, the script (one simple query)
  and the ledger row, so a failure anywhere rolls all of it back and it may be run again whole.
- `run_statement(sql, locks, what=, multi_transaction=)`: `sql` sent as one simple query outside
  any transaction. `multi_transaction=True` (CREATE INDEX CONCURRENTLY, a file with its own
  COMMITs): it may commit part of its work before it fails, so it is attempted once.
Both raise `LockBudgetExhausted` (domain/lock_waits.py) when the budget runs out; `executor.report`
is the live `LockWaitReport` of the piece running now (heartbeat details).
"""

from __future__ import annotations

import asyncpg
from pglast.parser import ParseError

from activities.locks import LockPoliteExecutor
from domain.lock_levels import StatementLocks, all_locks, script_locks
from domain.lock_modes import RelationLock
from domain.lock_waits import LockRetryPolicy, LockWait, LockWaitReport

__all__ = ["LockPoliteExecutor", "executor_for", "locks_of", "statements_of", "lock_wait", "lock_details"]


def executor_for(conn: asyncpg.Connection, observer: asyncpg.Connection, policy: LockRetryPolicy) -> LockPoliteExecutor:
    """The executor the activities use on `conn`, watching other sessions from `observer` (a
    second connection to the same database, opened the same way)."""
    return LockPoliteExecutor(conn, observer, policy)


def statements_of(sql: str) -> list[StatementLocks]:
    """The locks of each statement of `sql`; empty when it does not parse (the plan stops
    unparseable SQL first; the executor then still names blockers from pg_blocking_pids())."""
    try:
        return script_locks(sql)
    except ParseError:
        return []


def locks_of(sql: str) -> list[RelationLock]:
    """Every lock `sql` takes on a relation the parse tree names."""
    return all_locks(statements_of(sql))


def lock_wait(report: LockWaitReport | None) -> LockWait | None:
    """The record kept of a piece's wait for its locks (None when it never needed any)."""
    if report is None or not (report.attempts or report.waited_s or report.named):
        return None
    return LockWait.of(report)


def lock_details(executor: LockPoliteExecutor | None) -> dict | None:
    """The live wait of the piece running now, for heartbeat details (None once it has its locks)."""
    report = executor.report if executor is not None else None
    if report is None or report.applied:
        return None
    return report.as_details()
