"""Running a migration without making the application queue behind it.

PostgreSQL grants table locks in queue order. A migration that asks for ACCESS EXCLUSIVE while
a report transaction holds ACCESS SHARE waits, and every later SELECT and INSERT on the table
waits behind the migration: with `lock_timeout = 10s` the application freezes for 10 s, and
again on every retry. `LockPoliteExecutor` avoids both halves of that:

1. **Look before queueing.** Before each attempt (and while backing off) a second connection
   reads `pg_locks` for sessions holding or awaiting a lock that conflicts with the ones the
   migration will take (`domain.lock_levels.script_locks`), and for transactions earlier
   attempts found blocking them (`pg_blocking_pids`). While one of them is older than the next
   attempt's timeout, we wait *without* asking for the lock, so nobody queues behind us.
2. **Ask briefly.** Each attempt runs with a short `lock_timeout` (50 ms rising to 200 ms by
   default), so an application statement that arrives while we wait is held up at most that long.
3. **Retry within a budget** (default 5 min) with jittered backoff; when the budget runs out, a
   `LockBudgetExhausted` whose message names the blocking sessions.

Every wait is recorded in a `LockWaitReport` (`executor.report`, live while running): attempts,
lock timeouts, time spent waiting, the blocking sessions (pid, application_name, state,
transaction age, start of the query). Put `report.as_details()` in heartbeat details.

**The retry invariant.** An attempt is retried only when its failure leaves nothing behind:
- `run_script` runs the script and `after` (the ledger row) in ONE transaction it opens itself;
  a lock timeout anywhere aborts that transaction, so nothing of the script is committed.
- `run_atomic` takes the caller's word (for example a script sent as one simple query with no
  BEGIN/COMMIT of its own: PostgreSQL's implicit transaction makes it all-or-nothing).
- `run_statement` runs one statement outside a transaction. One statement is its own
  transaction, so it is retried too, except the CONCURRENTLY family (`multi_transaction=True`):
  PostgreSQL commits part of their work before they wait for older transactions, so a timeout
  can leave an INVALID index. They get a single attempt with the rest of the budget as
  `lock_timeout`; their SHARE UPDATE EXCLUSIVE lock blocks no reads or writes, so waiting long
  costs the application nothing.
After any lock timeout the executor checks that the connection is outside a transaction; if
it is not, the invariant is broken and it raises instead of retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from activities.lock_observer import LockObserver
from domain.lock_modes import RelationLock, blocks_application
from domain.lock_waits import BlockingSession, LockBudgetExhausted, LockRetryPolicy, LockWaitReport

Attempt = Callable[[], Awaitable[object]]
AfterScript = Callable[[asyncpg.Connection], Awaitable[object]]

# During an attempt, pg_blocking_pids() is sampled half-way into it (at most FIRST_SAMPLE_S in),
# then every RESAMPLE_S: once per short attempt, about once a second during a patient one.
SAMPLE_AT = 0.5
FIRST_SAMPLE_S = 0.5
RESAMPLE_S = 1.0


class LockPoliteExecutor:
    """Runs migrations on `conn`, watching other sessions from `observer_conn` (a second
    connection to the same database, used only for reading pg_locks / pg_stat_activity)."""

    def __init__(self, conn: asyncpg.Connection, observer_conn: asyncpg.Connection,
                 policy: LockRetryPolicy | None = None, *, rng: random.Random | None = None) -> None:
        if conn is observer_conn:
            raise ValueError("the observer needs a connection of its own: it must answer while the migration waits")
        self.conn = conn
        self.observer_conn = observer_conn
        self.policy = policy or LockRetryPolicy()
        self.rng = rng or random.Random()
        self.observer = LockObserver(observer_conn, exclude_pids=[conn.get_server_pid()])
        self.report: LockWaitReport | None = None
        self._schema: str | None = None
        self._last_sample: list[BlockingSession] = []

    # -- public API -----------------------------------------------------------------------------
    async def run_script(self, sql: str, locks: Sequence[RelationLock], *, what: str,
                         after: AfterScript | None = None) -> LockWaitReport:
        """Run `sql` (one simple-query script) and then `after(conn)` in one transaction; retried
        politely on lock timeouts. Returns the wait report; raises LockBudgetExhausted."""

        async def attempt() -> None:
            async with self.conn.transaction():
                await self.conn.execute(sql)
                if after is not None:
                    await after(self.conn)

        return await self._run(attempt, locks, what, retry=True)

    async def run_atomic(self, attempt: Attempt, locks: Sequence[RelationLock], *, what: str) -> LockWaitReport:
        """Run `attempt()`, which the caller guarantees is all-or-nothing on this connection."""
        return await self._run(attempt, locks, what, retry=True)

    async def run_statement(self, sql: str, locks: Sequence[RelationLock], *, what: str,
                            multi_transaction: bool = False) -> LockWaitReport:
        """Run one statement outside a transaction (autocommit). `multi_transaction`: a
        CONCURRENTLY statement, attempted once (see the module docstring)."""
        return await self._run(lambda: self.conn.execute(sql), locks, what, retry=not multi_transaction)

    # -- the loop -------------------------------------------------------------------------------
    async def _run(self, attempt: Attempt, locks: Sequence[RelationLock], what: str, *, retry: bool) -> LockWaitReport:
        if self.conn.is_in_transaction():
            raise ValueError(f"{what}: the lock-polite executor must start outside a transaction "
                             "(a lock timeout would abort the caller's transaction and all it did)")
        await self._check_same_database()
        loop = asyncio.get_running_loop()
        policy = self.policy
        start = loop.time()
        deadline = start + policy.budget_s
        relations = sorted({lock.qualified(self._schema or "public") for lock in locks})
        report = self.report = LockWaitReport(what=what, relations=relations, budget_s=policy.budget_s)
        known: list[BlockingSession] = []  # transactions pg_blocking_pids() named in earlier attempts
        # A patient attempt whose locks block no application traffic (the CONCURRENTLY family) may
        # as well queue at once: nobody waits behind it, and PostgreSQL then cancels a conflicting
        # autovacuum for it, which waiting outside the queue would never get.
        look_first = retry or blocks_application(lock.mode for lock in locks)
        original = await self.conn.fetchval("SELECT current_setting('lock_timeout')")
        try:
            while True:
                number = report.attempts + 1
                planned_ms = policy.attempt_ms(number) if retry else None
                patience_s = (planned_ms or policy.max_attempt_ms) / 1000
                if look_first:
                    await self._wait_out_blockers(locks, known, patience_s, deadline, report, start)
                remaining_ms = int((deadline - loop.time()) * 1000)
                if remaining_ms < 1:
                    raise LockBudgetExhausted(report)
                timeout_ms = min(planned_ms, remaining_ms) if planned_ms else remaining_ms
                await self.conn.execute(f"SET lock_timeout = {int(timeout_ms)}")
                report.attempts = number
                began = loop.time()
                try:
                    await self._attempt_watched(attempt, timeout_ms, report)
                except asyncpg.LockNotAvailableError:
                    if self.conn.is_in_transaction():  # the retry invariant: nothing may be left open
                        raise
                    report.lock_timeouts += 1
                    report.waited_s = loop.time() - start
                    if self._last_sample:
                        known = _merge(known, self._last_sample)
                        report.note_blockers(self._last_sample)
                    if not retry:
                        raise LockBudgetExhausted(report, changed=True) from None
                    pause = min(policy.backoff_s(number, self.rng), max(0.0, deadline - loop.time()))
                    await asyncio.sleep(pause)
                    continue
                report.waited_s = began - start
                report.applied = True
                report.waiting = False
                report.blockers = []
                return report
        finally:
            if not report.applied:
                report.waited_s = loop.time() - start
            report.waiting = False
            await self._restore(original)

    async def _wait_out_blockers(self, locks: Sequence[RelationLock], known: list[BlockingSession],
                                 patience_s: float, deadline: float, report: LockWaitReport, start: float) -> None:
        """Return once no session older than `patience_s` holds or awaits a conflicting lock;
        meanwhile we hold no lock and are in no queue. Raises LockBudgetExhausted at the deadline."""
        loop = asyncio.get_running_loop()
        while True:
            current = await self.observer.conflicts(locks)
            if known:
                current = _merge(current, await self.observer.still_open(known))
            long = [b for b in current if (b.transaction_age_s or 0.0) >= patience_s]
            if not long:
                report.waiting = False
                return
            report.waiting = True
            report.note_blockers(long)
            report.waited_s = loop.time() - start
            left = deadline - loop.time()
            if left <= 0:
                raise LockBudgetExhausted(report)
            await asyncio.sleep(min(self.policy.poll_interval_s(self.rng), left))

    async def _attempt_watched(self, attempt: Attempt, timeout_ms: int, report: LockWaitReport) -> object:
        """Run one attempt while the observer samples pg_blocking_pids() of our backend (into
        `self._last_sample`), so blockers on relations the SQL did not show are named too."""
        self._last_sample = []
        done = asyncio.Event()
        pid = self.conn.get_server_pid()

        async def sample() -> None:
            delay = min(FIRST_SAMPLE_S, max(0.005, timeout_ms / 1000 * SAMPLE_AT))
            while not done.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(done.wait(), delay)
                    return
                found = await self.observer.blocking(pid)
                if found:
                    self._last_sample = found
                    report.note_blockers(found)
                delay = RESAMPLE_S

        sampler = asyncio.create_task(sample())
        try:
            return await attempt()
        finally:
            done.set()  # let a running sample finish instead of cancelling it mid-query
            with contextlib.suppress(Exception):
                await sampler

    async def _check_same_database(self) -> None:
        if self._schema is not None:
            return
        db, schema = await self.conn.fetchrow("SELECT current_database(), current_schema()")
        other = await self.observer_conn.fetchval("SELECT current_database()")
        if db != other:
            raise ValueError(f"the observer connection is on database {other}, the migration on {db}")
        self._schema = schema or "public"

    async def _restore(self, original: str) -> None:
        """Put the session's own lock_timeout back (the worker's setting for its other statements)."""
        if self.conn.is_closed() or self.conn.is_in_transaction():
            return
        with contextlib.suppress(Exception):
            await self.conn.execute("SELECT set_config('lock_timeout', $1, false)", original)


def _merge(first: list[BlockingSession], second: list[BlockingSession]) -> list[BlockingSession]:
    """Union by transaction, keeping the first's entry (it names the relation and mode)."""
    seen = {b.virtual_transaction or f"pid:{b.pid}" for b in first}
    return first + [b for b in second if (b.virtual_transaction or f"pid:{b.pid}") not in seen]
