"""Reading a DeployWorkflow history back into its audit: who requested and approved what, every
stage with its times and attempts, what ran, and how the run ended. A bundle sent in parts is put back together from its
`bundle_part` updates, each checked against the request's digests, so the audit shows the SQL
that ran whichever way it travelled.

Pure: it takes history events already fetched (and decoded, runtime/history.py) and a payload
converter; `starter.py show` fetches them. Tested on the recorded histories in tests/histories/.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.converter import PayloadConverter

from domain.audit import Audit, SignalRecord, StageRecord
from domain.bundle import BundleIncomplete, assemble
from domain.models import BundlePart, DeployRequest, RunStatus
from workflows.messages import BUNDLE_PART_UPDATE

# Activities that are not stages of the run: dropping its shadow database when it ends.
_HOUSEKEEPING = frozenset({"drop_shadow"})


def _ts(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime().replace(tzinfo=timezone.utc)


class _Reader:
    """Decodes payloads for one audit; what cannot be decoded is written down in the audit, never
    silently left out."""

    def __init__(self, converter: PayloadConverter, audit: Audit) -> None:
        self.converter = converter
        self.audit = audit

    def decode(self, payloads: Any, where: str) -> list[Any]:
        if not payloads or not payloads.payloads:
            return []
        try:
            return self.converter.from_payloads(list(payloads.payloads))
        except Exception as exc:  # noqa: BLE001 - e.g. encrypted without the key, or not JSON
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
            self.audit.problems.append(f"{where}: its payload could not be decoded ({reason})")
            return []


def _status_from(values: list[Any]) -> RunStatus | None:
    for value in values:
        try:
            return RunStatus.model_validate(value)
        except Exception:  # noqa: BLE001
            continue
    return None


def _failure_status(reader: _Reader, failure: Any) -> tuple[RunStatus | None, str | None]:
    message = None
    while failure is not None and failure.ByteSize():
        message = message or failure.message
        if failure.HasField("application_failure_info"):
            status = _status_from(reader.decode(failure.application_failure_info.details, "the run's failure"))
            if status:
                return status, message
        failure = failure.cause if failure.HasField("cause") else None
    return None, message


def build_audit(converter: PayloadConverter, workflow_id: str, run_id: str, execution_status: str,
                events: Iterable[HistoryEvent]) -> Audit:
    """The audit of one run from its (decoded) history events: `converter` turns payloads back
    into values (the pydantic converter the run was recorded with)."""
    audit = Audit(workflow_id=workflow_id, run_id=run_id, execution_status=execution_status)
    reader = _Reader(converter, audit)
    scheduled: dict[int, StageRecord] = {}
    parts: dict[int, BundlePart] = {}
    for ev in events:
        et = ev.event_type
        if et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            attrs = ev.workflow_execution_started_event_attributes
            audit.started_at = _ts(ev)
            audit.started_by_identity = attrs.identity or None
            values = reader.decode(attrs.input, "the run's request")
            if values:
                try:
                    audit.request = DeployRequest.model_validate(values[0])
                except Exception:  # noqa: BLE001
                    pass
        elif et == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = ev.activity_task_scheduled_event_attributes
            rec = StageRecord(stage=attrs.activity_type.name, activity=attrs.activity_type.name, scheduled_at=_ts(ev), result="running")
            scheduled[ev.event_id] = rec
            if attrs.activity_type.name not in _HOUSEKEEPING:
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
            values = reader.decode(attrs.input, f"signal {attrs.signal_name} (event {ev.event_id})")
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
            values = reader.decode(req.input.args, f"update {req.input.name} (event {ev.event_id})")
            if req.input.name == BUNDLE_PART_UPDATE:  # the bundle's SQL, not a message from a person
                for value in values:
                    try:
                        part = BundlePart.model_validate(value)
                        parts.setdefault(part.index, part)
                    except Exception:  # noqa: BLE001 - reported below as a missing part
                        pass
                continue
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
            audit.status = _status_from(reader.decode(ev.workflow_execution_completed_event_attributes.result, "the run's result"))
        elif et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            audit.closed_at = _ts(ev)
            status, message = _failure_status(reader, ev.workflow_execution_failed_event_attributes.failure)
            audit.status = status
            audit.failure = message
        elif et in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
        ):
            audit.closed_at = _ts(ev)
    if audit.request is not None and audit.request.bundle.in_parts:
        try:
            audit.request.bundle.migrations = assemble(audit.request.bundle.parts, parts)
        except BundleIncomplete as exc:
            audit.problems.append(f"the bundle's SQL: {exc}")
    return audit
