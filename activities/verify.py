"""The verify activity: read-only checks after deploy.

Each bundle migration is applied exactly once with the bundle's checksum, the objects the plan said
its migrations create exist, and every verify.sql statement returns at least one row and no false
value (each in a read-only transaction).
"""

from __future__ import annotations

import asyncpg
from temporalio import activity

from activities.failures import is_transient
from activities.heartbeat import Heartbeater
from activities.ledger import MigrationLedger
from activities.target import TargetDatabases
from domain.models import Action, BundledMigration, DeployPlan, VerifyCheck, VerifyInput, VerifyResult
from domain.prisma.ledger import LedgerRow
from domain.sql.parse import SqlParseError, split_statements
from domain.stages import VERIFIED


class VerifyActivities:
    def __init__(self, targets: TargetDatabases) -> None:
        self.targets = targets

    @activity.defn(name="verify")
    async def verify(self, inp: VerifyInput) -> VerifyResult:
        """Read-only checks: each bundle migration applied exactly once, planned objects exist,
        every verify.sql statement returns rows and no false value."""

        checks: list[VerifyCheck] = []
        with self.targets.errors(f"verify on {inp.environment}"):
            async with self.targets.connection(inp.environment) as conn, Heartbeater(lambda: {"stage": "verify"}):
                snapshot = await MigrationLedger(conn).read()
                migrations = await self.targets.bundles.migrations(inp.bundle_parts, inp.migrations)
                checks += _ledger_checks(migrations, snapshot.rows, inp.plan)
                expected = [(pm.name, obj) for pm in inp.plan.migrations
                            if pm.action in VERIFIED
                            for obj in pm.creates]
                exists = await _objects_exist(conn, [obj for _, obj in expected])
                for name, obj in expected:
                    if obj in exists:
                        checks.append(VerifyCheck(check="object exists", migration=name, passed=exists[obj], detail=obj))
                for mig in migrations:
                    if not (mig.verify_sql and mig.verify_sql.strip()):
                        continue
                    try:
                        statements = split_statements(mig.verify_sql)
                    except SqlParseError as exc:
                        checks.append(VerifyCheck(check="verify.sql", migration=mig.name, passed=False, detail=str(exc)))
                        continue
                    for stmt in statements:
                        checks.append(await self._verify_statement(conn, mig.name, stmt.text, stmt.line))
        return VerifyResult(checks=checks)

    async def _verify_statement(self, conn: asyncpg.Connection, name: str, sql: str, line: int) -> VerifyCheck:
        label = f"verify.sql line {line}"
        try:
            async with conn.transaction(readonly=True):
                rows = await conn.fetch(sql)
        except asyncpg.PostgresError as exc:
            if is_transient(exc):
                raise
            return VerifyCheck(check=label, migration=name, passed=False, detail=self.targets.scrub(f"error: {exc}"))
        if not rows:
            return VerifyCheck(check=label, migration=name, passed=False, detail="returned no rows")
        falses = sum(1 for r in rows for v in r.values() if v is False)
        if falses:
            return VerifyCheck(check=label, migration=name, passed=False,
                               detail=f"{falses} false value(s) in {len(rows)} row(s)")
        return VerifyCheck(check=label, migration=name, passed=True, detail=f"{len(rows)} row(s), none false")


def _ledger_checks(migrations: list[BundledMigration], rows: list[LedgerRow], plan: DeployPlan) -> list[VerifyCheck]:
    """Each bundle migration applied exactly once with the bundle's checksum. Those the run did
    not touch (already applied before it) are one check when they pass, so a long history does
    not fill the run's result; any that fails is named on its own."""
    acted = {m.name for m in plan.migrations if m.action != Action.already_applied}
    by_name: dict[str, list[LedgerRow]] = {}
    for r in rows:
        by_name.setdefault(r.migration_name, []).append(r)
    checks: list[VerifyCheck] = []
    untouched = 0
    for mig in migrations:
        mine = by_name.get(mig.name, [])
        applied = [r for r in mine if r.is_applied]
        failed = [r for r in mine if r.is_failed]
        ok = len(applied) == 1 and not failed and applied[0].checksum == mig.checksum
        if ok and mig.name not in acted:
            untouched += 1
            continue
        detail = f"{len(applied)} applied row(s), {len(failed)} unfinished"
        if applied and applied[-1].checksum != mig.checksum:
            detail += "; checksum differs from the bundle"
        checks.append(VerifyCheck(check="applied exactly once", migration=mig.name, passed=ok, detail=detail))
    if untouched:
        checks.insert(0, VerifyCheck(check="applied exactly once", passed=True, detail=(
            f"{untouched} migration(s) applied before this run: each once, with the bundle's checksum")))
    return checks


# One query per kind of object, for all objects of that kind at once.
_BATCH_QUERIES = {
    "relation": "SELECT n.nspname, c.relname, '' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    "type": "SELECT n.nspname, t.typname, '' FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
            " WHERE (n.nspname, t.typname) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    "function": "SELECT n.nspname, p.proname, '' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE (n.nspname, p.proname) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
    "schema": "SELECT nspname, '', '' FROM pg_namespace WHERE nspname = ANY($1::text[])",
    "extension": "SELECT extname, '', '' FROM pg_extension WHERE extname = ANY($1::text[])",
    "constraint": "SELECT n.nspname, c.relname, k.conname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
                  " JOIN pg_namespace n ON n.oid = c.relnamespace"
                  " WHERE (n.nspname, c.relname, k.conname) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
    "column": "SELECT n.nspname, c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
              " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT a.attisdropped"
              " AND (n.nspname, c.relname, a.attname::text) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
    "trigger": "SELECT n.nspname, c.relname, g.tgname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid"
               " JOIN pg_namespace n ON n.oid = c.relnamespace"
               " WHERE (n.nspname, c.relname, g.tgname) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
}
_KIND_GROUP = {
    "table": "relation", "index": "relation", "sequence": "relation", "view": "relation",
    "materialized_view": "relation", "matview": "relation",
    "type": "type", "enum": "type", "domain": "type",
    "function": "function", "procedure": "function",
    "schema": "schema", "extension": "extension",
    "constraint": "constraint", "column": "column", "trigger": "trigger",
}
_PARTS = {"relation": 2, "type": 2, "function": 2, "schema": 1, "extension": 1, "constraint": 3, "column": 3,
          "trigger": 3}


def _object_key(spec: str) -> tuple[str, tuple[str, ...]] | None:
    """`kind:schema.name` / `kind:schema.table.name` (domain.sql.rules `creates`) -> (group, parts),
    or None when it cannot be checked."""
    kind, _, name = spec.partition(":")
    group = _KIND_GROUP.get(kind)
    if group is None or not name or "<unnamed>" in name:
        return None
    parts = tuple(name.split(".", _PARTS[group] - 1))
    if len(parts) != _PARTS[group]:
        return None
    return group, parts


async def _objects_exist(conn: asyncpg.Connection, specs: list[str]) -> dict[str, bool]:
    """Which of `specs` exist; specs that cannot be checked are left out."""
    wanted: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for spec in specs:
        key = _object_key(spec)
        if key is not None:
            wanted.setdefault(key[0], []).append((spec, key[1]))
    found: dict[str, bool] = {}
    for group, items in wanted.items():
        n = _PARTS[group]
        columns = [[parts[i] for _, parts in items] for i in range(n)]
        rows = await conn.fetch(_BATCH_QUERIES[group], *columns)
        present = {tuple(r[i] for i in range(n)) for r in rows}
        for spec, parts in items:
            found[spec] = parts in present
    return found
