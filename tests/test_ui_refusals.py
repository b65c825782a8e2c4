"""Approving in the real Temporal Web UI (headless Chromium, UI 2.54.1) an environment with
production's rules: only SSH-signed approvals count, never from the requester (issue 15).

One run of the incident, requested by carol, waits at its resolve gate. In the browser, as an
approver who has never seen the product: the plan is read in Current Details (User Metadata tab);
a wrong stage, a self-approval, an unproven (typed) approval and a stale fingerprint are each
refused, in one sentence where the UI answers (Send an Update's dialog), and each refusal is at the
top of Current Details; then alice and bob approve with the lines `starter.py sign` prints, pasted
into Send an Update and Send a Signal, and the finished run's record is read in Current Details.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import pytest_asyncio

from domain.models import Outcome
from tests.helpers import final_status, run_cli_in_process, wait_gate, wait_status
from tests.ssh_keys import make_key
from tests.test_ui_approval import _chromium_or_fail
from tests.ui_helpers import (
    browser_page,
    details_frame,
    details_text,
    dev_server_with_ui,
    incident_run_at_gate,
    open_user_metadata,
    send_signal,
    send_update,
)

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "ui-refusals"
STACK_TRACE = re.compile(r'File "|Traceback|\.py", line|site-packages')


@pytest_asyncio.fixture(scope="module")
async def ui_server():
    async with dev_server_with_ui() as (server, client):
        yield server, client


def straight(text: str) -> str:
    """The UI's Markdown renderer curls quotes in prose (never in code): compare with straight ones."""
    return text.translate(str.maketrans("‘’“”", "''\"\""))


def refusal_lines(details: str) -> list[str]:
    """The latest attempts at the top of Current Details, as the UI renders them (newest first)."""
    top = details.split("Waiting for approval", 1)[0]
    return [line.strip() for line in top.splitlines() if line.strip().startswith(("REFUSED", "accepted"))]


@pytest.mark.browser
@pytest.mark.timeout(240)
async def test_refusals_plan_and_record_in_the_temporal_ui(ui_server, database_url: str, tmp_path: Path) -> None:
    _chromium_or_fail()
    server, client = ui_server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    keys = {who: make_key(tmp_path, who, "ed25519") for who in ("alice", "bob", "carol")}
    signers = [f"{who} {key.public}" for who, key in keys.items()]
    async with incident_run_at_gate(server, client, database_url, "prod-ui-proofs", production_defaults=True,
                                    gates=["resolve", "deploy"], approvers=["alice", "bob", "carol"],
                                    allow_self_approval=False, allowed_signers=signers) as run:
        fp = run.status.plan.fingerprint
        wf = run.handle.id
        cli_env = {"MIGRATOR_TEMPORAL_ADDRESS": server.address, "MIGRATOR_ENVIRONMENTS": "{}",
                   "DATABASE_URL": "", "SSH_AUTH_SOCK": ""}

        async def signed_line(stage: str, who: str) -> str:
            done = await run_cli_in_process(["sign", wf, "--stage", stage, "--by", who, "--key",
                                             str(keys[who].path), "-m", f"{who} read the plan"], cli_env)
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        async with browser_page() as page:
            await open_user_metadata(page, run)
            plan = straight(await details_text(page))
            await page.screenshot(path=ARTIFACTS / "0-plan.png", full_page=True)
            # The plan the approver signs, where they look: per migration action and risk, the
            # rollback, the drift proof, the fingerprint alone on its line, how to approve.
            assert "Waiting for approval: resolve on prod-ui-proofs" in plan
            assert "20241226000000_add_leads_questionnaire_models — apply · risk" in plan
            assert "20260115000000_add_landing_sections — reapply · risk" in plan
            assert "rollback: down.sql" in plan and "evidence:" in plan
            assert "Drift proof: explained_by_phantom" in plan
            assert fp in plan.splitlines(), "the fingerprint is not alone on its line"
            assert plan.index("Send an Update") < plan.index("Send a Signal")
            assert f"python starter.py sign {wf} --stage resolve --by <you> --key ~/.ssh/id_ed25519" in plan
            assert f"python starter.py show {wf}" in plan  # where the full SQL is
            frame = await details_frame(page)
            cut = await frame.evaluate("""() => [...document.querySelectorAll('pre, code, p, li')]
                .filter(e => e.scrollWidth > e.clientWidth + 1 || e.getBoundingClientRect().right > innerWidth + 1)
                .map(e => e.textContent.slice(0, 60))""")
            assert cut == [], f"cut off at the right edge of Current Details: {cut}"

            # 1. A wrong stage, through Send an Update: the dialog answers in one sentence.
            wrong_stage = await send_update(page, "approve_update", json.dumps(
                {"stage": "verify", "approver": "alice", "fingerprint": fp}))
            assert wrong_stage == "this run has no 'verify' gate (its gates: resolve, deploy)", wrong_stage
            # 2. The requester approving her own run, properly signed with her own key.
            self_approval = await send_update(page, "approve_update", await signed_line("resolve", "carol"))
            assert self_approval.startswith("carol requested this run and may not approve it"), self_approval
            # 3. An unproven approval in production: bob's name typed into Send a Signal.
            await send_signal(page, "approve", json.dumps({"stage": "resolve", "approver": "bob",
                                                           "comment": "typed", "fingerprint": fp}))
            # 4. A stale fingerprint: both full values in the answer.
            stale = await send_update(page, "approve_update", json.dumps(
                {"stage": "resolve", "approver": "alice", "fingerprint": "0" * 64}))
            assert stale.startswith(f"the fingerprint you sent, {'0' * 64}, does not match this run's plan, {fp}")
            for answer in (wrong_stage, self_approval, stale):
                assert not STACK_TRACE.search(answer) and "\n" not in answer, answer
            await page.screenshot(path=ARTIFACTS / "1-after-refusals.png", full_page=True)

            status = await wait_status(run.handle, lambda s: len(s.approvals) == 4)
            assert not any(a.accepted for a in status.approvals) and status.gates_passed == []
            shown = straight(await details_text(page, expect_text="4 in all"))
            lines = refusal_lines(shown)
            assert len(lines) == 4, shown[:1500]
            assert lines[0].startswith("REFUSED: approve resolve by alice via update") and "does not match" in lines[0]
            assert lines[1].startswith("REFUSED: approve resolve by bob via signal") and "not signed" in lines[1]
            assert lines[2].startswith("REFUSED: approve resolve by carol via update") and "may not approve" in lines[2]
            assert lines[3].startswith("REFUSED: approve verify by alice via update") and "no 'verify' gate" in lines[3]
            await page.screenshot(path=ARTIFACTS / "2-refusals-in-details.png", full_page=True)

            # The approvals that count: alice's signed line in Send an Update, bob's in Send a Signal.
            assert await send_update(page, "approve_update", await signed_line("resolve", "alice")) is None
            await wait_gate(run.handle, "deploy", timeout=30)
            await send_signal(page, "approve", await signed_line("deploy", "bob"))
            final = await final_status(run.handle)
            assert final.outcome == Outcome.succeeded, final.error

            record = straight(await details_text(page, expect_text="Run succeeded"))
            await page.screenshot(path=ARTIFACTS / "3-record.png", full_page=True)
            assert record.lstrip().startswith("Run succeeded on prod-ui-proofs")
            assert fp in record.splitlines()
            assert "accepted: approve resolve by alice via update" in record
            assert f"proven: SSH key {keys['alice'].fingerprint} of alice" in record
            assert f"proven: SSH key {keys['bob'].fingerprint} of bob" in record
            assert "4 refused attempt(s)" in record
            assert "resolved 20260115000000_add_landing_sections as rolled_back" in record
            assert "applied 20241226000000_add_leads_questionnaire_models at" in record
            assert "PASS applied exactly once" in record
            assert f"python starter.py show {wf}/" in record


@pytest.mark.browser
@pytest.mark.timeout(180)
async def test_where_typed_names_are_allowed_the_json_in_current_details_pastes_as_is(
        ui_server, database_url: str) -> None:
    """An environment that allows typed names (a local stack): the JSON Current Details offer is
    whole on screen, and pasted as copied into Send an Update it approves, recorded as unproven."""
    _chromium_or_fail()
    server, client = ui_server
    async with incident_run_at_gate(server, client, database_url, "local-ui-typed", gates=["resolve"],
                                    approvers=["erin"], approval_proofs=["ssh", "typed"]) as run:
        async with browser_page(width=1200) as page:
            await open_user_metadata(page, run)
            plan = straight(await details_text(page))
            assert "local-ui-typed also accepts a typed name, recorded as unproven" in plan
            frame = await details_frame(page)
            offered = [t for t in await frame.locator("code").all_inner_texts() if t.startswith('{"stage"')]
            assert len(offered) == 1, offered
            right, width = await frame.evaluate("""() => [Math.max(...[...document.querySelectorAll('code')]
                .filter(e => e.textContent.startsWith('{"stage"')).map(e => e.getBoundingClientRect().right)),
                innerWidth]""")
            assert right <= width + 1, (right, width)  # wrapped inside the frame, not cut at its edge
            pasted = json.loads(offered[0])
            assert pasted == {"stage": "resolve", "approver": "<your name>", "comment": "ok",
                              "fingerprint": run.status.plan.fingerprint}
            assert await send_update(page, "approve_update", offered[0].replace("<your name>", "erin")) is None
            final = await final_status(run.handle)
    assert final.outcome == Outcome.succeeded, final.error
    assert [(a.approver, a.proof, a.accepted) for a in final.approvals] == [("erin", "typed", True)]
