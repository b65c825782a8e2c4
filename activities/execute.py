"""The executor the deploy activity runs a migration's SQL through: the seam for lock politeness.

The deploy decides *what* runs and in which transaction (activities/apply.py); an executor
decides *how* one piece is sent to PostgreSQL. `PlainExecutor` sends it once. A lock-polite
executor (issue 13 item 5, branch `polite-locks`) keeps the same three calls and adds short
lock timeouts, retries and waiting without queueing; wiring it is choosing it in `executor_for`.

The contract each call keeps, whoever implements it (a retry must never repeat committed work):
- `run_script(sql, locks, what=, before=, after=)`: ONE transaction the executor opens itself:
  `before(conn)` (backups), `sql` as one simple-query script, `after(conn)` (the ledger row).
  Anything failing rolls all of it back, so it may be retried as a whole.
- `run_statement(sql, locks, what=, multi_transaction=)`: `sql` sent as one simple query outside
  any transaction. `multi_transaction=True` means it may commit part of its work before it fails
  (CREATE INDEX CONCURRENTLY, a file with its own COMMITs): attempted once, never retried here.
`locks` are the relation locks the SQL takes (domain.lock_levels on that branch); unused here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import asyncpg

Hook = Callable[[asyncpg.Connection], Awaitable[Any]]


class ScriptExecutor(Protocol):
    async def run_script(self, sql: str, locks: Sequence[Any] = (), *, what: str, before: Hook | None = None,
                         after: Hook | None = None) -> object: ...

    async def run_statement(self, sql: str, locks: Sequence[Any] = (), *, what: str,
                            multi_transaction: bool = False) -> object: ...


class PlainExecutor:
    """Sends each piece once, with the session's own lock_timeout."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def run_script(self, sql: str, locks: Sequence[Any] = (), *, what: str, before: Hook | None = None,
                         after: Hook | None = None) -> None:
        async with self.conn.transaction():
            if before is not None:
                await before(self.conn)
            if sql.strip():
                await self.conn.execute(sql)  # no arguments: the simple query protocol, the whole script at once
            if after is not None:
                await after(self.conn)

    async def run_statement(self, sql: str, locks: Sequence[Any] = (), *, what: str,
                            multi_transaction: bool = False) -> None:
        await self.conn.execute(sql)


def executor_for(conn: asyncpg.Connection) -> ScriptExecutor:
    """The executor the deploy uses on `conn` (the one place to wire another one)."""
    return PlainExecutor(conn)
