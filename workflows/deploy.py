"""DeployWorkflow: preflight -> [gate] resolve -> [gate] deploy -> [gate] verify, with compensation.

One run per environment (workflow id `prisma-deploy-<env>`). Orchestration only, deterministic and
I/O-free: the database work is in activities/ (one module per stage), the decisions in
domain/plan.py (the plan) and domain/approval.py (each approval attempt), what the UI shows in
domain/details.py, what to undo in domain/undo.py. Everything the run decides from (plan, approval
policy) comes back from preflight, so it is in history. Messages and the result: workflows/messages.py;
activity timeouts and retries: workflows/activity_options.py.

Long module: one workflow class, whose stages, gates, message handlers and saga share the run's state.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    is_cancelled_exception,
)
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.apply import ApplyActivities
    from activities.cleanup import CleanupActivities
    from activities.compensate import CompensateActivities
    from activities.preflight import PreflightActivities
    from activities.resolve import ResolveActivities
    from activities.verify import VerifyActivities
    from domain import approval, details
    from domain.attempts import keep_attempt
    from domain.bundle import check_part
    from domain.models import (
        Action,
        ApprovalAnswer,
        ApprovalPayload,
        ApprovalPolicy,
        ApprovalRecord,
        BundledMigration,
        BundlePart,
        CompensateInput,
        DeployInput,
        DeployPlan,
        DeployRequest,
        FailedMigration,
        Outcome,
        PreflightResult,
        Progress,
        ResolveInput,
        RunMarks,
        RunStatus,
        Stage,
        VerifyInput,
    )
    from domain.stages import (
        OPERATION_STAGES,
        RUNS_IN_DEPLOY,
        RUNS_IN_RESOLVE,
        VERIFIED,
        run_stages,
    )
    from domain.rollout_approval import accept_for_child
    from domain.undo import undo_steps
    from workflows import messages
    from workflows import search_attributes as sa
    from workflows.activity_options import (
        CLEANUP_TIMEOUT,
        COMPENSATE_RETRY,
        COMPENSATE_TIMEOUT,
        DEPLOY_RETRY,
        DEPLOY_TIMEOUT,
        HEARTBEAT_TIMEOUT,
        PREFLIGHT_TIMEOUT,
        QUICK_RETRY,
        RESOLVE_TIMEOUT,
        VERIFY_TIMEOUT,
        slim_plan,
    )
    from workflows.start import WORKFLOW_NAME

# Runs started by a rollout may carry its approvals for their plan state (workflows/rollout.py).
ROLLOUT_APPROVALS_PATCH = "rollout-approved-plan"
# A deploy whose failed migration left no trace (the lock budget ran out before it could take its
# locks), after nothing else of the run changed the database, ends failed_no_changes.
NOTHING_CHANGED_PATCH = "lock-budget-no-changes"
# A plan that runs migrations without a backup passes the deploy approvals' acknowledgement of
# exactly those to the deploy activity, which refuses to run them without it.
NO_BACKUP_PATCH = "no-backup-approval"
# A deploy activity that refused its input before touching the database (DeployResult.refused)
# changed nothing: the deploy is not compensated, and a run that changed nothing else ends
# failed_no_changes (before: failed_needs_attention, after compensating what never ran).
REFUSED_NO_CHANGES_PATCH = "deploy-refused-no-changes"
# Runs started with this code mark it once, at their start: they take every change above (and
# those in workflows/messages.py) without a marker each (each marker also upserts
# TemporalChangeVersion: two events per change per run, which a fleet of databases multiplies), and
# their first search attributes go out with the preflight stage in one upsert. Runs recorded
# before it replay each change's own marker as they recorded it.
CURRENT_CODE_PATCH = "deploy-v6-one-marker"

# How long a run waits for the parts of a bundle too large for one payload; the starter sends
# them right after the start, so this only runs out when it was stopped midway.
BUNDLE_PARTS_TIMEOUT = timedelta(minutes=10)

ERROR_TYPES = {
    Outcome.rejected: "DeployRejected",
    Outcome.expired: "DeployExpired",
    Outcome.cancelled: "DeployCancelled",
    Outcome.failed_no_changes: "DeployFailedNoChanges",
    Outcome.failed_rolled_back: "DeployFailedRolledBack",
    Outcome.failed_needs_attention: "DeployNeedsAttention",
}


class _Stop(Exception):
    """Ends the forward path: compensation runs, then the run closes with `outcome`."""

    def __init__(self, outcome: Outcome, reason: str, human_action: str | None = None) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.human_action = human_action


def _activity_error_text(err: ActivityError) -> str:
    cause = err.cause
    message = getattr(cause, "message", None) or str(cause or err)
    return message


@workflow.defn(name=WORKFLOW_NAME)
class DeployWorkflow:
    @workflow.init
    def __init__(self, request: DeployRequest) -> None:
        self._req = request
        self._status = RunStatus(
            environment=request.environment,
            operation=request.operation,
            dry_run=request.dry_run,
            requested_by=request.requested_by,
            revision=request.bundle.revision,
        )
        self._plan: DeployPlan | None = None
        self._policy: ApprovalPolicy | None = None
        self._marks = RunMarks()
        self._accepting = True
        self._resolve_started = False
        self._deploy_started = False
        self._preflight_started = False  # a shadow database may exist from here on
        self._shadow_clean = False  # the activities that may replay all said they left none
        self._failed: FailedMigration | None = None
        self._heartbeat = HEARTBEAT_TIMEOUT
        # Approval proofs (issue 15) apply to runs that reached preflight's end with this code;
        # replayed older runs keep judging typed names as they did (workflow.patched).
        self._proofs: approval.ProofContext | None = None
        self._page = ""  # the current stage's details, below the latest approval attempts
        # A bundle sent in parts: what each accepted part holds (its SQL stays in history, where the
        # activities and the audit read it back; domain/bundle.py).
        self._parts: dict[int, list[BundledMigration]] = {}
        self._current = False  # the run started with this code (CURRENT_CODE_PATCH)
        self._pending_attributes: list[Any] = []  # sent with the next upsert

    # -- the run --------------------------------------------------------------------------------
    @workflow.run
    async def run(self, request: DeployRequest) -> RunStatus:
        self._current = workflow.patched(CURRENT_CODE_PATCH)
        first = [sa.ENVIRONMENT.value_set(request.environment), sa.OPERATION.value_set(str(request.operation)),
                 sa.REQUESTED_BY.value_set(request.requested_by)]
        if self._current:
            self._pending_attributes = first  # with the preflight stage (or the end, if it never starts)
        else:
            self._upsert(*first)
        cancelled = False
        try:
            if request.bundle.in_parts:  # only runs started in parts wait here: none were in flight before
                await self._receive_bundle()
            await self._preflight()
            if not request.plan_only:
                stages = run_stages(self._plan)
                for stage in OPERATION_STAGES[request.operation]:
                    if stage not in stages:
                        self._status.notes.append(f"{stage}: nothing to do")
                        continue
                    await self._gate(stage)
                    await self._run_stage(stage)
            self._status.outcome = Outcome.succeeded
        except _Stop as stop:
            await self._stop(stop)
        except ActivityError as err:
            if is_cancelled_exception(err):  # the run was cancelled while an activity ran
                cancelled = True
                await self._stop(_Stop(Outcome.cancelled, "the run was cancelled"))
            else:
                await self._stop(_Stop(Outcome.failed_rolled_back, f"{_activity_error_text(err)}"))
        except asyncio.CancelledError:
            cancelled = True
            await self._stop(_Stop(Outcome.cancelled, "the run was cancelled"))
        return await self._finish(cancelled)

    async def _receive_bundle(self) -> None:
        total = len(self._req.bundle.parts)
        self._details(details.receiving(self._req.environment, self._req.bundle.count, total))
        try:
            await workflow.wait_condition(lambda: len(self._parts) == total, timeout=BUNDLE_PARTS_TIMEOUT,
                                          timeout_summary="bundle-parts")
        except asyncio.TimeoutError:
            raise _Stop(Outcome.failed_no_changes,
                        f"the migrations bundle did not arrive in full ({len(self._parts)} of {total} part(s) within "
                        f"{BUNDLE_PARTS_TIMEOUT}); nothing was changed: start the run again") from None

    def _bundle_entries(self) -> list[BundledMigration]:
        """The bundle's migrations as the workflow holds them: whole when inline; names and
        checksums (SQL left in history) when they came in parts."""
        if not self._req.bundle.in_parts:
            return self._req.bundle.migrations
        return [m for i in sorted(self._parts) for m in self._parts[i]]

    async def _preflight(self) -> None:
        self._enter(Stage.preflight)
        self._preflight_started = True
        self._details(details.preflight(self._req.environment, self._req.bundle.count))
        result: PreflightResult = await workflow.execute_activity_method(
            PreflightActivities.preflight,
            self._req,
            start_to_close_timeout=PREFLIGHT_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=QUICK_RETRY,
            summary=f"preflight: read the ledger of {self._req.environment} and plan",
        )
        self._leave(Stage.preflight)
        self._shadow_clean = result.shadow_clean
        self._heartbeat = result.heartbeat_timeout
        plan = result.plan
        self._plan, self._policy = plan, result.policy
        if self._patched("approval-proofs"):
            info = workflow.info()
            # Signed over the run's first execution id: a reset run keeps it, so approvals replay alike.
            self._proofs = approval.proof_context(info.workflow_id, info.first_execution_run_id or info.run_id,
                                                  result.policy)
        self._status.plan, self._status.policy = plan, result.policy
        self._status.approvals_needed = result.policy.required_approvals
        self._status.progress = Progress(total=len(plan.by_action(*RUNS_IN_DEPLOY)))
        self._marks = RunMarks(
            deploy_ids={m.name: str(workflow.uuid4()) for m in plan.by_action(*RUNS_IN_DEPLOY)},
            resolve_ids={m.name: str(workflow.uuid4()) for m in plan.by_action(Action.resolve_applied)},
            resolve_at=workflow.now(),
        )
        if self._req.approved_plan is not None and not plan.blockers and self._patched(ROLLOUT_APPROVALS_PATCH):
            self._take_rollout_approvals()
        if plan.blockers:
            raise _Stop(
                Outcome.failed_needs_attention,
                f"the plan is blocked, nothing was changed: {plan.blockers[0].message}"
                + (f" (and {len(plan.blockers) - 1} more)" if len(plan.blockers) > 1 else ""),
                human_action="; ".join(b.message for b in plan.blockers),
            )

    def _take_rollout_approvals(self) -> None:
        """The rollout's approvals for this plan state, judged again by this run's rules (never
        taken unless this run is that rollout's child and its own plan has that state)."""
        parent = workflow.info().parent
        records, note = accept_for_child(
            self._req.approved_plan, parent_workflow_id=parent.workflow_id if parent else None, plan=self._plan,
            policy=self._policy, requested_by=self._req.requested_by, gates=self._gates(), at=workflow.now(),
            with_proofs=self._proofs is not None)
        if self._proofs is not None:  # the same proof as any other approval of this environment
            records = [approval.require_proof(r, self._policy, self._plan.environment) for r in records]
        self._status.approvals.extend(records)
        self._status.notes.append(note)

    async def _run_stage(self, stage: Stage) -> None:
        self._enter(stage)
        if stage == Stage.resolve:
            await self._resolve()
        elif stage == Stage.deploy:
            await self._deploy()
        else:
            await self._verify()
        self._leave(stage)

    async def _resolve(self) -> None:
        plan = self._plan
        todo = plan.by_action(*RUNS_IN_RESOLVE)
        if self._req.dry_run:
            self._status.notes.append("dry run: resolve skipped (would resolve " +
                                      ", ".join(f"{m.name} as {m.action}" for m in todo) + ")")
            return
        self._details(details.resolving(plan.environment, todo))
        self._resolve_started = True  # compensation is registered before the step can change anything
        result = await workflow.execute_activity_method(
            ResolveActivities.resolve,
            ResolveInput(environment=plan.environment, plan=slim_plan(plan, *RUNS_IN_RESOLVE), marks=self._marks),
            start_to_close_timeout=RESOLVE_TIMEOUT,
            heartbeat_timeout=self._heartbeat,
            retry_policy=QUICK_RETRY,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"resolve {len(todo)} failed migration(s) on {plan.environment}",
        )
        if result.stopped:
            raise _Stop(Outcome.failed_needs_attention, result.stopped, human_action=result.stopped)
        self._status.resolved = result.decisions

    async def _deploy(self) -> None:
        plan = self._plan
        bundle = {m.name: m for m in self._bundle_entries()}
        todo = [bundle[m.name] for m in plan.by_action(*RUNS_IN_DEPLOY)]
        if self._req.dry_run:
            self._status.notes.append("dry run: deploy skipped (would apply " + ", ".join(m.name for m in todo) + ")")
            return
        self._details(details.deploying(plan.environment, todo))
        self._status.progress = Progress(done=0, total=len(todo), current=todo[0].name if todo else None)
        self._deploy_started = True
        acknowledged = approval.no_backup_approved(self._status.approvals) \
            if plan.no_backup and self._patched(NO_BACKUP_PATCH) else []
        result = await workflow.execute_activity_method(
            ApplyActivities.deploy,
            DeployInput(environment=plan.environment, plan=slim_plan(plan, *RUNS_IN_DEPLOY), migrations=todo,
                        marks=self._marks, bundle_parts=self._req.bundle.parts, no_backup_approved=acknowledged),
            start_to_close_timeout=DEPLOY_TIMEOUT,
            heartbeat_timeout=self._heartbeat,
            retry_policy=DEPLOY_RETRY,
            # A cancelled run waits for the deploy attempt to stop before compensating.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"deploy {len(todo)} migration(s) on {plan.environment} under pg_advisory_lock(72707369)",
        )
        self._status.applied = result.applied
        self._status.progress = Progress(done=len(result.applied), total=len(todo), current=None)
        if result.refused and result.stopped and self._patched(REFUSED_NO_CHANGES_PATCH):
            self._deploy_started = False  # it returned before connecting: nothing of the deploy to undo
            raise _Stop(Outcome.failed_rolled_back, result.stopped)  # failed_no_changes unless resolve ran
        if result.stopped:
            raise _Stop(Outcome.failed_needs_attention, result.stopped, human_action=result.stopped)
        if result.needs_attention:
            raise _Stop(Outcome.failed_needs_attention, result.needs_attention, human_action=result.needs_attention)
        if result.failed:
            self._failed = self._status.failed = result.failed
            raise _Stop(Outcome.failed_rolled_back,
                        f"migration {result.failed.name} failed: {result.failed.error.strip().splitlines()[0]}")

    async def _verify(self) -> None:
        plan = self._plan
        if self._req.dry_run and self._req.operation != "verify":
            self._status.notes.append("dry run: verify skipped (nothing was applied)")
            return
        self._details(details.verifying(plan.environment))
        slim = self._patched(messages.PATCH_VERIFY_READS_BUNDLE)
        self._shadow_clean, clean = False, self._shadow_clean  # until verify says so
        result = await workflow.execute_activity_method(
            VerifyActivities.verify,
            VerifyInput(
                environment=plan.environment,
                plan=slim_plan(plan, *VERIFIED),
                # verify compares checksums, runs verify.sql and, when preflight could replay the
                # folder, replays it again (from its cache on the same worker) to compare schemas;
                # the SQL stays out of its input (already in history once): the activity reads it back
                migrations=[m.model_copy(update={"sql": m.sql if plan.verify_schema and not slim else "",
                                                 "down_sql": None})
                            for m in self._req.bundle.migrations],
                bundle_parts=self._req.bundle.parts,
                compare_schema=plan.verify_schema,
                expected_sequence=plan.expected_sequence,
                accepted_drift=list(plan.drift.accepted) if plan.drift else [],
                accepted_drift_moved=list(plan.drift.accepted_moved) if plan.drift else [],
                schema_skipped=plan.verify_schema_skipped,
            ),
            start_to_close_timeout=VERIFY_TIMEOUT,
            heartbeat_timeout=self._heartbeat,
            retry_policy=QUICK_RETRY,
            summary=f"verify {self._req.bundle.count} migration(s) on {plan.environment}",
        )
        self._status.verification = result.checks
        self._shadow_clean = clean and result.shadow_clean
        failed = [c for c in result.checks if not c.passed]
        if failed:
            first = failed[0]
            raise _Stop(Outcome.failed_rolled_back,
                        f"verification failed: {first.check} for {first.migration or 'the run'} ({first.detail})"
                        + (f" and {len(failed) - 1} more check(s)" if len(failed) > 1 else ""))

    # -- gates ----------------------------------------------------------------------------------
    async def _gate(self, stage: Stage) -> None:
        policy = self._policy
        if stage not in policy.gates:
            return
        needed = policy.required_approvals
        self._status.awaiting = stage
        self._status.approvals_needed = needed
        self._upsert(sa.STAGE.value_set(f"awaiting-{stage}"))
        self._details(self._gate_details(stage))
        try:
            await workflow.wait_condition(
                lambda: approval.rejection(self._status.approvals, self._status.gates_passed) is not None
                or approval.gate_open(self._status.approvals, stage, needed),
                timeout=policy.approval_timeout,
                timeout_summary=f"approval-expiry-{stage}",
            )
        except asyncio.TimeoutError:
            raise _Stop(Outcome.expired,
                        f"the {stage} gate was not approved within {policy.approval_timeout}") from None
        finally:
            self._status.awaiting = None
        rejected = approval.rejection(self._status.approvals, self._status.gates_passed)
        if rejected is not None:
            why = f": {rejected.comment}" if rejected.comment else ""
            raise _Stop(Outcome.rejected, f"{rejected.approver} rejected the {rejected.stage} gate{why}")
        self._status.gates_passed.append(str(stage))

    def _gates(self) -> list[str]:
        if self._plan is None or self._policy is None or self._req.plan_only:
            return []
        return [str(s) for s in run_stages(self._plan) if s in self._policy.gates]

    def _gate_details(self, stage: Stage) -> str:
        return details.gate(stage, self._plan, self._policy, self._req.requested_by,
                            workflow_id=workflow.info().workflow_id, records=self._status.approvals,
                            bundle=self._req.bundle.migrations)

    # -- messages -------------------------------------------------------------------------------
    def _attempt(self, decision: str, via: str, payload: Any) -> ApprovalRecord:
        record = approval.check_attempt(
            payload,
            decision=decision,
            via=via,
            at=workflow.now(),
            plan=self._plan,
            policy=self._policy,
            requested_by=self._req.requested_by,
            gates=self._gates(),
            passed=self._status.gates_passed,
            records=self._status.approvals,
            open_for_approvals=self._accepting,
            proofs=self._proofs,
        )
        self._status.refused_not_kept += keep_attempt(self._status.approvals, record)
        workflow.logger.info(
            "approval attempt", extra={"decision": decision, "via": via, "stage": record.stage,
                                       "approver": record.approver, "accepted": record.accepted,
                                       "proof": record.proof, "key": record.key_fingerprint,
                                       "refusal": record.refusal}
        )
        if self._status.awaiting:  # "so far" changed, or a refusal to show at the top
            self._details(self._gate_details(Stage(self._status.awaiting)))
        elif self._accepting:
            self._details(self._page)
        return record

    def _answer(self, record: ApprovalRecord) -> ApprovalAnswer:
        if not record.accepted:  # one sentence in the UI's dialog and the CLI, no stack trace
            raise messages.ApprovalRefusedError(record.refusal or "refused")
        proven = (f" (proven by SSH key {record.key_fingerprint})" if record.proof == approval.PROOF_SSH
                  else " (typed name, unproven)")
        if record.decision == "reject":
            return ApprovalAnswer(accepted=True, message=f"{record.stage} rejected by {record.approver}{proven}")
        needed = self._policy.required_approvals if self._policy else 1
        have = len(approval.approvers_of(self._status.approvals, record.stage or ""))
        more = f"; {have}/{needed}, waiting for {needed - have} more" if have < needed else ""
        return ApprovalAnswer(accepted=True, message=f"{record.stage} approved by {record.approver}{proven}{more}")

    @workflow.signal(name=messages.APPROVE_SIGNAL, description=(
        'Approve the awaited gate (no answer here: prefer Send an Update, approve_update). Input: the one line '
        '`starter.py sign` prints, or {"stage": "resolve|deploy|verify", "approver": "<your name>", '
        '"comment": "...", "fingerprint": "<plan fingerprint>"} where typed names are allowed. '
        'See User Metadata > Current Details.'))
    def approve(self, payload: Any) -> None:
        self._attempt("approve", "signal", payload)

    @workflow.signal(name=messages.REJECT_SIGNAL, description=(
        'Reject a gate; the run stops and undoes its changes. Input: the line `starter.py sign --decision reject` '
        'prints, or {"stage": "...", "approver": "<your name>", "comment": "why", "fingerprint": "..."}'))
    def reject(self, payload: Any) -> None:
        self._attempt("reject", "signal", payload)

    @workflow.update(name=messages.APPROVE_UPDATE, description=(
        'Approve the awaited gate and get the answer here (accepted, or why refused). Input: the one line '
        '`starter.py sign` prints (see User Metadata > Current Details).'))
    def approve_update(self, payload: ApprovalPayload) -> ApprovalAnswer:
        return self._answer(self._attempt("approve", "update", payload))

    @workflow.update(name=messages.REJECT_UPDATE, description=(
        'Reject a gate and get the answer here; the run stops and undoes its changes. Input: the line '
        '`starter.py sign --decision reject` prints.'))
    def reject_update(self, payload: ApprovalPayload) -> ApprovalAnswer:
        return self._answer(self._attempt("reject", "update", payload))

    @workflow.update(name=messages.BUNDLE_PART_UPDATE)
    def bundle_part(self, part: BundlePart) -> str:
        """One part of a bundle too large for one payload; its SQL is recorded in history here."""
        self._parts[part.index] = [m.model_copy(update={"sql": "", "down_sql": None, "verify_sql": None})
                                   for m in part.migrations]
        return f"part {part.index + 1} of {len(self._req.bundle.parts)} accepted ({len(part.migrations)} migrations)"

    @bundle_part.validator
    def _check_bundle_part(self, part: BundlePart) -> None:
        """Refuse (and so keep out of history) a part the request did not announce exactly."""
        expected = self._req.bundle.parts
        if not expected:
            problem = "this run's bundle came inline with its request: it takes no parts"
        elif not 0 <= part.index < len(expected):
            problem = f"bundle part {part.index} is not one of the {len(expected)} the request announced"
        elif part.index in self._parts:
            problem = f"bundle part {part.index} was already received"
        else:
            problem = check_part(part, expected[part.index])
        if problem:
            raise ApplicationError(problem, type=messages.BUNDLE_PART_REFUSED, non_retryable=True)

    @workflow.query(name=messages.STATUS_QUERY)
    def status(self) -> RunStatus:
        return self._status

    # -- compensation and the end ---------------------------------------------------------------
    async def _stop(self, stop: _Stop) -> None:
        self._accepting = False
        self._status.awaiting = None
        self._status.error = stop.reason
        self._status.human_action = stop.human_action
        outcome = stop.outcome
        workflow.logger.warning("run stopping", extra={"outcome": str(outcome), "reason": stop.reason})
        changed = (self._resolve_started or self._deploy_started) and not self._req.dry_run
        if changed:
            complete, human = await self._compensate()
            if not complete:
                outcome = Outcome.failed_needs_attention
                self._status.human_action = "; ".join(x for x in (stop.human_action, human) if x)
            elif outcome == Outcome.failed_rolled_back and self._changed_nothing() \
                    and self._patched(NOTHING_CHANGED_PATCH):
                outcome = Outcome.failed_no_changes
        elif outcome == Outcome.failed_rolled_back:
            outcome = Outcome.failed_no_changes  # nothing to roll back: say so
        self._status.outcome = outcome

    def _changed_nothing(self) -> bool:
        """The run wrote nothing: no resolve, nothing applied, a failed migration without a ledger
        row (it never took its locks), a ledger table that was there before, nothing undone."""
        failed = self._failed
        return (not self._resolve_started and not self._status.applied and failed is not None
                and failed.ledger_id is None and self._plan is not None and self._plan.ledger_exists
                and not self._status.compensation)

    async def _compensate(self) -> tuple[bool, str | None]:
        self._enter(Stage.compensate)
        plan = self._plan
        undo = undo_steps(plan, self._marks, deploy_started=self._deploy_started, failed=self._failed)
        self._details(details.undoing(plan.environment, [(s.name, s.rollback) for s in undo], self._resolve_started))
        try:
            result = await workflow.execute_activity_method(
                CompensateActivities.compensate,
                CompensateInput(environment=plan.environment, undo=undo, marks=self._marks),
                start_to_close_timeout=COMPENSATE_TIMEOUT,
                heartbeat_timeout=self._heartbeat,
                retry_policy=COMPENSATE_RETRY,
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=f"compensate: undo this run's changes on {plan.environment}",
            )
        except ActivityError as err:
            self._leave(Stage.compensate)
            return False, f"compensation could not run ({_activity_error_text(err)}): check {plan.environment} by hand"
        self._leave(Stage.compensate)
        self._status.compensation = result.steps
        return result.complete, result.human_action

    async def _drop_shadow(self) -> None:
        """The run's shadow database is dropped by each replay; this catches one a killed worker
        left behind when no later attempt came to drop it."""
        try:
            left = await workflow.execute_activity_method(
                CleanupActivities.drop_shadow,
                self._req.environment,
                start_to_close_timeout=CLEANUP_TIMEOUT,
                retry_policy=QUICK_RETRY,
                summary=f"drop this run's shadow database on {self._req.environment}, if one is left",
            )
        except ActivityError as err:
            left = f"the run's shadow database could not be dropped: {_activity_error_text(err)}"
        if left:
            self._status.notes.append(left)

    async def _finish(self, cancelled: bool) -> RunStatus:
        self._accepting = False
        if self._preflight_started and self._patched(messages.PATCH_DROP_SHADOW):
            # Called only when it would skip: runs that drop (and every recorded one) replay as before.
            if not (self._shadow_clean and self._patched(messages.PATCH_DROP_ONLY_LEFT_SHADOW)):
                await self._drop_shadow()
        st = self._status
        st.stage = Stage.done
        st.awaiting = None
        self._upsert(sa.STAGE.value_set(Stage.done.value), sa.OUTCOME.value_set(str(st.outcome)))
        info = workflow.info()
        workflow.set_current_details(details.finished(st, workflow_id=info.workflow_id, run_id=info.run_id))
        await workflow.wait_condition(workflow.all_handlers_finished)
        if cancelled:
            raise asyncio.CancelledError()
        if st.outcome == Outcome.succeeded or self._req.plan_only:
            return st
        raise ApplicationError(
            f"{st.outcome}: {st.error}",
            st.model_dump(mode="json"),
            type=ERROR_TYPES.get(st.outcome, "DeployFailed"),
            non_retryable=True,
        )

    # -- helpers --------------------------------------------------------------------------------
    def _enter(self, stage: Stage) -> None:
        self._status.stage = stage
        self._status.stage_times[str(stage)] = {"started": workflow.now(), "ended": None}
        self._upsert(sa.STAGE.value_set(str(stage)))

    def _leave(self, stage: Stage) -> None:
        times = self._status.stage_times.get(str(stage))
        if times is not None:
            times["ended"] = workflow.now()

    def _details(self, markdown: str) -> None:
        """The stage's page, with the latest approval attempts on top."""
        self._page = markdown
        workflow.set_current_details(details.page(markdown, self._status.approvals))

    def _patched(self, patch_id: str) -> bool:
        """workflow.patched(patch_id), taken without a marker of its own by runs of the current code."""
        return self._current or workflow.patched(patch_id)

    def _upsert(self, *updates: Any) -> None:
        pending, self._pending_attributes = self._pending_attributes, []
        workflow.upsert_search_attributes([*pending, *updates])

