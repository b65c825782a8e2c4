"""DeployWorkflow's orchestration with mocked activities (registered by name, as the SDK's samples
do), on the time-skipping server: no database, so each case runs in well under a second.

What the real activities do is tested elsewhere against PostgreSQL; here only the workflow's own
decisions: blocked plans, expiry, cancellation during an activity, compensation that cannot run,
and failures before any change.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

from domain.drift import DriftReport, DriftVerdict
from domain.models import (
    Action,
    ApprovalPolicy,
    Blocker,
    BlockerCode,
    CompensateInput,
    CompensateResult,
    CompensationStep,
    DeployInput,
    DeployPlan,
    DeployRequest,
    DeployResult,
    Outcome,
    PlannedMigration,
    PreflightResult,
    ResolveInput,
    ResolveResult,
    RollbackSource,
    VerifyCheck,
    VerifyInput,
    VerifyResult,
)
from tests.helpers import migration, patch_ids, request
from workflows import messages
from workflows import search_attributes as sa
from workflows.deploy import CURRENT_CODE_PATCH, DeployWorkflow
from workflows.sandbox import workflow_runner
from workflows.start import WORKFLOW_NAME, start_options

A = migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT);', down='DROP TABLE "a";')


def plan_for(req: DeployRequest, *, blockers: list[Blocker] | None = None) -> DeployPlan:
    return DeployPlan(
        environment=req.environment,
        operation=req.operation,
        migrations=[PlannedMigration(name=A.name, action=Action.apply, reason="pending", checksum=A.checksum,
                                     rollback=RollbackSource.down_sql, rollback_sql=A.down_sql)],
        blockers=blockers or [],
        fingerprint="f" * 64,
        ledger_digest="d" * 64,
    )


class FakeActivities:
    """Activities registered under the real names; each call is recorded in `calls`."""

    def __init__(self, *, gates: list[str] | None = None, blockers: list[Blocker] | None = None,
                 preflight_error: ApplicationError | None = None, deploy_blocks: bool = False,
                 verify_fails: bool = False, compensate_error: ApplicationError | None = None,
                 plan_update: dict | None = None, shadow_left: str | None = None,
                 deploy_result: DeployResult | None = None, shadow_clean: tuple[bool, bool] = (False, False)) -> None:
        self.gates = gates or []
        self.deploy_result = deploy_result
        self.shadow_clean = shadow_clean  # what preflight and verify say of the run's shadow database
        self.plan_update = plan_update or {}
        self.shadow_left = shadow_left
        self.verify_inputs: list[VerifyInput] = []
        self.blockers = blockers
        self.preflight_error = preflight_error
        self.deploy_blocks = deploy_blocks
        self.verify_fails = verify_fails
        self.compensate_error = compensate_error
        self.calls: list[str] = []
        self.deploy_started = asyncio.Event()
        self.deploy_finished_at: float | None = None
        self.compensate_started_at: float | None = None

    def all(self) -> list:
        @activity.defn(name="preflight")
        async def preflight(req: DeployRequest) -> PreflightResult:
            self.calls.append("preflight")
            if self.preflight_error:
                raise self.preflight_error
            policy = ApprovalPolicy(gates=self.gates, approval_timeout=timedelta(hours=2))
            # A short heartbeat timeout: cancellation reaches an activity with its next (throttled) heartbeat.
            plan = plan_for(req, blockers=self.blockers).model_copy(update=self.plan_update)
            return PreflightResult(plan=plan, policy=policy, heartbeat_timeout=timedelta(seconds=1),
                                   shadow_clean=self.shadow_clean[0])

        @activity.defn(name="resolve")
        async def resolve(inp: ResolveInput) -> ResolveResult:
            self.calls.append("resolve")
            return ResolveResult()

        @activity.defn(name="deploy")
        async def deploy(inp: DeployInput) -> DeployResult:
            self.calls.append("deploy")
            self.deploy_started.set()
            if self.deploy_blocks:
                try:
                    while True:  # a long migration: heartbeats deliver the cancellation
                        activity.heartbeat()
                        await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    await asyncio.sleep(0.3)  # asyncpg cancelling the query, the transaction rolling back
                    self.deploy_finished_at = asyncio.get_running_loop().time()
                    raise
            return self.deploy_result or DeployResult()

        @activity.defn(name="verify")
        async def verify(inp: VerifyInput) -> VerifyResult:
            self.calls.append("verify")
            self.verify_inputs.append(inp)
            if self.verify_fails:
                return VerifyResult(checks=[VerifyCheck(check="verify.sql line 1", migration=A.name, passed=False,
                                                        detail="returned no rows")], shadow_clean=self.shadow_clean[1])
            return VerifyResult(shadow_clean=self.shadow_clean[1])

        @activity.defn(name="compensate")
        async def compensate(inp: CompensateInput) -> CompensateResult:
            self.calls.append("compensate")
            self.compensate_started_at = asyncio.get_running_loop().time()
            if self.compensate_error:
                raise self.compensate_error
            return CompensateResult(steps=[CompensationStep(name=s.name, action="ran down.sql", ok=True)
                                           for s in inp.undo])

        @activity.defn(name="drop_shadow")
        async def drop_shadow(environment: str) -> str | None:
            self.calls.append("drop_shadow")
            return self.shadow_left

        return [preflight, resolve, deploy, verify, compensate, drop_shadow]


async def run_to_end(env: WorkflowEnvironment, fakes: FakeActivities, req: DeployRequest | None = None,
                     *, while_running=None):
    req = req or request("dev", [A])
    queue = f"mocked-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=queue, workflows=[DeployWorkflow], activities=fakes.all(),
                      workflow_runner=workflow_runner(strict=True),
                      max_cached_workflows=0):
        options = start_options(req, task_queue=queue, workflow_id=f"mocked-{uuid.uuid4()}")
        handle = await env.client.start_workflow(WORKFLOW_NAME, req, **options)
        if while_running is not None:
            await while_running(handle)
        status = await messages.final_status(handle)
        description = await handle.describe()
    return status, description.status, handle


@pytest.fixture
def env(time_skipping_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return time_skipping_env


async def test_a_blocked_plan_stops_before_any_stage_with_the_blockers_for_a_person(env) -> None:
    blocker = Blocker(code=BlockerCode.modified, migration=A.name, message=f"migration {A.name} was modified")
    fakes = FakeActivities(blockers=[blocker])
    status, execution, _ = await run_to_end(env, fakes)
    assert fakes.calls == ["preflight", "drop_shadow"]  # the run's shadow database goes, whatever the end
    assert status.outcome == Outcome.failed_needs_attention
    assert status.human_action == blocker.message and blocker.message in status.error
    assert execution == WorkflowExecutionStatus.FAILED


async def test_a_gate_nobody_answers_expires_without_touching_the_database(env) -> None:
    fakes = FakeActivities(gates=["deploy"])
    status, _, _ = await run_to_end(env, fakes)  # the time-skipping server jumps the 2 hours
    assert status.outcome == Outcome.expired and "not approved within 2:00:00" in status.error
    assert fakes.calls == ["preflight", "drop_shadow"]  # nothing started, so nothing to compensate


async def test_a_failure_before_any_change_says_nothing_was_changed(env) -> None:
    fakes = FakeActivities(preflight_error=ApplicationError("preflight on dev: database dev does not exist",
                                                            type="DatabaseUnavailable", non_retryable=True))
    status, _, _ = await run_to_end(env, fakes)
    assert status.outcome == Outcome.failed_no_changes
    assert "does not exist" in status.error and fakes.calls == ["preflight", "drop_shadow"]


async def test_compensation_that_cannot_run_asks_a_person_to_check(env) -> None:
    fakes = FakeActivities(verify_fails=True,
                           compensate_error=ApplicationError("compensate on dev: lost the server", non_retryable=True))
    status, _, _ = await run_to_end(env, fakes)
    assert fakes.calls == ["preflight", "deploy", "verify", "compensate", "drop_shadow"]
    assert status.outcome == Outcome.failed_needs_attention
    assert "compensation could not run" in status.human_action and "lost the server" in status.human_action
    assert status.error.startswith("verification failed")


async def test_cancel_during_deploy_waits_for_the_attempt_then_compensates_and_ends_cancelled(env) -> None:
    fakes = FakeActivities(deploy_blocks=True)
    observed = {}

    async def cancel_when_deploying(handle) -> None:
        await asyncio.wait_for(fakes.deploy_started.wait(), 10)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        observed["cause"] = failure.value.cause
        observed["status"] = await messages.query_status(handle)  # a closed run still answers its query

    _, execution, _ = await run_to_end(env, fakes, while_running=cancel_when_deploying)
    assert execution == WorkflowExecutionStatus.CANCELED and isinstance(observed["cause"], CancelledError)
    assert observed["status"].outcome == Outcome.cancelled
    assert fakes.calls == ["preflight", "deploy", "compensate", "drop_shadow"]
    # Compensation began only after the cancelled deploy attempt had stopped.
    assert fakes.deploy_finished_at is not None and fakes.compensate_started_at >= fakes.deploy_finished_at


async def test_a_bundle_whose_parts_never_all_arrive_ends_without_changes(env) -> None:
    """The starter died after sending one of two parts: the run waits 10 minutes (skipped here)
    and ends failed_no_changes, saying so; preflight never ran."""
    from domain.bundle import build_bundle, pack

    filler = "-- " + "x" * 4000 + "\n"
    migs = [migration(f"2025{i:010d}_m{i}", f"{filler}SELECT {i};\n") for i in range(500)]
    header, parts = pack(build_bundle(migs, revision="r", source="s"))
    assert len(parts) >= 2
    req = request("dev", []).model_copy(update={"bundle": header})
    fakes = FakeActivities()

    async def send_only_the_first(handle) -> None:
        await handle.execute_update(messages.BUNDLE_PART_UPDATE, parts[0], result_type=str)

    status, _, _ = await run_to_end(env, fakes, req, while_running=send_only_the_first)
    assert fakes.calls == []
    assert status.outcome == Outcome.failed_no_changes
    assert status.error == (f"the migrations bundle did not arrive in full (1 of {len(parts)} part(s) within 0:10:00); "
                            "nothing was changed: start the run again")


async def test_verify_gets_what_the_plan_expected_and_a_leftover_shadow_is_reported(env) -> None:
    """The plan's expected order (the SQL itself verify reads from history) and the digests of the drift approvers saw reach
    verify; a shadow the run could not drop is a note, not a failure."""
    drift = DriftReport(verdict=DriftVerdict.unexplained_drift, summary="unexplained drift: ...",
                        accepted=["a" * 32], accepted_moved=["b" * 32])
    fakes = FakeActivities(plan_update={"drift": drift, "verify_schema": True, "expected_sequence": [A.name]},
                           shadow_left="cannot drop the shadow database migrator_shadow_x; drop it by hand")
    status, _, _ = await run_to_end(env, fakes)
    assert status.outcome == Outcome.succeeded
    [inp] = fakes.verify_inputs
    assert inp.compare_schema and inp.expected_sequence == [A.name] and inp.migrations[0].sql == ""
    assert inp.accepted_drift == ["a" * 32] and inp.accepted_drift_moved == ["b" * 32]
    assert fakes.calls[-1] == "drop_shadow" and "drop it by hand" in status.notes[-1]
    # Without a replay of the folder, verify gets no migration bodies and says why it skips.
    fakes = FakeActivities(plan_update={"verify_schema_skipped": "schema checks are off"})
    await run_to_end(env, fakes)
    [inp] = fakes.verify_inputs
    assert not inp.compare_schema and inp.migrations[0].sql == "" and inp.schema_skipped == "schema checks are off"


REFUSAL = (f"{A.name} would destroy data without a backup, and no deploy approval acknowledged that "
           '("no_backup"); nothing was changed: start a new run and approve it with --no-backup for each')


async def test_a_deploy_the_activity_refused_before_any_change_ends_without_changes(env) -> None:
    """The deploy activity's own guard (a plan's no_backup migration no approval acknowledged)
    returns before touching the database: nothing to compensate, failed_no_changes, not a call
    for a person; the run's history replays with the patch marker."""
    fakes = FakeActivities(plan_update={"no_backup": [A.name]},
                           deploy_result=DeployResult(stopped=REFUSAL, refused=True))
    status, execution, handle = await run_to_end(env, fakes)
    assert fakes.calls == ["preflight", "deploy", "drop_shadow"]  # no compensate: nothing ran
    assert status.outcome == Outcome.failed_no_changes and status.error == REFUSAL
    assert status.applied == [] and status.compensation == [] and status.human_action is None
    assert execution == WorkflowExecutionStatus.FAILED
    history = await handle.fetch_history()
    # The current code's one marker stands for this change too; older runs replay their own marker.
    assert patch_ids(history) == [CURRENT_CODE_PATCH]
    for strict in (True, False):
        await Replayer(workflows=[DeployWorkflow], workflow_runner=workflow_runner(strict=strict),
                       data_converter=pydantic_data_converter).replay_workflow(history)



async def test_a_run_of_the_current_code_marks_one_patch_and_upserts_its_start_once(env) -> None:
    """A fleet multiplies every event of a run: a run of this code writes one workflow.patched()
    marker whatever the changes it takes, and its environment, operation, requester and first
    stage go out in one search-attribute upsert, before preflight is scheduled."""
    fakes = FakeActivities()
    status, _, handle = await run_to_end(env, fakes)
    assert status.outcome == Outcome.succeeded
    history = await handle.fetch_history()
    assert patch_ids(history) == [CURRENT_CODE_PATCH]
    first_activity = next(i for i, e in enumerate(history.events)
                          if e.HasField("activity_task_scheduled_event_attributes"))
    ours = [set(e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
            for e in history.events[:first_activity] if e.HasField("upsert_workflow_search_attributes_event_attributes")]
    ours = [keys for keys in ours if "TemporalChangeVersion" not in keys]
    assert ours == [{"MigrationEnvironment", "MigrationOperation", "MigrationRequestedBy", "MigrationStage"}]
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(sa.ENVIRONMENT) == "dev" and attributes.get(sa.STAGE) == "done"


async def test_a_refused_deploy_after_a_resolve_undoes_the_resolve_only(env) -> None:
    """Resolve changed the ledger before the refused deploy: compensation restores it (no deploy
    step to undo) and the run says it was rolled back."""
    reapply = PlannedMigration(name=A.name, action=Action.reapply, reason="failed before", checksum=A.checksum,
                               rollback=RollbackSource.down_sql, rollback_sql=A.down_sql)
    fakes = FakeActivities(plan_update={"migrations": [reapply], "no_backup": [A.name]},
                           deploy_result=DeployResult(stopped=REFUSAL, refused=True))
    undone: list[CompensateInput] = []
    original = fakes.all

    def recording() -> list:
        acts = original()

        @activity.defn(name="compensate")
        async def compensate(inp: CompensateInput) -> CompensateResult:
            fakes.calls.append("compensate")
            undone.append(inp)
            return CompensateResult()

        return [a for a in acts if a.__name__ != "compensate"] + [compensate]

    fakes.all = recording
    status, _, _ = await run_to_end(env, fakes)
    assert fakes.calls == ["preflight", "resolve", "deploy", "compensate", "drop_shadow"]
    assert [inp.undo for inp in undone] == [[]]  # the resolve decisions only (restored by the run's marks)
    assert status.outcome == Outcome.failed_rolled_back and status.error == REFUSAL


async def test_the_end_of_run_drop_runs_unless_every_activity_that_may_replay_left_no_shadow(env) -> None:
    """Preflight and verify say whether the run's shadow database is gone; the run drops it at the
    end unless both said so (a blocked plan never verifies: preflight's word is enough)."""
    fakes = FakeActivities(shadow_clean=(True, True))
    status, _, handle = await run_to_end(env, fakes)
    assert status.outcome == Outcome.succeeded and fakes.calls == ["preflight", "deploy", "verify"]
    # The current code's marker covers PATCH_DROP_ONLY_LEFT_SHADOW: runs before it replay with the drop.
    assert patch_ids(await handle.fetch_history()) == [CURRENT_CODE_PATCH]
    for clean in ((True, False), (False, True)):
        fakes = FakeActivities(shadow_clean=clean)
        await run_to_end(env, fakes)
        assert fakes.calls == ["preflight", "deploy", "verify", "drop_shadow"], clean
    fakes = FakeActivities(shadow_clean=(True, True), verify_fails=True)  # verify said clean, compensation ran
    await run_to_end(env, fakes)
    assert fakes.calls == ["preflight", "deploy", "verify", "compensate"]
    blocker = Blocker(code=BlockerCode.modified, migration=A.name, message=f"migration {A.name} was modified")
    fakes = FakeActivities(shadow_clean=(True, False), blockers=[blocker])
    await run_to_end(env, fakes)
    assert fakes.calls == ["preflight"]
