"""domain.lock_waits: the attempt schedule, its validation, and the sentences people read."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from domain.durations import InvalidDuration
from domain.lock_waits import (
    BlockingSession,
    LockBudgetExhausted,
    LockRetryPolicy,
    LockWaitReport,
    describe_blockers,
    query_preview,
)


def _reader(pid: int = 1234, **kw) -> BlockingSession:
    base = dict(pid=pid, application_name="report", state="idle in transaction", transaction_age_s=252.0,
                query_start=datetime(2024, 1, 1, tzinfo=timezone.utc), query_age_s=250.0,
                query="SELECT count(*) FROM orders", relation="public.orders", mode="ACCESS SHARE",
                granted=True, virtual_transaction="3/7")
    return BlockingSession(**{**base, **kw})


def test_attempts_rise_and_stay_under_a_second() -> None:
    policy = LockRetryPolicy()
    assert [policy.attempt_ms(n) for n in range(1, 7)] == [50, 75, 112, 169, 200, 200]
    rng = random.Random(1)
    pauses = [policy.backoff_s(n, rng) for n in range(1, 12)]
    assert all(0.025 <= p <= 1.0 for p in pauses) and max(pauses) > 0.5
    assert pauses[0] <= 0.05


def test_policy_refuses_attempts_that_would_stall_a_second() -> None:
    with pytest.raises(ValueError, match="keep the longest attempt under 1000 ms"):
        LockRetryPolicy(max_attempt_ms=1000)
    with pytest.raises(ValueError, match="at least 1 ms"):
        LockRetryPolicy(first_attempt_ms=0)


def test_policy_from_settings() -> None:
    policy = LockRetryPolicy.from_settings("10min", "100ms", "0.5s")
    assert (policy.budget_s, policy.first_attempt_ms, policy.max_attempt_ms) == (600.0, 100, 500)
    with pytest.raises(InvalidDuration, match="lock_attempt_timeout '0.5ms' would mean no timeout at all"):
        LockRetryPolicy.from_settings(first_attempt="0.5ms")
    with pytest.raises(InvalidDuration, match="lock_wait_budget '0' disables the timeout"):
        LockRetryPolicy.from_settings(budget="0")
    with pytest.raises(InvalidDuration, match="it must be at most 999ms"):
        LockRetryPolicy.from_settings(max_attempt="2s")


def test_query_preview_masks_literals_and_truncates() -> None:
    assert query_preview("ALTER ROLE app PASSWORD 'hunter2'") == "ALTER ROLE app PASSWORD '…'"
    assert query_preview("SELECT $x$secret$x$, 'it''s' FROM t") == "SELECT $…$, '…' FROM t"
    assert query_preview("SELECT a\nFROM t") == "SELECT a …"
    long = query_preview("SELECT " + ", ".join(f"column_{i}" for i in range(30)) + " FROM t")
    assert long.endswith("…") and len(long) == 60
    assert query_preview(None) is None


def test_blocker_sentences() -> None:
    assert _reader().describe() == (
        "pid 1234 (application 'report', idle in transaction for 4m12s, since 'SELECT count(*) FROM orders')")
    active = _reader(state="active", transaction_age_s=31.0, query="SELECT sum(total) FROM orders")
    assert active.describe() == "pid 1234 (application 'report', active for 31s, running 'SELECT sum(total) FROM orders')"
    hidden = _reader(state=None, query=None, application_name="psql", transaction_age_s=2.0)
    assert hidden.describe() == ("pid 1234 (application 'psql', in a transaction for 2s, details hidden: grant "
                                 "pg_read_all_stats to the migration role to see them)")
    queued = _reader(granted=False, mode="ACCESS EXCLUSIVE", state="active", transaction_age_s=12.0,
                     query="ALTER TABLE orders ADD COLUMN x int", application_name="psql")
    assert queued.describe() == ("pid 1234 (application 'psql', waiting for ACCESS EXCLUSIVE for 12s, "
                                 "running 'ALTER TABLE orders ADD COLUMN x int')")
    assert describe_blockers([queued]).endswith("is ahead of us in the queue for it")
    many = describe_blockers([_reader(p) for p in range(1, 6)])
    assert many.startswith("pid 1 (") and many.endswith("and 2 more sessions hold it")


def test_budget_exhausted_sentence() -> None:
    report = LockWaitReport(what="20240101_add_note", relations=["public.orders"], budget_s=300, attempts=7)
    report.note_blockers([_reader()])
    assert str(LockBudgetExhausted(report)) == (
        "20240101_add_note: could not take the lock on public.orders within 5m00s: pid 1234 (application "
        "'report', idle in transaction for 4m12s, since 'SELECT count(*) FROM orders') holds it; nothing was changed")
    churn = LockWaitReport(what="m", relations=["public.a", "public.b"], budget_s=60, attempts=312)
    assert str(LockBudgetExhausted(churn)) == (
        "m: could not take the locks on public.a, public.b within 1m00s: 312 attempts timed out behind short "
        "transactions (no single session held it for long); nothing was changed")
    assert "may have left an INVALID index" in str(LockBudgetExhausted(report, changed=True))


def test_report_details_are_json_ready() -> None:
    import json

    report = LockWaitReport(what="m", relations=["public.orders"], budget_s=60, attempts=3, waited_s=4.2, waiting=True)
    report.note_blockers([_reader()])
    details = json.loads(json.dumps(report.as_details()))
    assert details["blockers"][0]["pid"] == 1234 and details["seen_pids"] == [1234]
    assert details["message"].startswith("m: waiting without queueing for the lock on public.orders (4.2s so far, 3 attempts)")
