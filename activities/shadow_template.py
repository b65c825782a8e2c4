"""A replay kept for the next run: the shadow of the last replay that reached its end, renamed to a
template database, so the next run copies it and replays only the migrations it does not hold.

A long history is the reason: replaying 10,000 migrations takes a minute, and a run that adds ten
should not pay it again. One template per server identity (host, port, role, `?schema=`, server
version: the same key as the in-process model cache), named `migrator_template_<16 hex>`, so the
databases of one fleet, which share a history, share it too. It says what it holds in its comment
(`migrator template k=<k> chain=<checksum chain link of migrations 1..k>`): it is used only when
those k migrations are exactly the first k of the sequence to replay, and only when no prefix
before k is needed. Replaced, never accumulated: one database per server, schema only, no rows
beyond what the history itself inserts. A session advisory lock on its name serializes copying and
replacing it across workers.
"""

from __future__ import annotations

import asyncio
import hashlib
import re

import asyncpg

TEMPLATE_PREFIX = "migrator_template_"
_LOCK_CLASS = 0x5348_4457  # the shadow's advisory lock namespace (activities/shadow.py)
_COMMENT = re.compile(r"^migrator template k=(\d+) chain=([0-9a-f]{64})$")


def template_name(server: str) -> str:
    return TEMPLATE_PREFIX + hashlib.sha256(server.encode("utf-8")).hexdigest()[:16]


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


async def lock(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute("SELECT pg_advisory_lock($1::int, $2::int)", _LOCK_CLASS, _key(name))


async def unlock(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute("SELECT pg_advisory_unlock($1::int, $2::int)", _LOCK_CLASS, _key(name))


async def usable(admin: asyncpg.Connection, name: str, chain: list[str], first_needed: int) -> int | None:
    """k when the template holds migrations 1..k of this sequence and no prefix before k is
    needed; else None."""
    comment = await admin.fetchval(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", name)
    found = _COMMENT.match(comment or "")
    if found is None:
        return None
    k, link = int(found.group(1)), found.group(2)
    if k > first_needed or k >= len(chain) or chain[k] != link:
        return None
    return k


async def keep(admin: asyncpg.Connection, shadow: str, name: str, k: int, link: str) -> None:
    """Make the (closed) shadow database the server's template, holding migrations 1..k."""
    for _ in range(50):  # the shadow's session may take a moment to end after it closed
        if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", shadow):
            break
        await asyncio.sleep(0.1)
    await lock(admin, name)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'ALTER DATABASE "{shadow}" RENAME TO "{name}"')
        await admin.execute(f"COMMENT ON DATABASE \"{name}\" IS 'migrator template k={k} chain={link}'")
    finally:
        await unlock(admin, name)
