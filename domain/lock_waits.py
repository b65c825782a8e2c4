"""Lock waits, described for people: who blocks a migration, for how long we waited, and the
schedule of short lock attempts. Pure: the executor (activities/locks.py) gathers the facts.

Why short attempts: PostgreSQL grants locks in queue order, so a migration that waits for
ACCESS EXCLUSIVE behind a long transaction makes every later reader and writer of the table
wait behind *it*. With `lock_timeout` well under a second per attempt, an application statement
is stalled at most that long per attempt; between attempts the queue is clear. The schedule
rises (50 ms -> 200 ms by default) so a busy table with many short transactions still lets
an attempt through, and backs off with jitter so retries do not fall into lock-step with the
application or with other deploys.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime

from pydantic import BaseModel, Field

from domain.durations import format_ms, parse_pg_duration

QUERY_PREVIEW_CHARS = 60
# Heartbeat details stay small however many sessions pile up (the oldest come first).
DETAIL_BLOCKERS = 5
NAMED_KEPT = 10  # sessions a report remembers by name (the first ones named)
_STRING_LITERAL = re.compile(r"(?:[eE]|[uU]&)?'(?:[^']|'')*'?")
_DOLLAR_QUOTED = re.compile(r"\$([A-Za-z_]\w*)?\$.*?(?:\$\1\$|$)", re.S)


def query_preview(query: str | None) -> str | None:
    """The first line of another session's query, string literals masked (they may hold secrets or
    personal data: `ALTER ROLE ... PASSWORD '...'`), at most QUERY_PREVIEW_CHARS characters."""
    if query is None:
        return None
    text = _DOLLAR_QUOTED.sub("$…$", query.strip())
    text = _STRING_LITERAL.sub("'…'", text)
    first = text.splitlines()[0] if text else ""
    more = len(text.splitlines()) > 1
    if len(first) > QUERY_PREVIEW_CHARS:
        return first[: QUERY_PREVIEW_CHARS - 1].rstrip() + "…"
    return first + (" …" if more else "")


@dataclass(frozen=True)
class BlockingSession:
    """A session that holds, or waits ahead of us for, a lock the migration needs. Fields other
    sessions' owners hide from an unprivileged role (state, query, times) are None."""

    pid: int | None  # None: a prepared transaction (pg_prepared_xacts), which has no backend
    application_name: str | None
    state: str | None  # pg_stat_activity.state: 'active', 'idle in transaction', ...
    transaction_age_s: float | None
    query_start: datetime | None
    query_age_s: float | None
    query: str | None  # query_preview() of pg_stat_activity.query
    relation: str | None = None  # where the conflict is (None: seen by pg_blocking_pids only)
    mode: str | None = None  # the conflicting lock mode it holds or wants, as in the docs
    granted: bool = True
    virtual_transaction: str | None = None

    def describe(self) -> str:
        """pid 1234 (application 'report', idle in transaction for 4m12s, since 'SELECT …')"""
        who = f"pid {self.pid}" if self.pid else f"prepared transaction {self.virtual_transaction or '?'}"
        parts = [f"application '{self.application_name}'"] if self.application_name else []
        age = f" for {format_ms(self.transaction_age_s * 1000)}" if self.transaction_age_s is not None else ""
        if not self.granted:
            parts.append(f"waiting for {self.mode or 'a lock'}{age}")
        elif self.state:
            parts.append(f"{self.state}{age}")
        elif age:
            parts.append(f"in a transaction{age}")
        if self.query:
            parts.append(f"{'since' if self.state != 'active' else 'running'} '{self.query}'")
        if self.pid and self.state is None and self.query is None:
            parts.append("details hidden: grant pg_read_all_stats to the migration role to see them")
        return f"{who} ({', '.join(parts)})" if parts else who

    def as_dict(self) -> dict:
        out = asdict(self)
        out["query_start"] = self.query_start.isoformat() if self.query_start else None
        return out


def describe_blockers(blockers: list[BlockingSession], limit: int = 3) -> str:
    """'pid 1 (…) holds it' / 'pid 1 (…) and pid 2 (…) hold it' / '… and 4 more sessions hold it'."""
    shown = [b.describe() for b in blockers[:limit]]
    extra = len(blockers) - len(shown)
    text = ", ".join(shown[:-1]) + (" and " if len(shown) > 1 else "") + shown[-1] if shown else "a session"
    if extra:
        text += f" and {extra} more session{'s' if extra > 1 else ''}"
    holds = all(b.granted for b in blockers)
    single = len(blockers) == 1
    verb = ("holds" if single else "hold") if holds else ("is ahead of us in the queue for" if single
                                                           else "hold or are queued for")
    return f"{text} {verb} it"


@dataclass
class LockWaitReport:
    """What one migration (or statement) went through to get its locks; heartbeat details,
    `show` and the final message read it. Times are seconds."""

    what: str
    relations: list[str]
    budget_s: float
    attempts: int = 0
    lock_timeouts: int = 0
    waited_s: float = 0.0  # from the first try until the attempt that succeeded (or the end)
    waiting: bool = False  # true while we wait for a blocker without queueing
    blockers: list[BlockingSession] = field(default_factory=list)  # the ones we wait for now / last
    seen_pids: list[int] = field(default_factory=list)  # every blocking pid ever named, in order
    applied: bool = False
    # The latest description of every session named (by transaction), in the order first named:
    # what `show` and the final message say blocked it, after `blockers` is cleared on success.
    named: dict[str, BlockingSession] = field(default_factory=dict)

    def note_blockers(self, blockers: list[BlockingSession]) -> None:
        self.blockers = list(blockers)
        for b in blockers:
            if b.pid and b.pid not in self.seen_pids:
                self.seen_pids.append(b.pid)
            key = b.virtual_transaction or f"pid:{b.pid}"
            if key in self.named or len(self.named) < NAMED_KEPT:
                self.named[key] = b

    def message(self) -> str:
        """One sentence for heartbeats and `watch`."""
        rels = ", ".join(self.relations) or "its tables"
        if self.applied:
            if not self.attempts or (self.attempts == 1 and self.waited_s < 0.05):
                return f"{self.what}: took the locks on {rels} at once"
            return (f"{self.what}: took the locks on {rels} after waiting {format_ms(self.waited_s * 1000)} "
                    f"({self.attempts} attempt{'s' if self.attempts != 1 else ''})")
        if self.blockers:
            where = self.blockers[0].relation or rels
            return (f"{self.what}: waiting without queueing for the lock on {where} "
                    f"({format_ms(self.waited_s * 1000)} so far, {self.attempts} attempt{'s' if self.attempts != 1 else ''}): "
                    f"{describe_blockers(self.blockers)}")
        return f"{self.what}: {self.attempts} attempts for the locks on {rels}, {format_ms(self.waited_s * 1000)} so far"

    def as_details(self) -> dict:
        """JSON-safe, for heartbeat details and activity results."""
        return {"what": self.what, "relations": self.relations, "budget_s": self.budget_s,
                "attempts": self.attempts, "lock_timeouts": self.lock_timeouts,
                "waited_s": round(self.waited_s, 3), "waiting": self.waiting, "applied": self.applied,
                "blockers": [b.as_dict() for b in self.blockers[:DETAIL_BLOCKERS]],
                "blocker_count": len(self.blockers), "seen_pids": self.seen_pids[-DETAIL_BLOCKERS * 4:],
                "message": self.message()}


class LockWait(BaseModel):
    """What one migration (or rollback) went through for its locks, as the run's status, `show`
    and the audit keep it: attempts, lock timeouts, seconds waited, and who blocked it."""

    attempts: int = 0
    lock_timeouts: int = 0
    waited_s: float = 0.0
    blockers: list[str] = Field(default_factory=list)  # BlockingSession.describe() of each session named
    message: str = ""

    @classmethod
    def of(cls, report: LockWaitReport) -> LockWait:
        return cls(attempts=report.attempts, lock_timeouts=report.lock_timeouts, waited_s=round(report.waited_s, 3),
                   blockers=[b.describe() for b in report.named.values()], message=report.message())

    @property
    def waited(self) -> bool:
        """Whether it had to wait at all (more than one attempt, or a wait before the first)."""
        return self.attempts > 1 or self.lock_timeouts > 0 or self.waited_s >= 0.05

    def sentence(self) -> str:
        """'waited 12s for its locks (14 attempts, 13 timed out); blocked by pid 123 (...)'."""
        if not self.waited:
            return "took its locks at once"
        tries = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        if self.lock_timeouts:
            tries += f", {self.lock_timeouts} timed out"
        text = f"waited {format_ms(self.waited_s * 1000)} for its locks ({tries})"
        if self.blockers:
            more = len(self.blockers) - 3
            text += "; blocked by " + ", ".join(self.blockers[:3]) + (f" and {more} more" if more > 0 else "")
        return text


class LockBudgetExhausted(Exception):
    """The lock budget ran out. `str()` is the one sentence for the user; `changed` says whether
    the database may hold a trace of the attempt (only a multi-transaction statement can)."""

    def __init__(self, report: LockWaitReport, changed: bool = False) -> None:
        self.report = report
        self.changed = changed
        rels = [b.relation for b in report.blockers if b.relation]
        target = rels[0] if rels else (report.relations[0] if len(report.relations) == 1 else None)
        on = f"the lock on {target}" if target else (
            f"the locks on {', '.join(report.relations)}" if report.relations else "its locks")
        budget = format_ms(report.budget_s * 1000)
        if report.blockers:
            why = describe_blockers(report.blockers)
        else:
            why = (f"{report.attempts} attempts timed out behind short transactions "
                   "(no single session held it for long)")
        tail = ("PostgreSQL may have left an INVALID index or a partly detached partition behind"
                if changed else "nothing was changed")
        super().__init__(f"{report.what}: could not take {on} within {budget}: {why}; {tail}")


@dataclass(frozen=True)
class LockRetryPolicy:
    """How politely to ask for locks. Defaults: 5 minutes in all, attempts of 50 ms rising to
    200 ms (x1.5 each), jittered backoff growing from 25-50 ms to 0.5-1 s, blockers polled every
    200 ms (+-25%)."""

    budget_s: float = 300.0
    first_attempt_ms: int = 50
    max_attempt_ms: int = 200
    growth: float = 1.5
    backoff_min_s: float = 0.05
    backoff_max_s: float = 1.0
    poll_s: float = 0.2

    def __post_init__(self) -> None:
        if not 1 <= self.first_attempt_ms <= self.max_attempt_ms:
            raise ValueError("the first lock attempt must be at least 1 ms and at most the longest attempt")
        if self.max_attempt_ms >= 1000:
            raise ValueError(f"lock attempts of {self.max_attempt_ms} ms would stall the application for a second "
                             "or more each; keep the longest attempt under 1000 ms")
        if self.budget_s <= 0 or self.growth < 1 or self.poll_s <= 0 or not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise ValueError("the lock budget, poll interval and backoff must be positive and the growth at least 1")

    @classmethod
    def from_settings(cls, budget: str = "5min", first_attempt: str = "50ms", max_attempt: str = "200ms",
                      **overrides: float) -> LockRetryPolicy:
        """From PostgreSQL-style duration settings (MIGRATOR_LOCK_WAIT_BUDGET, ..._LOCK_ATTEMPT_TIMEOUT,
        ..._LOCK_ATTEMPT_TIMEOUT_MAX); raises InvalidDuration / ValueError with one sentence."""
        total = parse_pg_duration(budget, "lock_wait_budget", allow_disabled=False)
        first = parse_pg_duration(first_attempt, "lock_attempt_timeout", allow_disabled=False, max_ms=999)
        longest = parse_pg_duration(max_attempt, "lock_attempt_timeout_max", allow_disabled=False, max_ms=999)
        return cls(budget_s=total.seconds, first_attempt_ms=first.ms, max_attempt_ms=longest.ms, **overrides)

    def attempt_ms(self, attempt: int) -> int:
        """lock_timeout of attempt number `attempt` (1-based)."""
        return int(min(self.max_attempt_ms, round(self.first_attempt_ms * self.growth ** (attempt - 1))))

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Pause after failed attempt `attempt`: exponential, capped, with 'equal jitter'
        (half fixed, half random) so it never collapses to zero."""
        ceiling = min(self.backoff_max_s, self.backoff_min_s * 2 ** (attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    def poll_interval_s(self, rng: random.Random) -> float:
        return self.poll_s * rng.uniform(0.75, 1.25)
