"""PostgreSQL time settings (lock_timeout, statement_timeout, ...) read exactly as the server
reads them, so a setting can be refused before it silently means something else. Pure.

The server's rules (guc.c `parse_int` / `convert_to_base_unit`, checked on PostgreSQL 15 with
`SET lock_timeout = '...'; SHOW lock_timeout;`):

- a number, optional whitespace, an optional case-sensitive unit (us, ms, s, min, h, d), optional
  whitespace; a bare number is in milliseconds;
- an integer is read by `strtol(..., 0)`: '010' is octal 8, '0x10' is 16; a number with '.' or an
  exponent is read as a float;
- a fractional value is rounded to a whole number of the next smaller unit (0.01h -> 1min,
  0.0004min -> 0s), then to whole milliseconds, half to even ('0.5ms' -> 0, '2.5ms' -> 2);
- the result must be 0 .. 2147483647 ms, and 0 means "no timeout".

So '0.5ms', '500us' or '0.0001s' are accepted by PostgreSQL and turn the timeout OFF: a deploy
configured to give up on a lock after half a millisecond would instead wait forever. This module
refuses those, says why in one sentence, and otherwise returns the exact milliseconds the server
will use (`PgDuration.setting` is the unambiguous text to send it).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

INT_MAX_MS = 2_147_483_647
# Units of a millisecond-based setting, largest first (guc.c's time_unit_conversion_table).
_UNITS: list[tuple[str, float]] = [("d", 86_400_000.0), ("h", 3_600_000.0), ("min", 60_000.0), ("s", 1000.0),
                                   ("ms", 1.0), ("us", 0.001)]
_MULTIPLIER = dict(_UNITS)
_NEXT_SMALLER = {unit: _UNITS[i + 1][1] for i, (unit, _) in enumerate(_UNITS[:-1])}
_UNIT_LIST = "us, ms, s, min, h, d"
_C_SPACE = " \t\n\v\f\r"
_INTEGER = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class InvalidDuration(ValueError):
    """One sentence naming the setting, the value and what to write instead."""


@dataclass(frozen=True)
class PgDuration:
    text: str
    ms: int

    @property
    def disabled(self) -> bool:
        return self.ms == 0

    @property
    def seconds(self) -> float:
        return self.ms / 1000

    @property
    def setting(self) -> str:
        """The value to send to the server: whole milliseconds, nothing left to interpret."""
        return f"{self.ms}ms"


def _number(text: str) -> tuple[float, str, str | None] | None:
    """(value, rest, octal-or-hex note) as strtol(…, 0) then strtod would read the start of text."""
    body = text.lstrip(_C_SPACE)
    m = _INTEGER.match(body)
    rest = body[m.end():] if m else body
    if m and not rest.startswith((".", "e", "E")):
        digits = m.group(0).lstrip("+-")
        sign = -1 if m.group(0).startswith("-") else 1
        if digits[:2] in ("0x", "0X"):
            return sign * int(digits, 16), rest, f"the hexadecimal number {int(digits, 16)}"
        if digits.startswith("0") and len(digits) > 1:  # a leading zero: C reads octal
            value = int(digits, 8)
            note = f"the octal number {value}" if value != int(digits, 10) else None
            return sign * value, rest, note
        return sign * int(digits, 10), rest, None
    f = _FLOAT.match(body)
    if not f:
        return None
    value = float(f.group(0))  # may be inf for 1e400: PostgreSQL reports ERANGE, so do we below
    return value, body[f.end():], None


def pg_milliseconds(text: str | int, name: str = "lock_timeout") -> tuple[int, str | None]:
    """(milliseconds PostgreSQL would store, a note when it reads the digits unusually), or
    InvalidDuration when PostgreSQL itself would refuse the value."""
    raw = str(text)
    parsed = _number(raw)
    if parsed is None or (isinstance(parsed[0], float) and not math.isfinite(parsed[0])):
        raise InvalidDuration(
            f"{name} {raw!r} is not a PostgreSQL duration: write a number and one of the units {_UNIT_LIST} "
            "(case-sensitive; a bare number means milliseconds), e.g. '200ms' or '10s'")
    value, rest, note = parsed
    unit = rest.strip(_C_SPACE)
    if unit and unit not in _MULTIPLIER:  # also catches garbage after the unit ('5s5', '5 s s')
        raise InvalidDuration(
            f"{name} {raw!r} has an unknown unit {unit!r}: PostgreSQL accepts {_UNIT_LIST} (case-sensitive)")
    ms = float(value)
    if unit:
        ms = value * _MULTIPLIER[unit]
        if unit in _NEXT_SMALLER:  # a fractional value is rounded to whole units of the next smaller unit
            ms = round(ms / _NEXT_SMALLER[unit]) * _NEXT_SMALLER[unit]
    result = round(ms)  # rint(): half to even, as Python's round()
    if result < 0:
        raise InvalidDuration(f"{name} {raw!r} is negative: PostgreSQL accepts 0 (no timeout) to {INT_MAX_MS} ms")
    if result > INT_MAX_MS:
        raise InvalidDuration(
            f"{name} {raw!r} is too long: PostgreSQL accepts at most {INT_MAX_MS} ms (about 24.8 days)")
    return result, note


def parse_pg_duration(text: str | int, name: str = "lock_timeout", *, allow_disabled: bool = True,
                      max_ms: int = INT_MAX_MS) -> PgDuration:
    """The setting as the server will apply it; InvalidDuration (one sentence) when PostgreSQL would
    refuse it, turn a non-zero value into 0 (= no timeout), or read its digits as octal/hex, when it
    is 0 and `allow_disabled` is false, or when it exceeds `max_ms`."""
    raw = str(text)
    ms, note = pg_milliseconds(raw, name)
    if note:
        raise InvalidDuration(
            f"{name} {raw!r} is read by PostgreSQL as {note} ({ms} ms); write a plain decimal number "
            f"with a unit instead, e.g. '{ms}ms'")
    if ms == 0:
        written = _number(raw)
        if written is not None and written[0] != 0:
            raise InvalidDuration(
                f"{name} {raw!r} would mean no timeout at all: PostgreSQL rounds it to 0 ms (its resolution "
                "is 1 ms, and a fractional value is first rounded to whole units of the next smaller unit), "
                "and 0 disables the timeout; use at least 1ms" + (", or '0' to disable it on purpose"
                                                                   if allow_disabled else ""))
        if not allow_disabled:
            raise InvalidDuration(f"{name} {raw!r} disables the timeout, which this setting does not allow; "
                                  "give a positive duration such as '100ms'")
    if ms > max_ms:
        raise InvalidDuration(f"{name} {raw!r} is {format_ms(ms)}; it must be at most {format_ms(max_ms)}")
    return PgDuration(raw, ms)


def format_ms(ms: float) -> str:
    """A short human form: 850ms, 12s, 4m12s, 1h03m."""
    if ms < 1000:
        return f"{ms:.0f}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s")
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
