"""`show`: the audit of one run, reconstructed from its workflow history.

History is the record Temporal keeps of everything the run received and did: the request (with
the bundle's SQL), every activity with its times and result, every signal and update. The audit
reads it back; it does not depend on a worker being up, except to ask a still-open run for its
current status.
"""

from __future__ import annotations

import typer
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
from cli.follow import heartbeat_details
from domain.audit import Audit, render_markdown
from runtime.codec import PayloadKeyError
from runtime.history import decode_history
from workflows.history import build_audit
from workflows.messages import query_status

RunArg = typer.Argument(..., help="Environment name (latest run), workflow id, WORKFLOW_ID/RUN_ID, or a run id.")


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
    audit = build_audit(client.data_converter.payload_converter, desc.id, desc.run_id, status_name, history.events)
    if desc.status == WorkflowExecutionStatus.RUNNING:
        try:
            audit.status = await query_status(handle)
        except RPCError:
            pass  # no worker up: the history alone is shown
        for pending in desc.raw_description.pending_activities:
            raw = heartbeat_details(pending)
            if raw is not None and isinstance(raw.get("lock_wait"), dict):
                audit.waiting = raw["lock_wait"]
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
