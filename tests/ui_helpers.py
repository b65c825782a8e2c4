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
