"""How activity failures are classified and recorded: what Temporal may retry, what it must not,
and the text Prisma stores in `logs` when a migration fails."""

from __future__ import annotations

import asyncio

import asyncpg

from domain.prisma.errors import migration_failed_logs

# Error types the workflow's retry policies name as non-retryable (deterministic failures).
# LockBudgetExhausted: the lock budget (domain/lock_waits.py) already was the retry policy.
NON_RETRYABLE = ["UnknownEnvironment", "LedgerShapeError", "InvalidInput", "InternalError", "DatabaseError",
                 "DatabaseRefused", "BookkeepingError", "LockBudgetExhausted"]

# SQLSTATEs worth another attempt: the same SQL may well succeed once the condition is gone.
_TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (lock_timeout)
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    "53300",  # too_many_connections
}

def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (asyncpg.InterfaceError, ConnectionError, OSError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, asyncpg.PostgresConnectionError):
        return True
    return isinstance(exc, asyncpg.PostgresError) and getattr(exc, "sqlstate", None) in _TRANSIENT_SQLSTATES


def prisma_error_logs(name: str, exc: BaseException) -> str:
    """Prisma's P3018 `logs` text for a database error raised by a migration."""
    return migration_failed_logs(
        name,
        getattr(exc, "sqlstate", None),
        str(exc),
        detail=getattr(exc, "detail", None),
        hint=getattr(exc, "hint", None),
        position=getattr(exc, "position", None),
    )
