"""domain.durations against the real server: the milliseconds PostgreSQL stores for a setting
(`SET lock_timeout = ...` then pg_settings) are what `pg_milliseconds` computes, PostgreSQL's
refusals are ours, and the values it silently turns into "no timeout" are refused with a sentence."""

from __future__ import annotations

import asyncpg
import pytest

from domain.durations import INT_MAX_MS, InvalidDuration, format_ms, parse_pg_duration, pg_milliseconds

# Edge cases of guc.c's parse_int/convert_to_base_unit: rounding half to even, rounding to the next
# smaller unit, octal and hex integers, whitespace, case-sensitive units, range.
PROBES = ["0", "-0", "1", "10", "0.5", "0.5ms", "0.6ms", "1.5ms", "2.5ms", "500us", "1499us", "1500us", "0.5us",
          "0.0001s", ".5s", "1e-1s", "1e3", "1.0001s", " 5 s ", "5 ms", "10s ", "+5s", "1.5min", "0.01min",
          "0.0004min", "0.01h", "1.5h", "1d", "2e9us", "2147483647", "007", "010", "0x10",
          # refused by PostgreSQL
          "2147483648", "25d", "-1", "5S", "5 mins", "5s5", "nan", "inf", "", "1e400", "0x", "08", "1_000", "s"]


async def _server_ms(db: asyncpg.Connection, value: str) -> int | None:
    try:
        await db.execute("SELECT set_config('lock_timeout', $1, false)", value)
    except asyncpg.InvalidParameterValueError:
        return None
    return int(await db.fetchval("SELECT setting FROM pg_settings WHERE name = 'lock_timeout'"))


async def test_milliseconds_are_what_postgresql_stores(db: asyncpg.Connection) -> None:
    mismatches = []
    for value in PROBES:
        server = await _server_ms(db, value)
        try:
            ours: int | None = pg_milliseconds(value)[0]
        except InvalidDuration:
            ours = None
        if ours != server:
            mismatches.append((value, server, ours))
    assert mismatches == []


async def test_every_value_postgresql_turns_into_no_timeout_is_refused(db: asyncpg.Connection) -> None:
    for value in PROBES:
        if value.strip() in ("0", "-0"):
            continue
        if await _server_ms(db, value) == 0:
            with pytest.raises(InvalidDuration, match="would mean no timeout at all"):
                parse_pg_duration(value)


def test_sub_millisecond_message() -> None:
    with pytest.raises(InvalidDuration) as caught:
        parse_pg_duration("0.5ms", "lock_timeout")
    assert str(caught.value) == (
        "lock_timeout '0.5ms' would mean no timeout at all: PostgreSQL rounds it to 0 ms (its resolution is 1 ms, "
        "and a fractional value is first rounded to whole units of the next smaller unit), and 0 disables the "
        "timeout; use at least 1ms, or '0' to disable it on purpose")


def test_fractional_minutes_rounded_to_zero_seconds() -> None:
    with pytest.raises(InvalidDuration, match="would mean no timeout"):
        parse_pg_duration("0.0004min")  # 24 ms, but PostgreSQL rounds min to whole seconds: 0


def test_octal_and_hex_are_refused_with_what_postgresql_reads() -> None:
    with pytest.raises(InvalidDuration, match=r"'010' is read by PostgreSQL as the octal number 8 \(8 ms\)"):
        parse_pg_duration("010")
    with pytest.raises(InvalidDuration, match="hexadecimal number 16"):
        parse_pg_duration("0x10")
    assert parse_pg_duration("007").ms == 7  # same value in octal and decimal: nothing to misread


def test_disabled_only_when_allowed() -> None:
    assert parse_pg_duration("0").disabled
    with pytest.raises(InvalidDuration, match="disables the timeout, which this setting does not allow"):
        parse_pg_duration("0", "lock_attempt_timeout", allow_disabled=False)
    with pytest.raises(InvalidDuration) as caught:
        parse_pg_duration("0.5ms", "lock_attempt_timeout", allow_disabled=False)
    assert "disable it on purpose" not in str(caught.value)


def test_syntax_range_and_maximum() -> None:
    with pytest.raises(InvalidDuration, match="unknown unit 'S'.*case-sensitive"):
        parse_pg_duration("5S")
    with pytest.raises(InvalidDuration, match="is negative"):
        parse_pg_duration("-1")
    with pytest.raises(InvalidDuration, match=f"at most {INT_MAX_MS} ms"):
        parse_pg_duration("25d")
    with pytest.raises(InvalidDuration, match="is 2s; it must be at most 999ms"):
        parse_pg_duration("2s", "lock_attempt_timeout", max_ms=999)
    with pytest.raises(InvalidDuration, match="not a PostgreSQL duration"):
        parse_pg_duration("ten seconds")


def test_setting_is_unambiguous_milliseconds() -> None:
    d = parse_pg_duration("1.5min", "statement_timeout")
    assert (d.ms, d.setting, d.seconds) == (90_000, "90000ms", 90.0)
    assert parse_pg_duration(200).setting == "200ms"  # a bare number is milliseconds, as in PostgreSQL


def test_format_ms() -> None:
    assert [format_ms(v) for v in (850, 12_000, 1_500, 252_000, 3_780_000)] == ["850ms", "12s", "1.5s", "4m12s", "1h03m"]
