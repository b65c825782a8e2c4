"""Warm sessions handed from one activity to the next (activities/sessions.py), on real PostgreSQL:
a session is handed on only after the worker's own statements, put back to its opening state,
only to the same database with the same settings, and closed when it is not taken in time."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from activities.sessions import IdleSessions
from activities.target import OBSERVER_APPLICATION_NAME, TargetDatabases
from runtime.settings import EnvironmentSettings, Settings
from tests.helpers import make_settings


async def _backend(conn: asyncpg.Connection) -> tuple[int, str, str, str]:
    row = await conn.fetchrow("SELECT pg_backend_pid() AS pid, current_setting('statement_timeout') AS st, "
                              "current_setting('application_name') AS app, "
                              "current_setting('client_connection_check_interval') AS check")
    return row["pid"], row["st"], row["app"], row["check"]


async def _open_sessions(db: asyncpg.Connection, pid: int) -> int:
    return await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)


async def test_a_session_of_our_own_statements_serves_the_next_activity_as_if_new(database_url, db) -> None:
    targets = TargetDatabases(make_settings("dev", database_url, statement_timeout="7s"))
    async with targets.connection("dev", keep=True) as first:
        pid, timeout, app, check = await _backend(first)
        assert (timeout, app, check) == ("7s", "prisma-temporal-deploy", "1s")
        # Whatever our statements set for the session is undone before it is handed on.
        await first.execute("SET statement_timeout = '1ms'; SET client_connection_check_interval = 0")
    async with targets.connection("dev", OBSERVER_APPLICATION_NAME, keep=True) as observer:
        assert await _backend(observer) == (pid, "7s", OBSERVER_APPLICATION_NAME, "1s")
    async with targets.connection("dev") as again:  # e.g. the deploy's: closed after it
        assert await _backend(again) == (pid, "7s", "prisma-temporal-deploy", "1s")
    await asyncio.sleep(0.2)
    assert await _open_sessions(db, pid) == 0
    async with targets.connection("dev") as fresh:
        assert (await _backend(fresh))[0] != pid


async def test_a_session_is_not_handed_on_after_a_failure_or_inside_a_transaction(database_url, db) -> None:
    targets = TargetDatabases(make_settings("dev", database_url))
    with pytest.raises(RuntimeError):
        async with targets.connection("dev", keep=True) as conn:
            failed = conn.get_server_pid()
            raise RuntimeError("the activity failed")
    async with targets.connection("dev", keep=True) as conn:
        assert conn.get_server_pid() != failed
        open_tx = conn.get_server_pid()
        await conn.execute("BEGIN")
    async with targets.connection("dev", keep=True) as conn:
        assert conn.get_server_pid() not in (failed, open_tx)
    await asyncio.sleep(0.2)
    assert await _open_sessions(db, failed) == 0 and await _open_sessions(db, open_tx) == 0
    assert len(targets.sessions) == 1


async def test_sessions_are_kept_per_database_and_settings_and_closed_when_not_taken(database_url, db) -> None:
    settings = Settings(environments={
        "a": EnvironmentSettings(database_url=database_url, gates=[], statement_timeout="5s"),
        "b": EnvironmentSettings(database_url=database_url, gates=[], statement_timeout="9s"),
    }, _env_file=None)
    targets = TargetDatabases(settings)
    targets.sessions = IdleSessions(idle_s=0.5)
    async with targets.connection("a", keep=True) as conn:
        kept = conn.get_server_pid()
    async with targets.connection("b", keep=True) as conn:  # same URL, other settings: its own session
        assert conn.get_server_pid() != kept and await conn.fetchval("SHOW statement_timeout") == "9s"
    assert len(targets.sessions) == 2
    await asyncio.sleep(0.8)
    assert len(targets.sessions) == 0 and await _open_sessions(db, kept) == 0
    async with targets.connection("a") as conn:
        assert conn.get_server_pid() != kept


async def test_a_session_the_server_ended_while_idle_is_not_handed_on(database_url, db) -> None:
    targets = TargetDatabases(make_settings("dev", database_url))
    async with targets.connection("dev", keep=True) as conn:
        ended = conn.get_server_pid()
    assert await db.fetchval("SELECT pg_terminate_backend($1)", ended)
    await asyncio.sleep(0.2)
    async with targets.connection("dev") as conn:
        assert conn.get_server_pid() != ended and await conn.fetchval("SELECT 1") == 1
