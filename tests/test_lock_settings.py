"""Time settings are read as PostgreSQL reads them: a value the server would silently turn into
"no timeout" is refused when the worker's settings load, and connections get exactly the
milliseconds the settings say (real PostgreSQL). The lock politeness settings (budget, attempt
timeouts) are per environment, with the worker's as defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from activities.db import connect
from domain.durations import InvalidDuration
from domain.lock_waits import LockRetryPolicy
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
URL = "postgresql://u@localhost/app"


def _settings(**env: object) -> Settings:
    worker = {k: env.pop(k) for k in list(env) if k.startswith("worker_")}
    return Settings(environments={"prod": {"database_url": URL, **env}}, _env_file=None,
                    **{k.removeprefix("worker_"): v for k, v in worker.items()})


@pytest.mark.parametrize(("setting", "value", "says"), [
    ("lock_timeout", "0.5ms", "lock_timeout '0.5ms' would mean no timeout at all"),
    ("lock_timeout", "500us", "lock_timeout '500us' would mean no timeout at all"),
    ("statement_timeout", "0.0001s", "statement_timeout '0.0001s' would mean no timeout at all"),
    ("lock_timeout", "010", "read by PostgreSQL as the octal number 8"),
    ("lock_timeout", "10 sec", "unknown unit 'sec'"),
    ("lock_wait_budget", "0", "disables the timeout, which this setting does not allow"),
    ("lock_attempt_timeout", "1s", "it must be at most 999ms"),
    ("lock_attempt_timeout_max", "0.5ms", "would mean no timeout at all"),
])
def test_a_timeout_postgresql_would_read_as_none_is_refused(setting: str, value: str, says: str) -> None:
    with pytest.raises(ValidationError) as per_env:
        _settings(**{setting: value})
    assert says in str(per_env.value) and f"environments.prod.{setting}" in str(per_env.value)
    with pytest.raises(ValidationError) as worker:
        _settings(**{f"worker_{setting}": value})
    assert says in str(worker.value)


def test_lock_policy_per_environment_with_worker_defaults() -> None:
    assert _settings().lock_policy("prod") == LockRetryPolicy(budget_s=300, first_attempt_ms=50, max_attempt_ms=200)
    mixed = _settings(lock_wait_budget="90s", worker_lock_attempt_timeout="20ms", worker_lock_attempt_timeout_max="80ms")
    assert mixed.lock_policy("prod") == LockRetryPolicy(budget_s=90, first_attempt_ms=20, max_attempt_ms=80)
    # Each level alone is fine, together the first attempt would outlast the longest: said at load.
    with pytest.raises(ValidationError, match="environment prod: the first lock attempt must be at least 1 ms and at "
                                              "most the longest attempt"):
        _settings(lock_attempt_timeout_max="100ms", worker_lock_attempt_timeout="150ms")


def test_the_worker_refuses_such_a_setting_in_one_line() -> None:
    env = {"PATH": os.environ["PATH"], "MIGRATOR_LOCK_TIMEOUT": "0.5ms",
           "MIGRATOR_ENVIRONMENTS": '{"prod": {"database_url": "postgresql://u:secret@localhost/app"}}'}
    done = subprocess.run([sys.executable, str(ROOT / "worker.py")], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        "error: invalid settings (lock_timeout): Value error, lock_timeout '0.5ms' would mean no timeout at all: "
        "PostgreSQL rounds it to 0 ms (its resolution is 1 ms, and a fractional value is first rounded to whole "
        "units of the next smaller unit), and 0 disables the timeout; use at least 1ms, or '0' to disable it on purpose"]


async def test_connections_get_exactly_the_milliseconds_configured(database_url: str) -> None:
    conn = await connect(database_url, lock_timeout="1.5s", statement_timeout=2.5)
    try:
        assert await conn.fetchval("SHOW lock_timeout") == "1500ms"
        assert await conn.fetchval("SHOW statement_timeout") == "2500ms"
    finally:
        await conn.close()
    # Before this change, 0.0005 s became "0ms": a lock timeout of half a millisecond waited forever.
    with pytest.raises(InvalidDuration, match="would mean no timeout at all"):
        await connect(database_url, lock_timeout=0.0005)
    conn = await connect(database_url, lock_timeout=0.001, statement_timeout="0")
    try:
        assert (await conn.fetchval("SHOW lock_timeout"), await conn.fetchval("SHOW statement_timeout")) == ("1ms", "0")
    finally:
        await conn.close()
