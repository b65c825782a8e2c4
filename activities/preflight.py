"""The preflight activity: read-only fact gathering, then the plan from domain/plan.py.

Reads the server version and the ledger, diagnoses the ledger against the bundle, analyses every
migration with PostgreSQL's parser, looks for the effects of failed migrations, checks that rows a
derived rollback would delete are new, and runs the drift proof where the folder alone cannot say
what the schema is. It decides nothing itself: `domain.plan.decide` does, from these facts.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity

from activities.backup import existing_objects, table_facts
from activities.drift import drift_proof
from activities.evidence import existing_insert_keys, failed_migration_evidence
from activities.heartbeat import Heartbeater
from activities.ledger import MigrationLedger
from activities.target import TargetDatabases
from domain.backup import cascade_targets, plan_backups, tables_to_inspect
from domain.backup_items import MigrationBackups
from domain.bundle import bundle_problems
from domain.catalog import DriftReport
from domain.facts import PreflightFacts
from domain.models import Blocker, BlockerCode, DeployRequest, PreflightResult
from domain.plan import decide
from domain.prisma.diagnosis import HistoryDiagnosis, MigrationState, diagnose
from domain.prisma.ledger import LedgerSnapshot
from domain.sql.parse import SqlParseError, split_statements
from domain.sql.rules import MigrationAnalysis, analyze_migration
from runtime.settings import EnvironmentSettings

_RUNNABLE = (MigrationState.pending, MigrationState.failed)


class PreflightActivities:
    def __init__(self, targets: TargetDatabases) -> None:
        self.targets = targets

    @activity.defn(name="preflight")
    async def preflight(self, request: DeployRequest) -> PreflightResult:
        """Read-only: the facts about the target database and the bundle, and the plan decided from them."""
        env = self.targets.environment(request.environment)
        with self.targets.errors(f"preflight on {request.environment}"):
            async with self.targets.connection(request.environment) as conn, \
                    Heartbeater(lambda: {"stage": "preflight"}):
                if request.bundle.in_parts:  # the SQL is in the run's history: the plan needs all of it
                    whole = await self.targets.bundles.migrations(request.bundle.parts, [])
                    request = request.model_copy(update={"bundle": request.bundle.model_copy(update={"migrations": whole})})
                facts = await self._facts(conn, env, request)
        plan, policy = decide(request, facts, env.policy())
        activity.logger.info(
            "preflight done", extra={"environment": request.environment, "fingerprint": plan.fingerprint,
                                     "blockers": len(plan.blockers)}
        )
        return PreflightResult(plan=plan, policy=policy, heartbeat_timeout=self.targets.settings.heartbeat_timeout)

    async def _facts(self, conn: asyncpg.Connection, env: EnvironmentSettings, request: DeployRequest) -> PreflightFacts:
        server_version = str(await conn.fetchval("SHOW server_version"))
        major = int(await conn.fetchval("SHOW server_version_num")) // 10000
        snapshot = await MigrationLedger(conn).read()
        diagnosis = diagnose(request.bundle.migrations, snapshot, request.bundle.unreadable)
        states = {m.name: m.state for m in diagnosis.migrations}
        runnable = [n for n, st in states.items() if st in _RUNNABLE]
        extensions = await conn.fetch("SELECT name FROM pg_available_extensions")
        facts = PreflightFacts(server_version=server_version, snapshot=snapshot, diagnosis=diagnosis,
                               input_problems=bundle_problems(request.bundle.migrations, runnable),
                               available_extensions=sorted(r["name"] for r in extensions))
        for m in request.bundle.migrations:
            # Only what the run may execute is analysed: an applied migration's findings and objects
            # say nothing about this run (and cost ~0.5 ms each: seconds on a long history).
            if states.get(m.name) in _RUNNABLE:
                try:
                    facts.analyses[m.name] = analyze_migration(
                        m.name, m.sql, default_schema=snapshot.schema_name, server_version=major
                    )
                except SqlParseError as exc:
                    facts.input_problems.append(Blocker(code=BlockerCode.unparseable_sql, migration=m.name,
                                                        message=f"cannot analyse {m.name}: {exc}"))
            # A typo in verify.sql would otherwise surface only after deploy, as a rollback.
            if m.verify_sql and m.verify_sql.strip():
                try:
                    facts.verify_statements += len(split_statements(m.verify_sql))
                except SqlParseError as exc:
                    facts.input_problems.append(Blocker(code=BlockerCode.unparseable_verify_sql, migration=m.name,
                                                        message=f"cannot parse verify.sql of {m.name}: {exc}"))
        facts.backups = await self._backups(conn, request, facts.analyses, runnable, snapshot.schema_name)
        for name, state in states.items():
            if state == MigrationState.failed and name in facts.analyses:
                facts.evidence[name] = await failed_migration_evidence(conn, facts.analyses[name], snapshot.schema_name)
        facts.unsafe_derived_rollbacks = await self._unsafe_derived_rollbacks(conn, request, facts.analyses, states,
                                                                              snapshot.schema_name)
        facts.drift = await self._drift(env, request, snapshot, diagnosis, conn)
        return facts

    async def _backups(self, conn: asyncpg.Connection, request: DeployRequest, analyses: dict[str, MigrationAnalysis],
                       runnable: list[str], schema: str) -> dict[str, MigrationBackups]:
        """What each migration to run destroys and the backups that keep it, from the catalog."""
        out: dict[str, MigrationBackups] = {}
        created: set[str] = set()
        for m in request.bundle.migrations:
            analysis = analyses.get(m.name)
            if m.name not in runnable or analysis is None:
                continue
            tables = tables_to_inspect(analysis.statements, schema, frozenset(created))
            facts = await table_facts(conn, tables) if tables else {}
            existing = await existing_objects(conn, cascade_targets(analysis.statements, schema))
            out[m.name] = plan_backups(analysis.statements, facts, schema, frozenset(created), existing)
            created |= {c.split(":", 1)[1] for c in analysis.creates if c.startswith("table:")}
        return out

    async def _unsafe_derived_rollbacks(self, conn: asyncpg.Connection, request: DeployRequest,
                                        analyses: dict[str, MigrationAnalysis], states: dict[str, MigrationState],
                                        schema: str) -> dict[str, str]:
        """A derived DELETE of inserted keys only undoes the migration if those keys are new."""
        unsafe: dict[str, str] = {}
        for m in request.bundle.migrations:
            analysis = analyses.get(m.name)
            if states.get(m.name) not in _RUNNABLE or analysis is None or m.down_sql or not analysis.derived_rollback:
                continue
            existing = await existing_insert_keys(conn, m.sql, schema)
            if existing:
                unsafe[m.name] = "rows it inserts already exist (" + ", ".join(existing[:3]) + ")"
        return unsafe

    async def _drift(self, env: EnvironmentSettings, request: DeployRequest, snapshot: LedgerSnapshot,
                     diagnosis: HistoryDiagnosis, conn: asyncpg.Connection) -> DriftReport | None:
        """Replay the applied local history into a shadow database on the same server and compare
        catalogs (activities/drift.py). `auto` does it when the ledger holds phantoms or edited
        migrations, the cases where the folder alone cannot say what the schema is."""
        phantoms = diagnosis.names(MigrationState.missing_locally)
        wanted = env.drift_proof == "always" or (
            env.drift_proof == "auto" and (phantoms or diagnosis.names(MigrationState.modified))
        )
        if not wanted:
            return None
        bundle = {m.name: m for m in request.bundle.migrations}
        replay: list[tuple[str, str]] = []
        for row in snapshot.rows:
            if row.is_applied and row.migration_name in bundle and all(n != row.migration_name for n, _ in replay):
                replay.append((row.migration_name, bundle[row.migration_name].sql))
        activity.heartbeat({"stage": "drift proof", "migrations": len(replay)})
        return await drift_proof(env.database_url.get_secret_value(), replay, phantoms,
                                 live_conn=conn, schema=snapshot.schema_name)
