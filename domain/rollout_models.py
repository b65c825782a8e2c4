"""Models of a rollout (workflows/rollout.py): its request, what it planned and decided, and its status.

A rollout moves one bundle through an ordered list of stages; each stage is an environment (one
database) or a fleet (many, deployed in waves). Every database gets its own DeployWorkflow run (a
child); the rollout only plans, groups databases by plan state, gathers approvals, and sequences.
Everything here is recorded in workflow history and answered by the `status` query, so it never
holds a database URL: targets are names the worker resolves.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from domain.models import (
    ApprovalPolicy,
    ApprovalRecord,
    DeployPlan,
    DeployRequest,
    MigrationBundle,
    Operation,
)

DEFAULT_WAVES = ["1", "25%", "100%"]
# How many child runs one run of the rollout starts before it continues as new: bounds its history
# (about 10 events and one bundle-sized start event per child) whatever the fleet's size.
CHILDREN_PER_RUN = 100
PLAN_BATCH = 50  # databases planned by one activity call


class RolloutOutcome(StrEnum):
    succeeded = "succeeded"  # every database of every stage got the bundle
    completed_with_failures = "completed_with_failures"  # the last stage ended with tolerated failures
    halted = "halted"  # failures passed the threshold, or a stage failed: later databases were not started
    rejected = "rejected"  # a gate was rejected: nothing after it started
    expired = "expired"  # a gate waited past its timeout
    cancelled = "cancelled"  # cancelled: running deploys were cancelled (each undid its own changes)
    failed = "failed"  # the rollout itself could not go on (e.g. a fleet could not be listed)


class RolloutRequest(BaseModel):
    name: str
    stages: list[str]  # environment or fleet names, in order
    requested_by: str
    bundle: MigrationBundle
    operation: Operation = Operation.full
    dry_run: bool = False
    waves: list[str] | None = None  # fleet stages: e.g. ["1", "25%", "100%"] or ["1", "group:eu", "rest"]
    concurrency: int = Field(default=8, ge=1, le=64)
    max_failures: str = "0"  # per wave: failures beyond this (N, or P% of the wave) halt the rollout
    children_per_run: int = Field(default=CHILDREN_PER_RUN, ge=1)
    state: RolloutStatus | None = None  # set only when the rollout continues as new

    def child_request(self, target: str) -> DeployRequest:
        return DeployRequest(environment=target, operation=self.operation, dry_run=self.dry_run,
                             requested_by=self.requested_by, bundle=self.bundle)


# -- activities ------------------------------------------------------------------------------


class DiscoverInput(BaseModel):
    stage: str


class DiscoverResult(BaseModel):
    stage: str
    kind: str  # environment | fleet
    targets: list[str]  # names the worker resolves to databases (fleet members: "<fleet>:<database>")
    groups: dict[str, list[str]] = Field(default_factory=dict)  # named groups of targets, for waves
    waves: list[str] | None = None  # the fleet's default waves (worker settings)
    gated: bool = True  # some database of the stage has gates: plan and approve before deploying


class PlanTargetsInput(BaseModel):
    request: DeployRequest  # the children's request; its environment is replaced by each target
    targets: list[str]
    concurrency: int = 8


class PlannedGroup(BaseModel):
    """Databases whose plans have one state fingerprint under one approval policy."""

    key: str
    state_fingerprint: str
    plan: DeployPlan  # the plan of the first member; the others' differ only in name and row ids
    policy: ApprovalPolicy
    members: list[str]


class PlanTargetsResult(BaseModel):
    groups: list[PlannedGroup] = Field(default_factory=list)
    failures: dict[str, str] = Field(default_factory=dict)  # target -> why it could not be planned


# -- state -----------------------------------------------------------------------------------


class TargetResult(BaseModel):
    """What one database got: the run's outcome, as compact as history allows."""

    target: str
    outcome: str  # a DeployWorkflow Outcome, or not_planned / busy
    run_id: str | None = None
    group: str | None = None  # key of its plan group
    applied: int = 0  # migrations the run applied (which: its plan group's; its run has the detail)
    approvals: str | None = None  # "rollout" when the rollout's approvals opened its gates, "own" otherwise
    error: str | None = None
    ended_at: datetime | None = None


class WaveState(BaseModel):
    number: int  # 1-based across the whole rollout
    stage: str
    label: str  # e.g. "canary", "25%", "group:eu", "prod"
    targets: list[str]
    gated: bool = True  # False: no database has gates, so each run plans for itself (no read-only pre-plan)
    planned: bool = False
    gate_passed: bool = False
    fingerprint: str = ""  # what a `wave` approval names: this wave's targets and the results before it
    membership: dict[str, str] = Field(default_factory=dict)  # target -> key of its plan group
    results: dict[str, TargetResult] = Field(default_factory=dict)
    started_at: datetime | None = None
    ended_at: datetime | None = None

    def failures(self) -> list[TargetResult]:
        return [r for r in self.results.values() if r.outcome != "succeeded"]


class PlanGroup(BaseModel):
    """A plan state under one approval policy, approved once for every database in it."""

    key: str
    state_fingerprint: str
    plan: DeployPlan  # representative (the first member's), without review detail (domain.rollout.review_plan)
    policy: ApprovalPolicy
    gates: list[str]  # the gates the plan's runs have (approved here for all of them)
    members: int = 0
    approvals: list[ApprovalRecord] = Field(default_factory=list)  # accepted and refused, in order
    signatures: list[str | None] = Field(default_factory=list)  # aligned with approvals: what each was signed with
    gates_passed: list[str] = Field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return bool(self.plan.blockers)

    @property
    def approved(self) -> bool:
        return not self.gates or set(self.gates) <= set(self.gates_passed)


class RolloutGate(BaseModel):
    """What the rollout waits for before a wave."""

    wave: int
    groups: list[str] = Field(default_factory=list)  # plan groups needing approval
    wave_approval: bool = False  # True: a `wave` approval to continue (every plan approved before)
    approvals_needed: int = 1  # for the wave approval
    approvers: list[str] = Field(default_factory=list)
    allow_self_approval: bool = True
    since: datetime | None = None


class ControlPayload(BaseModel):
    """A pause, resume or cancel as sent (loose like ApprovalPayload: judged, then recorded)."""

    model_config = {"extra": "allow"}

    by: Any = None
    reason: Any = None


class ControlRecord(BaseModel):
    """A pause, resume or cancel, and who asked."""

    action: str
    by: str | None
    reason: str | None = None
    at: datetime
    accepted: bool = True
    refusal: str | None = None


class RolloutAttempt(BaseModel):
    """One approve/reject sent to the rollout, and which gate(s) it counted for."""

    record: ApprovalRecord
    wave: int | None = None
    groups: list[str] = Field(default_factory=list)


class RolloutStatus(BaseModel):
    """Answer of the rollout's `status` query, its result, and what it carries across continue-as-new."""

    name: str
    stages: list[str]
    requested_by: str
    operation: Operation
    dry_run: bool = False
    revision: str | None = None
    concurrency: int = 8
    max_failures: str = "0"
    phase: str = "starting"  # planning | awaiting | deploying | paused | halting | cancelling | done
    stage_index: int = 0
    stages_done: list[str] = Field(default_factory=list)
    waves: list[WaveState] = Field(default_factory=list)
    groups: dict[str, PlanGroup] = Field(default_factory=dict)
    awaiting: RolloutGate | None = None
    attempts: list[RolloutAttempt] = Field(default_factory=list)
    controls: list[ControlRecord] = Field(default_factory=list)
    paused: bool = False
    running: list[str] = Field(default_factory=list)  # targets whose run is open right now
    outcome: RolloutOutcome | None = None
    error: str | None = None
    runs: int = 1  # runs of this rollout so far (continue-as-new)
    first_run_id: str | None = None  # the rollout's identity across its runs (approvals name it)
    children_started: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None

    def wave(self, number: int) -> WaveState:
        return next(w for w in self.waves if w.number == number)

    def results(self) -> list[TargetResult]:
        return [r for w in self.waves for r in w.results.values()]


RolloutRequest.model_rebuild()
