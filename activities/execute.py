"""The executor the deploy activity sends a migration's SQL through: the seam for lock politeness.

The deploy decides *what* runs and in which transaction (activities/apply.py); an executor
decides *how* it is sent to PostgreSQL. `PlainExecutor` sends it once, with the session's own
lock_timeout. The lock-polite executor (activities/locks.py `LockPoliteExecutor`, issue 13 item 5)
has the same two calls and adds short lock timeouts, retries and waiting without queueing; wiring
it is choosing it in `executor_for` (it needs a second connection to watch pg_locks from, and the
locks each piece takes, from domain/lock_levels.py).

The contract both keep (a retry must never repeat committed work):
- `run_atomic(attempt, locks, what=)`: `attempt()` is all-or-nothing on the connection: the deploy
  passes a function that opens ONE transaction holding the backups, the script (one simple query)
  and the ledger row, so a failure anywhere rolls all of it back and it may be run again whole.
- `run_statement(sql, locks, what=, multi_transaction=)`: `sql` sent as one simple query outside
  any transaction. `multi_transaction=True` (CREATE INDEX CONCURRENTLY, a file with its own
  COMMITs): it may commit part of its work before it fails, so it is attempted once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import asyncpg

Attempt = Callable[[], Awaitable[object]]


class ScriptExecutor(Protocol):
    async def run_atomic(self, attempt: Attempt, locks: Sequence[Any], *, what: str) -> object: ...

    async def run_statement(self, sql: str, locks: Sequence[Any], *, what: str,
                            multi_transaction: bool = False) -> object: ...


class PlainExecutor:
    """Sends each piece once."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def run_atomic(self, attempt: Attempt, locks: Sequence[Any], *, what: str) -> None:
        await attempt()

    async def run_statement(self, sql: str, locks: Sequence[Any], *, what: str,
                            multi_transaction: bool = False) -> None:
        await self.conn.execute(sql)  # no arguments: the simple query protocol, the whole text at once


def executor_for(conn: asyncpg.Connection) -> ScriptExecutor:
    """The executor the deploy uses on `conn` (the one place to wire another one)."""
    return PlainExecutor(conn)
