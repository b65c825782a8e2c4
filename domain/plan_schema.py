"""What the run's schema facts (the shadow replay, activities/schema_facts.py) decide in a plan:
how a failed migration is resolved from its effects, where a migration to run would fail, and the
drift proof's verdict. Pure helpers of domain.plan.decide, the one place a plan is decided.
"""

from __future__ import annotations

from domain.drift import DriftReport, DriftVerdict, judge_drift, no_proof
from domain.facts import EnvironmentPolicy, SchemaFacts, SchemaState
from domain.models import Action, Blocker, BlockerCode, DeployPlan, Operation
from domain.schema.evidence import EffectsVerdict, MigrationEffects
from domain.schema.replay import ReplayFailure
from domain.sql.rules import MigrationAnalysis
from domain.stages import RUNS_IN_DEPLOY, RUNS_IN_RESOLVE


def why_effects_unknown(schema: SchemaFacts) -> str:
    if schema.state == SchemaState.off:
        return "schema checks are off for this environment (drift_proof: never)"
    if schema.state == SchemaState.unavailable:
        return schema.reason or "no shadow database could be used"
    if schema.failure is not None:
        return f"the shadow replay stopped: {schema.failure.sentence}"
    return "the shadow replay did not reach it"


def shadow_blockers(plan: DeployPlan, schema: SchemaFacts, policy: EnvironmentPolicy) -> list[Blocker]:
    """A migration this run would execute fails in the shadow database: it would fail on deploy
    too, where Prisma stops (P3018), so the run stops now, before any change. Only when the shadow
    is a faithful copy of the live schema (no drift) and the error does not depend on data (a
    duplicate key, a division by zero...: the live rows are not the shadow's)."""
    if schema.state != SchemaState.compared:
        if policy.require_schema and schema.state == SchemaState.unavailable:
            return [Blocker(code=BlockerCode.schema_unavailable,
                            message=f"the schema cannot be compared ({schema.reason}) and this environment requires "
                            "it (drift_proof: always): nothing was changed")]
        return []
    failure = schema.failure
    if failure is None or plan.operation in (Operation.verify, Operation.resolve):
        return []
    runs = {m.name for m in plan.by_action(*RUNS_IN_DEPLOY)}
    if failure.migration not in runs or any(b.migration == failure.migration for b in plan.blockers):
        return []  # not run by this plan, or already stopped for a reason said more plainly (P3015, an extension)
    if depends_on_data(failure):
        plan.notes.append(f"{failure.sentence}; the shadow holds only the rows the history itself inserts, so the "
                          "live database may differ: the deploy will tell (a failure there is undone)")
        return []
    if schema.drift:
        # The live schema is not the replay's (objects made outside the folder, e.g. an application's
        # own tables a migration uses): the replay cannot say what the deploy will meet.
        plan.notes.append(f"{failure.sentence}; the live schema differs from the replay (see the drift proof), so "
                          "the deploy may still succeed there: it will tell (a failure there is undone)")
        return []
    return [Blocker(
        code=BlockerCode.fails_in_shadow, migration=failure.migration,
        message=f"{failure.sentence}; deploying it would fail the same way (prisma migrate deploy stops there, "
        "P3018), so the run stops before changing anything",
    )]


# SQLSTATE classes whose errors depend on the rows a statement meets (data exceptions, integrity
# violations): the shadow has only the history's own rows, so such a failure there predicts nothing.
_DATA_CLASSES = ("22", "23")


def depends_on_data(failure: ReplayFailure) -> bool:
    return (failure.sqlstate or "")[:2] in _DATA_CLASSES


def drift_report(plan: DeployPlan, schema: SchemaFacts) -> DriftReport | None:
    phantoms = [m.name for m in plan.migrations if m.action == Action.leave_phantom]
    if schema.state == SchemaState.off:
        return None
    if schema.state == SchemaState.unavailable:
        return no_proof(DriftVerdict.unavailable, schema.reason or "no shadow database", phantoms=phantoms)
    if schema.drift is None:
        reason = (f"replaying the applied local history failed: {schema.failure.sentence}; the local migrations do "
                  "not rebuild the schema on their own") if schema.failure else "the replay did not reach the applied history"
        return no_proof(DriftVerdict.replay_failed, reason, phantoms=phantoms, shadow_database=schema.shadow_database,
                        replayed=(schema.failure.position - 1) if schema.failure else 0)
    # A failed migration whose effects are all in place, and which this plan resolves (or re-runs,
    # being idempotent), accounts for the differences within what it touches.
    resolved = {
        m.name: [o.ref for o in schema.effects[m.name].objects]
        for m in plan.migrations
        if m.action in RUNS_IN_RESOLVE and m.name in schema.effects
        and schema.effects[m.name].verdict == EffectsVerdict.all
    }
    return judge_drift(schema.drift, phantoms=phantoms, replayed=schema.sequence.applied, resolved=resolved,
                       shadow_database=schema.shadow_database)


def failed_decision(analysis: MigrationAnalysis | None, effects: MigrationEffects | None,
                     unknown: str) -> tuple[Action, str]:
    verdict = effects.verdict if effects is not None else None
    if verdict == EffectsVerdict.none:
        return Action.reapply, (
            "failed, and none of its effects are in the database (it failed inside its transaction): "
            "mark it rolled back and run it again"
        )
    if analysis is not None and analysis.idempotent:
        return Action.reapply, (
            "failed, and every statement is proven safe to repeat: mark it rolled back and run it again"
        )
    if verdict == EffectsVerdict.all:
        return Action.resolve_applied, (
            "failed, but all of its effects are in the database with the expected definitions: record it as "
            "applied without running it"
        )
    unsafe = "; ".join(analysis.repeat_blockers) if analysis is not None else ""
    why = f" and it is not safe to run again ({unsafe})" if unsafe else ""
    if effects is None:
        return Action.needs_human, (
            f"failed, its effects could not be checked ({unknown}){why}: a person must check whether it took effect, "
            "then run prisma migrate resolve --applied for it if it did, or undo what took effect and run prisma "
            "migrate resolve --rolled-back for it"
        )
    if verdict == EffectsVerdict.no_schema_effect:
        return Action.needs_human, (
            f"failed, and it changes no schema object, so the schema cannot show whether it ran{why}: a person must "
            "check its data changes, then resolve it"
        )
    return Action.needs_human, (
        f"failed with part of its effects in the database (or other definitions under its names){why}: a person "
        "must check what took effect (each object that differs is listed), then either complete the rest by hand "
        "and run prisma migrate resolve --applied for it, or undo what took effect and run prisma migrate resolve "
        "--rolled-back for it"
    )
