"""The worker: runs DeployWorkflow, RolloutWorkflow and their activities for the environments in settings.

    python worker.py

Settings come from MIGRATOR_* variables (settings.py); database URLs stay in this process. SIGINT
or SIGTERM stop polling and give running activities `graceful_shutdown_timeout` to finish (a deploy
that is cut short is retried by Temporal and recognises what it already applied).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.worker import Worker

from activities.apply import ApplyActivities
from activities.cleanup import CleanupActivities
from activities.compensate import CompensateActivities
from activities.fleet import FleetActivities
from activities.preflight import PreflightActivities
from activities.resolve import ResolveActivities
from activities.target import TargetDatabases
from activities.verify import VerifyActivities
from runtime.logs import configure_logging, get_logger
from runtime.settings import Settings
from workflows.deploy import DeployWorkflow
from workflows.rollout import RolloutWorkflow
from workflows.sandbox import workflow_runner

GRACEFUL_SHUTDOWN = timedelta(seconds=30)
# Heartbeat details reach the server at least this often (Temporal's default: 0.8 x the heartbeat
# timeout, 24 s), so `watch` names a session blocking a migration within a couple of seconds.
HEARTBEAT_THROTTLE = timedelta(seconds=2)
WORKFLOWS = [DeployWorkflow, RolloutWorkflow]


def deploy_activities(settings: Settings) -> list[Callable[..., Any]]:
    """Every activity DeployWorkflow and RolloutWorkflow call, sharing one `TargetDatabases` for `settings`."""
    targets = TargetDatabases(settings)
    fleet = FleetActivities(targets)
    return [
        PreflightActivities(targets).preflight,
        ResolveActivities(targets).resolve,
        ApplyActivities(targets).deploy,
        VerifyActivities(targets).verify,
        CompensateActivities(targets).compensate,
        fleet.discover_targets,
        fleet.plan_targets,
        CleanupActivities(targets).drop_shadow,
    ]


def build_worker(
    client: Client,
    settings: Settings,
    *,
    task_queue: str | None = None,
    activities: list[Callable[..., Any]] | None = None,
    **worker_options: Any,
) -> Worker:
    """The worker for `settings`; tests may pass their own `activities` (registered by name)."""
    worker_options.setdefault("graceful_shutdown_timeout", GRACEFUL_SHUTDOWN)
    worker_options.setdefault("max_heartbeat_throttle_interval", HEARTBEAT_THROTTLE)
    worker_options.setdefault("workflow_runner", workflow_runner())
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=WORKFLOWS,
        activities=activities if activities is not None else deploy_activities(settings),
        **worker_options,
    )


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    from runtime import connection as temporal_client

    log = get_logger("worker")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / platform without signals
            pass
    from runtime import health

    try:
        client = await temporal_client.connect(settings, runtime=health.worker_runtime(settings))
    except temporal_client.TemporalConfigError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
        raise SystemExit(
            f"error: cannot reach Temporal at {settings.temporal_address} (namespace {settings.temporal_namespace}): "
            f"{first}; is the server running? (MIGRATOR_TEMPORAL_ADDRESS)"
        ) from None
    worker = build_worker(client, settings)
    log.info(
        "worker started",
        task_queue=settings.task_queue,
        namespace=settings.temporal_namespace,
        environments=sorted(settings.environments),
    )
    # Health outermost: /healthz stays up (and /readyz says "not ready") while activities drain.
    async with health.WorkerHealth(settings, worker), worker:
        await stop.wait()
        log.info("shutting down: no new tasks, waiting for running activities", grace_s=GRACEFUL_SHUTDOWN.total_seconds())
    log.info("worker stopped")


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"error: invalid settings ({where}): {first['msg']}", file=sys.stderr)
        return 3
    configure_logging(json=settings.log_json, level=settings.log_level)
    if not settings.environments:
        get_logger("worker").warning("no environments configured (MIGRATOR_ENVIRONMENTS): every run will fail preflight")
    for name, environment in settings.environments.items():
        warning = environment.approval_warning(name)
        if warning:
            get_logger("worker").warning(warning)
    try:
        asyncio.run(run_worker(settings))
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 3
        raise
    except Exception as exc:  # noqa: BLE001 - one line, no traceback, for the operator
        from runtime.connection import TemporalConfigError
        from runtime.health import HealthConfigError

        if isinstance(exc, (TemporalConfigError, HealthConfigError)):
            print(f"error: {exc}", file=sys.stderr)
            return 3
        raise
    return 0


def _exit(code: int) -> None:
    """Leave without interpreter finalization: the Temporal core's native threads may still be
    winding down, and racing them during finalization can abort the process (seen as SIGABRT
    after a clean shutdown). Everything worth keeping is flushed first."""
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def entry() -> None:
    """Console script `prisma-deploy-worker` (and `python worker.py` / `python -m worker`)."""
    _exit(main())


if __name__ == "__main__":
    entry()
