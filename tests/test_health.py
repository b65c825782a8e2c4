"""Worker health on a real dev server: Prometheus metrics scraped over HTTP, readiness over HTTP and
as a file through start, polling, draining and stop, and the probe CLI on fresh and stale files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio import activity, workflow
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from runtime.connection import connect
from runtime.health import HealthConfigError, WorkerHealth, check_file, worker_runtime
from runtime.settings import Settings

REPO = Path(__file__).resolve().parents[1]

release_activity = asyncio.Event()
activity_started = asyncio.Event()


@activity.defn
async def say_hello(name: str) -> str:
    return f"hello {name}"


@activity.defn
async def wait_for_release() -> str:
    activity_started.set()
    await release_activity.wait()
    return "released"


@workflow.defn
class HelloWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(say_hello, name, start_to_close_timeout=timedelta(seconds=10))


@workflow.defn
class SlowWorkflow:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(wait_for_release, start_to_close_timeout=timedelta(seconds=60))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_for(dev_env, tmp_path: Path, **extra) -> Settings:
    return Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
        health_file=tmp_path / "run" / "worker-ready",
        **extra,
    )


def make_worker(client, task_queue: str, **kwargs) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[HelloWorkflow, SlowWorkflow],
        activities=[say_hello, wait_for_release],
        workflow_runner=UnsandboxedWorkflowRunner(),
        **kwargs,
    )


async def eventually(predicate, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(url)


async def test_metrics_are_served_for_prometheus_and_readiness_follows_the_worker(dev_env, tmp_path: Path) -> None:
    metrics_port, health_port = free_port(), free_port()
    settings = settings_for(dev_env, tmp_path, metrics_port=metrics_port, health_port=health_port)
    client = await connect(settings, runtime=worker_runtime(settings, host="127.0.0.1"))
    task_queue = f"health-{uuid.uuid4().hex[:8]}"
    # Like the real worker: running activities get time to finish after shutdown is requested.
    worker = make_worker(client, task_queue, graceful_shutdown_timeout=timedelta(seconds=30))
    ready_url = f"http://127.0.0.1:{health_port}/readyz"

    async with WorkerHealth(settings, worker, host="127.0.0.1", interval=0.2) as health:
        # Not polling yet: alive, not ready, no file.
        assert (await get(f"http://127.0.0.1:{health_port}/healthz")).status_code == 200
        not_ready = await get(ready_url)
        assert not_ready.status_code == 503 and not_ready.json()["reason"] == "starting"
        assert not settings.health_file.exists()

        run = asyncio.create_task(worker.run())
        try:
            ready = await eventually(
                lambda: _status_if(ready_url, 200), "readyz 200 once the worker polls"
            )
            assert ready == {"ready": True, "reason": "polling", "namespace": settings.temporal_namespace, "task_queue": task_queue}
            on_disk = json.loads(settings.health_file.read_text())
            assert on_disk["ready"] is True and on_disk["task_queue"] == task_queue

            result = await client.execute_workflow(
                HelloWorkflow.run, "metrics", id=f"hello-{uuid.uuid4()}", task_queue=task_queue
            )
            assert result == "hello metrics"

            async def scraped_after_completion():
                text = (await get(f"http://127.0.0.1:{metrics_port}/metrics")).text
                return text if 'temporal_workflow_completed{' in text else None

            text = await eventually(scraped_after_completion, "the workflow_completed counter on /metrics")
            names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
            # The core SDK's metric names (docs.temporal.io/references/sdk-metrics), labelled with our queue.
            assert {"temporal_workflow_completed", "temporal_request", "temporal_worker_task_slots_available"} <= names
            assert any(n.startswith("temporal_activity_execution_latency") for n in names)
            completed = [l for l in text.splitlines() if l.startswith("temporal_workflow_completed{") and f'task_queue="{task_queue}"' in l]
            assert completed and float(completed[0].rsplit(" ", 1)[1]) >= 1

            # Draining: once shutdown is requested, readiness goes at once although an activity still runs.
            release_activity.clear()
            activity_started.clear()
            slow = await client.start_workflow(SlowWorkflow.run, id=f"slow-{uuid.uuid4()}", task_queue=task_queue)
            await asyncio.wait_for(activity_started.wait(), 15)
            shutdown = asyncio.create_task(worker.shutdown())
            draining = await eventually(lambda: _status_if(ready_url, 503), "readyz 503 while draining")
            assert draining["reason"] == "draining"
            assert not settings.health_file.exists()
            assert not shutdown.done()
            release_activity.set()
            await asyncio.wait_for(shutdown, 30)
            await run
        finally:
            release_activity.set()
            if not run.done():
                await worker.shutdown()
                await run
        assert health.ready is False
    # Stopped: the endpoint is gone and the file stays removed.
    with pytest.raises(httpx.ConnectError):
        await get(ready_url)
    assert not settings.health_file.exists()
    with contextlib.suppress(Exception):
        await slow.terminate("test over")


async def _status_if(url: str, code: int):
    response = await get(url)
    return response.json() if response.status_code == code else None


async def test_a_file_left_by_a_killed_worker_never_claims_readiness(dev_env, tmp_path: Path) -> None:
    settings = settings_for(dev_env, tmp_path)
    settings.health_file.parent.mkdir(parents=True)
    settings.health_file.write_text('{"ready": true}\n')
    worker = make_worker(dev_env.client, f"stale-{uuid.uuid4().hex[:8]}")
    async with WorkerHealth(settings, worker, interval=0.2) as health:
        assert not settings.health_file.exists()
        assert health.ready is False


async def test_busy_ports_are_one_clear_line(dev_env, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        settings = settings_for(dev_env, tmp_path, metrics_port=port)
        with pytest.raises(HealthConfigError) as metrics_err:
            worker_runtime(settings, host="127.0.0.1")
        assert "MIGRATOR_METRICS_PORT" in str(metrics_err.value) and str(port) in str(metrics_err.value)
        assert "\n" not in str(metrics_err.value)

        settings = settings_for(dev_env, tmp_path, health_port=port)
        worker = make_worker(dev_env.client, f"busy-{uuid.uuid4().hex[:8]}")
        with pytest.raises(HealthConfigError) as health_err:
            async with WorkerHealth(settings, worker, host="127.0.0.1"):
                pass
        assert "MIGRATOR_HEALTH_PORT" in str(health_err.value) and "\n" not in str(health_err.value)


def test_metrics_are_off_unless_a_port_is_set() -> None:
    assert worker_runtime(Settings(metrics_port=0)) is None


def probe(*args: str, env_file: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATOR_")}
    if env_file is not None:
        env["MIGRATOR_HEALTH_FILE"] = str(env_file)
    return subprocess.run(
        [sys.executable, "-m", "runtime.health", "check", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_probe_cli_accepts_a_fresh_file_and_rejects_missing_or_stale_ones(tmp_path: Path) -> None:
    ready = tmp_path / "ready"

    missing = probe(env_file=ready)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1

    ready.write_text("{}")
    assert probe(env_file=ready).returncode == 0
    assert probe("--file", str(ready)).returncode == 0

    old = time.time() - 300
    os.utime(ready, (old, old))
    stale = probe("--max-age", "60", env_file=ready)
    assert stale.returncode == 1 and "stuck" in stale.stderr

    unset = probe()
    assert unset.returncode == 2 and "MIGRATOR_HEALTH_FILE" in unset.stderr


def test_check_file_age_threshold(tmp_path: Path) -> None:
    f = tmp_path / "ready"
    f.write_text("{}")
    os.utime(f, (time.time() - 10, time.time() - 10))
    assert check_file(f, max_age=30) is None
    assert "10s ago" in (check_file(f, max_age=5) or "")
