"""`python worker.py` as operators run it: settings from MIGRATOR_* variables, a run served end to
end, a clean stop on SIGTERM, and no password in its logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import httpx

from devstack.pgcluster import free_port
from domain.models import Outcome, RunStatus
from tests.conftest import PG_TEST_PASSWORD
from tests.helpers import migration, request
from workflows.start import WORKFLOW_NAME, start_options

WORKER = Path(__file__).resolve().parent.parent / "worker.py"


async def test_worker_process_serves_a_run_and_stops_on_sigterm(dev_env, dev_client, database_url: str, tmp_path) -> None:
    task_queue = f"proc-{uuid.uuid4()}"
    env = {
        **os.environ,
        "MIGRATOR_TEMPORAL_ADDRESS": dev_client.service_client.config.target_host,
        "MIGRATOR_TASK_QUEUE": task_queue,
        "MIGRATOR_ENVIRONMENTS": json.dumps({"w": {"database_url": database_url, "gates": []}}),
        "MIGRATOR_LOG_JSON": "true",
        "MIGRATOR_HEALTH_PORT": str(health_port := free_port()),
        "MIGRATOR_METRICS_PORT": str(metrics_port := free_port()),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(100):  # ready once it polls Temporal
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"http://127.0.0.1:{health_port}/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the worker never reported ready on /readyz")
        req = request("w", [migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT);')])
        handle = await dev_client.start_workflow(WORKFLOW_NAME, req, result_type=RunStatus,
                                                 **start_options(req, task_queue=task_queue, workflow_id=f"proc-{uuid.uuid4()}"))
        final = await asyncio.wait_for(handle.result(), 60)
        assert final.outcome == Outcome.succeeded
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert "temporal_activity_execution_latency" in metrics or "temporal_workflow_completed" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "worker started" in text and "worker stopped" in text
    assert PG_TEST_PASSWORD not in text


async def test_worker_refuses_invalid_settings_in_one_line(tmp_path) -> None:
    env = {**os.environ, "MIGRATOR_ENVIRONMENTS": json.dumps({"w": {"database_url": "postgresql://u:pw@h:5432"}})}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 3
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid settings (environments.w.database_url)")
    assert "pw@" not in lines[0]
