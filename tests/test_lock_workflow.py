"""Polite with locks, through the real workflow (issue 13 item 5): the Temporal CLI dev server, a
worker with the real activities, real PostgreSQL, and a report transaction (a long reader)
holding ACCESS SHARE on the table an `ADD COLUMN` migration needs, while an application reads and
writes it.

What a user checks:
- no application statement stalled much longer than one lock attempt (200 ms at most, 1 s
  allowed on a busy shared machine), while the run waited seconds for the reader;
- while the run waits, the deploy's heartbeat details and `starter.py watch` name the reader
  (pid and application_name, its state and how long its transaction has been open);
- the migration is applied once the reader ends, within the budget, and the run's status and
  `show` say how long it waited, in how many attempts, and for whom;
- when the reader outlasts the budget: the run ends `failed_no_changes` with one sentence naming
  the reader, no column, no ledger row, the application still unharmed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from activities.ledger import MigrationLedger
from cli.follow import snapshot
from domain.audit import render_markdown
from domain.models import Outcome
from runtime.settings import EnvironmentSettings, Settings
from tests.helpers import final_status, migration, new_worker, request, run_cli_in_process, start
from tests.test_lock_polite import AppLoad, Reader

MAX_APP_LATENCY_S = 1.0
ADD_NOTE = migration("20250101000000_add_note", 'ALTER TABLE "orders" ADD COLUMN "note" TEXT;\n')


def settings(url: str, budget: str) -> Settings:
    env = EnvironmentSettings(database_url=url, gates=[], lock_wait_budget=budget)
    return Settings(environments={"dev": env}, heartbeat_timeout=timedelta(seconds=3),
                    advisory_lock_timeout=timedelta(seconds=5), _env_file=None)


@pytest.fixture
async def orders(database_url: str, db: asyncpg.Connection) -> AsyncIterator[str]:
    await db.execute("""
        CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, total numeric NOT NULL);
        INSERT INTO orders (total) SELECT g FROM generate_series(1, 5000) g;
    """)
    await MigrationLedger(db).ensure_table()  # a database Prisma already manages
    yield database_url


REPORT = "nightly-report"  # the blocking report's application_name, as a person would recognise it


async def wait_for_lock_wait(handle, timeout: float = 20.0) -> dict:
    """The deploy activity's heartbeat details once they name a blocker."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        snap = await snapshot(handle)
        if snap.lock_wait and snap.lock_wait.get("blockers"):
            return snap.lock_wait
        await asyncio.sleep(0.2)
    raise AssertionError("the deploy's heartbeat details never named a blocker")


async def test_a_long_reader_stalls_no_application_statement_and_is_named(dev_env, orders: str,
                                                                          db: asyncpg.Connection) -> None:
    client = dev_env.client
    async with new_worker(client, settings(orders, "60s")) as worker, AppLoad(orders).running() as load:
        reader = await Reader(orders, 6.0, application_name=REPORT).start()
        handle = await start(client, worker, request("dev", [ADD_NOTE]))
        waiting = await wait_for_lock_wait(handle)
        watch = asyncio.create_task(run_cli_in_process(
            ["watch", f"{handle.id}/{handle.result_run_id}"], {"MIGRATOR_TEMPORAL_ADDRESS": client.service_client.config.target_host}))
        await reader.finish()
        status = await final_status(handle)
        watched = await watch
    assert status.outcome == Outcome.succeeded, status.error

    # The heartbeat details named the reader while the run waited (without queueing).
    (blocker,) = [b for b in waiting["blockers"] if b["pid"] == reader.pid]
    assert blocker["application_name"] == "nightly-report" and blocker["state"] == "idle in transaction"
    assert blocker["transaction_age_s"] > 0 and blocker["query"] == "SELECT count(*) FROM orders"
    assert blocker["query_start"] is not None and blocker["relation"] == "public.orders"
    assert f"pid {reader.pid} (application 'nightly-report', idle in transaction for " in waiting["message"]
    # ... and so did `starter.py watch`, in one line, without a traceback.
    assert watched.returncode == 0, watched.stdout + watched.stderr
    lines = [line for line in (watched.stdout + watched.stderr).splitlines() if line.startswith("locks: ")]
    assert lines and f"pid {reader.pid} (application 'nightly-report', idle in transaction for " in lines[0]
    assert "Traceback" not in watched.stderr

    # No application statement waited behind the migration: each stalled at most about one attempt.
    assert not load.errors
    assert max(load.latencies) < MAX_APP_LATENCY_S, sorted(load.latencies)[-5:]

    # Applied once the reader ended; the status says how long it waited and for whom.
    assert await db.fetchval("SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'") == 1
    (applied,) = status.applied
    wait = applied.lock_wait
    assert wait is not None and 4.0 <= wait.waited_s < 20 and wait.attempts >= 1
    assert any(b.startswith(f"pid {reader.pid} (application 'nightly-report'") for b in wait.blockers)
    assert re.fullmatch(r"waited \d+(\.\d)?s for its locks \(\d+ attempts?(, \d+ timed out)?\); blocked by .*",
                        wait.sentence())
    # `show` (the audit from history) has the per-migration wait and who caused it.
    from cli.show import load_audit

    report = render_markdown(await load_audit(client, f"{handle.id}/{handle.result_run_id}"))
    assert "| waiting for locks | lock attempts |" in report
    assert f"- `{ADD_NOTE.name}`: waited " in report and f"pid {reader.pid} (application 'nightly-report'" in report


async def test_a_reader_outlasting_the_budget_fails_the_run_naming_it_and_changes_nothing(
        dev_env, orders: str, db: asyncpg.Connection) -> None:
    client = dev_env.client
    async with new_worker(client, settings(orders, "3s")) as worker, AppLoad(orders).running() as load:
        reader = await Reader(orders, 12.0, application_name=REPORT).start()
        handle = await start(client, worker, request("dev", [ADD_NOTE]))
        status = await final_status(handle)
        reader_still_open = not reader.done()
        await reader.finish()
    assert reader_still_open
    assert status.outcome == Outcome.failed_no_changes, (status.outcome, status.error)
    assert status.error.startswith(f"migration {ADD_NOTE.name} failed: could not take the lock on public.orders "
                                   f"within 3s: pid {reader.pid} (application 'nightly-report', idle in transaction for ")
    assert status.error.endswith("since 'SELECT count(*) FROM orders') holds it; nothing of it was changed")
    assert status.failed is not None and status.failed.lock_wait.waited_s >= 2.9
    assert await db.fetchval("SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'") == 0
    assert await db.fetchval("SELECT count(*) FROM _prisma_migrations") == 0
    assert not load.errors and max(load.latencies) < MAX_APP_LATENCY_S, sorted(load.latencies)[-5:]


async def test_a_rollback_waits_politely_for_a_reader_too(dev_env, orders: str, db: asyncpg.Connection) -> None:
    """Compensation's DROP COLUMN needs ACCESS EXCLUSIVE like the ADD did: behind a reader it waits
    without queueing, the application unharmed, and the audit says whom it waited for."""
    from tests.helpers import approval, wait_gate

    client = dev_env.client
    env = EnvironmentSettings(database_url=orders, gates=["verify"], approval_proofs=["ssh", "typed"],
                              lock_wait_budget="60s")
    config = Settings(environments={"dev": env}, heartbeat_timeout=timedelta(seconds=3), _env_file=None)
    async with new_worker(client, config) as worker, AppLoad(orders).running() as load:
        handle = await start(client, worker, request("dev", [ADD_NOTE]))
        await wait_gate(handle, "verify")
        reader = await Reader(orders, 4.0, application_name=REPORT).start()
        await handle.signal("reject", approval("verify", "carol", comment="not now"))
        status = await final_status(handle)
        await reader.finish()
    assert status.outcome == Outcome.rejected, (status.outcome, status.error, status.human_action)
    (step,) = status.compensation
    assert step.ok and step.action == "ran derived rollback"
    assert step.lock_wait is not None and step.lock_wait.waited_s >= 2.5
    assert any(b.startswith(f"pid {reader.pid} (application 'nightly-report'") for b in step.lock_wait.blockers)
    assert await db.fetchval("SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'") == 0
    assert not load.errors and max(load.latencies) < MAX_APP_LATENCY_S, sorted(load.latencies)[-5:]
