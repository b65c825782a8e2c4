"""The lock-polite executor on a real PostgreSQL, behind a long reader, under application load.

The scenario of issue 13: a report transaction holds ACCESS SHARE on `orders` for a few seconds;
meanwhile an application runs short SELECTs and INSERTs on it from other connections, each one
timed; a migration that needs ACCESS EXCLUSIVE is deployed. What a user checks: no application
statement waited much longer than one lock attempt, the migration is applied once the reader
ends, the reader is named (pid and application_name), and when the budget runs out the error
names it and nothing changed.

The first test is the control: the same load with one plain ALTER (lock_timeout 2 s) shows
stalls of seconds, so the bounds asserted below would catch a regression to queueing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import pytest

from activities.locks import LockPoliteExecutor
from domain.lock_levels import all_locks, script_locks
from domain.lock_waits import LockBudgetExhausted, LockRetryPolicy

READER_S = 3.0
# Each attempt is at most 200 ms; an application statement may wait for one attempt plus the
# migration's own (fast) execution. 1 s leaves room for a busy shared test machine.
MAX_APP_LATENCY_S = 1.0
POLICY = LockRetryPolicy(budget_s=30, first_attempt_ms=50, max_attempt_ms=200)


@dataclass
class AppLoad:
    """Short SELECTs and INSERTs on `orders` from a few connections, each one timed."""

    url: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _client(self, n: int) -> None:
        conn = await asyncpg.connect(self.url, server_settings={"application_name": f"app-{n}"})
        try:
            i = 0
            while not self.stop.is_set():
                i += 1
                t0 = time.perf_counter()
                try:
                    if i % 2:
                        await conn.fetchval("SELECT total FROM orders WHERE id = $1", 1 + (i * 7919) % 1000)
                    else:
                        await conn.execute("INSERT INTO orders (total) VALUES ($1)", i)
                except asyncpg.PostgresError as exc:
                    self.errors.append(f"{exc.sqlstate}: {exc}")
                self.latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.01)
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def running(self, clients: int = 3) -> AsyncIterator[AppLoad]:
        tasks = [asyncio.create_task(self._client(n)) for n in range(clients)]
        await asyncio.sleep(0.3)
        try:
            yield self
        finally:
            self.stop.set()
            await asyncio.gather(*tasks)


class Reader:
    """A report: reads `orders` in a transaction, then stays in it (idle in transaction) for
    `seconds`, holding ACCESS SHARE."""

    def __init__(self, url: str, seconds: float, application_name: str = "report") -> None:
        self.url, self.seconds, self.application_name = url, seconds, application_name
        self.started = asyncio.Event()
        self.pid: int | None = None
        self.task: asyncio.Task | None = None

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.url, server_settings={"application_name": self.application_name})
        try:
            async with conn.transaction():
                await conn.fetchval("SELECT count(*) FROM orders")
                self.pid = conn.get_server_pid()
                self.started.set()
                await asyncio.sleep(self.seconds)
        finally:
            await conn.close()

    async def start(self) -> Reader:
        self.task = asyncio.create_task(self._run())
        await self.started.wait()
        return self

    def done(self) -> bool:
        return self.task is not None and self.task.done()

    async def finish(self) -> None:
        assert self.task is not None
        await self.task


@pytest.fixture
async def orders(database_url: str, db: asyncpg.Connection) -> str:
    await db.execute("""
        CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, total numeric NOT NULL);
        INSERT INTO orders (total) SELECT g FROM generate_series(1, 5000) g;
        CREATE TABLE audit (id int);
    """)
    return database_url


@pytest.fixture
async def executor(orders: str) -> AsyncIterator[LockPoliteExecutor]:
    conn = await asyncpg.connect(orders, server_settings={"lock_timeout": "10s", "application_name": "migrator"})
    observer = await asyncpg.connect(orders, server_settings={"application_name": "migrator-observer"})
    try:
        yield LockPoliteExecutor(conn, observer, POLICY)
    finally:
        await conn.close()
        await observer.close()


async def column_exists(db: asyncpg.Connection, table: str, column: str) -> bool:
    return await db.fetchval(
        "SELECT count(*) = 1 FROM information_schema.columns WHERE table_name = $1 AND column_name = $2", table, column)


async def test_control_plain_alter_stalls_the_application(orders: str, db: asyncpg.Connection) -> None:
    """Without politeness the same harness measures multi-second stalls (so the bounds below mean something)."""
    async with AppLoad(orders).running() as load:
        reader = await Reader(orders, READER_S).start()
        conn = await asyncpg.connect(orders, server_settings={"lock_timeout": "2s"})
        with pytest.raises(asyncpg.LockNotAvailableError):
            await conn.execute("ALTER TABLE orders ADD COLUMN note text")
        await conn.close()
        await reader.finish()
    assert max(load.latencies) > 1.5, f"the control saw no stall (max {max(load.latencies):.3f}s)"


async def test_polite_add_column_behind_a_long_reader(orders: str, db: asyncpg.Connection,
                                                      executor: LockPoliteExecutor) -> None:
    sql = "ALTER TABLE orders ADD COLUMN note text;\n"
    locks = all_locks(script_locks(sql))
    heartbeats: list[dict] = []
    async with AppLoad(orders).running() as load:
        reader = await Reader(orders, READER_S).start()
        t0 = time.perf_counter()
        deploy = asyncio.create_task(executor.run_script(
            sql, locks, what="20240101_add_note",
            after=lambda c: c.execute("INSERT INTO audit VALUES (1)")))
        while not deploy.done():  # what a heartbeat would send, every 250 ms
            if executor.report is not None:
                heartbeats.append(json.loads(json.dumps(executor.report.as_details())))
            await asyncio.sleep(0.25)
        report = await deploy
        elapsed = time.perf_counter() - t0
        await reader.finish()
    reader_pid = reader.pid

    assert await column_exists(db, "orders", "note")
    assert await db.fetchval("SELECT count(*) FROM audit") == 1  # the ledger-row stand-in ran exactly once
    assert elapsed >= READER_S - 0.6, "the migration cannot have taken its lock while the reader held ACCESS SHARE"
    assert elapsed < READER_S + 3, f"applied {elapsed:.1f}s after the start, long after the reader ended"
    assert load.errors == []
    assert max(load.latencies) < MAX_APP_LATENCY_S, f"an application statement waited {max(load.latencies):.3f}s"
    assert report.applied and report.waited_s >= READER_S - 1
    assert reader_pid in report.seen_pids
    waiting = [h for h in heartbeats if h["waiting"]]
    assert waiting, "no heartbeat showed the wait"
    blocker = waiting[-1]["blockers"][0]
    assert blocker["pid"] == reader_pid and blocker["application_name"] == "report"
    assert blocker["state"] == "idle in transaction" and blocker["relation"] == "public.orders"
    assert blocker["query"].startswith("SELECT count(*) FROM orders")
    assert f"pid {reader_pid} (application 'report', idle in transaction for" in waiting[-1]["message"]
    # the session's own lock_timeout is back for the worker's other statements
    assert await executor.conn.fetchval("SHOW lock_timeout") == "10s"


async def test_budget_exhausted_names_the_blocker_and_changes_nothing(orders: str, db: asyncpg.Connection,
                                                                      executor: LockPoliteExecutor) -> None:
    executor.policy = LockRetryPolicy(budget_s=1.5, first_attempt_ms=50, max_attempt_ms=200)
    sql = "ALTER TABLE orders ADD COLUMN note text;\nALTER TABLE orders ADD COLUMN memo text;\n"
    async with AppLoad(orders).running() as load:
        reader = await Reader(orders, 4.0).start()
        t0 = time.perf_counter()
        with pytest.raises(LockBudgetExhausted) as caught:
            await executor.run_script(sql, all_locks(script_locks(sql)), what="20240101_add_note",
                                      after=lambda c: c.execute("INSERT INTO audit VALUES (1)"))
        elapsed = time.perf_counter() - t0
        await reader.finish()
    reader_pid = reader.pid
    message = str(caught.value)
    assert message.startswith("20240101_add_note: could not take the lock on public.orders within 1.5s: "
                              f"pid {reader_pid} (application 'report', idle in transaction for ")
    assert "since 'SELECT count(*) FROM orders')" in message and message.endswith("holds it; nothing was changed")
    assert 1.4 <= elapsed < 2.5
    assert not caught.value.changed
    assert not await column_exists(db, "orders", "note") and not await column_exists(db, "orders", "memo")
    assert await db.fetchval("SELECT count(*) FROM audit") == 0
    assert max(load.latencies) < MAX_APP_LATENCY_S
    assert await executor.conn.fetchval("SHOW lock_timeout") == "10s"


async def test_blocker_on_a_table_the_sql_did_not_name(orders: str, db: asyncpg.Connection,
                                                       executor: LockPoliteExecutor) -> None:
    """Given no locks at all, the executor still bounds each wait to one short attempt and names
    the blocker from pg_blocking_pids(); the lock timeout on the second statement rolls back the
    first, so the script is applied exactly once, whole."""
    sql = "ALTER TABLE audit ADD COLUMN x int;\nALTER TABLE orders ADD COLUMN note text;\n"
    async with AppLoad(orders).running() as load:
        reader = await Reader(orders, READER_S).start()
        partial_seen = []

        async def watch_partial() -> None:  # the first ALTER must never be visible on its own
            while not reader.done():
                partial_seen.append(await column_exists(db, "audit", "x") and not await column_exists(db, "orders", "note"))
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch_partial())
        report = await executor.run_script(sql, [], what="20240102_two_tables")
        await reader.finish()
        await watcher
    reader_pid = reader.pid
    assert await column_exists(db, "audit", "x") and await column_exists(db, "orders", "note")
    assert not any(partial_seen)
    assert report.attempts > 1 and report.lock_timeouts >= 1
    assert reader_pid in report.seen_pids
    assert max(load.latencies) < MAX_APP_LATENCY_S


async def test_statement_outside_a_transaction(orders: str, db: asyncpg.Connection,
                                               executor: LockPoliteExecutor) -> None:
    sql = "ALTER TABLE orders ADD COLUMN note text"
    async with AppLoad(orders).running() as load:
        reader = await Reader(orders, 2.0).start()
        report = await executor.run_statement(sql, all_locks(script_locks(sql)), what="20240103_note")
        await reader.finish()
    assert await column_exists(db, "orders", "note")
    assert report.applied and report.waited_s > 1.0
    assert max(load.latencies) < MAX_APP_LATENCY_S


async def test_create_index_concurrently_waits_once_and_names_the_old_transaction(
        orders: str, db: asyncpg.Connection, executor: LockPoliteExecutor) -> None:
    """CONCURRENTLY gets one patient attempt (retrying could meet its own INVALID index): it waits
    for the writer's transaction, which pg_blocking_pids() names, while the application goes on."""
    sql = "CREATE INDEX CONCURRENTLY orders_total_idx ON orders (total)"
    (statement,) = script_locks(sql)
    assert statement.multi_transaction
    writer = await asyncpg.connect(orders, server_settings={"application_name": "batch-job"})
    async with AppLoad(orders).running() as load:
        tx = writer.transaction()
        await tx.start()
        await writer.execute("UPDATE orders SET total = total WHERE id = 4999")
        deploy = asyncio.create_task(executor.run_statement(sql, statement.locks, what="20240104_idx",
                                                            multi_transaction=True))
        await asyncio.sleep(2.0)
        assert not deploy.done()
        assert executor.report is not None and writer.get_server_pid() in executor.report.seen_pids
        await tx.commit()
        report = await asyncio.wait_for(deploy, 20)
    await writer.close()
    assert report.attempts == 1 and report.applied
    assert await db.fetchval("SELECT indisvalid FROM pg_index WHERE indexrelid = 'orders_total_idx'::regclass")
    assert max(load.latencies) < MAX_APP_LATENCY_S and load.errors == []


async def test_refuses_to_run_inside_a_transaction(executor: LockPoliteExecutor) -> None:
    async with executor.conn.transaction():
        with pytest.raises(ValueError, match="must start outside a transaction"):
            await executor.run_statement("SELECT 1", [], what="x")


async def test_unprivileged_migration_role_still_names_the_blocker(orders: str, db: asyncpg.Connection) -> None:
    """A migration role without pg_read_all_stats sees other roles' pid, application_name and
    locks but not their state or query: the blocker is still named, ages come from what we saw,
    and the report says how to see more."""
    from urllib.parse import urlsplit, urlunsplit

    role = f"migrator_{uuid.uuid4().hex[:8]}"
    await db.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'np-pw'; ALTER TABLE orders OWNER TO {role}")
    parts = urlsplit(orders)
    url = urlunsplit(parts._replace(netloc=f"{role}:np-pw@{parts.hostname}:{parts.port}"))
    conn = await asyncpg.connect(url)
    observer = await asyncpg.connect(url)
    try:
        executor = LockPoliteExecutor(conn, observer, POLICY)
        sql = "ALTER TABLE orders ADD COLUMN note text"
        async with AppLoad(orders).running() as load:
            reader = await Reader(orders, READER_S).start()
            deploy = asyncio.create_task(executor.run_script(sql, all_locks(script_locks(sql)), what="m"))
            await asyncio.sleep(READER_S / 2)
            assert executor.report is not None and executor.report.waiting
            (blocker,) = executor.report.blockers
            message = executor.report.message()
            report = await deploy
            await reader.finish()
    finally:
        await conn.close()
        await observer.close()
        await db.execute(f"ALTER TABLE orders OWNER TO postgres; DROP ROLE {role}")
    assert (blocker.pid, blocker.application_name, blocker.state, blocker.query) == (reader.pid, "report", None, None)
    assert blocker.transaction_age_s is not None and blocker.transaction_age_s > 0.5
    assert "details hidden: grant pg_read_all_stats" in message
    assert report.applied and await column_exists(db, "orders", "note")
    assert max(load.latencies) < MAX_APP_LATENCY_S


async def test_drop_index_waits_for_readers_of_its_table(orders: str, db: asyncpg.Connection,
                                                         executor: LockPoliteExecutor) -> None:
    """DROP INDEX names only the index; its table's ACCESS EXCLUSIVE lock is found through pg_index,
    so the reader of the table is waited out without queueing."""
    await db.execute("CREATE INDEX orders_total_idx ON orders (total)")
    sql = "DROP INDEX orders_total_idx;\n"
    (statement,) = script_locks(sql)
    assert statement.locks[0].is_index and statement.locks[0].table_mode is not None
    async with AppLoad(orders).running() as load:
        reader = await Reader(orders, 2.0).start()
        report = await executor.run_script(sql, statement.locks, what="20240105_drop_idx")
        await reader.finish()
    assert report.applied and reader.pid in report.seen_pids and report.lock_timeouts <= 1
    assert await db.fetchval("SELECT to_regclass('orders_total_idx')") is None
    assert max(load.latencies) < MAX_APP_LATENCY_S
