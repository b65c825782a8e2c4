"""Shared fixtures: a real throwaway PostgreSQL for the session, one fresh database per test,
and real Temporal servers (time-skipping and dev) started from the project's own binaries.

`TEST_DATABASE_URL` (or `DATABASE_URL`) points the suite at an existing server instead; each test
still gets its own database, created and dropped there.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import structlog
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from devstack.pgcluster import PgCluster
from devstack.temporal import (
    dev_server_flags,
    temporal_cli_path,
    temporal_test_server_path,
)
from workflows import search_attributes

# Activities log with structlog; unconfigured it prints to whatever sys.stdout is at that moment,
# which is a CLI command's captured output while an in-process command runs. Logs go to stderr.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

# A known password: the secrets tests assert it never reaches workflow history or logs.
PG_TEST_PASSWORD = "s3cr3t-pw-for-tests"


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


class PgServer:
    """The server the suite runs against: `admin_url` for CREATE/DROP DATABASE."""

    def __init__(self, admin_url: str, cluster: PgCluster | None) -> None:
        self.admin_url = admin_url
        self.cluster = cluster

    def url(self, database: str) -> str:
        return _with_database(self.admin_url, database)

    async def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        finally:
            await conn.close()
        return name

    async def drop_database(self, name: str) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    existing = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if existing:
        yield PgServer(existing, None)
        return
    cluster = PgCluster(password=PG_TEST_PASSWORD).start()
    try:
        yield PgServer(cluster.url("postgres"), cluster)
    finally:
        cluster.destroy()


@pytest.fixture
async def database_url(pg_server: PgServer) -> AsyncIterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    name = await pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        await pg_server.drop_database(name)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=temporal_test_server_path(),
    )
    # The Java test server knows no custom search attributes until told.
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for k in search_attributes.ALL},
        )
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal CLI dev server (visibility, updates, UI), in memory for tests."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_cli_path(),
        dev_server_extra_args=dev_server_flags(),
        ui=False,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def dev_client(dev_env: WorkflowEnvironment) -> Client:
    return dev_env.client


@pytest.fixture(scope="session")
async def corpus(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory):
    """The corpus histories as the real Prisma CLI deploys them (tests/corpus.py), prepared once
    per session and on first use: each test module that needs them shares the same databases."""
    from tests.corpus import CorpusDatabases

    databases = CorpusDatabases(pg_server, tmp_path_factory.mktemp("corpus"))
    try:
        yield databases
    finally:
        await databases.close()
