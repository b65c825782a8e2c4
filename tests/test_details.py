"""The Markdown of a run's Current Details (domain/details.py), as an approver reads it in the
Temporal UI: the latest attempts on top, the plan they sign, how to approve, a finished run's record.
The browser test (tests/test_ui_approval.py) checks the same pages rendered by the real UI."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from domain import details
from domain.models import (
    Action,
    AppliedMigration,
    ApprovalPolicy,
    ApprovalRecord,
    CompensationStep,
    DeployPlan,
    Finding,
    Operation,
    Outcome,
    PlannedMigration,
    ResolveDecision,
    RollbackSource,
    RunStatus,
    VerifyCheck,
)
from domain.risk import Risk, Severity
from tests.helpers import migration

AT = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
FP = "5d41402abc4b2a76b9719d911017c592" * 2
SHORT_SQL = 'CREATE TABLE "leads" (\n    "id" TEXT NOT NULL,\n    CONSTRAINT "leads_pkey" PRIMARY KEY ("id")\n);'
LONG_LINE_SQL = ('ALTER TABLE "landing_sections" ADD CONSTRAINT "landing_sections_page_id_fkey" FOREIGN KEY '
                 '("page_id") REFERENCES "pages"("id") ON DELETE RESTRICT ON UPDATE CASCADE;')
BUNDLE = [migration("20241226000000_add_leads", SHORT_SQL), migration("20260115000000_add_landing", LONG_LINE_SQL),
          migration("20241210000000_init", "CREATE TABLE x (id int);")]
PLAN = DeployPlan(
    environment="prod", operation=Operation.full, server_version="15.8", risk=Risk.high, fingerprint=FP,
    migrations=[
        PlannedMigration(name="20241210000000_init", action=Action.already_applied, reason="applied"),
        PlannedMigration(name="20241226000000_add_leads", action=Action.apply, reason="pending; out of order",
                         risk=Risk.low, rollback=RollbackSource.derived, rollback_sql='DROP TABLE "leads";',
                         findings=[Finding(code="create-table", severity=Severity.info, message='creates "leads"')]),
        PlannedMigration(name="20260115000000_add_landing", action=Action.reapply, reason="failed, effects absent",
                         risk=Risk.high, in_transaction=False,
                         findings=[Finding(code="foreign-key", severity=Severity.warning, line=1,
                                           message="validates every row under a SHARE ROW EXCLUSIVE lock")],
                         evidence=["table landing_sections: absent"]),
    ],
    drift={"verdict": "explained_by_phantom", "summary": "the phantom changed nothing", "differences": []},
    notes=["20241226000000_add_leads is applied out of order"],
)
SSH = ApprovalPolicy(gates=["resolve", "deploy"], approvers=["alice", "bob"], required_approvals=2,
                     approval_timeout=timedelta(hours=24), proofs=["ssh"])


def rec(approver, *, accepted=True, refusal=None, proof=None, key=None, stage="resolve", minute=0):
    return ApprovalRecord(decision="approve", stage=stage, approver=approver, at=AT + timedelta(minutes=minute),
                          via="update", accepted=accepted, refusal=refusal, proof=proof,
                          principal=approver if proof == "ssh" else None, key_fingerprint=key)


def gate_page(policy=SSH, records=(), plan=PLAN) -> str:
    body = details.gate("resolve", plan, policy, "carol", workflow_id="prisma-deploy-prod", records=list(records),
                        bundle=BUNDLE)
    return details.page(body, list(records))


def fenced_lines(markdown: str) -> list[str]:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", markdown, re.S)
    return [line.strip() for block in blocks for line in block.splitlines()]


def test_a_gate_page_holds_the_plan_the_approver_signs() -> None:
    md = gate_page()
    assert md.startswith("### Waiting for approval: **resolve** on `prod`")
    # The fingerprint alone on its line, whole.
    assert f"\n`{FP}`\n" in md
    # Per migration: action, risk, transaction, findings, rollback, evidence; already applied ones left out.
    assert "`20241226000000_add_leads` — **apply** · risk **low** · in a transaction" in md
    assert "`20260115000000_add_landing` — **reapply** · risk **high** · **not in a transaction**" in md
    assert "finding `foreign-key` [warning] (line 1): validates every row" in md
    assert 'rollback: derived — `DROP TABLE "leads";`' in md
    assert "rollback: **none**" in md  # the reapplied one has no rollback: said plainly
    assert "evidence: table landing_sections: absent" in md
    assert "20241210000000_init" not in md
    assert "Drift proof: **explained_by_phantom** — the phantom changed nothing" in md
    assert "risk **high**" in md and "0 of 2 distinct approver(s) so far" in md
    assert "not the requester, carol" in md
    # SQL: shown when it fits the UI's frame, else where to read it.
    assert '"id" TEXT NOT NULL,' in fenced_lines(md)
    assert "SQL: 1 line(s), shown by `python starter.py show prisma-deploy-prod`" in md
    assert all(len(line) <= details.SQL_LINE_WIDTH for line in fenced_lines(md))


def test_the_instructions_point_to_send_an_update_first_and_nothing_to_copy_is_cut() -> None:
    md = gate_page()
    update, signal = md.index("Send an Update"), md.index("Send a Signal")
    assert update < signal
    assert "`python starter.py sign prisma-deploy-prod --stage resolve --by <you> --key ~/.ssh/id_ed25519`" in md
    assert "`python starter.py approve prisma-deploy-prod --stage resolve --by <you> --sign-with" in md
    assert "accepts a typed name" not in md  # production: signatures only
    # Everything to copy is inline code (wraps in the UI), never a code block (cut at the edge).
    assert not any("starter.py" in line or FP in line for line in fenced_lines(md))
    typed = gate_page(SSH.model_copy(update={"proofs": ["ssh", "typed"]}))
    assert "also accepts a typed name, recorded as **unproven**" in typed
    assert (f'`{{"stage": "resolve", "approver": "<your name>", "comment": "ok", "fingerprint": "{FP}"}}`'
            in typed)


def test_the_latest_attempts_are_at_the_top_newest_first() -> None:
    records = [rec("alice", proof="ssh", key="SHA256:abc"),
               rec("bob", accepted=False, refusal="the approve is not signed, and prod accepts only ...", minute=1),
               rec("carol", accepted=False, refusal="carol requested this run and may not approve it", minute=2)]
    md = gate_page(records=records)
    top = md.split("---", 1)[0]
    assert top.startswith("#### Latest approval attempts (newest first; 3 in all)")
    lines = [line for line in top.splitlines() if line.startswith("- ")]
    assert lines[0].startswith("- **REFUSED**: approve **resolve** by carol via update, 2026-11-20 12:02:00 UTC")
    assert "may not approve it" in lines[0]
    assert lines[1].startswith("- **REFUSED**: approve **resolve** by bob")
    assert lines[2].startswith("- accepted: approve **resolve** by alice") and "proven: SSH key `SHA256:abc`" in lines[2]
    assert "1 of 2 distinct approver(s) so far (alice)" in md
    many = [rec(f"p{i}", accepted=False, refusal="no", minute=i) for i in range(9)]
    assert "4 older attempt(s)" in details.attempts(many)


def test_user_supplied_text_cannot_dress_up_as_markdown() -> None:
    forged = rec("**APPROVED by security**", accepted=False, refusal="x")
    line = details.attempt_line(forged)
    assert "**APPROVED" not in line and "\\*\\*APPROVED by security\\*\\*" in line


def test_a_backup_in_the_plan_is_shown_when_the_plan_has_one() -> None:
    class WithBackup(PlannedMigration):
        backup: dict | None = None

    leads = PLAN.migrations[1]
    backed = WithBackup(**leads.model_dump(), backup={"table": "leads", "rows": 12})
    plan = PLAN.model_copy(update={"migrations": [backed]})
    assert "backup: table: leads; rows: 12" in gate_page(plan=plan)
    assert "backup:" not in gate_page()


def test_a_finished_run_shows_its_record() -> None:
    status = RunStatus(
        environment="prod", operation=Operation.full, dry_run=False, requested_by="carol", plan=PLAN,
        outcome=Outcome.failed_rolled_back, error="verification failed: verify.sql line 2",
        approvals=[rec("alice", proof="ssh", key="SHA256:abc"),
                   rec("bob", accepted=False, refusal="not signed", minute=1),
                   rec("erin", proof="typed", stage="deploy", minute=2)],
        resolved=[ResolveDecision(name="20260115000000_add_landing", resolution="rolled_back", reason="absent")],
        applied=[AppliedMigration(name="20241226000000_add_leads", checksum="a" * 64, ledger_id="x",
                                  started_at=AT, finished_at=AT, duration_ms=12.0)],
        verification=[VerifyCheck(check="verify.sql line 2", migration="20241226000000_add_leads", passed=False,
                                  detail="returned false")],
        compensation=[CompensationStep(name="20241226000000_add_leads", action="ran derived rollback", ok=True)],
    )
    md = details.finished(status, workflow_id="prisma-deploy-prod", run_id="r-1")
    assert md.startswith("### Run failed_rolled_back on `prod`")
    assert "verification failed: verify.sql line 2" in md
    assert f"\n`{FP}`\n" in md
    approvals = md.split("#### Approvals", 1)[1].split("####", 1)[0]
    assert "accepted: approve **resolve** by alice via update, 2026-11-20 12:00:00 UTC · proven: SSH key" in approvals
    assert "accepted: approve **deploy** by erin" in approvals and "typed name, **unproven**" in approvals
    assert "1 refused attempt(s)" in approvals and "not signed" in approvals
    assert "resolved `20260115000000_add_landing` as **rolled_back**" in md
    assert "applied `20241226000000_add_leads` at 2026-11-20 12:00:00 UTC in 12 ms" in md
    assert "**FAIL** verify.sql line 2 (`20241226000000_add_leads`): returned false" in md
    assert "`20241226000000_add_leads`: ran derived rollback — ok" in md
    assert "`python starter.py show prisma-deploy-prod/r-1`" in md


def test_commands_inside_a_refusal_stay_code_so_they_copy_as_written() -> None:
    refused = rec("bob", accepted=False, refusal="the approval is not signed: sign it with "
                  "`python starter.py sign prisma-deploy-prod --stage resolve --by bob --key <your key>` and paste it")
    line = details.attempt_line(refused)
    assert "`python starter.py sign prisma-deploy-prod --stage resolve --by bob --key <your key>`" in line
    assert line.endswith("and paste it")
    odd = details.attempt_line(rec("x", accepted=False, refusal="unknown stage '`oops'"))
    assert "\\`oops" in odd  # an unpaired backtick from a payload is shown, not interpreted
