"""The expected schema after local migrations 1..k, by replaying them into a shadow database.

How a replay runs (and why):
- The shadow database lives on the live server (same version, same extensions available, same
  roles), is created through the live URL (its objects are owned by the shadow session's role, which
  domain/schema/roles.py maps to the live owners), and is named from the caller's run key:
  `migrator_shadow_<16 hex of sha256(run key)>`. It is dropped before use, so the leftovers of a
  killed worker are removed by the next attempt of the same run, and always dropped at the end,
  also when the caller is cancelled. A session advisory lock on the name (held by the connection
  to the live database) keeps two attempts of one run from using, or dropping, each other's shadow.
- Each migration.sql is sent as ONE simple-query script (`conn.execute(sql)`), on one session, as
  Prisma's engine sends it: PostgreSQL's implicit transaction applies, `BEGIN; ... COMMIT;` inside
  the script works, and `CREATE INDEX CONCURRENTLY` fails exactly where Prisma's would. The
  deploy runs each file the same way (domain/sql/script.py), so the replay builds, and fails,
  as the deploy will.
- One call can ask for several prefixes k1 < k2 < ...: migrations are replayed once, in order, and
  the model is read at each requested k.
- Models are cached in process, keyed by the server identity and the chain of checksums of
  migrations 1..k (activities/replay_cache.py): a run asking again for a prefix it has seen
  replays nothing.
  Failures are not cached (they may be transient).

A migration that fails comes back as a typed ReplayFailure (which migration, SQLSTATE, the server's
message); problems with the shadow itself (cannot connect, no CREATEDB, lock held) raise
ShadowError with one sentence. Neither ever contains the DSN or the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg
import structlog
from pydantic import BaseModel

from activities import shadow_template
from activities.catalog import read_schema_model
from activities.db import DatabaseUnavailable, connect
from activities.replay_cache import DEFAULT_CACHE, MigrationScript, ReplayCache
from activities.shadow_template import template_name
from domain.dsn import scrub
from domain.schema import SchemaModel
from domain.schema.replay import ReplayFailure
from domain.sql.parse import has_statements

log = structlog.get_logger(__name__)

SHADOW_PREFIX = "migrator_shadow_"
_LOCK_CLASS = 0x5348_4457  # advisory lock namespace ("SHDW"), apart from Prisma's bigint lock key
# SQLSTATE classes that mean "the server or the connection", not "this migration's SQL".
_INFRASTRUCTURE_CLASSES = ("08", "53", "57", "58")


class ShadowError(RuntimeError):
    """The shadow database could not be used (not a migration's fault). One sentence, no DSN."""


class ExpectedSchemas(BaseModel):
    """The expected schema after each requested prefix that could be replayed."""

    shadow_database: str
    # current_user of the shadow session: the owner of everything the replay created (compared
    # with the live owners through domain/schema/roles.py).
    shadow_role: str | None = None
    models: dict[int, SchemaModel]  # k -> model after migrations 1..k (0: the empty database)
    failure: ReplayFailure | None = None
    replayed: int = 0  # migrations executed by this call (0 when every prefix was cached)
    from_cache: tuple[int, ...] = ()
    seconds: float = 0.0

    def after(self, k: int) -> SchemaModel:
        """The model after migrations 1..k; KeyError when k was not requested or not reached."""
        return self.models[k]


def shadow_database_name(run_key: str) -> str:
    """Deterministic per run, short enough for PostgreSQL's 63-byte names, safe unquoted."""
    return SHADOW_PREFIX + hashlib.sha256(run_key.encode("utf-8")).hexdigest()[:16]


_IN_FLIGHT: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()


def _single_flight(server: str, history: str) -> asyncio.Lock:
    """One replay at a time per (server, whole history) in this worker; the lock lives as long as
    a call holds or waits for it. Callers wait inside their activity's periodic heartbeats."""
    lock = _IN_FLIGHT.get((server, history))
    if lock is None:
        lock = _IN_FLIGHT[(server, history)] = asyncio.Lock()
    return lock


async def expected_schemas(
    dsn: str,
    migrations: Sequence[MigrationScript],
    prefixes: Iterable[int],
    *,
    run_key: str,
    cache: ReplayCache | None = DEFAULT_CACHE,
    template: str | None = None,
    lock_wait: float = 30.0,
    statement_timeout: float | str | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    keep_template: bool = False,
    server: str | None = None,
) -> ExpectedSchemas:
    """The expected schema models after migrations 1..k for every k in `prefixes` (0 <= k <= n).

    `dsn` is the live database's URL: the shadow is created beside it and replayed with its role
    and its `?schema=`. `template` is the CREATE DATABASE template (default: the server's,
    template1, as Prisma's own shadow database). `on_progress(done, total, migration)` is called
    after each replayed migration (an activity heartbeats there). `keep_template`: start from the
    server's kept replay when it holds a prefix of these migrations, and keep this replay for the
    next run when it reaches its end (activities/shadow_template.py). `server`: the identity
    `server_identity` read on the caller's own session through `dsn`; then a call whose every
    prefix is cached opens no connection at all."""
    wanted = sorted(set(prefixes))
    if any(k < 0 or k > len(migrations) for k in wanted):
        raise ValueError(f"prefixes must be between 0 and {len(migrations)}, got {wanted}")
    started = time.perf_counter()
    name = shadow_database_name(run_key)
    chain = ReplayCache.chain(migrations)
    admin = None if server is not None else await _connect(dsn, "the live database", lock_timeout=lock_wait)
    try:
        server = server or await server_identity(admin, dsn, template)
        # Runs of the same history on the same server (a fleet's first wave) wait for the one
        # replaying it and take its models from the cache, instead of each replaying it again.
        async with _single_flight(server, chain[-1]) if cache is not None else contextlib.nullcontext():
            models = {k: m for k in wanted if cache is not None and (m := cache.get(server, chain[k])) is not None}
            todo = [k for k in wanted if k not in models]
            result = ExpectedSchemas(shadow_database=name, models=models, from_cache=tuple(sorted(models)),
                                     shadow_role=cache.role(server) if cache is not None else None)
            if todo:
                admin = admin or await _connect(dsn, "the live database", lock_timeout=lock_wait)
                kept = template_name(server) if keep_template else None
                result = await _replay(admin, dsn, name, migrations, todo, template, statement_timeout, on_progress,
                                       result, chain, kept)
                if cache is not None:
                    if result.shadow_role:
                        cache.put_role(server, result.shadow_role)
                    for k in todo:
                        if k in result.models:
                            cache.put(server, chain[k], result.models[k])
    finally:
        if admin is not None:
            await _quietly_close(admin)
    result = result.model_copy(update={"seconds": round(time.perf_counter() - started, 3)})
    log.info(
        "shadow_replay",
        shadow=name,
        prefixes=wanted,
        from_cache=list(result.from_cache),
        replayed=result.replayed,
        failed=result.failure.migration if result.failure else None,
        seconds=result.seconds,
    )
    return result


async def drop_shadow(dsn: str, run_key: str) -> None:
    """Drop the run's shadow database if it exists (e.g. when a run ends for good)."""
    admin = await _connect(dsn, "the live database")
    try:
        await _drop(admin, shadow_database_name(run_key), dsn)
    finally:
        await _quietly_close(admin)


# -- the replay --------------------------------------------------------------------------------


async def _replay(
    admin: asyncpg.Connection,
    dsn: str,
    name: str,
    migrations: Sequence[MigrationScript],
    todo: list[int],
    template: str | None,
    statement_timeout: float | str | None,
    on_progress: Callable[[int, int, str], None] | None,
    result: ExpectedSchemas,
    chain: list[str],
    kept: str | None,
) -> ExpectedSchemas:
    await _lock(admin, name, dsn)
    shadow: asyncpg.Connection | None = None
    models, failure, replayed, role = dict(result.models), None, 0, result.shadow_role
    try:
        await _drop(admin, name, dsn)  # a killed attempt's leftover
        start = await _create_from_kept(admin, name, kept, chain, min(todo), dsn) if kept else None
        if start is None:
            start = 0
            await _create(admin, name, template, dsn)
        shadow = await _connect(_with_database(dsn, name), f"the shadow database {name}", statement_timeout=statement_timeout)
        # The shadow is thrown away, also after a crash: waiting for each commit's WAL flush buys
        # nothing (schema and catalog are the same), and is most of a durable server's replay time.
        await shadow.execute("SET synchronous_commit = off")
        role = await shadow.fetchval("SELECT current_user")
        schema = _prisma_schema(dsn)
        if schema and not start:  # Prisma's engine creates the ?schema= schema when it is missing
            await shadow.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema.replace(chr(34), chr(34) * 2)}"')
        target, total = max(todo), len(migrations)
        if start in todo:
            models[start] = await read_schema_model(shadow)
        for position, migration in enumerate(migrations[start:target], start=start + 1):
            try:
                if has_statements(migration.sql):  # an empty script is applied as nothing, as in Prisma
                    await shadow.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                if _is_infrastructure(exc):
                    raise ShadowError(_sentence(f"the shadow database {name} failed during {migration.name}", exc, dsn)) from None
                failure = _failure(migration, position, total, exc, dsn)
                break
            replayed = position - start
            if on_progress is not None:
                on_progress(position, total, migration.name)
            if position in todo:
                models[position] = await read_schema_model(shadow)
        if kept and failure is None and target > start:
            await _keep(admin, shadow, name, kept, target, chain[target])
            shadow = None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
        raise ShadowError(_sentence(f"the shadow database {name} could not be read", exc, dsn)) from None
    finally:
        await _always_clean_up(admin, shadow, name, dsn)
    return result.model_copy(update={"models": models, "failure": failure, "replayed": replayed, "shadow_role": role})


async def _create_from_kept(admin: asyncpg.Connection, name: str, kept: str, chain: list[str], first_needed: int,
                           dsn: str) -> int | None:
    """Create the shadow as a copy of the server's kept replay when it holds a prefix of these
    migrations; the number of migrations it holds, or None (then the caller starts afresh)."""
    await shadow_template.lock(admin, kept)
    try:
        k = await shadow_template.usable(admin, kept, chain, first_needed)
        if k is None:
            return None
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{kept}"')
        except asyncpg.PostgresError as exc:  # e.g. someone connected to it: replay from scratch
            log.warning("shadow_template_unused", template=kept, reason=_sentence("copy failed", exc, dsn))
            return None
        return k
    finally:
        await shadow_template.unlock(admin, kept)


async def _keep(admin: asyncpg.Connection, shadow: asyncpg.Connection, name: str, kept: str, k: int, link: str) -> None:
    """Keep the finished replay for the next run: its commits flushed, its session closed, then
    renamed to the server's template (activities/shadow_template.py)."""
    await shadow.execute("SET synchronous_commit = on; SELECT pg_current_xact_id()")  # flushes the WAL before it
    await shadow.close()
    try:
        await shadow_template.keep(admin, name, kept, k, link)
    except asyncpg.PostgresError as exc:  # not kept: the next run replays from scratch; the shadow is dropped
        log.warning("shadow_template_not_kept", template=kept, reason=str(exc).splitlines()[0] if str(exc) else "")


def _failure(migration: MigrationScript, position: int, total: int, exc: asyncpg.PostgresError, dsn: str) -> ReplayFailure:
    message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    detail = getattr(exc, "detail", None)
    return ReplayFailure(
        migration=migration.name,
        position=position,
        total=total,
        sqlstate=getattr(exc, "sqlstate", None),
        error=scrub(message, dsn, urlsplit(dsn).password),
        detail=scrub(detail, dsn, urlsplit(dsn).password) if detail else None,
    )


def _is_infrastructure(exc: asyncpg.PostgresError) -> bool:
    return (getattr(exc, "sqlstate", None) or "")[:2] in _INFRASTRUCTURE_CLASSES


async def _always_clean_up(admin: asyncpg.Connection, shadow: asyncpg.Connection | None, name: str, dsn: str) -> None:
    """Close the shadow session, drop the shadow, release the lock: to the end even when the caller
    is cancelled meanwhile (then the cancellation goes on)."""

    async def clean() -> None:
        if shadow is not None:
            shadow.terminate()  # never waits: an in-flight statement is ended by the forced drop
        try:
            await _drop(admin, name, dsn)
        except ShadowError as exc:
            # Not raised over the replay's own outcome: the next attempt of the run drops it first.
            log.warning("shadow_left_behind", shadow=name, reason=str(exc))
        try:
            await admin.execute("SELECT pg_advisory_unlock($1::int, $2::int)", _LOCK_CLASS, _lock_key(name))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            pass  # the lock is the session's: closing the connection releases it too

    task = asyncio.ensure_future(clean())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


# -- small steps -------------------------------------------------------------------------------


async def _connect(dsn: str, what: str, **timeouts: float | None) -> asyncpg.Connection:
    try:
        return await connect(dsn, **timeouts)
    except DatabaseUnavailable as exc:
        raise ShadowError(f"cannot open {what} for the shadow replay: {exc}") from None


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


async def _lock(admin: asyncpg.Connection, name: str, dsn: str) -> None:
    try:
        await admin.execute("SELECT pg_advisory_lock($1::int, $2::int)", _LOCK_CLASS, _lock_key(name))
    except asyncpg.LockNotAvailableError:
        raise ShadowError(f"another replay of this run is still using the shadow database {name}; try again") from None
    except asyncpg.PostgresError as exc:
        raise ShadowError(_sentence(f"cannot lock the shadow database {name}", exc, dsn)) from None


async def _create(admin: asyncpg.Connection, name: str, template: str | None, dsn: str) -> None:
    sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    try:
        await admin.execute(sql)
    except asyncpg.PostgresError as exc:
        hint = " (the migration role needs CREATEDB)" if isinstance(exc, asyncpg.InsufficientPrivilegeError) else ""
        raise ShadowError(_sentence(f"cannot create the shadow database {name}{hint}", exc, dsn)) from None


async def _drop(admin: asyncpg.Connection, name: str, dsn: str) -> None:
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except asyncpg.PostgresError as exc:
        raise ShadowError(_sentence(f"cannot drop the shadow database {name}; drop it by hand", exc, dsn)) from None


async def server_identity(admin: asyncpg.Connection, dsn: str, template: str | None = None) -> str:
    """Where a replay through `dsn` runs (host, port, role, Prisma schema, server version, template),
    read on `admin`, a session opened through `dsn`: the key of the model cache and the kept template."""
    parts = urlsplit(dsn)
    version = await admin.fetchval("SHOW server_version_num")
    # The role the replay's objects get owners from: the login's, unless this database makes it
    # run as another (ALTER ROLE ... IN DATABASE ... SET role): then both, so two logins running as
    # one role here never share a kept template whose objects the other one owns.
    user = await admin.fetchval("SELECT CASE WHEN session_user = current_user THEN current_user::text "
                                "ELSE current_user || '/' || session_user END")
    return f"{parts.hostname}:{parts.port or 5432}|{user}|{_prisma_schema(dsn) or ''}|{version}|{template or ''}"


def _prisma_schema(dsn: str) -> str | None:
    return next((v for k, v in parse_qsl(urlsplit(dsn).query) if k == "schema"), None) or None


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


def _sentence(what: str, exc: BaseException, dsn: str) -> str:
    reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return f"{what}: {scrub(reason, dsn, urlsplit(dsn).password)}"


async def _quietly_close(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), timeout=5)
    except Exception:  # closing is best effort; the server ends the session (and its lock) anyway
        conn.terminate()
