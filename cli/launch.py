"""Starting a run for `deploy` and `plan`: the request, then, for a bundle too large for one
Temporal payload, its parts (domain/bundle.py), each sent as the `bundle_part` update right after
the start and answered by the workflow once it checked it. A progress bar shows the upload; a part
the run refuses, or an upload cut short, cancels the run (it had changed nothing: it waits for its
bundle before preflight) and is one line for the user.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from cli.common import err_console, fail
from domain.models import BundlePart, DeployRequest, RunStatus
from workflows.messages import BUNDLE_PART_UPDATE
from workflows.start import WORKFLOW_NAME, start_options

IN_FLIGHT = 4


async def start_run(client: Client, request: DeployRequest, parts: list[BundlePart], *, task_queue: str,
                    workflow_id: str | None = None, quiet: bool = False) -> WorkflowHandle[Any, RunStatus]:
    """Start the run (raises WorkflowAlreadyStartedError as start_workflow does), then send its parts."""
    handle = await client.start_workflow(
        WORKFLOW_NAME, request, result_type=RunStatus,
        **start_options(request, task_queue=task_queue, workflow_id=workflow_id),
    )
    if parts:
        await _send_parts(handle, parts, request, quiet)
    return handle


async def _send_parts(handle: WorkflowHandle, parts: list[BundlePart], request: DeployRequest, quiet: bool) -> None:
    total = sum(p.size for p in request.bundle.parts)
    columns = (TextColumn("sending {task.fields[count]} migrations in {task.fields[parts]} parts"), BarColumn(),
               DownloadColumn())
    # A few parts in flight at once (Temporal admits 10 updates in flight per run by default).
    slots = asyncio.Semaphore(IN_FLIGHT)
    with Progress(*columns, console=err_console, transient=True, disable=quiet) as bar:
        task = bar.add_task("bundle", total=total, count=request.bundle.count, parts=len(parts))

        async def send(part: BundlePart, size: int) -> None:
            async with slots:
                await handle.execute_update(BUNDLE_PART_UPDATE, part, result_type=str)
            bar.advance(task, size)

        try:
            await asyncio.gather(*(send(p, d.size) for p, d in zip(parts, request.bundle.parts, strict=True)))
        except (WorkflowUpdateFailedError, RPCError) as exc:
            await _cancel(handle)
            cause = getattr(exc, "cause", None)
            why = getattr(cause, "message", None) or getattr(exc, "message", None) or str(exc)
            fail(f"the run refused a part of the migrations bundle ({why}); it was cancelled before changing anything")
        except BaseException:
            await _cancel(handle)
            raise


async def _cancel(handle: WorkflowHandle) -> None:
    try:
        await handle.cancel()
    except RPCError:
        pass  # already closed
