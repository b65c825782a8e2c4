"""Which stages a run executes, and which plan actions each stage carries out."""

from __future__ import annotations

from domain.models import Action, DeployPlan, Operation, Stage

# Stages each operation runs, in order.
OPERATION_STAGES: dict[Operation, list[Stage]] = {
    Operation.full: [Stage.resolve, Stage.deploy, Stage.verify],
    Operation.resolve: [Stage.resolve],
    Operation.migrate: [Stage.deploy, Stage.verify],
    Operation.verify: [Stage.verify],
}

RUNS_IN_DEPLOY = (Action.apply, Action.reapply)
RUNS_IN_RESOLVE = (Action.reapply, Action.resolve_applied)
# What verification checks: everything the database should hold once the run is done.
VERIFIED = (*RUNS_IN_DEPLOY, Action.resolve_applied, Action.already_applied)


def stage_has_work(plan: DeployPlan, stage: Stage | str) -> bool:
    if stage == Stage.resolve:
        return bool(plan.by_action(*RUNS_IN_RESOLVE))
    if stage == Stage.deploy:
        return bool(plan.by_action(*RUNS_IN_DEPLOY)) or plan.creates_ledger
    return stage == Stage.verify


def run_stages(plan: DeployPlan) -> list[Stage]:
    """The stages this run will execute: its operation's, minus those with nothing to do."""
    return [s for s in OPERATION_STAGES[plan.operation] if stage_has_work(plan, s)]
