"""The rollout's activities: which databases a stage names, and their plans.

- `discover_targets`: an environment is one target; a fleet's are its environments, or the
  databases its discovery query lists on its server (members `<fleet>:<database>`). Names only:
  URLs stay in the worker.
- `plan_targets`: preflight (the very activity a deploy runs, read-only) for each database of a
  batch, with bounded concurrency; the plans grouped by state fingerprint and approval policy
  (domain/rollout.py), one representative plan per group. A database that cannot be planned is
  named with the reason; it does not fail the batch.

Decides nothing: waves, gates and thresholds are domain/rollout.py's.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import Heartbeater
from activities.preflight import PreflightActivities
from activities.target import TargetDatabases
from domain.models import PreflightResult
from domain.rollout import group_plans
from domain.rollout_models import DiscoverInput, DiscoverResult, PlanTargetsInput, PlanTargetsResult


class FleetActivities:
    def __init__(self, targets: TargetDatabases) -> None:
        self.targets = targets
        self.preflight = PreflightActivities(targets)

    @activity.defn(name="discover_targets")
    async def discover_targets(self, inp: DiscoverInput) -> DiscoverResult:
        settings = self.targets.settings
        if inp.stage in settings.environments:
            return DiscoverResult(stage=inp.stage, kind="environment", targets=[inp.stage],
                                  gated=bool(settings.environments[inp.stage].gates))
        fleet = self.targets.fleet(inp.stage)
        if fleet.discover is None:
            unknown = [e for e in fleet.environments if e not in settings.environments]
            if unknown:
                raise ApplicationError(
                    f"fleet {inp.stage} lists environments this worker does not know: {', '.join(unknown)}",
                    type="UnknownEnvironment", non_retryable=True)
            members = list(fleet.environments)
            gated = any(settings.environments[e].gates for e in members)
        else:
            members = await self.targets.discover(inp.stage, fresh=True)
            gated = bool(fleet.member_settings("gates_check").gates)
        if not members:
            raise ApplicationError(f"fleet {inp.stage} has no databases (its discovery query listed none)",
                                   type="EmptyFleet", non_retryable=True)
        present = set(members)
        groups = {name: [fleet.target(inp.stage, m) for m in listed if m in present]
                  for name, listed in fleet.groups.items()}
        activity.logger.info("fleet discovered", extra={"fleet": inp.stage, "databases": len(members)})
        return DiscoverResult(stage=inp.stage, kind="fleet", targets=[fleet.target(inp.stage, m) for m in members],
                              groups=groups, waves=fleet.waves, gated=gated)

    @activity.defn(name="plan_targets")
    async def plan_targets(self, inp: PlanTargetsInput) -> PlanTargetsResult:
        done: list[str] = []
        gate = asyncio.Semaphore(max(1, inp.concurrency))
        planned: dict[str, PreflightResult] = {}
        failures: dict[str, str] = {}

        async def plan_one(target: str) -> None:
            async with gate:
                request = inp.request.model_copy(update={"environment": target, "approved_plan": None})
                try:
                    planned[target] = await self.preflight.preflight(request)
                except ApplicationError as exc:
                    failures[target] = exc.message
                done.append(target)

        async with Heartbeater(lambda: {"stage": "planning", "done": len(done), "total": len(inp.targets)}):
            await asyncio.gather(*(plan_one(t) for t in inp.targets))
        ordered = [(t, planned[t]) for t in inp.targets if t in planned]
        return PlanTargetsResult(groups=group_plans(ordered),
                                 failures={t: failures[t] for t in inp.targets if t in failures})
