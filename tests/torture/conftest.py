"""Fixtures of the torture suite: one real Temporal dev server process for the session, a client,
workers started as subprocesses (killed at teardown), and the scoreboard printed at the end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from temporalio.client import Client

from devstack.services import TemporalDevServer
from tests.torture import report
from tests.torture.harness import ARTIFACTS, TortureWorker, connect_client

# Crash trials of the full-size variant (make torture); the make-test sample is one per crash point.
DEFAULT_TRIALS = 50


def trials() -> int:
    return int(os.environ.get("TORTURE_TRIALS", DEFAULT_TRIALS))


def seed() -> int:
    return int(os.environ.get("TORTURE_SEED", "20240607"))


@pytest.fixture(scope="session")
def temporal_server() -> Iterator[TemporalDevServer]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = TemporalDevServer(log_file=ARTIFACTS / "temporal-dev-server.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def tclient(temporal_server: TemporalDevServer) -> Client:
    return await connect_client(temporal_server.address)


@pytest.fixture
def workers(temporal_server: TemporalDevServer, request: pytest.FixtureRequest) -> Iterator:
    """`workers(environments, **settings)` -> a started TortureWorker on a private task queue."""
    started: list[TortureWorker] = []
    name = request.node.name.replace("/", "_").replace("[", "-").replace("]", "")

    def make(environments: dict[str, dict], *, address: str | None = None, start: bool = True,
             **settings: str) -> TortureWorker:
        w = TortureWorker(address or temporal_server.address, f"torture-{uuid.uuid4().hex[:8]}", environments,
                          f"{name}-{len(started)}", **settings)
        started.append(w)
        return w.start() if start else w

    yield make
    for w in started:
        w.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    cases = report.collected()
    if not cases:
        return
    path = report.save(cases)
    terminalreporter.write_sep("=", "torture summary")
    terminalreporter.write_line(report.render(cases))
    terminalreporter.write_line(f"(saved to {path.relative_to(report.REPO)})")
