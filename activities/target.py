"""The resource every activity shares: the worker's settings, the way to a target database, and
the runs' bundles (activities/bundle_store.py).

`TargetDatabases` maps an environment name to its database (the URL never leaves the worker),
gives each activity call a session with the environment's session settings (a new one, or the warm
one the previous activity on that database left: activities/sessions.py), takes Prisma's
advisory lock with a bounded wait, and turns every failure into an ApplicationError of one
sentence scrubbed of secrets, with no chained cause (the failure lands in workflow history).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qsl, urlsplit

import asyncpg
from temporalio.exceptions import ApplicationError

from activities.bookkeeping import BookkeepingError
from activities.bundle_store import RunBundles
from activities.db import DatabaseRefused, DatabaseUnavailable, connect
from activities.failures import is_transient
from activities.ledger import LedgerShapeError
from activities.sessions import IdleSessions
from domain.dsn import scrub
from domain.durations import InvalidDuration
from domain.lock_waits import LockRetryPolicy
from domain.models import RunMarks
from domain.plan import ledger_digest
from domain.prisma.ledger import ADVISORY_LOCK_KEY, TABLE, LedgerRow
from runtime.fleets import FleetSettings, split_member
from runtime.settings import EnvironmentSettings, Settings, UnknownEnvironment

# How often a backend running one of our statements checks that the worker is still connected.
CONNECTION_CHECK_INTERVAL = "1s"
# What other sessions see of ours in pg_stat_activity (unless the database URL names its own).
APPLICATION_NAME = "prisma-temporal-deploy"
OBSERVER_APPLICATION_NAME = "prisma-temporal-deploy lock observer"
# How long a fleet's discovered databases are trusted before the query runs again.
DISCOVERY_CACHE_SECONDS = 30.0


class TargetDatabases:
    """The environments this worker may touch, and how to reach each one safely."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # A run's bundle when it came in parts, read back from the run's history (activities/bundle_store.py).
        self.bundles = RunBundles()
        self._discovered: dict[str, tuple[float, list[str]]] = {}
        # Sessions one activity leaves warm for the next on the same database (activities/sessions.py).
        self.sessions = IdleSessions()

    def environment(self, name: str) -> EnvironmentSettings:
        try:
            return self.settings.environment(name)
        except UnknownEnvironment as exc:
            raise ApplicationError(str(exc), type="UnknownEnvironment", non_retryable=True) from None

    def dsn(self, name: str) -> str:
        """The environment's database URL: a secret, for connections only (never logged or returned)."""
        return self.environment(name).database_url.get_secret_value()

    def _secrets(self) -> list[str]:
        out: list[str] = []
        urls = [env.database_url for env in self.settings.environments.values()]
        urls += [f.discover.server_url for f in self.settings.fleets.values() if f.discover is not None]
        for url in urls:
            dsn = url.get_secret_value()
            out.append(dsn)
            password = re.match(r"^[a-z]+://[^:/@]+:([^@]+)@", dsn)
            if password:
                out.append(password.group(1))
        return sorted(out, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        return scrub(text, *self._secrets())

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Every failure becomes an ApplicationError: one scrubbed sentence, no chained cause."""
        try:
            yield
        except ApplicationError:
            raise
        except asyncio.CancelledError:
            raise
        except DatabaseRefused as exc:  # wrong password, unknown database: retrying cannot help
            raise ApplicationError(f"{what}: {self.scrub(str(exc))}", type="DatabaseRefused",
                                   non_retryable=True) from None
        except DatabaseUnavailable as exc:
            raise ApplicationError(f"{what}: {self.scrub(str(exc))}", type="DatabaseUnavailable") from None
        except BookkeepingError as exc:
            raise ApplicationError(f"{what}: {self.scrub(str(exc))}", type="BookkeepingError",
                                   non_retryable=True) from None
        except InvalidDuration as exc:
            raise ApplicationError(f"{what}: {exc}", type="InvalidInput", non_retryable=True) from None
        except LedgerShapeError as exc:
            raise ApplicationError(f"{what}: {self.scrub(str(exc))}", type="LedgerShapeError",
                                   non_retryable=True) from None
        except Exception as exc:  # noqa: BLE001 - classified below
            message = self.scrub(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
            if is_transient(exc):
                raise ApplicationError(f"{what}: database connection or transient error: {message}",
                                       type="TransientDatabaseError") from None
            if isinstance(exc, asyncpg.PostgresError):
                raise ApplicationError(f"{what}: {message}", type="DatabaseError", non_retryable=True) from None
            raise ApplicationError(f"{what}: {exc.__class__.__name__}: {message}", type="InternalError",
                                   non_retryable=True) from None

    def lock_policy(self, environment: str) -> LockRetryPolicy:
        """How politely the environment's migrations ask for their locks (checked when settings load)."""
        self.environment(environment)
        try:
            return self.settings.lock_policy(environment)
        except ValueError as exc:
            raise ApplicationError(str(exc), type="InvalidInput", non_retryable=True) from None

    def fleet(self, name: str) -> FleetSettings:
        try:
            return self.settings.fleets[name]
        except KeyError:
            raise ApplicationError(
                f"unknown environment or fleet '{name}' (environments: {', '.join(sorted(self.settings.environments)) or 'none'}; "
                f"fleets: {', '.join(sorted(self.settings.fleets)) or 'none'})", type="UnknownEnvironment",
                non_retryable=True) from None

    async def discover(self, fleet_name: str, *, fresh: bool = False) -> list[str]:
        """The database names a discovered fleet's query lists now (cached briefly)."""
        fleet = self.fleet(fleet_name)
        assert fleet.discover is not None
        cached = self._discovered.get(fleet_name)
        if cached and not fresh and time.monotonic() - cached[0] < DISCOVERY_CACHE_SECONDS:
            return cached[1]
        with self.errors(f"listing the databases of fleet {fleet_name}"):
            conn = await connect(fleet.discover.server_url.get_secret_value(), lock_timeout=5, statement_timeout=60)
            try:
                rows = await conn.fetch(fleet.discover.query)
            finally:
                await conn.close()
        names = [str(r[0]) for r in rows if r[0] is not None]
        self._discovered[fleet_name] = (time.monotonic(), names)
        return names

    async def check_member(self, environment: str) -> None:
        """A discovered fleet's member may be reached only while the fleet's query lists it."""
        member = split_member(environment)
        if environment in self.settings.environments or member is None:
            return
        fleet = self.settings.fleets.get(member[0])
        if fleet is None or fleet.discover is None:
            return
        if member[1] in await self.discover(member[0]) or member[1] in await self.discover(member[0], fresh=True):
            return
        raise ApplicationError(f"{member[1]} is not a database of fleet {member[0]} (its discovery query does not list it)",
                               type="UnknownEnvironment", non_retryable=True)

    def statement_timeout(self, environment: str) -> str:
        """The environment's statement_timeout (PostgreSQL's syntax), for the shadow replay too."""
        return self.settings.env_setting(environment, "statement_timeout")

    @contextlib.asynccontextmanager
    async def connection(self, environment: str, application_name: str = APPLICATION_NAME, *, keep: bool = False
                         ) -> AsyncIterator[asyncpg.Connection]:
        """A session on the environment's database, with its session settings: the warm one the
        previous activity on it left, when there is one (activities/sessions.py). `keep`: the block
        runs only the worker's own statements, so its session may serve the next activity."""
        env = self.environment(environment)
        await self.check_member(environment)
        dsn = env.database_url.get_secret_value()
        lock, statement = (self.settings.env_setting(environment, name) for name in ("lock_timeout", "statement_timeout"))
        key = f"{dsn}\n{lock}\n{statement}"  # a session is only handed on with the settings it was opened with
        conn, opened_as = await self._session(key, dsn, lock, statement, application_name)
        done = False
        try:
            yield conn
            done = True
        finally:
            kept = done and keep and await self.sessions.keep(key, conn, opened_as, reset=_check_interval_sql(conn))
            if not kept:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)
                if not conn.is_closed():
                    conn.terminate()

    async def _session(self, key: str, dsn: str, lock_timeout: object, statement_timeout: object,
                       application_name: str) -> tuple[asyncpg.Connection, str | None]:
        """(a session, the application_name it was opened with: None when the URL names its own)."""
        taken = self.sessions.take(key)
        if taken is not None:
            conn, opened_as = taken
            if opened_as is not None and opened_as != application_name:
                await conn.execute("SELECT set_config('application_name', $1, false)", application_name)
            return conn, opened_as
        conn = await connect(dsn, lock_timeout=lock_timeout, statement_timeout=statement_timeout,
                             application_name=application_name)
        # A worker killed mid-statement leaves its backend running the statement, holding Prisma's lock
        # and the transaction, until it next writes to the dead socket (hours for a big index build);
        # PostgreSQL >= 14 can check the socket while a query runs and cancel it. Older servers: skipped.
        if sql := _check_interval_sql(conn):
            with contextlib.suppress(asyncpg.PostgresError):
                await conn.execute(sql)
        named = "application_name" not in dict(parse_qsl(urlsplit(dsn).query))
        return conn, application_name if named else None

    @contextlib.asynccontextmanager
    async def advisory_lock(self, conn: asyncpg.Connection, environment: str) -> AsyncIterator[None]:
        """Prisma's session lock; polled with pg_try_advisory_lock so the wait is bounded."""
        limit = self.settings.advisory_lock_timeout.total_seconds()
        deadline = time.monotonic() + limit
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY):
            if time.monotonic() >= deadline:
                raise ApplicationError(
                    f"another migration (a Prisma CLI or another run) has held the migration lock "
                    f"pg_advisory_lock({ADVISORY_LOCK_KEY}) on {environment} for more than {limit:g}s; "
                    "nothing was changed",
                    type="AdvisoryLockTimeout",
                )
            await asyncio.sleep(0.25)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


def _check_interval_sql(conn: asyncpg.Connection) -> str:
    """The statement that makes the server watch our socket while a query runs (PostgreSQL >= 14)."""
    if conn.get_server_version() < (14,):
        return ""
    return f"SET client_connection_check_interval = '{CONNECTION_CHECK_INTERVAL}'"


def ledger_changed(plan_digest: str, rows: list[LedgerRow], marks: RunMarks, environment: str) -> str | None:
    """Why a stage must not act (someone else changed the ledger since the plan), or None."""
    if ledger_digest(rows, marks) == plan_digest:
        return None
    return (
        f"{TABLE} on {environment} changed since the plan was made (someone ran a migration or edited the "
        "table); nothing was changed by this stage — start a new run to plan again"
    )
