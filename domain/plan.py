"""The plan: what a run will do to each migration, decided in one place.

Pure. Preflight (activities/preflight.py) gathers facts (domain/facts.py: the ledger snapshot, the
diagnosis, SQL analyses, and what the shadow replay showed: drift and the effects of failed
migrations) and `decide` turns them and the environment's policy into the plan and the approval
policy. Decisions per migration (REPORT.md §4.6–4.7):

- applied                 -> already_applied
- pending                 -> apply (out of order: noted; Prisma applies it anyway)
- failed, none of its effects in the schema, or idempotent -> reapply (resolve --rolled-back, run it again)
- failed, all its effects present with the expected definitions -> resolve_applied (never re-run)
- failed, anything else (partly applied, an INVALID index, other definitions under its names,
  or effects the schema cannot show) -> needs_human (a blocker naming each object that differs)
- missing locally (phantom)            -> leave_phantom (reported, untouched), unless it is failed
- modified / P3005 / duplicate unfinished rows -> blockers
- a pending directory without a readable migration.sql -> needs_human, and a blocker when the run
  deploys: Prisma's deploy would stop there (P3015); so is a pending CREATE EXTENSION of an
  extension the server does not have (Prisma's deploy fails there). The run refuses before any
  change, naming where and why Prisma stops, rather than apply what comes before and undo it.
- a migration to run that fails when replayed in the shadow database -> a blocker (Prisma's deploy
  would stop there, P3018): the run stops before any change

Unexplained drift raises the plan's risk to high; differences that a resolve in the same plan
accounts for are explained (domain/drift.py). The fingerprint (domain/fingerprint.py) hashes the
bundle's checksums, the ledger rows and the actions.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from domain.backup_items import MigrationBackups
from domain.backup_plan import attach_backups, limit_backups
from domain.drift import DriftVerdict
from domain.facts import EnvironmentPolicy, PreflightFacts
from domain.fingerprint import ledger_digest, plan_fingerprint, state_fingerprint
from domain.models import (
    Action,
    ApprovalPolicy,
    Blocker,
    BlockerCode,
    DeployPlan,
    DeployRequest,
    Operation,
    PlannedMigration,
    RollbackSource,
)
from domain.plan_budget import fit_to_budget, result_too_large
from domain.plan_schema import drift_report, failed_decision, shadow_blockers, why_effects_unknown
from domain.prisma.diagnosis import HistoryDiagnosis, MigrationState
from domain.prisma.folder_rules import FolderEntry
from domain.prisma.ledger import LedgerSnapshot
from domain.risk import Risk, max_risk
from domain.schema.evidence import MigrationEffects
from domain.schema.refs import ObjectKind
from domain.sql.rules import MigrationAnalysis
from domain.sql.script import FAILS_IN_PRISMA
from domain.stages import RUNS_IN_DEPLOY, RUNS_IN_RESOLVE

# Blockers listed after the plan's own: a file that does not parse says so after what the ledger says.
_LATE_PROBLEMS = {BlockerCode.unparseable_sql, BlockerCode.unparseable_verify_sql}


def decide(request: DeployRequest, facts: PreflightFacts, policy: EnvironmentPolicy) -> tuple[DeployPlan, ApprovalPolicy]:
    """The plan and the approval policy for this request, from what preflight found."""
    analyses = dict(facts.analyses)
    for name, why in facts.unsafe_derived_rollbacks.items():
        if name in analyses:
            analyses[name] = analyses[name].model_copy(update={"derived_rollback": None, "rollback_blockers": [why]})
    # A BOM is said once, plainly, rather than also as a parse error at an invisible character.
    bom = {p.migration for p in facts.input_problems if p.code == BlockerCode.byte_order_mark}
    problems = [p for p in facts.input_problems if not (p.code == BlockerCode.unparseable_sql and p.migration in bom)]
    schema = facts.schema_facts
    plan = build_plan(
        request,
        facts.diagnosis,
        analyses,
        schema.effects,
        snapshot=facts.snapshot,
        required_approvals=policy.required_approvals,
        server_version=facts.server_version,
        problems=problems,
        available_extensions=facts.available_extensions,
        backups=facts.backups,
        backup_max_bytes=policy.backup_max_bytes,
        unknown_effects=why_effects_unknown(schema),
        deploy_gate="deploy" in policy.gates,
    )
    plan.blockers += shadow_blockers(plan, schema, policy)
    plan.verify_schema = schema.reaches_end
    plan.expected_sequence = list(schema.sequence.names) if schema.reaches_end else []
    if not schema.reaches_end:
        plan.verify_schema_skipped = why_effects_unknown(schema)
        if request.operation != Operation.resolve:
            plan.notes.append(f"verification will not compare the schema: {plan.verify_schema_skipped}")
    plan.drift = drift_report(plan, facts.schema_facts)
    if plan.drift is not None:
        plan.notes.append(f"drift proof: {plan.drift.summary}")
        if schema.roles is not None and schema.roles.sentence:  # approvers see whose objects were compared as whose
            plan.notes.append(schema.roles.sentence)
        if plan.drift.verdict == DriftVerdict.unexplained_drift:
            # The live schema holds changes no migration explains: approvers must look harder.
            plan.risk = Risk.high
            plan.required_approvals = max(plan.required_approvals, policy.approvals_for(Risk.high))
    plan = fit_to_budget(plan)
    too_large = result_too_large(plan, facts.verify_statements)
    if too_large:
        plan.blockers.append(too_large)
    plan.state_fingerprint = state_fingerprint(plan, request, facts.diagnosis)
    approval_policy = ApprovalPolicy(
        gates=list(policy.gates),
        approvers=list(policy.approvers),
        allow_self_approval=policy.allow_self_approval,
        approval_timeout=policy.approval_timeout,
        required_approvals=plan.required_approvals,
        proofs=list(policy.approval_proofs),
        allowed_signers=policy.allowed_signers,
    )
    return plan, approval_policy


def build_plan(
    request: DeployRequest,
    diagnosis: HistoryDiagnosis,
    analyses: Mapping[str, MigrationAnalysis],
    effects: Mapping[str, MigrationEffects],
    *,
    snapshot: LedgerSnapshot,
    required_approvals: Mapping[str, int],
    server_version: str = "",
    problems: Sequence[Blocker] = (),
    available_extensions: Collection[str] | None = None,
    backups: Mapping[str, MigrationBackups] | None = None,
    backup_max_bytes: int = 1 << 30,
    unknown_effects: str = "no shadow replay",
    deploy_gate: bool = False,
) -> DeployPlan:
    """The actions per migration, the blockers and the risk, from the diagnosis of the ledger
    against the bundle, the SQL analyses (bundle names) and the effects of failed migrations
    (schema model; `unknown_effects` says why a failed migration has none)."""
    bundle = {m.name: m for m in request.bundle.migrations}
    operation = request.operation
    # Problems with the input itself come first (duplicate names, a BOM), unparseable SQL last.
    blockers: list[Blocker] = [p for p in problems if p.code not in _LATE_PROBLEMS]
    notes: list[str] = []
    planned: list[PlannedMigration] = []

    if diagnosis.needs_baseline:
        tables = diagnosis.blocking_tables
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        first = next((m.name for m in diagnosis.migrations if m.state != MigrationState.missing_locally), "<name>")
        blockers.append(Blocker(
            code=BlockerCode.needs_baseline,
            message=f"the database has tables ({shown}) but no _prisma_migrations table (Prisma P3005): baseline it "
            "first by marking the migrations its schema already contains as applied "
            f"(prisma migrate resolve --applied {first})",
        ))

    for status in diagnosis.migrations:
        name, state = status.name, status.state
        local = bundle.get(name)
        analysis = analyses.get(name)
        failed_rows = [r for r in status.attempts if r.is_failed]
        pm = PlannedMigration(name=name, action=Action.already_applied, reason="", checksum=status.checksum_local)
        if analysis is not None:
            pm.execution = analysis.execution
            pm.in_transaction = analysis.in_transaction
            pm.risk = analysis.risk
            pm.findings = list(analysis.findings)
        if local is not None:
            if local.down_sql and local.down_sql.strip():
                pm.rollback, pm.rollback_sql = RollbackSource.down_sql, local.down_sql
            elif analysis is not None and analysis.derived_rollback:
                pm.rollback, pm.rollback_sql = RollbackSource.derived, analysis.derived_rollback

        if len(failed_rows) > 1:
            blockers.append(Blocker(
                code=BlockerCode.duplicate_unfinished_rows, migration=name,
                message=f"migration {name} has {len(failed_rows)} unfinished rows in _prisma_migrations "
                f"({', '.join(r.id for r in failed_rows)}); Prisma writes at most one, so the table was edited "
                "or written concurrently: a person must clean it up",
            ))

        if state == MigrationState.applied:
            pm.action, pm.reason = Action.already_applied, "applied"
        elif state == MigrationState.pending and status.unreadable:
            pm.action = Action.needs_human
            pm.reason = f"{FolderEntry(name, None, status.unreadable).explain()}: Prisma's deploy stops here (P3015)"
        elif state == MigrationState.pending:
            pm.action = Action.apply
            pm.reason = "pending"
            if any(r.is_rolled_back for r in status.attempts):
                pm.reason = "pending (an earlier attempt was rolled back)"
            if status.out_of_order:
                pm.reason += "; out of order: it sorts before migrations already applied (Prisma applies it anyway)"
                notes.append(f"{name} is applied out of order, after migrations that sort later")
        elif state == MigrationState.failed:
            ev = effects.get(name)
            pm.evidence = [ev.sentence] if ev is not None else []
            pm.effects = ev.verdict if ev is not None else None
            pm.action, pm.reason = failed_decision(analysis, ev, unknown_effects)
            if pm.action == Action.needs_human:
                found = "; ".join(pm.evidence) or "no evidence"
                blockers.append(Blocker(code=BlockerCode.failed_needs_human, migration=name,
                                        message=f"migration {name} {pm.reason} (found: {found})"))
            elif operation == Operation.migrate:
                blockers.append(Blocker(
                    code=BlockerCode.failed_blocks_migrate, migration=name,
                    message=f"migration {name} failed earlier and blocks deploy (Prisma P3009); run operation 'full' "
                    "(or 'resolve' first) so it is resolved before migrating",
                ))
        elif state == MigrationState.modified:
            pm.action = Action.needs_human
            pm.reason = (
                f"changed after it was applied (local sha256 {status.checksum_local}, database {status.checksum_db})"
            )
            blockers.append(Blocker(
                code=BlockerCode.modified, migration=name,
                message=f"migration {name} was modified after it was applied: restore the applied version of its "
                "migration.sql, or put the change in a new migration",
            ))
        elif state == MigrationState.missing_locally:
            if failed_rows:
                pm.action = Action.needs_human
                pm.reason = "failed in the database and not in the bundle (phantom)"
                blockers.append(Blocker(
                    code=BlockerCode.failed_phantom, migration=name,
                    message=f"migration {name} is recorded as failed in the database but is not in the migrations "
                    "folder: restore its folder or resolve it by hand (prisma migrate resolve --rolled-back)",
                ))
            else:
                pm.action = Action.leave_phantom
                pm.reason = "recorded in the database but not in the migrations folder (phantom): left alone"
                notes.append(f"phantom migration {name} is in the database but not in the folder; left alone")
        else:  # pragma: no cover - a state the engine added later
            pm.action, pm.reason = Action.needs_human, f"unknown state {state}"
            blockers.append(Blocker(code=BlockerCode.unknown_state, migration=name,
                                    message=f"migration {name} is in state {state}, which this version cannot plan"))

        if pm.action in RUNS_IN_DEPLOY:
            attach_backups(pm, analysis, (backups or {}).get(name), snapshot.schema_name or "public")
        fails = [f for f in pm.findings if f.code == FAILS_IN_PRISMA]
        if pm.action in RUNS_IN_DEPLOY and fails:
            blockers.append(Blocker(
                code=BlockerCode.fails_in_prisma, migration=name,
                message=f"migration {name} will fail as Prisma runs it (line {fails[0].line}): {fails[0].message}",
            ))
        if pm.action in RUNS_IN_DEPLOY and pm.rollback is None and operation in (Operation.full, Operation.migrate):
            why = "; ".join(analysis.rollback_blockers if analysis else []) or "no down.sql and none derivable"
            notes.append(
                f"{name} has no rollback ({why}): if a later step fails, compensation stops at it for a person"
            )
        planned.append(pm)

    deploys = operation in (Operation.full, Operation.migrate)  # only a deploy destroys data (and backs it up)
    if deploys:
        blockers += _deploy_stops(diagnosis, planned, analyses, available_extensions)
    backup_blockers, backup_notes, backup_bytes, no_backup = limit_backups(
        [m for m in planned if m.action in RUNS_IN_DEPLOY] if deploys else [], backup_max_bytes,
        deploy_gate=deploy_gate)
    blockers += backup_blockers
    notes += backup_notes
    blockers += [p for p in problems if p.code in _LATE_PROBLEMS]
    if request.bundle.folder_problem:
        notes.append(request.bundle.folder_problem)
    creates_ledger = (not snapshot.table_exists and not diagnosis.needs_baseline
                      and operation in (Operation.full, Operation.migrate))
    if creates_ledger and not any(m.action in RUNS_IN_DEPLOY for m in planned):
        notes.append("nothing to apply, but the database has no _prisma_migrations table: deploy creates it "
                     "(as prisma migrate deploy does)")
    if operation == Operation.resolve and any(m.action == Action.apply for m in planned):
        notes.append("operation 'resolve' leaves pending migrations for a later 'migrate' run")
    if (
        operation != Operation.verify
        and not blockers
        and not any(m.action in (*RUNS_IN_DEPLOY, *RUNS_IN_RESOLVE, Action.needs_human) for m in planned)
    ):
        notes.append("nothing to resolve or apply: the database is up to date with the bundle")
    if operation == Operation.verify:
        # verify reads only; it reports the rest itself
        blockers = [b for b in blockers if b.code == BlockerCode.needs_baseline]

    running = [m for m in planned if m.action in (*RUNS_IN_DEPLOY, *RUNS_IN_RESOLVE)]
    risk = max_risk(m.risk for m in running)
    plan = DeployPlan(
        environment=request.environment,
        operation=operation,
        server_version=server_version,
        ledger_exists=snapshot.table_exists,
        creates_ledger=creates_ledger,
        migrations=planned,
        blockers=blockers,
        notes=notes,
        risk=risk,
        required_approvals=max(1, int(required_approvals.get(risk, 1))),
        ledger_digest=ledger_digest(snapshot.rows),
        backup_bytes=backup_bytes,
        no_backup=no_backup,
    )
    plan.fingerprint = plan_fingerprint(plan, request)
    return plan


def _deploy_stops(diagnosis: HistoryDiagnosis, planned: Sequence[PlannedMigration],
                  analyses: Mapping[str, MigrationAnalysis], available_extensions: Collection[str] | None) -> list[Blocker]:
    """Where Prisma's deploy of this folder would stop, in its order: a pending directory without a
    readable migration.sql (P3015), a pending migration creating an extension this server lacks."""
    unreadable = {m.name: m.unreadable for m in diagnosis.migrations if m.unreadable}
    stops: list[Blocker] = []
    before = 0  # pending migrations Prisma would apply before reaching this one

    def where(how: str) -> str:
        if stops:
            return f"a later deploy would {how} there too, once the earlier stop is dealt with"
        return f"Prisma's deploy would apply the {before} pending migration(s) before it and {how} there"

    for pm in planned:
        if pm.name in unreadable and pm.action == Action.needs_human and pm.reason.endswith("(P3015)"):
            what = FolderEntry(pm.name, None, unreadable[pm.name]).explain()
            stops.append(Blocker(code=BlockerCode.missing_migration_file, migration=pm.name, message=(
                f"{what}: {where('stop with P3015')}; this run changes nothing — restore its migration.sql, delete the "
                "directory, or let the tool that applies it record it in _prisma_migrations")))
        if pm.action not in RUNS_IN_DEPLOY:
            continue
        analysis = analyses.get(pm.name)
        missing = [] if analysis is None or available_extensions is None else [
            ref.name for ref in analysis.creates
            if ref.kind == ObjectKind.extension and ref.name not in available_extensions]
        for ext in missing:
            stops.append(Blocker(code=BlockerCode.extension_unavailable, migration=pm.name, message=(
                f"migration {pm.name} creates extension {ext}, which this PostgreSQL server does not have "
                f"(not in pg_available_extensions): {where('fail')}; this run changes nothing — install the "
                "extension on the server first")))
        before += 1
    return stops
