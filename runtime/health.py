"""Worker health: Temporal SDK metrics for Prometheus, and a readiness signal for orchestrators.

- Metrics: `worker_runtime(settings)` builds a Temporal Runtime whose core SDK serves Prometheus
  text on MIGRATOR_METRICS_PORT (`/metrics`); the worker's client must be connected with it.
- Readiness: `WorkerHealth(settings, worker)` wraps `worker.run()`. While the worker is polling
  and Temporal answers, it is *ready*: `/readyz` on MIGRATOR_HEALTH_PORT answers 200 and
  MIGRATOR_HEALTH_FILE is touched every few seconds. Otherwise (starting, Temporal unreachable,
  draining after SIGTERM) `/readyz` answers 503 and the file is removed. `/healthz` (liveness)
  answers 200 as long as the event loop does, which is what a stuck worker loses.
- `prisma-deploy-health check [--max-age SECONDS]` exits 0 only when the health file is fresh; for
  exec probes and compose healthchecks where no port is wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from runtime.settings import Settings

DEFAULT_INTERVAL = 5.0
# A file older than this many refresh intervals means the worker stopped refreshing it.
STALE_AFTER_INTERVALS = 6


class HealthConfigError(ValueError):
    pass


def worker_runtime(settings: Settings, *, host: str = "0.0.0.0") -> Runtime | None:
    """A Runtime exporting SDK metrics on settings.metrics_port, or None (default runtime) when 0."""
    if settings.metrics_port <= 0:
        return None
    address = f"{host}:{settings.metrics_port}"
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
    except Exception as exc:  # the core raises a bare exception when the port is taken
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HealthConfigError(
            f"cannot serve Prometheus metrics on {address} (MIGRATOR_METRICS_PORT): {first}"
        ) from None


class WorkerHealth:
    """Async context manager around `worker.run()` publishing readiness (HTTP and/or file)."""

    def __init__(
        self,
        settings: Settings,
        worker: Worker,
        *,
        host: str = "0.0.0.0",
        interval: float = DEFAULT_INTERVAL,
        rpc_timeout: float = 5.0,
    ) -> None:
        self._worker = worker
        self._file = settings.health_file
        self._port = settings.health_port
        self._host = host
        self._interval = interval
        self._rpc_timeout = rpc_timeout
        self._server: asyncio.Server | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.ready = False
        self.reason = "starting"

    # -- state ----------------------------------------------------------------------------------

    def _draining(self) -> bool:
        # The SDK exposes no public "shutdown requested" flag; is_running stays true while
        # activities drain, and orchestrators should stop counting us as ready right away.
        event = getattr(self._worker, "_shutdown_event", None)
        return bool(event is not None and event.is_set())

    async def _temporal_answers(self) -> bool:
        try:
            await self._worker.client.workflow_service.get_system_info(
                GetSystemInfoRequest(), timeout=timedelta(seconds=self._rpc_timeout)
            )
            return True
        except Exception:
            return False

    async def check(self) -> None:
        """Recompute readiness once; also refreshes or removes the health file."""
        if self._draining():
            self.ready, self.reason = False, "draining"
        elif not self._worker.is_running:
            self.ready, self.reason = False, "stopped" if self._worker.is_shutdown else "starting"
        elif not await self._temporal_answers():
            self.ready, self.reason = False, "temporal unreachable"
        else:
            self.ready, self.reason = True, "polling"
        if self._file is not None:
            if self.ready:
                self._touch()
            else:
                self._remove_file()

    def _status(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "reason": self.reason,
            "namespace": self._worker.client.namespace,
            "task_queue": self._worker.task_queue,
        }

    # -- file -----------------------------------------------------------------------------------

    def _touch(self) -> None:
        assert self._file is not None
        self._file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._file.with_name(self._file.name + ".tmp")
        tmp.write_text(json.dumps({**self._status(), "updated_at": time.time()}) + "\n")
        tmp.replace(self._file)  # atomic: a probe never reads half a file

    def _remove_file(self) -> None:
        assert self._file is not None
        with contextlib.suppress(FileNotFoundError):
            self._file.unlink()

    # -- HTTP -----------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if path == "/healthz":
                code, body = 200, {"alive": True}
            elif path == "/readyz":
                code, body = (200 if self.ready else 503), self._status()
            else:
                code, body = 404, {"error": "not found: try /healthz or /readyz"}
            payload = (json.dumps(body) + "\n").encode()
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
            writer.write(
                f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- lifecycle ------------------------------------------------------------------------------

    async def _refresh_forever(self) -> None:
        while True:
            await self.check()
            # Look often until ready, so a rollout does not wait a whole interval for nothing.
            await asyncio.sleep(self._interval if self.ready else min(self._interval, 0.5))

    async def __aenter__(self) -> WorkerHealth:
        if self._file is not None:
            self._remove_file()  # a file left by a killed predecessor must not claim readiness
        if self._port > 0:
            try:
                self._server = await asyncio.start_server(self._handle, self._host, self._port)
            except OSError as exc:
                raise HealthConfigError(
                    f"cannot serve /healthz and /readyz on {self._host}:{self._port} (MIGRATOR_HEALTH_PORT): "
                    f"{(exc.strerror or str(exc)).lower()}"
                ) from None
        self._loop_task = asyncio.create_task(self._refresh_forever(), name="worker-health")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.ready, self.reason = False, "stopped"
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._file is not None:
            self._remove_file()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# -- probe CLI --------------------------------------------------------------------------------


def check_file(path: Path, max_age: float) -> str | None:
    """None when the health file exists and is fresh, else the one-line reason it is not."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return f"not ready: {path} does not exist (the worker is starting, draining or stopped)"
    except OSError as exc:
        return f"not ready: cannot read {path}: {(exc.strerror or str(exc)).lower()}"
    if age > max_age:
        return f"not ready: {path} was last refreshed {age:.0f}s ago (more than {max_age:.0f}s): the worker is stuck"
    return None


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="prisma-deploy-health", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chk = sub.add_parser("check", help="exit 0 when MIGRATOR_HEALTH_FILE (or --file) is fresh")
    chk.add_argument("--file", type=Path, default=None)
    chk.add_argument("--max-age", type=float, default=DEFAULT_INTERVAL * STALE_AFTER_INTERVALS)
    args = parser.parse_args(argv)
    # Read the one variable directly: a probe must not depend on the rest of the settings parsing.
    path = args.file or (Path(os.environ["MIGRATOR_HEALTH_FILE"]) if os.environ.get("MIGRATOR_HEALTH_FILE") else None)
    if path is None:
        print("error: set MIGRATOR_HEALTH_FILE or pass --file", file=sys.stderr)
        return 2
    problem = check_file(path, args.max_age)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
