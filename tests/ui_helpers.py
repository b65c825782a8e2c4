"""Helpers for the Temporal Web UI tests: a dev server with its UI, a run of the incident waiting at a
gate, and the signal request exactly as the UI's own JavaScript sends it (verified against UI 2.54.1,
see shared/reference/temporal-ui-browser-approval.md §7)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from devstack.incident import reproduce_incident
from devstack.services import TemporalDevServer
from domain.models import RunStatus, workflow_id_for
from tests.helpers import incident_request, make_settings, new_worker, start, wait_gate


@dataclass
class WaitingRun:
    server: TemporalDevServer
    client: Client
    handle: WorkflowHandle
    status: RunStatus  # as it was when the run reached its first gate

    @property
    def run_page(self) -> str:
        """The workflow's page in the UI, as `starter.py deploy` links it."""
        return (f"{self.server.ui_url}/namespaces/default/workflows/{quote(self.handle.id, safe='')}"
                f"/{self.handle.result_run_id}/history")


@asynccontextmanager
async def dev_server_with_ui() -> AsyncIterator[tuple[TemporalDevServer, Client]]:
    server = TemporalDevServer().start()
    try:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        await wait_ui_backend(server.ui_url)
        yield server, client
    finally:
        server.stop()


async def wait_ui_backend(ui_url: str, timeout: float = 30.0) -> None:
    """The UI port opens before the UI server's gRPC connection to the frontend is up (it answers
    503 "connection refused" meanwhile, and gRPC backs off): wait until it reads the namespace."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = ""
    async with httpx.AsyncClient(base_url=ui_url, timeout=5) as http:
        while asyncio.get_running_loop().time() < deadline:
            try:
                resp = await http.get("/api/v1/namespaces/default")
                if resp.status_code == 200:
                    return
                last = f"{resp.status_code} {resp.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            await asyncio.sleep(0.2)
    raise AssertionError(f"the Temporal UI at {ui_url} did not reach the server within {timeout:.0f}s: {last}")


@asynccontextmanager
async def incident_run_at_gate(
    server: TemporalDevServer, client: Client, database_url: str, environment: str, *, requested_by: str = "carol",
    **env_settings,
) -> AsyncIterator[WaitingRun]:
    """The incident database, a worker for `environment`, and a deploy run waiting at its first gate.
    The workflow id is the product's own (`prisma-deploy-<env>`), so the audit finds it by environment."""
    await reproduce_incident(database_url)
    settings = make_settings(environment, database_url, **env_settings)
    async with new_worker(client, settings) as worker:
        req = incident_request(environment, requested_by=requested_by)
        handle = await start(client, worker, req, workflow_id=workflow_id_for(environment))
        status = await wait_gate(handle, str(settings.environments[environment].gates[0]))
        yield WaitingRun(server, client, handle, status)


def ui_signal_body(signal_name: str, payload: object) -> dict:
    """The body the UI builds for "Send a Signal" with encoding json/plain."""
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return {
        "signalName": signal_name,
        "input": {"payloads": [{
            "metadata": {"encoding": b64(b"json/plain")},
            "data": b64(json.dumps(payload).encode()),
        }]},
    }


@asynccontextmanager
async def ui_csrf_client(ui_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """An HTTP client holding the UI's `_csrf` cookie (set on any /api/v1 GET), and the token."""
    async with httpx.AsyncClient(base_url=ui_url, timeout=10) as http:
        resp = await http.get("/api/v1/settings")
        resp.raise_for_status()
        token = http.cookies.get("_csrf")
        assert token, f"the UI set no _csrf cookie on /api/v1/settings (headers: {dict(resp.headers)})"
        yield http, token


def ui_signal_path(workflow_id: str, signal_name: str, namespace: str = "default") -> str:
    return f"/api/v1/namespaces/{namespace}/workflows/{quote(workflow_id, safe='')}/signal/{signal_name}"


# -- driving the real UI in headless Chromium (UI 2.54.1; see tests/test_ui_refusals.py) ----------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DETAILS_FRAME = "iframe#user-metadata-current-details"  # Current Details render in a frame of their own


@asynccontextmanager
async def browser_page(width: int = 1400, height: int = 1000) -> AsyncIterator:
    """A fresh headless Chromium profile and one page (never `playwright install`: Debian's chromium)."""
    import tempfile

    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        with tempfile.TemporaryDirectory(prefix="ui-profile-") as profile:
            ctx = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height})
            try:
                page = ctx.pages[0] if ctx.pages else await ctx.new_page()
                await page.route("https://newsfeed.temporal.io/**", lambda route: route.abort())
                yield page
            finally:
                await ctx.close()


async def open_user_metadata(page, run: WaitingRun) -> None:
    """The run's User Metadata tab, where the UI shows Current Details."""
    from playwright.async_api import expect

    await page.goto(run.run_page.rsplit("/", 1)[0] + "/user-metadata")
    await expect(page.get_by_role("button", name="More Actions")).to_be_visible(timeout=20_000)
    await expect(page.locator(f"{DETAILS_FRAME}:visible")).to_have_count(1, timeout=15_000)


async def details_text(page, expect_text: str | None = None, timeout: float = 15.0) -> str:
    """The text of Current Details as rendered; presses R (the UI's refresh key) until it shows
    `expect_text`, as a person would."""
    frame = page.frame_locator(f"{DETAILS_FRAME}:visible")
    deadline = asyncio.get_running_loop().time() + timeout
    text = ""
    while True:
        try:
            text = await frame.locator("main").inner_text(timeout=5_000)
        except Exception:  # noqa: BLE001 - the frame is being replaced by the refresh
            text = ""
        if expect_text is None or expect_text in text or asyncio.get_running_loop().time() > deadline:
            return text
        await page.mouse.click(5, page.viewport_size["height"] - 5)  # somewhere empty, out of any field
        await page.keyboard.press("r")
        await asyncio.sleep(0.7)


async def details_frame(page):
    """The Current Details frame itself (for layout checks)."""
    handle = await page.locator(f"{DETAILS_FRAME}:visible").element_handle()
    return await handle.content_frame()


async def _choose(dlg, kind: str, name: str) -> None:
    chooser = dlg.get_by_test_id(f"{kind}-select-button")
    await chooser.click()
    options = dlg.locator(f"#{kind}-select-select").get_by_role("option")
    await options.first.wait_for()  # the list fades in
    await options.get_by_text(name, exact=True).first.click()


async def _fill_and_submit(page, dlg, data: str, path_part: str):
    from playwright.async_api import expect

    editor = dlg.get_by_role("textbox", name="Data")
    await editor.fill(data)
    # CodeMirror pretty-prints on blur and the dialog grows: blur first, or Submit is missed.
    await editor.blur()
    confirm = dlg.get_by_test_id("confirm-modal-button")
    await expect(confirm).to_be_enabled()
    await page.wait_for_timeout(300)
    async with page.expect_response(lambda r: path_part in r.url and r.request.method == "POST") as info:
        await confirm.click()
    return await info.value


async def send_update(page, name: str, data: str) -> str | None:
    """More Actions → Send an Update → `name` with `data` (as typed or pasted). Returns the
    refusal the dialog shows, or None when the UI said "Update successful" (the dialog closed)."""
    from playwright.async_api import expect

    await page.get_by_role("button", name="More Actions").click()
    await page.get_by_role("menuitem", name="Send an Update").click()
    dlg = page.locator('dialog[open][data-testid="update-confirmation-modal"]')
    await expect(dlg).to_be_visible()
    await _choose(dlg, "update", name)
    resp = await _fill_and_submit(page, dlg, data, "/update/")
    assert resp.ok, f"the UI's update request answered {resp.status}"
    ok = page.get_by_text("Update successful").first
    for _ in range(60):
        # the dialog closes only when the update succeeded (a refusal keeps it open), and the
        # success toast may already be gone on a slow machine
        if await ok.is_visible() or not await dlg.count():
            return None
        text = await _dialog_error(dlg)
        if text:
            await dlg.get_by_test_id("cancel-modal-button").click()
            await expect(dlg).to_have_count(0)
            return text
        await page.wait_for_timeout(250)
    raise AssertionError("the update dialog showed neither success nor a refusal")


async def _dialog_error(dlg) -> str:
    """The failure box the update dialog shows below the Data field (message, then any stack trace)."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:  # it may close between the caller's look and this one
        full = await dlg.inner_text(timeout=2000)
    except PlaywrightTimeout:
        return ""
    marker = "Single JSON payload supported."
    if marker not in full:
        return ""
    after = full.split(marker, 1)[1].strip()
    for end in ("Cancel\nSubmit", "Cancel"):
        if end in after:
            after = after.rsplit(end, 1)[0]
    return after.strip()


async def send_signal(page, name: str, data: str) -> None:
    """More Actions → Send a Signal → `name` with `data`; waits for the "Workflow signaled." toast."""
    from playwright.async_api import expect

    await page.get_by_role("button", name="More Actions").click()
    await page.get_by_role("menuitem", name="Send a Signal").click()
    dlg = page.locator('dialog[open][data-testid="signal-confirmation-modal"]')
    await expect(dlg).to_be_visible()
    await _choose(dlg, "signal", name)
    resp = await _fill_and_submit(page, dlg, data, "/signal/")
    assert resp.ok, f"the UI's signal request answered {resp.status}"
    await expect(page.get_by_text("Workflow signaled.").first).to_be_visible()
