"""Mocked activities for rollout workflow tests: a fleet of pretend databases, each with a plan state,
registered under the real activity names (as tests/test_workflow_mocked.py does for one deploy).

Every call is counted per database, so a test can assert that each was deployed exactly once."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from domain.models import (
    Action,
    ApprovalPolicy,
    CompensateInput,
    CompensateResult,
    CompensationStep,
    DeployInput,
    DeployPlan,
    DeployRequest,
    DeployResult,
    FailedMigration,
    PlannedMigration,
    PreflightResult,
    ResolveInput,
    ResolveResult,
    RollbackSource,
    VerifyInput,
    VerifyResult,
)
from domain.rollout import group_plans
from domain.rollout_models import (
    DiscoverInput,
    DiscoverResult,
    PlanTargetsInput,
    PlanTargetsResult,
    RolloutRequest,
    RolloutStatus,
)
from tests.helpers import migration
from workflows.rollout_start import ROLLOUT_WORKFLOW_NAME, rollout_start_options
from workflows.sandbox import workflow_runner

A = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT);', down='DROP TABLE "a";')
B = migration("20250102000000_b", 'CREATE TABLE "b" ("id" INT);', down='DROP TABLE "b";')


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class FakeFleet:
    """Pretend databases. `states[target]` names its plan state (default "pending-a-b");
    `failing` targets fail their deploy (the child compensates); `blocking` targets deploy until cancelled."""

    def __init__(self, fleets: dict[str, list[str]] | None = None, *, states: dict[str, str] | None = None,
                 failing: set[str] | None = None, blocking: set[str] | None = None,
                 policies: dict[str, ApprovalPolicy] | None = None, deploy_seconds: float = 0.0,
                 later_states: dict[str, str] | None = None) -> None:
        self.fleets = fleets or {}
        self.states = states or {}
        self.failing = failing or set()
        self.blocking = blocking or set()
        self.policies = policies or {}
        self.deploy_seconds = deploy_seconds
        self.later_states = later_states or {}  # the state a target has when its own run plans it
        self.calls: Counter[tuple[str, str]] = Counter()
        self.planned_by_rollout: set[str] = set()
        self.deploying: set[str] = set()
        self.cancelled: set[str] = set()

    def policy(self, target: str) -> ApprovalPolicy:
        base = target.split(":")[0]
        return self.policies.get(target) or self.policies.get(base) or ApprovalPolicy(
            gates=[], approval_timeout=timedelta(hours=2), proofs=["ssh", "typed"])

    def state(self, target: str, *, own_run: bool) -> str:
        if own_run and target in self.later_states:
            return self.later_states[target]
        return self.states.get(target, "pending-a-b")

    def preflight_result(self, req: DeployRequest, *, own_run: bool) -> PreflightResult:
        state = self.state(req.environment, own_run=own_run)
        migrations = [PlannedMigration(name=m.name, action=Action.apply, reason="pending", checksum=m.checksum,
                                       rollback=RollbackSource.down_sql, rollback_sql=m.down_sql)
                      for m in req.bundle.migrations]
        if state.startswith("applied-a"):
            migrations[0] = migrations[0].model_copy(update={"action": Action.already_applied, "reason": "applied"})
        plan = DeployPlan(environment=req.environment, operation=req.operation, migrations=migrations,
                          fingerprint=_h(req.environment + state), ledger_digest=_h(req.environment),
                          state_fingerprint=_h(state))
        return PreflightResult(plan=plan, policy=self.policy(req.environment), heartbeat_timeout=timedelta(seconds=1))

    def activities(self) -> list[Any]:
        @activity.defn(name="preflight")
        async def preflight(req: DeployRequest) -> PreflightResult:
            self.calls[("preflight", req.environment)] += 1
            return self.preflight_result(req, own_run=True)

        @activity.defn(name="resolve")
        async def resolve(inp: ResolveInput) -> ResolveResult:
            return ResolveResult()

        @activity.defn(name="deploy")
        async def deploy(inp: DeployInput) -> DeployResult:
            target = inp.environment
            self.calls[("deploy", target)] += 1
            self.deploying.add(target)
            try:
                if target in self.blocking:
                    while True:
                        activity.heartbeat()
                        await asyncio.sleep(0.05)
                if self.deploy_seconds:
                    await asyncio.sleep(self.deploy_seconds)
            except asyncio.CancelledError:
                self.cancelled.add(target)
                raise
            finally:
                self.deploying.discard(target)
            if target in self.failing:
                return DeployResult(failed=FailedMigration(name=inp.migrations[0].name, error="relation already exists"))
            return DeployResult()

        @activity.defn(name="verify")
        async def verify(inp: VerifyInput) -> VerifyResult:
            return VerifyResult()

        @activity.defn(name="compensate")
        async def compensate(inp: CompensateInput) -> CompensateResult:
            self.calls[("compensate", inp.environment)] += 1
            return CompensateResult(steps=[CompensationStep(name=s.name, action="ran down.sql", ok=True) for s in inp.undo])

        @activity.defn(name="discover_targets")
        async def discover_targets(inp: DiscoverInput) -> DiscoverResult:
            targets = list(self.fleets.get(inp.stage, [inp.stage]))
            gated = any(self.policy(t).gates for t in targets)
            kind = "fleet" if inp.stage in self.fleets else "environment"
            return DiscoverResult(stage=inp.stage, kind=kind, targets=targets, gated=gated)

        @activity.defn(name="plan_targets")
        async def plan_targets(inp: PlanTargetsInput) -> PlanTargetsResult:
            planned = []
            for target in inp.targets:
                self.planned_by_rollout.add(target)
                req = inp.request.model_copy(update={"environment": target})
                planned.append((target, self.preflight_result(req, own_run=False)))
            return PlanTargetsResult(groups=group_plans(planned))

        @activity.defn(name="drop_shadow")
        async def drop_shadow(environment: str) -> str | None:
            return None

        return [preflight, resolve, deploy, verify, compensate, discover_targets, plan_targets, drop_shadow]

    def deploys(self, target: str) -> int:
        return self.calls[("deploy", target)]


def rollout_request(stages: list[str], **kwargs: Any) -> RolloutRequest:
    kwargs.setdefault("requested_by", "carol")
    from domain.models import MigrationBundle

    return RolloutRequest(name=f"t-{uuid.uuid4().hex[:8]}", stages=stages,
                          bundle=MigrationBundle(migrations=[A, B], revision="test", source="tests"), **kwargs)


def fake_worker(client: Client, fleet: FakeFleet) -> Worker:
    from workflows.deploy import DeployWorkflow
    from workflows.rollout import RolloutWorkflow

    return Worker(client, task_queue=f"rollout-{uuid.uuid4()}", workflows=[DeployWorkflow, RolloutWorkflow],
                  activities=fleet.activities(), workflow_runner=workflow_runner(strict=True))


async def start_rollout(client: Client, worker: Worker, req: RolloutRequest) -> WorkflowHandle:
    return await client.start_workflow(ROLLOUT_WORKFLOW_NAME, req, result_type=RolloutStatus,
                                       **rollout_start_options(req, task_queue=worker.task_queue))


async def rollout_status(handle: WorkflowHandle) -> RolloutStatus:
    return await handle.query("status", result_type=RolloutStatus)


async def wait_rollout(handle: WorkflowHandle, predicate, timeout: float = 30.0) -> RolloutStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = await rollout_status(handle)
        except Exception:  # noqa: BLE001 - the first workflow task may not have run yet
            last = None
        if last is not None and predicate(last):
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for the rollout; last: {last.model_dump_json()[:3000] if last else None}")


async def final_rollout(handle: WorkflowHandle) -> RolloutStatus:
    from temporalio.client import WorkflowFailureError

    try:
        return await handle.result()
    except WorkflowFailureError as exc:
        failure: Any = exc.cause
        while failure is not None:
            for detail in getattr(failure, "details", None) or ():
                try:
                    return RolloutStatus.model_validate(detail)
                except Exception:  # noqa: BLE001
                    continue
            failure = getattr(failure, "cause", None)
        raise
