"""The deploy plan: what a run will do to each migration, and the fingerprint approvers sign off on.

Pure. Preflight (activities/deploy.py) gathers the inputs — the ledger snapshot, the state engine's
diagnosis, SQL analyses, evidence about failed migrations, the environment's policy — and this
module decides. Decisions per migration (issue 3, REPORT.md §4.6–4.7):

- applied                 -> already_applied
- pending                 -> apply (out of order: noted; Prisma applies it anyway)
- failed, effects absent or idempotent -> reapply (resolve --rolled-back, then run it again)
- failed, all effects present          -> resolve_applied (resolve --applied, never re-run)
- failed, anything else                -> needs_human (a blocker: the run stops before any change)
- missing locally (phantom)            -> leave_phantom (reported, untouched), unless it is failed
- modified / P3005 / duplicate unfinished rows -> blockers

The fingerprint hashes the bundle's checksums, the ledger rows and the actions: an approval given
for one fingerprint cannot approve a different plan, and deploy refuses to run when the ledger it
finds under the lock no longer matches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from domain.models import (
    Action,
    DeployPlan,
    DeployRequest,
    Finding,
    Operation,
    PlannedMigration,
    RunMarks,
    Stage,
)
from domain.prisma.ledger import LedgerRow, LedgerSnapshot
from domain.risk import Risk, max_risk

# Stages each operation runs, in order.
OPERATION_STAGES: dict[Operation, list[Stage]] = {
    Operation.full: [Stage.resolve, Stage.deploy, Stage.verify],
    Operation.resolve: [Stage.resolve],
    Operation.migrate: [Stage.deploy, Stage.verify],
    Operation.verify: [Stage.verify],
}

RUNS_IN_DEPLOY = (Action.apply, Action.reapply)
RUNS_IN_RESOLVE = (Action.reapply, Action.resolve_applied)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def ledger_digest(rows: Iterable[LedgerRow], marks: RunMarks | None = None) -> str:
    """A hash of the ledger as others left it: rows this run wrote are left out, and failed rows
    this run's resolve marked rolled back count as they were before. Equal digests before and after
    a stage mean nobody else touched `_prisma_migrations` in between."""
    own = marks.own_ids() if marks else set()
    resolve_at = marks.resolve_at if marks else None
    items = []
    for r in rows:
        if r.id in own:
            continue
        rolled = None if (resolve_at is not None and r.rolled_back_at == resolve_at) else r.rolled_back_at
        items.append(
            [r.id, r.migration_name, r.checksum, _iso(r.started_at), _iso(r.finished_at), _iso(rolled),
             r.applied_steps_count, r.logs]
        )
    items.sort(key=lambda item: item[0])
    return _sha256(items)


def plan_fingerprint(plan: DeployPlan, request: DeployRequest) -> str:
    return _sha256(
        {
            "environment": plan.environment,
            "operation": str(plan.operation),
            "bundle": [[m.name, m.checksum] for m in request.bundle.migrations],
            "ledger": plan.ledger_digest,
            "actions": [[m.name, str(m.action)] for m in plan.migrations],
        }
    )


def stage_has_work(plan: DeployPlan, stage: Stage | str) -> bool:
    if stage == Stage.resolve:
        return bool(plan.by_action(*RUNS_IN_RESOLVE))
    if stage == Stage.deploy:
        return bool(plan.by_action(*RUNS_IN_DEPLOY))
    return stage == Stage.verify


def run_stages(plan: DeployPlan) -> list[Stage]:
    """The stages this run will execute: its operation's, minus those with nothing to do."""
    return [s for s in OPERATION_STAGES[plan.operation] if stage_has_work(plan, s)]


def _text(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


def _findings(analysis: Any) -> list[Finding]:
    out = []
    for f in getattr(analysis, "findings", None) or []:
        out.append(f if isinstance(f, Finding) else Finding.model_validate(f, from_attributes=True))
    return out


def _failed_decision(name: str, analysis: Any, evidence: Any) -> tuple[Action, str]:
    absent = bool(getattr(evidence, "all_absent", False))
    present = bool(getattr(evidence, "all_present", False))
    idempotent = bool(getattr(analysis, "idempotent", False))
    if absent:
        return Action.reapply, (
            "failed, and none of its effects are in the database (it failed inside its transaction): "
            "mark it rolled back and run it again"
        )
    if idempotent:
        return Action.reapply, (
            "failed, and it is idempotent (every statement is safe to repeat): mark it rolled back and run it again"
        )
    if present:
        return Action.resolve_applied, (
            "failed, but every effect it has is already in the database: record it as applied without running it"
        )
    if evidence is None:
        return Action.needs_human, "failed, and its effects could not be checked: a person must decide"
    return Action.needs_human, (
        "failed with part of its effects in the database and it is not idempotent: a person must undo or "
        "complete it, then resolve it"
    )


def build_plan(
    request: DeployRequest,
    diagnosis: Any,
    analyses: Mapping[str, Any],
    evidence: Mapping[str, Any],
    *,
    snapshot: LedgerSnapshot,
    required_approvals: Mapping[str, int],
    server_version: str = "",
) -> DeployPlan:
    """`diagnosis` is domain.prisma.diagnosis.HistoryDiagnosis, `analyses` maps bundle names to
    domain.sql.rules.MigrationAnalysis, `evidence` maps failed names to activities.evidence.Evidence."""
    bundle = {m.name: m for m in request.bundle.migrations}
    operation = request.operation
    blockers: list[str] = []
    notes: list[str] = []
    planned: list[PlannedMigration] = []

    if diagnosis.needs_baseline:
        blockers.append(
            "the database has tables but no _prisma_migrations table (Prisma P3005): baseline it first by "
            "marking the migrations its schema already contains as applied (prisma migrate resolve --applied <name>)"
        )

    for status in diagnosis.migrations:
        name, state = status.name, str(status.state)
        local = bundle.get(name)
        analysis = analyses.get(name)
        failed_rows = [r for r in status.attempts if r.is_failed]
        pm = PlannedMigration(name=name, action=Action.already_applied, reason="", checksum=status.checksum_local)
        if analysis is not None:
            pm.in_transaction = bool(getattr(analysis, "in_transaction", True))
            pm.risk = Risk(getattr(analysis, "risk", Risk.low))
            pm.findings = _findings(analysis)
            pm.creates = list(getattr(analysis, "creates", None) or [])
        if local is not None:
            if local.down_sql and local.down_sql.strip():
                pm.rollback, pm.rollback_sql = "down.sql", local.down_sql
            elif analysis is not None and getattr(analysis, "derived_rollback", None):
                pm.rollback, pm.rollback_sql = "derived", analysis.derived_rollback

        if len(failed_rows) > 1:
            blockers.append(
                f"migration {name} has {len(failed_rows)} unfinished rows in _prisma_migrations "
                f"({', '.join(r.id for r in failed_rows)}); Prisma writes at most one, so the table was edited "
                "or written concurrently: a person must clean it up"
            )

        if state == "applied":
            pm.action, pm.reason = Action.already_applied, "applied"
        elif state == "pending":
            pm.action = Action.apply
            pm.reason = "pending"
            if any(r.is_rolled_back for r in status.attempts):
                pm.reason = "pending (an earlier attempt was rolled back)"
            if status.out_of_order:
                pm.reason += "; out of order: it sorts before migrations already applied (Prisma applies it anyway)"
                notes.append(f"{name} is applied out of order, after migrations that sort later")
        elif state == "failed":
            ev = evidence.get(name)
            pm.evidence = _text(getattr(ev, "summary", None))
            pm.action, pm.reason = _failed_decision(name, analysis, ev)
            if pm.action == Action.needs_human:
                found = "; ".join(pm.evidence) or "no evidence"
                blockers.append(f"migration {name} {pm.reason} (found: {found})")
            elif operation in (Operation.migrate,):
                blockers.append(
                    f"migration {name} failed earlier and blocks deploy (Prisma P3009); run operation 'full' "
                    "(or 'resolve' first) so it is resolved before migrating"
                )
        elif state == "modified":
            pm.action = Action.needs_human
            pm.reason = (
                f"changed after it was applied (local sha256 {status.checksum_local}, database {status.checksum_db})"
            )
            blockers.append(
                f"migration {name} was modified after it was applied: restore the applied version of its "
                "migration.sql, or put the change in a new migration"
            )
        elif state == "missing_locally":
            if failed_rows:
                pm.action = Action.needs_human
                pm.reason = "failed in the database and not in the bundle (phantom)"
                blockers.append(
                    f"migration {name} is recorded as failed in the database but is not in the migrations folder: "
                    "restore its folder or resolve it by hand (prisma migrate resolve --rolled-back)"
                )
            else:
                pm.action = Action.leave_phantom
                pm.reason = "recorded in the database but not in the migrations folder (phantom): left alone"
                notes.append(f"phantom migration {name} is in the database but not in the folder; left alone")
        else:  # pragma: no cover - a state the engine added later
            pm.action, pm.reason = Action.needs_human, f"unknown state {state}"
            blockers.append(f"migration {name} is in state {state}, which this version cannot plan")

        if pm.action in RUNS_IN_DEPLOY and pm.rollback is None and operation in (Operation.full, Operation.migrate):
            why = "; ".join(_text(getattr(analysis, "rollback_blockers", None))) or "no down.sql and none derivable"
            notes.append(
                f"{name} has no rollback ({why}): if a later step fails, compensation stops at it for a person"
            )
        planned.append(pm)

    if operation == Operation.resolve and any(m.action == Action.apply for m in planned):
        notes.append("operation 'resolve' leaves pending migrations for a later 'migrate' run")
    if (
        operation != Operation.verify
        and not blockers
        and not any(m.action in (*RUNS_IN_DEPLOY, *RUNS_IN_RESOLVE, Action.needs_human) for m in planned)
    ):
        notes.append("nothing to resolve or apply: the database is up to date with the bundle")
    if operation == Operation.verify:
        blockers = [b for b in blockers if "P3005" in b]  # verify reads only; it reports the rest itself

    running = [m for m in planned if m.action in (*RUNS_IN_DEPLOY, *RUNS_IN_RESOLVE)]
    risk = max_risk(m.risk for m in running)
    plan = DeployPlan(
        environment=request.environment,
        operation=operation,
        server_version=server_version,
        ledger_exists=snapshot.table_exists,
        migrations=planned,
        blockers=blockers,
        notes=notes,
        risk=risk,
        required_approvals=max(1, int(required_approvals.get(risk, 1))),
        ledger_digest=ledger_digest(snapshot.rows),
    )
    plan.fingerprint = plan_fingerprint(plan, request)
    return plan


# The plan travels in preflight's result and in the run's result, and Temporal refuses any payload
# over 2 MB: keep it well under, whatever the bundle holds.
PLAN_BUDGET_BYTES = 900_000


def _plan_size(plan: DeployPlan) -> int:
    return len(plan.model_dump_json().encode())


def fit_to_budget(plan: DeployPlan, budget: int = PLAN_BUDGET_BYTES) -> DeployPlan:
    """Drop review detail, least useful first, until the plan fits a Temporal payload; block the
    run (before any change) when even the bare plan does not fit. Actions, rollbacks of what will
    run and the fingerprint are never dropped."""
    if _plan_size(plan) <= budget:
        return plan
    done = {Action.already_applied, Action.leave_phantom}
    steps = [
        ("findings and derived rollbacks of migrations already applied",
         lambda m: m.model_copy(update={"findings": [], "rollback_sql": None}) if m.action in done else m),
        ("informational findings",
         lambda m: m.model_copy(update={"findings": [f for f in m.findings if f.severity != "info"]})),
        ("the statement text quoted in findings",
         lambda m: m.model_copy(update={"findings": [f.model_copy(update={"statement": None}) for f in m.findings]})),
    ]
    trimmed: list[str] = []
    for what, trim in steps:
        plan = plan.model_copy(update={"migrations": [trim(m) for m in plan.migrations]})
        trimmed.append(what)
        if _plan_size(plan) <= budget:
            break
    size = _plan_size(plan)
    if size > budget:
        plan.blockers.append(
            f"the plan for this bundle is {size / 1_000_000:.1f} MB even without review detail, too large for "
            "one Temporal payload: deploy the folder in smaller steps (fewer pending migrations per run)"
        )
    else:
        plan.notes.append(f"the plan was trimmed to fit a Temporal payload: left out {', '.join(trimmed)}")
    return plan


# The run's result repeats the plan and adds a record per applied migration and per verify check;
# these are generous per-item sizes of those records as JSON.
_APPLIED_RECORD_BYTES = 400
_CHECK_RECORD_BYTES = 320
RESULT_BUDGET_BYTES = 1_800_000


def result_too_large(plan: DeployPlan, verify_statements: int = 0) -> str | None:
    """A blocker when the run's final status could outgrow a Temporal payload (2 MB), so the run
    is refused before any change instead of failing to record its own end."""
    checks = len(plan.migrations) + sum(len(m.creates) for m in plan.migrations) + verify_statements
    estimate = _plan_size(plan) + _APPLIED_RECORD_BYTES * len(plan.by_action(*RUNS_IN_DEPLOY)) + _CHECK_RECORD_BYTES * checks
    if estimate <= RESULT_BUDGET_BYTES:
        return None
    return (
        f"this run would record about {estimate / 1_000_000:.1f} MB of results ({len(plan.by_action(*RUNS_IN_DEPLOY))} "
        "migrations to apply), over what one Temporal payload holds: deploy the folder in smaller steps"
    )
