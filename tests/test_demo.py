"""`make demo` unattended (DEMO_AUTO_APPROVE=1): the incident resolved end to end and the audit printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo_resolves_the_incident_and_prints_the_audit(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "devstack.demo"],
        cwd=REPO,
        env={**os.environ, "DEMO_AUTO_APPROVE": "1", "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in out + proc.stderr
    # Before: the diagnosis shows the failed migration Prisma's status would hide.
    assert "missing_locally" in out and "failed" in out
    # An unsigned approval is refused: prod accepts only SSH-signed approvals (production's default).
    assert "refused: the approval is not signed, and prod accepts only SSH-signed approvals" in proc.stderr
    # The gates were approved by the named approvers, proven by the demo's keys, and the audit says so.
    assert "resolve approved by alice (proven by SSH key SHA256:" in out
    assert "deploy approved by bob (proven by SSH key SHA256:" in out
    assert "You approve the 'resolve' gate of this plan:" in out and "fingerprint: " in out
    audit = out.split("The audit of the run, from its workflow history", 1)[1]
    assert "- Outcome: **succeeded**" in audit
    assert "- Requested by: carol" in audit
    assert "| approve | resolve | alice | update | yes |" in audit
    assert "| approve | deploy | bob | update | yes |" in audit
    header = next(line for line in audit.splitlines() if line.startswith("| when | decision |"))
    proof_column = [c.strip() for c in header.split("|")].index("proof")  # read by its header: columns grow
    proofs = [[c.strip() for c in line.split("|")][proof_column] for line in audit.splitlines()
              if line.startswith("| ") and "| approve |" in line and "| yes |" in line]
    assert len(proofs) == 2 and all(p.startswith("ssh SHA256:") for p in proofs), proofs
    assert "**refused**" in audit and "not signed" in audit
    assert "`20260115000000_add_landing_sections` → **rolled_back**" in audit
    assert "### SQL of `20241226000000_add_leads_questionnaire_models`" in audit
    assert "run outcome: succeeded" in out
    assert "demo-password" not in out + proc.stderr
