"""The audit is rebuilt from a run's history alone (workflows/history.py), here from the histories
committed under tests/histories/: who approved what (and what was refused), the SQL that ran,
stages and outcome. Every recorded version must stay readable by `starter.py show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter

from domain.audit import render_markdown
from domain.models import Outcome
from workflows.history import build_audit

HISTORIES = Path(__file__).resolve().parent / "histories"
CONVERTER = pydantic_data_converter.payload_converter


def _audit(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    return build_audit(CONVERTER, history.workflow_id, "run", "completed", history.events)


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*/incident_full_succeeded.json")), ids=lambda p: p.parent.name)
def test_the_incident_run_reads_back_with_approvals_refusals_and_sql(path: Path) -> None:
    audit = _audit(path)
    assert audit.problems == []
    assert audit.request is not None and audit.request.requested_by == "carol"
    assert audit.status is not None and audit.status.outcome == Outcome.succeeded
    accepted = [(a.stage, a.approver) for a in audit.status.approvals if a.accepted]
    assert accepted == [("resolve", "alice"), ("deploy", "bob")]
    refused = [a for a in audit.status.approvals if not a.accepted]
    assert refused[0].approver == "mallory" and "not an approver" in refused[0].refusal
    # The raw messages as they reached the run: signals, then the deploy gate's update.
    assert [(m.kind, m.name) for m in audit.messages] == [("signal", "approve")] * (len(refused) + 1) + [
        ("update", "approve_update")]
    if path.parent.name >= "v3":  # proven approvers (issue 15): unsigned and other-key attempts refused
        assert [a.proof for a in audit.status.approvals if a.accepted] == ["ssh", "ssh"]
        assert any("not signed" in r.refusal for r in refused)
        assert any("not in this environment's allowed signers" in r.refusal for r in refused)
        assert "| ssh SHA256:" in render_markdown(audit)
    assert [s.stage for s in audit.stages] == ["preflight", "resolve", "deploy", "verify"]
    assert all(s.result == "completed" for s in audit.stages)
    applied = [a.name for a in audit.status.applied]
    assert applied == ["20241226000000_add_leads_questionnaire_models", "20260115000000_add_landing_sections"]
    report = render_markdown(audit)
    for name in applied:  # the SQL that ran is in the report, from the bundle in the request
        sql = next(m.sql for m in audit.request.bundle.migrations if m.name == name)
        assert f"### SQL of `{name}`" in report and sql.strip().splitlines()[0] in report


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*/verify_failed_rolled_back.json")), ids=lambda p: p.parent.name)
def test_a_failed_run_reads_back_with_its_verification_and_compensation(path: Path) -> None:
    audit = _audit(path)
    assert audit.problems == []
    assert audit.status is not None and audit.status.outcome == Outcome.failed_rolled_back
    assert audit.status.error and audit.status.error.startswith("verification failed")
    assert any(not c.passed for c in audit.status.verification)
    assert [c.name for c in audit.status.compensation] == ["20250102000000_b", "20250101000000_a"]
    assert audit.stages[-1].stage == "compensate" and audit.stages[-1].result == "completed"


def test_an_undecodable_payload_is_named_in_the_audit_not_dropped(tmp_path: Path) -> None:
    source = sorted(HISTORIES.glob("*/incident_full_succeeded.json"))[0]
    data = json.loads(source.read_text())
    signal = next(e for e in data["events"] if e["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED")
    payload = signal["workflowExecutionSignaledEventAttributes"]["input"]["payloads"][0]
    payload["metadata"] = {"encoding": "YmluYXJ5L2VuY3J5cHRlZA=="}  # "binary/encrypted", no key here
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    audit = _audit(broken)
    assert len(audit.problems) == 1 and f"event {signal['eventId']}" in audit.problems[0]
    assert "could not be decoded" in audit.problems[0]
    assert "Unreadable" in render_markdown(audit)


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*/bundle_in_parts_succeeded.json")), ids=lambda p: p.parent.name)
def test_a_bundle_sent_in_parts_reads_back_whole_with_the_sql_that_ran(path: Path) -> None:
    audit = _audit(path)
    assert audit.problems == []
    bundle = audit.request.bundle
    assert bundle.in_parts and len(bundle.parts) >= 2
    assert [m.name for m in bundle.migrations] == [f"2025010{i}000000_p{i}" for i in range(1, 6)]
    assert audit.messages == []  # the parts are the bundle, not approvals
    report = render_markdown(audit)
    for m in bundle.migrations:
        assert f"### SQL of `{m.name}`" in report and m.sql in report
    # A history missing a part says so instead of showing less SQL than ran.
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    first_part = next(e for e in history.events if e.HasField("workflow_execution_update_accepted_event_attributes"))
    kept = [e for e in history.events if e is not first_part]
    partial = build_audit(CONVERTER, history.workflow_id, "run", "completed", kept)
    assert any("bundle part" in p and "missing" in p for p in partial.problems)
