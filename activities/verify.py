"""The verify activity: read-only checks after deploy.

- the ledger: each bundle migration applied exactly once, with the bundle's checksum;
- the schema: the live schema model equals the replay of the whole folder in the order the plan
  expected it to be applied (activities/schema_facts.py), in the run's shadow database, so a later
  migration's drop or rename is expected, not missing; differences the approved plan showed are
  accepted;
- every verify.sql statement returns at least one row and no false value (each in a read-only
  transaction).
"""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.cleanup import shadow_left
from activities.failures import is_transient
from activities.heartbeat import Heartbeater
from activities.ledger import MigrationLedger
from activities.schema_facts import SCHEMA_CHECK, run_key, schema_checks
from activities.shadow import ShadowError
from activities.target import TargetDatabases
from domain.models import Action, BundledMigration, DeployPlan, VerifyCheck, VerifyInput, VerifyResult
from domain.prisma.ledger import LedgerRow
from domain.sql.parse import SqlParseError, split_statements


class VerifyActivities:
    def __init__(self, targets: TargetDatabases) -> None:
        self.targets = targets

    @activity.defn(name="verify")
    async def verify(self, inp: VerifyInput) -> VerifyResult:
        """Read-only checks: each bundle migration applied exactly once, the live schema equal to
        the replayed folder (accepted drift aside), every verify.sql statement true."""

        checks: list[VerifyCheck] = []
        with self.targets.errors(f"verify on {inp.environment}"):
            # The run's last stage (and verify.sql is the project's SQL): its session is not handed on.
            async with self.targets.connection(inp.environment) as conn, Heartbeater(lambda: {"stage": "verify"}):
                snapshot = await MigrationLedger(conn).read()
                migrations = await self._migrations(inp)
                checks += _ledger_checks(migrations, snapshot.rows, inp.plan)
                checks += await self._schema_checks(inp, migrations, conn)
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
                clean = not (inp.compare_schema and await shadow_left(conn, inp.environment))
        return VerifyResult(checks=checks, shadow_clean=clean)

    async def _migrations(self, inp: VerifyInput) -> list[BundledMigration]:
        """The bundle with the SQL each check needs: the replay needs every file's SQL, which
        the run's history holds once (the request or its parts), never verify's own input."""
        if inp.bundle_parts or (inp.compare_schema and any(not m.sql for m in inp.migrations)):
            return await self.targets.bundles.whole()
        return inp.migrations

    async def _schema_checks(self, inp: VerifyInput, migrations: list[BundledMigration],
                             conn: asyncpg.Connection) -> list[VerifyCheck]:
        if not inp.compare_schema:
            why = inp.schema_skipped or "the plan had no replay of the folder to compare with"
            return [VerifyCheck(check=SCHEMA_CHECK, passed=True, skipped=True, detail=f"not compared: {why}")]
        try:
            return await schema_checks(
                self.targets.dsn(inp.environment), conn, migrations, inp.expected_sequence,
                key=run_key(inp.environment), accepted=inp.accepted_drift, accepted_moved=inp.accepted_drift_moved,
                statement_timeout=self.targets.statement_timeout(inp.environment),
                role_map=self.targets.environment(inp.environment).role_map,
            )
        except ShadowError as exc:
            # Preflight could use a shadow database: try again (Temporal retries this type).
            raise ApplicationError(self.targets.scrub(str(exc)), type="ShadowUnavailable") from None

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
