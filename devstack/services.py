"""Starting the real processes of a local stack: the Temporal dev server (with its Web UI) and a worker.

Used by `make demo`, the process-level tests and the benchmarks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from devstack.pgcluster import free_port
from devstack.temporal import dev_server_flags, temporal_cli_path

REPO = Path(__file__).resolve().parent.parent


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


class TemporalDevServer:
    """`temporal server start-dev` with the UI and, optionally, history persisted to a file."""

    def __init__(self, db_file: Path | None = None, port: int | None = None, ui_port: int | None = None,
                 log_file: Path | None = None) -> None:
        self.db_file = db_file
        self.port = port or free_port()
        self.ui_port = ui_port or free_port()
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def start(self) -> "TemporalDevServer":
        args = [
            temporal_cli_path(), "server", "start-dev",
            "--ip", "127.0.0.1", "--port", str(self.port), "--ui-port", str(self.ui_port),
            "--http-port", str(free_port()), "--metrics-port", str(free_port()),
            "--log-level", "error", *dev_server_flags(),
        ]
        if self.db_file:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
            args += ["--db-filename", str(self.db_file)]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, 60)
        wait_for_port(self.ui_port, 60)
        self._wait_healthy(60)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        """The gRPC port opens before the frontend serves ("Frontend is not healthy yet" on a
        loaded machine): wait for the cluster's own health check to say SERVING."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the Temporal dev server exited with code {self.proc.returncode}")
            probe = subprocess.run([temporal_cli_path(), "operator", "cluster", "health", "--address", self.address],
                                   capture_output=True, text=True, timeout=30)
            if probe.returncode == 0 and "SERVING" in probe.stdout:
                return
            last = (probe.stderr or probe.stdout).strip()[-200:]
            time.sleep(0.25)
        raise RuntimeError(f"the Temporal dev server at {self.address} was not healthy within {timeout:g} s: {last}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def environments_json(envs: dict[str, dict]) -> str:
    return json.dumps(envs)


class WorkerProcess:
    """`python worker.py` as a real subprocess, configured only through MIGRATOR_* variables."""

    def __init__(self, env: dict[str, str], log_file: Path | None = None) -> None:
        self.env = env
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "worker.py")],
            cwd=REPO,
            env={**os.environ, **self.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """kill -9: the crash the service must survive."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
