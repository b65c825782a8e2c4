"""The preflight activity: read-only fact gathering, then the plan from domain/plan.py.

Reads the server version and the ledger, diagnoses the ledger against the bundle, analyses every
migration with PostgreSQL's parser, checks that rows a derived rollback would delete are new, and
replays the folder into the run's shadow database once (activities/schema_facts.py): the live
schema against the applied history (drift proof), around each failed migration (its effects), and
to the end (a migration to run that fails there would fail on deploy). It decides nothing itself:
`domain.plan.decide` does, from these facts.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from temporalio import activity

from activities.backup import existing_objects, table_facts
from activities.catalog import read_schema_model
from activities.cleanup import shadow_left
from activities.heartbeat import Heartbeater
from activities.insert_keys import existing_insert_keys
from activities.ledger import MigrationLedger
from activities.schema_facts import RunReplay, preflight_schema_facts, replay_for_run, run_key
from activities.shadow import server_identity
from activities.target import TargetDatabases
from domain.backup import cascade_targets, plan_run_backups, tables_to_inspect
from domain.backup_items import MigrationBackups
from domain.bundle import bundle_problems
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
        own_run = activity.info().activity_type == "preflight"  # not a rollout's pre-plan (activities/fleet.py)
        with self.targets.errors(f"preflight on {request.environment}"):
            progress = {"stage": "preflight"}
            async with self.targets.connection(request.environment, keep=True) as conn, \
                    Heartbeater(lambda: dict(progress)):
                if request.bundle.in_parts:  # the SQL is in the run's history: the plan needs all of it
                    whole = await self.targets.bundles.migrations(request.bundle.parts, [])
                    request = request.model_copy(update={"bundle": request.bundle.model_copy(update={"migrations": whole})})
                elif own_run:
                    self.targets.bundles.remember(request.bundle.migrations)  # verify needs it again
                facts = await self._facts(conn, env, request, progress)
                clean = own_run and not await shadow_left(conn, request.environment)
        plan, policy = decide(request, facts, env.policy())
        activity.logger.info(
            "preflight done", extra={"environment": request.environment, "fingerprint": plan.fingerprint,
                                     "blockers": len(plan.blockers)}
        )
        return PreflightResult(plan=plan, policy=policy, heartbeat_timeout=self.targets.settings.heartbeat_timeout,
                               shadow_clean=clean)

    async def _facts(self, conn: asyncpg.Connection, env: EnvironmentSettings, request: DeployRequest,
                     progress: dict) -> PreflightFacts:
        server_version = str(await conn.fetchval("SHOW server_version"))
        major = int(await conn.fetchval("SHOW server_version_num")) // 10000
        snapshot = await MigrationLedger(conn).read()
        diagnosis = diagnose(request.bundle.migrations, snapshot, request.bundle.unreadable)
        # The shadow replay runs on its own connections while the rest is read on `conn`; the server's
        # identity (its cached models' key) is read here first, so a replay all in cache connects nowhere.
        server = await server_identity(conn, env.database_url.get_secret_value()) if env.drift_proof != "never" else ""
        replay = self._start_replay(env, request, diagnosis, progress, server)
        try:
            return await self._gather(conn, env, request, snapshot, diagnosis, server_version, major, replay)
        finally:
            if replay is not None and not replay.done():  # preflight failed meanwhile: stop it (it drops its shadow)
                replay.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await replay

    async def _gather(self, conn: asyncpg.Connection, env: EnvironmentSettings, request: DeployRequest,
                      snapshot: LedgerSnapshot, diagnosis: HistoryDiagnosis, server_version: str, major: int,
                      replay: asyncio.Task[RunReplay] | None) -> PreflightFacts:
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
        facts.unsafe_derived_rollbacks = await self._unsafe_derived_rollbacks(conn, request, facts.analyses, states,
                                                                              snapshot.schema_name)
        single = {name for name, a in facts.analyses.items() if len(a.statements) == 1 and a.creates}
        if replay is not None:
            # The live model is read while the replay still runs (on connections of its own): on a
            # long history each takes seconds, and one waits on the server while the other builds.
            live = await read_schema_model(conn)
            facts.schema_facts = await preflight_schema_facts(conn, await replay, single_creators=single,
                                                              role_map=env.role_map, live=live)
        return facts

    async def _backups(self, conn: asyncpg.Connection, request: DeployRequest, analyses: dict[str, MigrationAnalysis],
                       runnable: list[str], schema: str) -> dict[str, MigrationBackups]:
        """What each migration to run destroys and the backups that keep it, from the catalog (the
        facts of the tables as they are before the run; domain/backup.py follows the run's renames)."""
        migrations = [(m.name, analyses[m.name].statements) for m in request.bundle.migrations
                      if m.name in runnable and m.name in analyses]
        statements = [stmts for _, stmts in migrations]
        tables = tables_to_inspect(statements, schema)
        facts = await table_facts(conn, tables) if tables else {}
        existing = await existing_objects(conn, cascade_targets(statements, schema))
        return plan_run_backups(migrations, facts, schema, existing)

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

    def _start_replay(self, env: EnvironmentSettings, request: DeployRequest, diagnosis: HistoryDiagnosis,
                      progress: dict, server: str) -> asyncio.Task[RunReplay] | None:
        """The run's shadow replay, started (unless the environment turned schema checks off)."""
        if env.drift_proof == "never":
            return None

        def replayed(done: int, total: int, name: str) -> None:
            progress.update(stage="shadow replay", done=done, total=total, current=name)
            if done == total:
                progress.clear()
                progress["stage"] = "preflight"

        return asyncio.create_task(replay_for_run(
            env.database_url.get_secret_value(), request.bundle.migrations, diagnosis,
            key=run_key(request.environment), on_progress=replayed,
            statement_timeout=self.targets.statement_timeout(request.environment), server=server,
        ))
