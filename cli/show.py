"""`show`: the audit of one run, reconstructed from its workflow history.

History is the record Temporal keeps of everything the run received and did: the request (with
the bundle's SQL), every activity with its times and result, every signal and update. The audit
reads it back; it does not depend on a worker being up, except to ask a still-open run for its
current status.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import typer
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError

from cli.app import app
from cli.common import (
    console,
    describe_or_fail,
    fail,
    load_settings,
    looks_like_run_id,
    print_json,
    resolve_run,
    run,
    temporal,
)
from domain.audit import Audit, SignalRecord, StageRecord, render_markdown
from domain.models import DeployRequest, RunStatus
from runtime.codec import PayloadKeyError
from runtime.history import decode_history
from workflows.messages import query_status

RunArg = typer.Argument(..., help="Environment name (latest run), workflow id, WORKFLOW_ID/RUN_ID, or a run id.")


def _ts(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime().replace(tzinfo=timezone.utc)


def _decode(client: Client, payloads: Any) -> list[Any]:
    if not payloads or not payloads.payloads:
        return []
    try:
        return client.data_converter.payload_converter.from_payloads(list(payloads.payloads))
    except Exception:  # noqa: BLE001 - an undecodable payload (e.g. encrypted without the key)
        return []


def _status_from(values: list[Any]) -> RunStatus | None:
    for value in values:
        try:
            return RunStatus.model_validate(value)
        except Exception:  # noqa: BLE001
            continue
    return None


def _failure_status(client: Client, failure: Any) -> tuple[RunStatus | None, str | None]:
    message = None
    while failure is not None and failure.ByteSize():
        message = message or failure.message
        if failure.HasField("application_failure_info"):
            status = _status_from(_decode(client, failure.application_failure_info.details))
            if status:
                return status, message
        failure = failure.cause if failure.HasField("cause") else None
    return None, message


def build_audit(client: Client, workflow_id: str, run_id: str, execution_status: str, events: list[HistoryEvent]) -> Audit:
    audit = Audit(workflow_id=workflow_id, run_id=run_id, execution_status=execution_status)
    scheduled: dict[int, StageRecord] = {}
    for ev in events:
        et = ev.event_type
        if et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            attrs = ev.workflow_execution_started_event_attributes
            audit.started_at = _ts(ev)
            audit.started_by_identity = attrs.identity or None
            values = _decode(client, attrs.input)
            if values:
                try:
                    audit.request = DeployRequest.model_validate(values[0])
                except Exception:  # noqa: BLE001
                    pass
        elif et == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = ev.activity_task_scheduled_event_attributes
            rec = StageRecord(stage=attrs.activity_type.name, activity=attrs.activity_type.name, scheduled_at=_ts(ev), result="running")
            scheduled[ev.event_id] = rec
            audit.stages.append(rec)
        elif et == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = ev.activity_task_started_event_attributes
            rec = scheduled.get(attrs.scheduled_event_id)
            if rec:
                rec.started_at = rec.started_at or _ts(ev)
                rec.attempts = attrs.attempt
        elif et in (
            EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
            EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
        ):
            name = {
                EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: ("activity_task_completed_event_attributes", "completed"),
                EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: ("activity_task_failed_event_attributes", "failed"),
                EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: ("activity_task_timed_out_event_attributes", "timed out"),
                EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: ("activity_task_canceled_event_attributes", "canceled"),
            }[et]
            attrs = getattr(ev, name[0])
            rec = scheduled.get(attrs.scheduled_event_id)
            if rec:
                rec.ended_at = _ts(ev)
                rec.result = name[1]
                if et == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
                    rec.error = attrs.failure.message
        elif et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attrs = ev.workflow_execution_signaled_event_attributes
            values = _decode(client, attrs.input)
            audit.messages.append(
                SignalRecord(
                    kind="signal",
                    name=attrs.signal_name,
                    at=_ts(ev),
                    identity=attrs.identity or None,
                    payload=values[0] if values and isinstance(values[0], dict) else {"raw": values[0] if values else None},
                )
            )
        elif et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            attrs = ev.workflow_execution_update_accepted_event_attributes
            req = attrs.accepted_request
            values = _decode(client, req.input.args)
            audit.messages.append(
                SignalRecord(
                    kind="update",
                    name=req.input.name,
                    at=_ts(ev),
                    identity=req.meta.identity or None,
                    payload=values[0] if values and isinstance(values[0], dict) else None,
                )
            )
        elif et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            audit.closed_at = _ts(ev)
            audit.status = _status_from(_decode(client, ev.workflow_execution_completed_event_attributes.result))
        elif et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            audit.closed_at = _ts(ev)
            status, message = _failure_status(client, ev.workflow_execution_failed_event_attributes.failure)
            audit.status = status
            audit.failure = message
        elif et in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
        ):
            audit.closed_at = _ts(ev)
    return audit


async def _find_by_run_id(client: Client, run_id: str) -> WorkflowHandle:
    async for wf in client.list_workflows(f"RunId = '{run_id}'", limit=1):
        return client.get_workflow_handle(wf.id, run_id=wf.run_id)
    fail(f"no run with run id {run_id} on this Temporal namespace")


async def load_audit(client: Client, run_ref: str) -> Audit:
    handle = await _find_by_run_id(client, run_ref) if looks_like_run_id(run_ref) else resolve_run(client, run_ref)
    desc = await describe_or_fail(handle)
    handle = client.get_workflow_handle(desc.id, run_id=desc.run_id)
    history = await handle.fetch_history()
    try:  # encrypted payloads (MIGRATOR_PAYLOAD_KEYS): fetch_history returns them as stored
        await decode_history(client.data_converter, history.events)
    except PayloadKeyError as exc:
        fail(f"cannot read run {desc.id}: {exc}")
    status_name = desc.status.name.lower() if desc.status else "unknown"
    audit = build_audit(client, desc.id, desc.run_id, status_name, list(history.events))
    if desc.status == WorkflowExecutionStatus.RUNNING:
        try:
            audit.status = await query_status(handle)
        except RPCError:
            pass  # no worker up: the history alone is shown
    return audit


@app.command()
@run
async def show(
    run_ref: str = RunArg,
    format: str = typer.Option("text", "--format", "-f", help="text | markdown (a report for a change ticket) | json"),
    json_out: bool = typer.Option(False, "--json", help="Same as --format json."),
) -> int:
    """The audit of one run from its workflow history: who requested and approved what, every stage
    with its times, each migration applied (checksum, duration, SQL), resolve decisions,
    verification, compensation and the outcome."""
    if format not in ("text", "markdown", "json"):
        fail("--format must be text, markdown or json")
    settings = load_settings()
    client = await temporal(settings)
    audit = await load_audit(client, run_ref)
    if json_out or format == "json":
        print_json(audit)
    elif format == "markdown":
        print(render_markdown(audit), end="")
    else:
        from rich.markdown import Markdown

        console.print(Markdown(render_markdown(audit)))
    return 0
