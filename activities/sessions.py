"""Warm sessions to a target database, handed from one activity of a run to the next.

A new PostgreSQL session costs far more than its connect: the server's catalog caches start cold
and asyncpg prepares every statement again, so the first ledger and schema reads of a session take
~15 ms and ~40 ms where a warm session takes ~1 ms and ~4 ms. A run's activities (preflight, deploy,
verify) each read both, one right after the other, on the same database.

So a session that ran only the worker's own statements is kept idle for `IDLE_S` seconds, and the
next activity on the same database and worker takes it instead of connecting: preflight's session
becomes the deploy's lock observer (which also reads the schema before the run), and that one
verify's. A session that ran anything else (a migration, a rollback, verify.sql) is closed, never
kept: such SQL may change session state. A kept session is put back to its opening state first
(RESET ALL restores the settings it was opened with; the caller's `reset` statement re-applies
what it set after opening). Kept sessions are per database URL and settings (the caller's key)
and event loop, at most `PER_KEY` each; sessions the server closed meanwhile are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import asyncpg

IDLE_S = 3.0
PER_KEY = 2


@dataclass
class _Idle:
    conn: asyncpg.Connection
    application_name: str | None
    loop: asyncio.AbstractEventLoop
    since: float = field(default_factory=time.monotonic)


class IdleSessions:
    """Sessions kept between activities, keyed by the database URL they were opened with."""

    def __init__(self, idle_s: float = IDLE_S, per_key: int = PER_KEY) -> None:
        self.idle_s = idle_s
        self.per_key = per_key
        self._idle: dict[str, list[_Idle]] = {}

    def take(self, key: str) -> tuple[asyncpg.Connection, str | None] | None:
        """A kept session for `key` (the most recent one) and the application_name it carries, or None."""
        loop = asyncio.get_running_loop()
        entries = self._idle.get(key, [])
        while entries:
            entry = entries.pop()
            if entry.loop is loop and not entry.conn.is_closed() and time.monotonic() - entry.since < self.idle_s:
                return entry.conn, entry.application_name
            _close_soon(entry)
        return None

    async def keep(self, key: str, conn: asyncpg.Connection, application_name: str | None, reset: str = "") -> bool:
        """Keep `conn` (which ran only the worker's own statements) for the next activity; False
        when it cannot be kept (the caller closes it)."""
        if conn.is_closed() or conn.is_in_transaction():
            return False
        try:
            await asyncio.wait_for(conn.execute("RESET ALL" + (f"; {reset}" if reset else "")), 5)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError):
            return False
        loop = asyncio.get_running_loop()
        entry = _Idle(conn, application_name, loop)
        entries = self._idle.setdefault(key, [])
        entries.append(entry)
        while len(entries) > self.per_key:
            _close_soon(entries.pop(0))
        loop.call_later(self.idle_s, self._expire, key, entry)
        return True

    def _expire(self, key: str, entry: _Idle) -> None:
        entries = self._idle.get(key, [])
        if entry in entries:
            entries.remove(entry)
            _close_soon(entry)
        if not entries:
            self._idle.pop(key, None)

    def close_all(self) -> None:
        """Close every kept session (a stopping worker)."""
        for entries in self._idle.values():
            for entry in entries:
                _close_soon(entry)
        self._idle.clear()

    def __len__(self) -> int:
        return sum(len(e) for e in self._idle.values())


_closing: set[asyncio.Task] = set()


def _close_soon(entry: _Idle) -> None:
    """Close politely from the session's own running loop; from anywhere else, just drop it."""
    if entry.conn.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not entry.loop:
        entry.conn.terminate()
        return

    async def close() -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(entry.conn.close(), 5)
        if not entry.conn.is_closed():
            entry.conn.terminate()

    task = running.create_task(close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)
