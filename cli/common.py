"""What every command shares: settings, the Temporal connection, one-line errors, output."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn
from urllib.parse import quote

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from domain.models import workflow_id_for
from runtime.codec import PayloadKeyError
from runtime.connection import TemporalConfigError, connect
from runtime.settings import Settings

# Tables stay readable when output goes to a file or CI log (rich assumes 80 columns there).
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

EXIT_ERROR = 3

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


class CliError(Exception):
    """An error the user can act on: printed as one line, never a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = EXIT_ERROR) -> NoReturn:
    raise CliError(message, exit_code)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        fail(f"invalid settings ({where}): {first['msg']}")


def run(coro_fn: Callable[..., Coroutine[Any, Any, int | None]]) -> Callable[..., None]:
    """Run an async command body; turn known failures into one line on stderr and an exit code
    (raised as typer.Exit, so commands can be called in-process; the entry point leaves the process)."""

    @functools.wraps(coro_fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = asyncio.run(coro_fn(*args, **kwargs))
        except CliError as exc:
            _error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except PayloadKeyError as exc:  # an encrypted run read without (or with the wrong) key
            _error_line(_first_line(str(exc)))
            raise typer.Exit(EXIT_ERROR) from None
        except RPCError as exc:
            _error_line(f"Temporal answered: {_first_line(exc.message)}")
            raise typer.Exit(EXIT_ERROR) from None
        except Exception as exc:  # noqa: BLE001 - never a traceback; MIGRATOR_DEBUG=1 shows it
            if os.environ.get("MIGRATOR_DEBUG") == "1":
                raise
            _error_line(f"unexpected {type(exc).__name__}: {_first_line(str(exc))} (MIGRATOR_DEBUG=1 shows details)")
            raise typer.Exit(EXIT_ERROR) from None
        raise typer.Exit(code or 0)

    return wrapper


def _error_line(message: str) -> None:
    err_console.print(f"error: {message}", markup=False, soft_wrap=True)


def leave_process(code: int) -> NoReturn:
    """Leave without interpreter finalisation: the Temporal SDK's native threads can crash a
    finalising interpreter ("PyGILState_Release ... must be current"), turning a clean result into
    SIGABRT/SIGSEGV. Everything the command printed is flushed first. Only entry points call it."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def temporal(settings: Settings) -> Client:
    try:
        return await connect(settings)
    except TemporalConfigError as exc:
        fail(str(exc))
    except RuntimeError as exc:
        # The core SDK raises RuntimeError("Failed client connect: ...") when nothing answers.
        fail(
            f"cannot reach Temporal at {settings.temporal_address} (namespace {settings.temporal_namespace}): "
            f"{_first_line(str(exc))}; is the server running? (set MIGRATOR_TEMPORAL_ADDRESS)"
        )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else "no answer"


def resolve_run(client: Client, run: str) -> WorkflowHandle:
    """RUN may be an environment name, a workflow id (a deploy's or a rollout's), or `WORKFLOW_ID/RUN_ID`."""
    if "/" in run:
        wf_id, run_id = run.split("/", 1)
        return client.get_workflow_handle(wf_id, run_id=run_id or None)
    if run.startswith(("prisma-deploy-", "prisma-plan-", "prisma-rollout-")):
        return client.get_workflow_handle(run)
    return client.get_workflow_handle(workflow_id_for(run))


async def describe_or_fail(handle: WorkflowHandle):
    try:
        return await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            which = f"{handle.id}" + (f"/{handle.run_id}" if handle.run_id else "")
            fail(f"no run {which} on this Temporal namespace (list them with: starter.py runs)")
        raise


def run_url(settings: Settings, workflow_id: str, run_id: str | None) -> str:
    base = settings.temporal_ui_url.rstrip("/")
    url = f"{base}/namespaces/{quote(settings.temporal_namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"
    return f"{url}/{run_id}/history" if run_id else url


def print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        text = value.model_dump_json(indent=2)
    else:
        text = json.dumps(value, indent=2, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def looks_like_run_id(value: str) -> bool:
    return bool(_UUID.match(value))
