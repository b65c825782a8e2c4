"""RolloutWorkflow: one bundle through ordered stages, every database deployed by its own DeployWorkflow.

Orchestration only. For each stage (an environment, or a fleet split into waves): list the
databases (activity), plan them (the deploy's own preflight, read-only, activity), group them by
plan state, wait at the gate before the wave for the approvals the single-deploy rules require
(domain/rollout.py, domain/rollout_approval.py), then run one child DeployWorkflow per database
(id `prisma-deploy-<target>`, so a database never has two open runs) with bounded concurrency.
The children carry the accepted approvals of their plan state and judge them again themselves.

- A wave whose failures pass the threshold halts the rollout: nothing more is started and the
  runs already going finish. A stage starts only when every database of the previous one succeeded.
- pause stops starting runs (running ones finish); resume goes on; cancel cancels the running runs
  (each undoes its own changes) and ends. Databases already deployed stay deployed.
- History stays bounded: after `children_per_run` children (or when Temporal suggests it) the
  rollout waits for its running children and continues as new, carrying its state. A database that
  has a result is never started again; children are started only from the run's own decisions.

Long module: one workflow class whose stages, gates, child runs and message handlers share the state.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)
from temporalio.exceptions import CancelledError as TemporalCancelled
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.fleet import FleetActivities
    from domain import rollout, rollout_approval, rollout_details
    from domain.models import ApprovalAnswer, ApprovalPayload, ApprovalRecord, RunStatus
    from domain.rollout_models import (
        DEFAULT_WAVES,
        PLAN_BATCH,
        ControlPayload,
        DiscoverInput,
        DiscoverResult,
        PlanTargetsInput,
        PlanTargetsResult,
        RolloutAttempt,
        RolloutOutcome,
        RolloutRequest,
        RolloutStatus,
        TargetResult,
        WaveState,
    )
    from workflows import messages
    from workflows import search_attributes as sa
    from workflows.activity_options import QUICK_RETRY
    from workflows.start import WORKFLOW_NAME, start_options
    from workflows.rollout_start import ROLLOUT_WORKFLOW_NAME

DISCOVER_TIMEOUT = timedelta(minutes=2)
PLAN_TIMEOUT = timedelta(minutes=30)
PLAN_HEARTBEAT = timedelta(minutes=2)
# Past this many events a run continues as new even between its children-per-run marks.
MAX_EVENTS_PER_RUN = 10_000
# Rollout approvals are judged with the single-deploy proofs (SSH signatures over the rollout's ids).
APPROVAL_PROOFS_PATCH = "rollout-approval-proofs"
# The next run's input (the request with the bundle, and the state) must fit one Temporal payload (2 MB).
MAX_CARRIED_BYTES = 1_800_000
ERROR_TYPES = {
    RolloutOutcome.completed_with_failures: "RolloutCompletedWithFailures",
    RolloutOutcome.halted: "RolloutHalted",
    RolloutOutcome.rejected: "RolloutRejected",
    RolloutOutcome.expired: "RolloutExpired",
    RolloutOutcome.cancelled: "RolloutCancelled",
    RolloutOutcome.failed: "RolloutFailed",
}


class _Stop(Exception):
    def __init__(self, outcome: RolloutOutcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class _ContinueAsNew(Exception):
    pass


def _outcome_of(status: RunStatus | None) -> str:
    return str(status.outcome) if status is not None and status.outcome else "failed"


@workflow.defn(name=ROLLOUT_WORKFLOW_NAME)
class RolloutWorkflow:
    @workflow.init
    def __init__(self, request: RolloutRequest) -> None:
        self._req = request
        self._st = request.state or RolloutStatus(
            name=request.name, stages=list(request.stages), requested_by=request.requested_by,
            operation=request.operation, dry_run=request.dry_run, revision=request.bundle.revision,
            concurrency=request.concurrency, max_failures=request.max_failures)
        self._running: dict[str, asyncio.Task] = {}
        self._started_here = 0
        self._renew_refused = False
        self._signed = False  # set at the run's start (workflow.patched): approvals need the policies' proofs
        self._tick = 0  # bumped by every event the main loop may wait for
        self._accepting = True
        self._phase_shown: str | None = None
        self._cancel_by: str | None = None
        self._rejected: ApprovalRecord | None = None

    # -- the run --------------------------------------------------------------------------------
    @workflow.run
    async def run(self, request: RolloutRequest) -> RolloutStatus:
        st = self._st
        self._signed = workflow.patched(APPROVAL_PROOFS_PATCH)
        info = workflow.info()
        st.first_run_id = st.first_run_id or info.first_execution_run_id or info.run_id
        st.started_at = st.started_at or workflow.now()
        st.running = []
        cancelled = False
        try:
            self._check_request()
            while st.stage_index < len(request.stages):
                stage = request.stages[st.stage_index]
                waves = [w for w in st.waves if w.stage == stage] or await self._discover(stage)
                for wave in waves:
                    if wave.ended_at is None:
                        await self._wave(wave)
                failed = [r.target for w in waves for r in w.failures()]
                if failed and st.stage_index + 1 < len(request.stages):
                    raise _Stop(RolloutOutcome.halted,
                                f"stage {stage} ended with {len(failed)} failed database(s) ({', '.join(failed[:5])}"
                                f"{' …' if len(failed) > 5 else ''}): {request.stages[st.stage_index + 1]} was not started")
                st.stages_done.append(stage)
                st.stage_index += 1
            failures = [r for r in st.results() if r.outcome != "succeeded"]
            st.outcome = RolloutOutcome.completed_with_failures if failures else RolloutOutcome.succeeded
            if failures:
                st.error = f"{len(failures)} database(s) did not get the bundle (within the threshold {request.max_failures})"
        except _ContinueAsNew:
            await workflow.wait_condition(workflow.all_handlers_finished)
            st.runs += 1
            workflow.continue_as_new(request.model_copy(update={"state": st}))
        except _Stop as stop:
            await self._stop_children(cancel=stop.outcome == RolloutOutcome.cancelled)
            st.outcome, st.error = stop.outcome, stop.reason
        except asyncio.CancelledError:
            cancelled = True
            await self._stop_children(cancel=True)
            st.outcome, st.error = RolloutOutcome.cancelled, "the rollout was cancelled"
        return await self._finish(cancelled)

    def _check_request(self) -> None:
        req = self._req
        try:
            if not req.stages:
                raise rollout.RolloutSpecError("a rollout needs at least one stage")
            if len(set(req.stages)) != len(req.stages):
                raise rollout.RolloutSpecError("a stage is listed twice: " + ", ".join(req.stages))
            if req.waves is not None:
                rollout.check_waves(req.waves)
            rollout.allowed_failures(req.max_failures, 1)
        except rollout.RolloutSpecError as exc:
            raise _Stop(RolloutOutcome.failed, f"nothing was started: {exc}") from None

    async def _discover(self, stage: str) -> list[WaveState]:
        st = self._st
        st.phase = "planning"
        self._phase_attr()
        try:
            found: DiscoverResult = await workflow.execute_activity_method(
                FleetActivities.discover_targets, DiscoverInput(stage=stage), start_to_close_timeout=DISCOVER_TIMEOUT,
                retry_policy=QUICK_RETRY, summary=f"list the databases of {stage}")
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise asyncio.CancelledError() from None
            raise _Stop(RolloutOutcome.failed, f"could not list the databases of {stage}: {_cause(exc)}") from None
        spec = (self._req.waves or found.waves or DEFAULT_WAVES) if found.kind == "fleet" else ["100%"]
        try:
            split = rollout.split_waves(found.targets, spec, found.groups)
        except rollout.RolloutSpecError as exc:
            raise _Stop(RolloutOutcome.failed, f"stage {stage}: {exc}") from None
        number = len(st.waves)
        for label, targets in split:
            number += 1
            st.waves.append(WaveState(number=number, stage=stage, label=stage if found.kind != "fleet" else label,
                                      targets=targets, gated=found.gated))
        return [w for w in st.waves if w.stage == stage]

    async def _wave(self, wave: WaveState) -> None:
        if not wave.planned:
            if wave.gated:  # without gates each run plans for itself: a read-only pre-plan would repeat it
                await self._plan(wave)
            wave.planned = True
        if rollout.threshold_passed(wave, self._req.max_failures):
            raise _Stop(RolloutOutcome.halted, self._halt_reason(wave))
        if not wave.gate_passed:
            await self._gate(wave)
            wave.gate_passed = True
        wave.started_at = wave.started_at or workflow.now()
        await self._deploy(wave)
        wave.ended_at = workflow.now()
        if rollout.threshold_passed(wave, self._req.max_failures):
            raise _Stop(RolloutOutcome.halted, self._halt_reason(wave))

    def _halt_reason(self, wave: WaveState) -> str:
        failed = wave.failures()
        first = failed[0]
        later = self._req.stages[self._st.stage_index + 1:]
        after = f"; {', '.join(later)} not started" if later else ""
        what = (f"stage {wave.stage} failed" if wave.label == wave.stage else
                f"wave {wave.number} ({wave.stage}, {wave.label}) had {len(failed)} failed database(s), more than "
                f"{self._req.max_failures} allowed")
        return (f"{what}: no further database was started{after} (first: {first.target}, {first.outcome}: "
                f"{first.error or 'see its run'})")

    async def _plan(self, wave: WaveState) -> None:
        st = self._st
        st.phase = "planning"
        self._phase_attr()
        self._details(rollout_details.progress(st))
        template = self._req.child_request(wave.targets[0])
        for start in range(0, len(wave.targets), PLAN_BATCH):
            batch = wave.targets[start:start + PLAN_BATCH]
            try:
                result: PlanTargetsResult = await workflow.execute_activity_method(
                    FleetActivities.plan_targets,
                    PlanTargetsInput(request=template, targets=batch, concurrency=self._req.concurrency),
                    start_to_close_timeout=PLAN_TIMEOUT, heartbeat_timeout=PLAN_HEARTBEAT, retry_policy=QUICK_RETRY,
                    summary=f"plan {len(batch)} database(s) of wave {wave.number} (read-only preflight)")
            except ActivityError as exc:
                if is_cancelled_exception(exc):
                    raise asyncio.CancelledError() from None
                raise _Stop(RolloutOutcome.failed, f"could not plan wave {wave.number}: {_cause(exc)}") from None
            wave.membership.update(rollout.absorb(st.groups, result.groups))
            for target, why in result.failures.items():
                wave.results[target] = TargetResult(target=target, outcome="not_planned", error=why,
                                                    ended_at=workflow.now())

    # -- the gate before a wave -----------------------------------------------------------------
    async def _gate(self, wave: WaveState) -> None:
        st = self._st
        keys = rollout.wave_groups(wave, wave.membership)
        gate = rollout.gate_for(wave, keys, st.groups, first=wave.number == 1)
        if gate is None:
            return
        wave.fingerprint = rollout.wave_fingerprint(wave, [w for w in st.waves if w.number < wave.number])
        gate.since = workflow.now()
        st.awaiting, st.phase = gate, "awaiting"
        self._phase_attr()
        self._details(rollout_details.gate(st, gate, workflow.info().workflow_id))
        timeout = rollout.gate_timeout_policy(gate, st.groups, keys).approval_timeout
        try:
            await workflow.wait_condition(
                lambda: self._rejected is not None or self._cancel_by is not None or self._gate_open(),
                timeout=timeout, timeout_summary=f"rollout-approval-expiry-wave-{wave.number}")
        except asyncio.TimeoutError:
            raise _Stop(RolloutOutcome.expired,
                        f"the gate before wave {wave.number} was not approved within {timeout}: nothing more was started"
                        ) from None
        finally:
            st.awaiting = None
        self._check_stops()

    def _gate_open(self) -> bool:
        gate, st = self._st.awaiting, self._st
        if gate is None:
            return True
        if gate.groups:
            return all(st.groups[k].approved for k in gate.groups)
        records = [a.record for a in st.attempts]
        return len(rollout_approval.wave_approvers(records, gate.wave)) >= max(1, gate.approvals_needed)

    def _check_stops(self) -> None:
        if self._cancel_by is not None:
            raise _Stop(RolloutOutcome.cancelled, f"{self._cancel_by} cancelled the rollout")
        if self._rejected is not None:
            r = self._rejected
            raise _Stop(RolloutOutcome.rejected, f"{r.approver} rejected {r.stage}"
                        + (f": {r.comment}" if r.comment else "") + "; nothing more was started")

    # -- child runs -----------------------------------------------------------------------------
    async def _deploy(self, wave: WaveState) -> None:
        st, req = self._st, self._req
        queue = [t for t in wave.targets if t not in wave.results]
        while True:
            self._check_stops()
            halting = rollout.threshold_passed(wave, req.max_failures)
            renew = self._renew_due()
            if queue and not (halting or st.paused or renew) and len(self._running) < req.concurrency:
                self._start(queue.pop(0), wave)
                continue
            if not self._running and (halting or not queue):
                return
            if not self._running and renew:
                raise _ContinueAsNew()
            st.phase = "halting" if halting else "paused" if st.paused else "deploying"
            self._phase_attr()
            self._details(rollout_details.progress(st))
            seen = self._tick
            await workflow.wait_condition(lambda: self._tick != seen)

    def _renew_due(self) -> bool:
        info = workflow.info()
        due = (self._started_here >= self._req.children_per_run or info.is_continue_as_new_suggested()
               or info.get_current_history_length() > MAX_EVENTS_PER_RUN)
        if due and not self._renew_refused and not self._running:
            size = len(self._req.model_copy(update={"state": self._st}).model_dump_json())
            if size > MAX_CARRIED_BYTES:  # cannot carry it: go on in this run (its history grows instead)
                self._renew_refused = True
                workflow.logger.warning("rollout state too large to continue as new", extra={"bytes": size})
        return due and not self._renew_refused

    def _start(self, target: str, wave: WaveState) -> None:
        self._started_here += 1
        self._st.children_started += 1
        self._st.running.append(target)
        self._running[target] = asyncio.create_task(self._child(target, wave))

    async def _child(self, target: str, wave: WaveState) -> None:
        st, info = self._st, workflow.info()
        group = st.groups.get(wave.membership.get(target, ""))
        child = self._req.child_request(target)
        if group is not None:
            child.approved_plan = rollout_approval.approved_plan(group, info.workflow_id, st.first_run_id or info.run_id)
        options = start_options(child, task_queue=info.task_queue)
        options["static_summary"] = (options["static_summary"] + f" · rollout {st.name}, wave {wave.number}")[:200]
        result = TargetResult(target=target, outcome="failed", group=group.key if group else None)
        try:
            handle = await workflow.start_child_workflow(
                WORKFLOW_NAME, child, result_type=RunStatus, parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                **options)
            result.run_id = handle.first_execution_run_id
            self._absorb(result, await handle, wave)
        except WorkflowAlreadyStartedError:
            result.outcome = "busy"
            result.error = f"a run is already open for {target} ({options['id']}): it was not deployed by this rollout"
        except ChildWorkflowError as err:
            status = messages.status_from_failure(err)
            if status is not None:
                self._absorb(result, status, wave)
            else:
                result.outcome = "cancelled" if _is_cancelled(err) else "failed"
                result.error = _cause(err)
        except asyncio.CancelledError:
            result.outcome, result.error = "cancelled", "the rollout was cancelled while this run was open"
        finally:
            result.ended_at = workflow.now()
            wave.results[target] = result
            self._running.pop(target, None)
            if target in st.running:
                st.running.remove(target)
            self._tick += 1

    def _absorb(self, result: TargetResult, status: RunStatus, wave: WaveState) -> None:
        result.outcome = _outcome_of(status)
        result.applied = len(status.applied)
        if result.group is None and status.plan is not None and status.policy is not None:
            result.group = wave.membership[result.target] = rollout.absorb_run(self._st.groups, status.plan,
                                                                               status.policy)
        result.error = (status.error or "")[:300] or None
        accepted = [r for r in status.approvals if r.accepted and r.decision == "approve"]
        result.approvals = ("rollout" if any(r.via == "rollout" for r in accepted) else "own") if accepted else None
        if result.outcome == "succeeded" and status.plan is not None:
            planned = {(m.name, m.checksum) for m in status.plan.migrations}
            missing = [m.name for m in self._req.bundle.migrations if (m.name, m.checksum) not in planned]
            if missing:
                result.outcome = "failed"
                result.error = f"the run's plan does not cover this rollout's bundle (missing {', '.join(missing[:3])})"

    async def _stop_children(self, *, cancel: bool) -> None:
        """Cancel (or let finish) the runs still open, and wait for each to end."""
        self._st.phase = "cancelling" if cancel else "halting"
        if cancel:
            for task in self._running.values():
                task.cancel()
        await workflow.wait_condition(lambda: not self._running)

    # -- messages -------------------------------------------------------------------------------
    def _attempt(self, decision: str, via: str, payload: Any) -> RolloutAttempt:
        st, at = self._st, workflow.now()
        data = payload.model_dump() if isinstance(payload, ApprovalPayload) else payload
        stage = data.get("stage") if isinstance(data, dict) else None
        common = dict(decision=decision, via=via, at=at, requested_by=st.requested_by)
        ids = (workflow.info().workflow_id, st.first_run_id or "") if self._signed else None
        if isinstance(stage, str) and stage.strip() == rollout_approval.WAVE:
            gate = st.awaiting
            wave = st.wave(gate.wave) if gate is not None else None
            policies = [st.groups[k].policy for k in rollout.wave_groups(wave, wave.membership)
                        if st.groups[k].gates and not st.groups[k].blocked] if wave is not None else []
            record = rollout_approval.check_wave_attempt(payload, gate, wave, records=[a.record for a in st.attempts],
                                                         open_for_approvals=self._accepting, rollout_ids=ids,
                                                         policies=policies, **common)
            attempt = RolloutAttempt(record=record, wave=wave.number if wave else None)
        else:
            keys, problem = rollout_approval.targets_of(payload, st.awaiting, st.groups)
            if problem:
                record = rollout_approval.refused(payload, problem, decision=decision, via=via, at=at)
                attempt = RolloutAttempt(record=record)
            else:
                records = [rollout_approval.check_group_attempt(payload, st.groups[k], open_for_approvals=self._accepting,
                                                                rollout_ids=ids, **common) for k in keys]
                signature = data.get("signature") if isinstance(data, dict) else None
                for key, rec in zip(keys, records):
                    rollout_approval.record_for_group(st.groups[key], rec, signature)
                record = next((r for r in records if r.accepted), records[0])
                attempt = RolloutAttempt(record=record, groups=[k for k, r in zip(keys, records) if r.accepted] or keys)
        st.attempts.append(attempt)
        if record.accepted and record.decision == "reject" and self._rejected is None:
            self._rejected = record
        workflow.logger.info("rollout approval attempt", extra={
            "decision": decision, "via": via, "stage": record.stage, "approver": record.approver,
            "accepted": record.accepted, "refusal": record.refusal})
        self._tick += 1
        if st.awaiting is not None:
            self._details(rollout_details.gate(st, st.awaiting, workflow.info().workflow_id))
        return attempt

    def _answer(self, attempt: RolloutAttempt) -> ApprovalAnswer:
        r = attempt.record
        if not r.accepted:
            raise ApplicationError(r.refusal or "refused", type=messages.APPROVAL_REFUSED, non_retryable=True)
        what = r.stage + (" of plan " + ", ".join(self._st.groups[k].state_fingerprint[:12] for k in attempt.groups)
                          if attempt.groups else "")
        return ApprovalAnswer(accepted=True, message=f"{what} {'approved' if r.decision == 'approve' else 'rejected'} "
                              f"by {r.approver}")

    @workflow.signal(name=messages.APPROVE_SIGNAL, description=(
        'Approve a plan\'s gate: {"stage": "deploy", "approver": "<you>", "fingerprint": "<plan state fingerprint>"}, '
        'or continue to the next wave: {"stage": "wave", "approver": "<you>"}'))
    def approve(self, payload: Any) -> None:
        self._attempt("approve", "signal", payload)

    @workflow.signal(name=messages.REJECT_SIGNAL, description="Reject a plan or a wave: the rollout starts nothing more.")
    def reject(self, payload: Any) -> None:
        self._attempt("reject", "signal", payload)

    @workflow.update(name=messages.APPROVE_UPDATE)
    def approve_update(self, payload: ApprovalPayload) -> ApprovalAnswer:
        return self._answer(self._attempt("approve", "update", payload))

    @workflow.update(name=messages.REJECT_UPDATE)
    def reject_update(self, payload: ApprovalPayload) -> ApprovalAnswer:
        return self._answer(self._attempt("reject", "update", payload))

    def _control(self, action: str, payload: Any) -> ApprovalAnswer:
        st = self._st
        record = rollout.check_control(payload, action, at=workflow.now(), paused=st.paused,
                                       cancelling=self._cancel_by is not None, finished=not self._accepting)
        st.controls.append(record)
        if record.accepted:
            if action == "pause":
                st.paused = True
            elif action == "resume":
                st.paused = False
            else:
                self._cancel_by = record.by
            self._tick += 1
        workflow.logger.info("rollout control", extra={"action": action, "by": record.by, "accepted": record.accepted})
        if not record.accepted:
            raise ApplicationError(record.refusal or "refused", type=messages.CONTROL_REFUSED, non_retryable=True)
        running = len(self._running)
        return ApprovalAnswer(accepted=True, message=f"{action} by {record.by}"
                              + (f"; {running} running deploy(s) " + ("finish first" if action == "pause" else "are cancelled")
                                 if running and action != "resume" else ""))

    @workflow.signal(name=messages.PAUSE_SIGNAL, description='Start no more databases: {"by": "<you>", "reason": "..."}')
    def pause(self, payload: Any) -> None:
        self._quietly(self._control, "pause", payload)

    @workflow.signal(name=messages.RESUME_SIGNAL, description='Go on after a pause: {"by": "<you>"}')
    def resume(self, payload: Any) -> None:
        self._quietly(self._control, "resume", payload)

    @workflow.signal(name=messages.CANCEL_SIGNAL, description='Cancel running deploys and end: {"by": "<you>", "reason": "..."}')
    def cancel(self, payload: Any) -> None:
        self._quietly(self._control, "cancel", payload)

    @workflow.update(name=messages.PAUSE_UPDATE)
    def pause_update(self, payload: ControlPayload) -> ApprovalAnswer:
        return self._control("pause", payload)

    @workflow.update(name=messages.RESUME_UPDATE)
    def resume_update(self, payload: ControlPayload) -> ApprovalAnswer:
        return self._control("resume", payload)

    @workflow.update(name=messages.CANCEL_UPDATE)
    def cancel_update(self, payload: ControlPayload) -> ApprovalAnswer:
        return self._control("cancel", payload)

    @staticmethod
    def _quietly(handler: Any, *args: Any) -> None:
        try:  # a signal has no answer: a refused one is recorded, never raised
            handler(*args)
        except ApplicationError:
            pass

    @workflow.query(name=messages.STATUS_QUERY)
    def status(self) -> RolloutStatus:
        return self._st

    # -- the end --------------------------------------------------------------------------------
    async def _finish(self, cancelled: bool) -> RolloutStatus:
        st = self._st
        self._accepting = False
        st.phase, st.awaiting, st.ended_at, st.running = "done", None, workflow.now(), []
        workflow.upsert_search_attributes([sa.STAGE.value_set("done"), sa.OUTCOME.value_set(str(st.outcome))])
        self._details(rollout_details.finished(st))
        await workflow.wait_condition(workflow.all_handlers_finished)
        if cancelled:
            raise asyncio.CancelledError()
        if st.outcome == RolloutOutcome.succeeded:
            return st
        raise ApplicationError(f"{st.outcome}: {st.error}", st.model_dump(mode="json"),
                               type=ERROR_TYPES.get(st.outcome, "RolloutFailed"), non_retryable=True)

    def _phase_attr(self) -> None:
        if self._st.phase != self._phase_shown:  # each upsert is an event: only on a change
            self._phase_shown = self._st.phase
            workflow.upsert_search_attributes([sa.STAGE.value_set(self._st.phase)])

    def _details(self, markdown: str) -> None:
        workflow.set_current_details(markdown)


def _cause(err: BaseException) -> str:
    while getattr(err, "cause", None) is not None:
        err = err.cause  # type: ignore[assignment]
    message = getattr(err, "message", None) or str(err)
    return message.strip().splitlines()[0][:300] if message.strip() else err.__class__.__name__


def _is_cancelled(err: BaseException | None) -> bool:
    while err is not None:
        if isinstance(err, TemporalCancelled):
            return True
        err = getattr(err, "cause", None)
    return False
