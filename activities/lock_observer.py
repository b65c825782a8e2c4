"""Looking at other sessions' locks from a second connection, to name what blocks a migration.

Two views, both read-only and cheap (one round trip each):

- `conflicts()`: before an attempt, who holds or waits for a lock that conflicts with the ones
  the migration will take on the relations it names (pg_locks joined to pg_stat_activity). This
  is what lets the executor wait *without joining the lock queue*.
- `blocking()`: during an attempt, `pg_blocking_pids()` of the migration's backend: exact, and it
  also finds locks the SQL does not show (partitions, foreign-key partners, index builds waiting
  for old snapshots). The documentation warns it is not free, so it is sampled once or twice per
  attempt, never in a tight loop.
- `still_open()`: whether transactions already named are still running (by virtual transaction
  id, which survives pid reuse and needs no privilege to read).

An unprivileged role sees other roles' pid, application_name and locks but not their state,
query or start times; those come back as None and the report says how to see them. A
transaction's age is then measured from when we first saw it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import asyncpg

from domain.lock_modes import LockMode, RelationLock, conflicting_modes
from domain.lock_waits import BlockingSession, query_preview

# What pg_stat_activity.query says about another role's session to an unprivileged role.
HIDDEN = "<insufficient privilege>"
_ACTIVITY = """
    a.application_name, a.state, a.query_start, a.query,
    extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS xact_age,
    extract(epoch FROM clock_timestamp() - a.query_start)::float8 AS query_age
"""

_CONFLICTS_SQL = f"""
WITH target AS (
    SELECT t.conflicts, t.table_conflicts,
           to_regclass(CASE WHEN t.schema IS NULL THEN quote_ident(t.name)
                            ELSE quote_ident(t.schema) || '.' || quote_ident(t.name) END) AS oid
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(schema, name, conflicts, table_conflicts)
), rel AS (
    SELECT oid, conflicts FROM target WHERE oid IS NOT NULL
    UNION ALL  -- an index's table, when the statement locks it too (DROP INDEX, REINDEX INDEX)
    SELECT i.indrelid, t.table_conflicts FROM target t JOIN pg_index i ON i.indexrelid = t.oid
    WHERE t.table_conflicts IS NOT NULL
)
SELECT DISTINCT ON (l.virtualtransaction, l.relation)
    l.pid, l.mode, l.granted, l.virtualtransaction, n.nspname || '.' || c.relname AS relation, {_ACTIVITY}
FROM rel
JOIN pg_locks l ON l.locktype = 'relation' AND l.relation = rel.oid
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND l.mode = ANY (string_to_array(rel.conflicts, ','))
JOIN pg_class c ON c.oid = l.relation
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.pid IS NULL OR NOT (l.pid = ANY ($5::text[]::int[]))  -- text[]: asyncpg's own codec, no type lookup
ORDER BY l.virtualtransaction, l.relation, l.granted DESC
"""

_BLOCKING_SQL = f"""
WITH wanted AS (
    SELECT relation FROM pg_locks WHERE pid = $1 AND NOT granted LIMIT 1
)
SELECT b.pid, v.virtualxid AS virtualtransaction,
       (SELECT n.nspname || '.' || c.relname FROM wanted w JOIN pg_class c ON c.oid = w.relation
          JOIN pg_namespace n ON n.oid = c.relnamespace) AS relation,
       (SELECT l.mode FROM wanted w JOIN pg_locks l ON l.relation = w.relation AND l.pid = b.pid
          ORDER BY l.granted DESC LIMIT 1) AS mode,
       coalesce((SELECT l.granted FROM wanted w JOIN pg_locks l ON l.relation = w.relation AND l.pid = b.pid
          ORDER BY l.granted DESC LIMIT 1), true) AS granted,
       {_ACTIVITY}
FROM unnest(pg_blocking_pids($1)) AS b(pid)
LEFT JOIN pg_locks v ON v.pid = b.pid AND v.locktype = 'virtualxid' AND v.virtualxid = v.virtualtransaction
LEFT JOIN pg_stat_activity a ON a.pid = b.pid
"""

_OPEN_SQL = f"""
SELECT l.pid, l.virtualxid AS virtualtransaction, true AS granted, NULL::text AS relation, NULL::text AS mode,
       {_ACTIVITY}
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'virtualxid' AND l.granted AND l.virtualxid = ANY ($1::text[])
"""


class LockObserver:
    """Reads other sessions' locks on `conn`, a connection of its own (never the migration's:
    it must answer while the migration's connection is busy waiting for a lock)."""

    def __init__(self, conn: asyncpg.Connection, exclude_pids: Iterable[int] = ()) -> None:
        self.conn = conn
        self.exclude = sorted({conn.get_server_pid(), *exclude_pids})
        self._first_seen: dict[str, float] = {}

    def _session(self, row: asyncpg.Record) -> BlockingSession:
        vxid = row["virtualtransaction"]
        seen_for = None
        if vxid:
            seen_for = time.monotonic() - self._first_seen.setdefault(vxid, time.monotonic())
        age = row["xact_age"]
        if age is None or (seen_for is not None and seen_for > age):
            age = seen_for  # hidden from us, or the clocks disagree: trust what we saw
        mode = LockMode.from_pg_name(row["mode"]) if row["mode"] else None
        pid = row["pid"] or None  # pg_blocking_pids() says 0 for a prepared transaction
        return BlockingSession(
            pid=pid, application_name=row["application_name"] or None, state=row["state"],
            transaction_age_s=age, query_start=row["query_start"], query_age_s=row["query_age"],
            query=query_preview(None if row["query"] == HIDDEN else row["query"]), relation=row["relation"],
            mode=mode.label if mode else row["mode"], granted=row["granted"], virtual_transaction=vxid)

    async def conflicts(self, locks: Sequence[RelationLock]) -> list[BlockingSession]:
        """Sessions holding or awaiting a lock that conflicts with `locks`, oldest first."""
        if not locks:
            return []
        schemas = [lock.schema for lock in locks]
        names = [lock.name for lock in locks]
        # A statement may take several modes on one relation; conflicts are their union.
        per_relation: dict[tuple[str | None, str], set[LockMode]] = {}
        for lock in locks:
            per_relation.setdefault((lock.schema, lock.name), set()).add(lock.mode)
        conflicts = [_names(conflicting_modes(per_relation[(s, n)])) for s, n in zip(schemas, names)]
        table_conflicts = [_names(conflicting_modes([lock.table_mode])) if lock.is_index and lock.table_mode else None
                           for lock in locks]
        rows = await self.conn.fetch(_CONFLICTS_SQL, schemas, names, conflicts, table_conflicts,
                                     [str(pid) for pid in self.exclude])
        return _oldest_first([self._session(r) for r in rows])

    async def blocking(self, pid: int) -> list[BlockingSession]:
        """Who blocks backend `pid` right now (empty when it is not waiting for a lock)."""
        rows = await self.conn.fetch(_BLOCKING_SQL, pid)
        return _oldest_first([self._session(r) for r in rows if r["pid"] not in self.exclude])

    async def still_open(self, sessions: Iterable[BlockingSession]) -> list[BlockingSession]:
        """Those of `sessions` whose transaction is still open, refreshed (age, state, query)."""
        vxids = sorted({s.virtual_transaction for s in sessions if s.virtual_transaction})
        if not vxids:
            return []
        known = {s.virtual_transaction: s for s in sessions}
        out = []
        for row in await self.conn.fetch(_OPEN_SQL, vxids):
            fresh = self._session(row)
            old = known.get(fresh.virtual_transaction)
            out.append(BlockingSession(**{**fresh.__dict__, "relation": old.relation if old else None,
                                          "mode": old.mode if old else None,
                                          "granted": old.granted if old else True}))
        return _oldest_first(out)


def _names(modes: Iterable[LockMode]) -> str:
    return ",".join(sorted(m.pg_name for m in modes))


def _oldest_first(sessions: list[BlockingSession]) -> list[BlockingSession]:
    return sorted(sessions, key=lambda s: -(s.transaction_age_s or 0.0))
