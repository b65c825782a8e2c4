"""Opening a connection to a target database, with one clear sentence when that is impossible.

Shared by `status` and the workflow's activities. Errors never contain the password: they name
the database by its redacted URL (domain.dsn.redact_dsn) and are scrubbed of the DSN itself.
Prisma-style URLs work as they are: `?schema=NAME` becomes the session's search_path (as Prisma's
native engine does) and Prisma-only pool parameters are dropped instead of being sent to the
server as unknown settings.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from domain.dsn import InvalidDsn, check_dsn, redact_dsn, scrub
from domain.durations import parse_pg_duration

CONNECT_TIMEOUT_S = 10.0
# Query parameters of Prisma's connection URL that mean nothing to PostgreSQL itself.
_PRISMA_ONLY = {"schema", "connection_limit", "pool_timeout", "pgbouncer", "statement_cache_size", "socket_timeout"}


class DatabaseUnavailable(RuntimeError):
    """One sentence, safe to show and log: no password, no full URL."""


class DatabaseRefused(DatabaseUnavailable):
    """The server answered and refused for good (wrong password or user, unknown database, a bad
    URL): trying again cannot help, unlike an unreachable or starting server."""


_REFUSALS = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError,
             asyncpg.InvalidCatalogNameError)


def _split_prisma_params(dsn: str) -> tuple[str, str | None]:
    """(the URL asyncpg should see, the schema Prisma would use or None)."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    kept = [(k, v) for k, v in query if k not in _PRISMA_ONLY]
    return urlunsplit(parts._replace(query=urlencode(kept))), schema


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _setting(value: float | str | None, name: str) -> str | None:
    """A session time setting as whole milliseconds, read exactly as PostgreSQL would read it
    (domain/durations.py): a value the server would silently turn into 0 (= no timeout), such as
    0.0005 s, raises InvalidDuration instead. Numbers are seconds; text is PostgreSQL's syntax."""
    if value is None:
        return None
    text = value if isinstance(value, str) else f"{float(value)!r}s"
    return parse_pg_duration(text, name).setting


def _describe(exc: BaseException, dsn: str) -> str:
    parts = urlsplit(dsn)
    where = redact_dsn(dsn)
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    user = parts.username or "the default user"
    database = parts.path.lstrip("/")
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return f"authentication failed for user {user} at {host}:{port}: wrong password or user ({where})"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"the server at {host}:{port} refused user {user} for database {database} ({where})"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"database {database} does not exist on {host}:{port} ({where})"
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return f"the server at {host}:{port} has no free connection slots ({where})"
    if isinstance(exc, asyncpg.CannotConnectNowError):
        return f"the server at {host}:{port} is not accepting connections yet (starting or shutting down)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve database host {host} ({where})"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"timed out after {CONNECT_TIMEOUT_S:g}s connecting to {host}:{port} ({where})"
    if isinstance(exc, OSError):
        return f"cannot reach the database server at {host}:{port} (is it running?) ({where})"
    if isinstance(exc, asyncpg.PostgresError):
        return f"cannot connect to {where}: {scrub(str(exc).splitlines()[0], dsn, parts.password)}"
    return f"cannot connect to {where}: {exc.__class__.__name__}"


async def connect(
    dsn: str, *, lock_timeout: float | str | None = None, statement_timeout: float | str | None = None,
    application_name: str | None = None,
) -> asyncpg.Connection:
    """A connection to `dsn`, or DatabaseUnavailable with one clear, password-free sentence.
    Timeouts (seconds, or PostgreSQL's text such as '10s') become the session's lock_timeout /
    statement_timeout; one PostgreSQL would read as "no timeout" raises InvalidDuration first."""
    lock = _setting(lock_timeout, "lock_timeout")
    statement = _setting(statement_timeout, "statement_timeout")
    try:
        check_dsn(dsn)
    except InvalidDsn as exc:
        raise DatabaseRefused(str(exc)) from None
    url, schema = _split_prisma_params(dsn)
    settings: dict[str, str] = {}
    if schema:
        settings["search_path"] = _quote_ident(schema)
    if lock is not None:
        settings["lock_timeout"] = lock
    if statement is not None:
        settings["statement_timeout"] = statement
    if application_name and "application_name" not in dict(parse_qsl(urlsplit(url).query)):
        settings["application_name"] = application_name  # the URL's own name wins
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S, server_settings=settings or None)
    except Exception as exc:  # every failure becomes one sentence; the cause is not chained (it may hold the URL)
        kind = DatabaseRefused if isinstance(exc, _REFUSALS) else DatabaseUnavailable
        raise kind(_describe(exc, dsn)) from None
