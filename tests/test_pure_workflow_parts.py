"""The workflow's pure parts: what compensation undoes (domain/undo.py) and what the Temporal UI
shows in Current Details (domain/details.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from domain import details
from domain.models import (
    Action,
    ApprovalPolicy,
    ApprovalRecord,
    DeployPlan,
    FailedMigration,
    Operation,
    Outcome,
    PlannedMigration,
    RollbackSource,
    RunMarks,
    RunStatus,
    Stage,
)
from domain.undo import undo_steps

PLAN = DeployPlan(
    environment="prod",
    operation=Operation.full,
    fingerprint="ab" * 32,
    migrations=[
        PlannedMigration(name="20250101000000_init", action=Action.already_applied, reason="applied"),
        PlannedMigration(name="20250102000000_a", action=Action.apply, reason="pending",
                         rollback=RollbackSource.down_sql, rollback_sql='DROP TABLE "a";'),
        PlannedMigration(name="20250103000000_b", action=Action.reapply, reason="failed, none of its effects",
                         in_transaction=False),
    ],
)
MARKS = RunMarks(deploy_ids={"20250102000000_a": "id-a", "20250103000000_b": "id-b"})


def test_undo_runs_newest_first_and_only_what_deploy_could_have_applied() -> None:
    steps = undo_steps(PLAN, MARKS, deploy_started=True, failed=None)
    assert [(s.name, s.ledger_id) for s in steps] == [("20250103000000_b", "id-b"), ("20250102000000_a", "id-a")]
    assert steps[1].rollback == RollbackSource.down_sql and steps[1].rollback_sql == 'DROP TABLE "a";'
    assert steps[0].in_transaction is False and steps[0].rollback is None


def test_nothing_to_undo_before_deploy_started() -> None:
    assert undo_steps(PLAN, MARKS, deploy_started=False, failed=None) == []


def test_a_failure_without_effects_is_marked_so_its_row_is_simply_rolled_back() -> None:
    clean = FailedMigration(name="20250103000000_b", error="boom", partial=False)
    partial = FailedMigration(name="20250103000000_b", error="boom", partial=True, statements_done=1)
    assert undo_steps(PLAN, MARKS, deploy_started=True, failed=clean)[0].failed_without_effects is True
    assert undo_steps(PLAN, MARKS, deploy_started=True, failed=partial)[0].failed_without_effects is False


def test_a_waiting_gate_shows_the_fingerprint_the_rules_and_a_json_to_paste() -> None:
    policy = ApprovalPolicy(gates=["deploy"], approvers=["alice", "bob"], allow_self_approval=False,
                            approval_timeout=timedelta(hours=4), required_approvals=2, proofs=["ssh", "typed"])
    alice = ApprovalRecord(decision="approve", stage="deploy", approver="alice", at=datetime(2026, 1, 1,
                           tzinfo=timezone.utc), via="update", accepted=True, proof="typed")
    text = details.gate(Stage.deploy, PLAN, policy, requested_by="carol", workflow_id="prisma-deploy-prod",
                        records=[alice])
    assert PLAN.fingerprint in text and "1 of 2 distinct approver(s) so far (alice)" in text
    assert "alice, bob; not the requester, carol" in text and "4:00:00" in text
    assert "20250101000000_init" not in text  # nothing to approve about what is already applied
    assert "`20250102000000_a` — **apply**" in text and "`20250103000000_b` — **reapply**" in text
    # The JSON to paste is inline code on its own line (the UI wraps it; a code block would be cut).
    line = next(x for x in text.splitlines() if x.startswith('`{"stage"'))
    pasted = json.loads(line.strip("`"))
    assert pasted["stage"] == "deploy" and pasted["fingerprint"] == PLAN.fingerprint


def test_a_finished_run_says_its_outcome_and_what_a_person_must_do() -> None:
    status = RunStatus(environment="prod", operation=Operation.full, dry_run=False, requested_by="carol",
                       outcome=Outcome.failed_needs_attention, error="verification failed",
                       human_action="undo 20250103000000_b by hand")
    text = details.finished(status)
    assert text.startswith("### Run failed_needs_attention on `prod`")
    assert "verification failed" in text and "**Needs a person:** undo 20250103000000_b by hand" in text
