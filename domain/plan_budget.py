"""Keeping a run's records inside Temporal's payload limit (2 MB per payload).

The plan travels in preflight's result and again in the run's result; both must fit, whatever the
bundle holds. Review detail is trimmed least-useful first; a run whose plan or result still cannot
fit is refused before any change.
"""

from __future__ import annotations

from domain.models import Action, Blocker, BlockerCode, DeployPlan
from domain.stages import RUNS_IN_DEPLOY

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
    applied = [m for m in plan.migrations if m.action == Action.already_applied]
    if len(applied) > 1000:
        # A long history: the migrations already applied are counted, not listed (the fingerprint,
        # computed before, still covers each of them; the bundle in history names them all).
        plan = plan.model_copy(update={"migrations": [m for m in plan.migrations if m.action != Action.already_applied],
                                       "unlisted_applied": plan.unlisted_applied + len(applied)})
        plan.notes.append(f"the {len(applied)} migrations already applied are counted, not listed")
        if _plan_size(plan) <= budget:
            return plan
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
        pending = len(plan.by_action(*RUNS_IN_DEPLOY))
        plan.blockers.append(Blocker(
            code=BlockerCode.plan_too_large,
            message=f"the plan for this bundle is {size / 1_000_000:.1f} MB even without review detail ({pending} "
            "migrations to apply), too large for one Temporal payload: deploy the folder in smaller steps "
            "(fewer pending migrations per run)",
        ))
        # The run is refused, but its plan must still reach the user: list as many as fit.
        listed = plan.migrations
        while listed and _plan_size(plan.model_copy(update={"migrations": listed})) > budget:
            listed = listed[: len(listed) // 2]
        if len(listed) < len(plan.migrations):
            plan.notes.append(f"only the first {len(listed)} of the plan's {len(plan.migrations)} migrations are "
                              "listed: the run is refused for its size anyway")
            plan = plan.model_copy(update={"migrations": listed})
    else:
        plan.notes.append(f"the plan was trimmed to fit a Temporal payload: left out {', '.join(trimmed)}")
    return plan


# The run's result repeats the plan and adds a record per applied migration and per verify check;
# these are generous per-item sizes of those records as JSON.
_APPLIED_RECORD_BYTES = 400
_CHECK_RECORD_BYTES = 320
RESULT_BUDGET_BYTES = 1_800_000


def result_too_large(plan: DeployPlan, verify_statements: int = 0) -> Blocker | None:
    """A blocker when the run's final status could outgrow a Temporal payload (2 MB), so the run
    is refused before any change instead of failing to record its own end."""
    checks = len(plan.migrations) + 2 + verify_statements  # + the schema check and accepted drift
    estimate = _plan_size(plan) + _APPLIED_RECORD_BYTES * len(plan.by_action(*RUNS_IN_DEPLOY)) + _CHECK_RECORD_BYTES * checks
    if estimate <= RESULT_BUDGET_BYTES:
        return None
    return Blocker(
        code=BlockerCode.result_too_large,
        message=f"this run would record about {estimate / 1_000_000:.1f} MB of results "
        f"({len(plan.by_action(*RUNS_IN_DEPLOY))} migrations to apply), over what one Temporal payload holds: "
        "deploy the folder in smaller steps",
    )
