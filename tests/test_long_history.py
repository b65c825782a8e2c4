"""A history too long for one Temporal payload, end to end on the real dev server and PostgreSQL:
`starter.py deploy` sends the request and then the bundle in parts, the run plans and deploys the
last migrations, history holds what was reviewed and what ran (the audit shows that SQL), parts
that differ from the request are refused, and payload encryption covers the parts too."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowUpdateFailedError

from temporalio import activity as act

from activities.bundle_store import RunBundles
from activities.ledger import MigrationLedger
from cli.launch import start_run
from cli.show import load_audit
from domain.audit import render_markdown
from domain.bundle import build_bundle, pack
from domain.bundle_models import MAX_BUNDLE_BYTES
from domain.models import DeployRequest, Outcome, VerifyInput, VerifyResult
from domain.prisma.folder import read_migrations_dir
from runtime import connection as temporal_client
from runtime.codec import ENCODING
from tests.helpers import final_status, make_settings, migration, new_worker, request, run_cli_in_process, start
from tests.oracle import prisma
from worker import deploy_activities
from workflows.messages import BUNDLE_PART_UPDATE

N, PENDING = 1000, 10
FILLER = "-- " + "a long comment, as generated migrations carry " * 45 + "\n"


def write_history(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for i in range(N):
        d = root / f"2025{i:010d}_step_{i}"
        d.mkdir()
        (d / "migration.sql").write_text(f'{FILLER}CREATE TABLE "t{i}" ("id" INT PRIMARY KEY);\n')
        (d / "down.sql").write_text(f'DROP TABLE "t{i}";\n')
    return root


async def apply_all_but_last(database_url: str, mdir: Path) -> None:
    """The first N - PENDING applied for real, with the rows Prisma's deploy writes."""
    conn = await asyncpg.connect(database_url)
    try:
        ledger = MigrationLedger(conn)
        await ledger.ensure_table()
        for m in read_migrations_dir(mdir)[: N - PENDING]:
            async with conn.transaction():
                started = datetime.now(timezone.utc)
                await conn.execute(m.sql)
                await ledger.insert_applied(m.name, m.checksum, started, datetime.now(timezone.utc))
    finally:
        await conn.close()


def events(history_json: str, kind: str) -> list[dict]:
    """Events of one type ("WorkflowExecutionStarted"), in either spelling the JSON uses."""
    upper = "EVENT_TYPE_" + "".join(f"_{c}" if c.isupper() else c.upper() for c in kind).lstrip("_")
    return [e for e in json.loads(history_json)["events"] if e["eventType"] in (kind, upper)]


@pytest.fixture
async def long_history(tmp_path: Path, database_url: str) -> Path:
    mdir = write_history(tmp_path / "migrations")
    await apply_all_but_last(database_url, mdir)
    return mdir


async def test_a_history_too_long_for_one_payload_plans_and_deploys_its_last_migrations(
    dev_env, database_url: str, long_history: Path
) -> None:
    mdir = long_history
    bundle, parts = pack(build_bundle(read_migrations_dir(mdir), revision="test", source=str(mdir)))
    assert len(bundle.model_dump_json()) < 10_000 and len(parts) >= 2  # today's limit: 1.5 MB inline
    settings = make_settings("long", database_url)
    async with new_worker(dev_env.client, settings) as worker:
        env = {"MIGRATOR_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
               "MIGRATOR_TASK_QUEUE": worker.task_queue, "MIGRATOR_ENVIRONMENTS": "{}"}
        plan = await run_cli_in_process(["plan", "--env", "long", "--migrations-dir", str(mdir), "--json"], env)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        planned = json.loads(plan.stdout)
        assert [m["name"] for m in planned["migrations"] if m["action"] == "apply"] == \
            [f"2025{i:010d}_step_{i}" for i in range(N - PENDING, N)]
        assert planned["blockers"] == []

        deploy = await run_cli_in_process(["deploy", "--env", "long", "--migrations-dir", str(mdir), "--wait"], env)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        handle = dev_env.client.get_workflow_handle("prisma-deploy-long")
        final = await final_status(handle)
        history = (await handle.fetch_history()).to_json()
        audit = await load_audit(dev_env.client, "long")

    assert final.outcome == Outcome.succeeded
    assert [a.name for a in final.applied] == [f"2025{i:010d}_step_{i}" for i in range(N - PENDING, N)]
    theirs = prisma(database_url, mdir, "status")  # the real Prisma CLI agrees: nothing left to apply
    assert theirs.returncode == 0 and "Database schema is up to date!" in theirs.stdout

    # What was reviewed and what ran is in the run's history: the request announces the parts,
    # each part is an accepted update, and no payload comes near Temporal's 2 MB limit.
    started = events(history, "WorkflowExecutionStarted")[0]
    request_bytes = len(json.dumps(started["workflowExecutionStartedEventAttributes"]["input"]))
    accepted = [e for e in events(history, "WorkflowExecutionUpdateAccepted")
                if e["workflowExecutionUpdateAcceptedEventAttributes"]["acceptedRequest"]["input"]["name"]
                == BUNDLE_PART_UPDATE]
    assert request_bytes < 20_000 and len(accepted) == len(parts)
    largest = max(len(base64.b64decode(p["data"])) for e in accepted
                  for p in e["workflowExecutionUpdateAcceptedEventAttributes"]["acceptedRequest"]["input"]["args"]["payloads"])
    assert largest < MAX_BUNDLE_BYTES  # each part well under Temporal's 2 MB

    # The audit puts the bundle back together and shows the SQL that ran.
    assert audit.problems == [] and len(audit.request.bundle.migrations) == N
    report = render_markdown(audit)
    last = read_migrations_dir(mdir)[-1]
    assert f"### SQL of `{last.name}`" in report and last.sql.strip().splitlines()[-1] in report
    assert "BUNDLE" not in " ".join(m.name.upper() for m in audit.messages)  # parts are not approvals


async def test_a_part_that_does_not_match_the_request_is_refused_and_the_run_changes_nothing(
    dev_env, database_url: str, long_history: Path
) -> None:
    bundle, parts = pack(build_bundle(read_migrations_dir(long_history), revision="t", source="t"))
    request = DeployRequest(environment="long", requested_by="carol", bundle=bundle)
    tampered = parts[1].model_copy(deep=True)
    tampered.migrations[0].sql += "DROP TABLE t0;\n"
    async with new_worker(dev_env.client, make_settings("long", database_url)) as worker:
        handle = await start_run(dev_env.client, request, [], task_queue=worker.task_queue,
                                 workflow_id=f"parts-{uuid.uuid4().hex[:8]}")
        await handle.execute_update(BUNDLE_PART_UPDATE, parts[0], result_type=str)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(BUNDLE_PART_UPDATE, tampered, result_type=str)
        assert "does not match its checksum" in str(refused.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as again:
            await handle.execute_update(BUNDLE_PART_UPDATE, parts[0], result_type=str)
        assert "bundle part 0 was already received" in str(again.value.cause)
        await handle.cancel()  # what the starter does when a part is refused
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        desc = await handle.describe()
        history = (await handle.fetch_history()).to_json()
    assert desc.status == WorkflowExecutionStatus.CANCELED
    assert events(history, "ActivityTaskScheduled") == []  # it was waiting for its bundle: no preflight
    assert "DROP TABLE t0" not in history  # a refused part never enters history
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM _prisma_migrations") == N - PENDING
    finally:
        await conn.close()


async def test_parts_are_encrypted_in_history_and_read_back_by_the_activities(
    dev_env, database_url: str, long_history: Path
) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    settings = make_settings("long", database_url).model_copy(update={
        "temporal_address": dev_env.client.service_client.config.target_host, "payload_keys": [SecretStr(key)]})
    client = await temporal_client.connect(settings)
    bundle, parts = pack(build_bundle(read_migrations_dir(long_history), revision="t", source="t"))
    async with new_worker(client, settings) as worker:
        handle = await start_run(client, DeployRequest(environment="long", requested_by="carol", bundle=bundle),
                                 parts, task_queue=worker.task_queue, workflow_id=f"enc-{uuid.uuid4().hex[:8]}")
        final = await final_status(handle)
    assert final.outcome == Outcome.succeeded, final.error
    assert len(final.applied) == PENDING
    plain = (await dev_env.client.get_workflow_handle(handle.id).fetch_history()).to_json()
    assert 'CREATE TABLE \\"t995\\"' not in plain and base64.b64encode(b"t995").decode() not in plain
    accepted = events(plain, "WorkflowExecutionUpdateAccepted")
    assert len(accepted) == len(parts)
    for e in accepted:
        (payload,) = e["workflowExecutionUpdateAcceptedEventAttributes"]["acceptedRequest"]["input"]["args"]["payloads"]
        assert base64.b64decode(payload["metadata"]["encoding"]) == ENCODING


async def test_activities_can_read_the_whole_bundle_of_an_inline_run_too(dev_env, database_url: str) -> None:
    """What a shadow replay of the whole folder needs in any activity: every migration's SQL,
    here from a run whose bundle came inline (verify's input carries none of it)."""
    migs = [migration(f"2025010{i}000000_m{i}", f'CREATE TABLE "m{i}" ("id" INT);') for i in range(1, 4)]
    seen: dict[str, list] = {}
    store = RunBundles()

    @act.defn(name="verify")
    async def verify(inp: VerifyInput) -> VerifyResult:
        assert all(m.sql == "" for m in inp.migrations)
        seen["whole"] = await store.whole()
        return VerifyResult()

    settings = make_settings("inline", database_url)
    real = [a for a in deploy_activities(settings) if a.__name__ != "verify"]
    async with new_worker(dev_env.client, settings, activities=[*real, verify]) as worker:
        final = await final_status(await start(dev_env.client, worker, request("inline", migs)))
    assert final.outcome == Outcome.succeeded, final.error
    assert seen["whole"] == migs
