"""Approving a gate from the Temporal Web UI: first through the UI server's HTTP API exactly as the
UI's JavaScript sends a signal (CSRF double-submit included), then in a real headless Chromium
clicking through "Send a Signal".

Both run against the real dev server with its UI, a real worker and the incident database.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from temporalio.api.sdk.v1 import WorkflowMetadata

from cli.show import load_audit
from domain.audit import render_markdown
from domain.models import ApprovalAnswer, Outcome, RunStatus
from tests.helpers import final_status, wait_gate
from tests.ui_helpers import (
    dev_server_with_ui,
    incident_run_at_gate,
    ui_csrf_client,
    ui_signal_body,
    ui_signal_path,
)

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "ui-approval"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest_asyncio.fixture(scope="module")
async def ui_server():
    """One dev server with its Web UI for this module (each test uses its own environment/run)."""
    async with dev_server_with_ui() as (server, client):
        yield server, client


def signal_approvals(status: RunStatus) -> list[tuple]:
    return [(a.decision, a.stage, a.approver, a.via, a.accepted) for a in status.approvals]


async def test_ui_http_api_signal_approves_both_gates(ui_server, database_url: str) -> None:
    server, client = ui_server
    async with incident_run_at_gate(server, client, database_url, "prod-ui-api",
                                    gates=["resolve", "deploy"], approvers=["alice", "bob"]) as run:
        fp = run.status.plan.fingerprint
        # The UI lists signals from this query; each needs a description telling what JSON to type.
        meta = await run.handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        described = {d.name: d.description for d in meta.definition.signal_definitions}
        assert set(described) == {"approve", "reject"}
        for name, text in described.items():
            assert all(key in text for key in ('"stage"', '"approver"', '"fingerprint"')), (name, text)
        path = ui_signal_path(run.handle.id, "approve")
        async with ui_csrf_client(server.ui_url) as (http, token):
            resolve = ui_signal_body("approve", {"stage": "resolve", "approver": "alice",
                                                 "comment": "resolve ok", "fingerprint": fp})
            # The cookie alone is not enough: the UI server wants the double-submit header.
            missing = await http.post(path, json=resolve)
            assert missing.status_code == 400, missing.text
            assert "csrf" in missing.text.lower()
            forged = await http.post(path, json=resolve, headers={"X-CSRF-TOKEN": "0" * 32})
            assert forged.status_code == 403, forged.text

            sent = await http.post(path, json=resolve, headers={"X-CSRF-TOKEN": token})
            assert sent.status_code == 200, sent.text
            assert sent.json()["link"]["workflowEvent"]["workflowId"] == run.handle.id

            status = await wait_gate(run.handle, "deploy")
            # Exactly one attempt reached the run: the refused requests never did.
            assert signal_approvals(status) == [("approve", "resolve", "alice", "signal", True)]
            assert status.gates_passed == ["resolve"]

            deploy = ui_signal_body("approve", {"stage": "deploy", "approver": "bob",
                                                "comment": "deploy ok", "fingerprint": fp})
            assert (await http.post(path, json=deploy)).status_code == 400
            sent = await http.post(path, json=deploy, headers={"X-CSRF-TOKEN": token})
            assert sent.status_code == 200, sent.text
        final = await final_status(run.handle)

    assert final.outcome == Outcome.succeeded, final.error
    assert final.gates_passed == ["resolve", "deploy"]
    assert final.applied, "the deploy gate opened but nothing was applied"
    assert signal_approvals(final) == [
        ("approve", "resolve", "alice", "signal", True),
        ("approve", "deploy", "bob", "signal", True),
    ]

    audit = await load_audit(client, run.handle.id)
    assert audit.execution_status == "completed"
    assert signal_approvals(audit.status) == signal_approvals(final)
    # The raw signals as recorded in history, i.e. what the UI sent.
    assert [(m.kind, m.name, m.payload["stage"], m.payload["approver"]) for m in audit.messages] == [
        ("signal", "approve", "resolve", "alice"),
        ("signal", "approve", "deploy", "bob"),
    ]
    report = render_markdown(audit)
    assert re.search(r"\| approve \| resolve \| alice \| signal \| yes \|", report), report
    assert re.search(r"\| approve \| deploy \| bob \| signal \| yes \|", report), report


def _chromium_or_fail() -> None:
    if os.environ.get("SKIP_BROWSER_TESTS") == "1":
        pytest.skip("SKIP_BROWSER_TESTS=1: the Temporal UI browser test is switched off explicitly")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (installs Debian's chromium), "
                    "or set SKIP_BROWSER_TESTS=1 to skip this test on purpose", pytrace=False)
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.fail("the playwright package is missing: run `.venv/bin/pip install -e '.[test]'` "
                    "(never `playwright install`: the test uses /usr/bin/chromium)", pytrace=False)


@pytest.mark.browser
@pytest.mark.timeout(120)
async def test_browser_approves_a_gate_in_the_temporal_ui(ui_server, database_url: str) -> None:
    _chromium_or_fail()
    from playwright.async_api import TimeoutError as PlaywrightTimeout
    from playwright.async_api import async_playwright, expect

    server, client = ui_server
    approver = "erin.oncall"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks[name] = round(time.monotonic() - t0, 2)

    async with incident_run_at_gate(server, client, database_url, "prod-ui-browser",
                                    gates=["resolve", "deploy"], approvers=[approver]) as run:
        mark("run_at_gate")
        payload = {"stage": "resolve", "approver": approver, "comment": "approved in the browser",
                   "fingerprint": run.status.plan.fingerprint}
        async with async_playwright() as pw:
            with tempfile.TemporaryDirectory(prefix="ui-approval-profile-") as profile:
                ctx = await pw.chromium.launch_persistent_context(
                    profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                    viewport={"width": 1400, "height": 1000},
                )
                try:
                    mark("browser_launched")
                    page = ctx.pages[0] if ctx.pages else await ctx.new_page()
                    await page.route("https://newsfeed.temporal.io/**", lambda route: route.abort())
                    # The signal dropdown is built from the __temporal_workflow_metadata query,
                    # answered by the worker; without an answer the UI offers a free-text name.
                    metadata: dict | None = None
                    try:
                        async with page.expect_response(lambda r: "__temporal_workflow_metadata" in r.url,
                                                        timeout=10_000) as meta_info:
                            await page.goto(run.run_page)
                        meta_resp = await meta_info.value
                        metadata = await meta_resp.json() if meta_resp.ok else None
                    except PlaywrightTimeout:
                        metadata = None
                    more = page.get_by_role("button", name="More Actions")
                    await expect(more).to_be_visible(timeout=15_000)
                    mark("page_ready")

                    await more.click()
                    await page.get_by_role("menuitem", name="Send a Signal").click()
                    dlg = page.locator('dialog[open][data-testid="signal-confirmation-modal"]')
                    await expect(dlg).to_be_visible()

                    chooser = dlg.get_by_test_id("signal-select-button")
                    option_texts: list[str] = []
                    if metadata is not None and await chooser.count():
                        await chooser.click()
                        options = dlg.locator("#signal-select-select").get_by_role("option")
                        await options.first.wait_for()  # the list fades in
                        option_texts = [t.strip() for t in await options.all_inner_texts()]
                        approve_text = next((t for t in option_texts if t.split("\n")[0].strip() == "approve"), "")
                        assert '"approver"' in approve_text, f"no description of approve's input: {option_texts}"
                        await page.screenshot(path=ARTIFACTS / "0-signal-dropdown.png")
                        approve_opt = options.get_by_text("approve", exact=True)
                        if await approve_opt.count():
                            await approve_opt.first.click()
                            await expect(dlg.locator("input#signal-select")).to_have_value("approve")
                        else:
                            await options.get_by_text("Custom", exact=True).first.click()
                            await dlg.locator("#signal-name").fill("approve")
                    else:
                        await dlg.locator("#signal-name").fill("approve")

                    editor = dlg.get_by_role("textbox", name="Data")
                    await editor.fill(json.dumps(payload))
                    # CodeMirror pretty-prints on blur and the dialog grows: blur first, or the
                    # Submit click lands where the button used to be.
                    await editor.blur()
                    confirm = dlg.get_by_test_id("confirm-modal-button")
                    await expect(confirm).to_be_enabled()
                    await page.wait_for_timeout(300)
                    await page.screenshot(path=ARTIFACTS / "1-before-submit.png")
                    mark("form_filled")

                    async with page.expect_response(
                        lambda r: f"/workflows/{run.handle.id}/signal/" in r.url and r.request.method == "POST"
                    ) as sig_info:
                        await confirm.click()
                    sig = await sig_info.value
                    assert 200 <= sig.status < 300, f"the UI's signal request answered {sig.status}: {await sig.text()}"
                    assert urlsplit(sig.url).path.endswith("/signal/approve"), sig.url
                    await expect(page.get_by_text("Workflow signaled.").first).to_be_visible()
                    mark("signal_sent")
                    await page.screenshot(path=ARTIFACTS / "2-after-submit.png")

                    # The run passed the gate because of the browser's signal.
                    status = await wait_gate(run.handle, "deploy", timeout=15)
                    mark("gate_passed")
                    assert status.gates_passed == ["resolve"]
                    assert signal_approvals(status) == [("approve", "resolve", approver, "signal", True)]
                    assert status.approvals[0].comment == "approved in the browser"

                    audit = await load_audit(client, run.handle.id)
                    assert audit.status is not None and signal_approvals(audit.status) == signal_approvals(status)
                    assert [(m.kind, m.name, m.payload.get("approver")) for m in audit.messages] == [
                        ("signal", "approve", approver)]
                    assert re.search(rf"\| approve \| resolve \| {re.escape(approver)} \| signal \| yes \|",
                                     render_markdown(audit))

                    # Finish the run (the deploy gate from the CLI's path) and let the UI show it.
                    answer = await run.handle.execute_update(
                        "approve_update", {**payload, "stage": "deploy", "comment": "finish"}, result_type=ApprovalAnswer)
                    assert answer.accepted
                    final = await final_status(run.handle)
                    assert final.outcome == Outcome.succeeded, final.error
                    await expect(page.get_by_text(re.compile("^Completed$", re.I)).first).to_be_visible(timeout=15_000)
                    await page.screenshot(path=ARTIFACTS / "3-completed.png")
                    mark("ui_shows_completed")
                finally:
                    await ctx.close()
    mark("total")
    (ARTIFACTS / "timings.json").write_text(json.dumps(
        {"seconds_since_test_start": marks, "signal_options": option_texts,
         "metadata_answered": metadata is not None}, indent=2) + "\n")
    print(f"\nUI approval timings (s): {marks}; signal options: {option_texts}")
