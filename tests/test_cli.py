"""The starter CLI as a user drives it, against the real Temporal dev server, a worker and a real
PostgreSQL in the incident's state. Commands run in-process (typer's runner, in a thread so the
worker keeps running on the test's event loop); the error cases also run as real `python
starter.py` processes, where a traceback or a stray exit code would show."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from devstack.incident import reproduce_incident
from tests.conftest import PG_TEST_PASSWORD
from tests.helpers import INCIDENT_DIR, make_settings, new_worker, run_cli_in_process

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Cli:
    env: dict[str, str]
    subprocess: bool = False  # True: a real `python starter.py` process

    async def __call__(self, *args: str) -> subprocess.CompletedProcess:
        if not self.subprocess:
            return await run_cli_in_process(list(args), self.env)
        # A thread, so the in-process worker keeps running on this event loop meanwhile.
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(REPO / "starter.py"), *args],
            env={**os.environ, **self.env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )


@dataclass
class Stack:
    environment: str
    database_url: str
    cli: Cli


@pytest.fixture
async def stack(dev_env, database_url: str) -> AsyncIterator[Stack]:
    """A worker for one fresh environment (gates on resolve and deploy, approvers alice and bob, no
    self-approval) whose database is in the incident's production state."""
    await reproduce_incident(database_url)
    environment = f"prod{uuid.uuid4().hex[:6]}"
    settings = make_settings(
        environment, database_url, gates=["resolve", "deploy"], approvers=["alice", "bob"], allow_self_approval=False
    )
    worker = new_worker(dev_env.client, settings)
    cli = Cli(
        {
            "MIGRATOR_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "MIGRATOR_TASK_QUEUE": worker.task_queue,
            "MIGRATOR_TEMPORAL_UI_URL": "http://ui.example:8233",
            "MIGRATOR_ENVIRONMENTS": "{}",  # the starter never knows database URLs
            "DATABASE_URL": "",
        }
    )
    async with worker:
        yield Stack(environment, database_url, cli)


async def ledger_dump(dsn: str) -> list[tuple]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, migration_name, checksum, finished_at, rolled_back_at, logs, applied_steps_count"
            " FROM _prisma_migrations ORDER BY started_at, id"
        )
        return [tuple(r) for r in rows]
    finally:
        await conn.close()


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), proc.stderr
    return " ".join(lines)


async def test_plan_deploy_approve_watch_show(stack: Stack) -> None:
    cli, env = stack.cli, stack.environment
    before = await ledger_dump(stack.database_url)

    plan = await cli("plan", "--env", env, "--migrations-dir", str(INCIDENT_DIR), "--json")
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    actions = {m["name"]: m["action"] for m in planned["migrations"]}
    assert actions == {
        "20241210000000_init": "already_applied",
        "20241226000000_add_leads_questionnaire_models": "apply",
        "20251113220938_add_customer_slug": "leave_phantom",
        "20260115000000_add_landing_sections": "reapply",
    }
    fingerprint = planned["fingerprint"]
    assert len(fingerprint) == 64
    assert await ledger_dump(stack.database_url) == before, "plan must not write"

    human_plan = await cli("plan", "--env", env, "--migrations-dir", str(INCIDENT_DIR))
    assert fingerprint in human_plan.stdout and "re-apply" in human_plan.stdout

    started = await cli("deploy", "--env", env, "--migrations-dir", str(INCIDENT_DIR), "--requested-by", "carol")
    assert started.returncode == 0, started.stderr
    assert f"prisma-deploy-{env}" in started.stdout
    assert "http://ui.example:8233/namespaces/default/workflows/" in started.stdout
    assert "waiting for approval of stage 'resolve'" in started.stderr

    # The requester may not approve their own run in this environment; an outsider may not either.
    self_approval = await cli("approve", env, "--stage", "resolve", "--by", "carol")
    assert self_approval.returncode == 1
    assert "carol" in one_line_error(self_approval)
    wrong_stage = await cli("approve", env, "--stage", "verify", "--by", "alice")
    assert wrong_stage.returncode == 1 and "verify" in one_line_error(wrong_stage)
    stale = await cli("approve", env, "--stage", "resolve", "--by", "alice", "--fingerprint", "0" * 64)
    assert stale.returncode == 1 and "fingerprint" in one_line_error(stale)
    assert await ledger_dump(stack.database_url) == before

    ok = await cli("approve", env, "--stage", "resolve", "--by", "alice", "--comment", "evidence says absent")
    assert ok.returncode == 0, ok.stderr
    assert "resolve approved by alice" in ok.stdout
    at_deploy = await cli("watch", env)
    assert at_deploy.returncode == 0 and "waiting for approval of stage 'deploy'" in at_deploy.stderr

    ok = await cli("approve", env, "--stage", "deploy", "--by", "bob", "--fingerprint", fingerprint)
    assert ok.returncode == 0, ok.stderr
    done = await cli("watch", env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outcome: succeeded" in done.stdout

    conn = await asyncpg.connect(stack.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM landing_page_content") == 5
    finally:
        await conn.close()

    report = await cli("show", env, "--format", "markdown")
    assert report.returncode == 0, report.stderr
    md = report.stdout
    assert "Requested by: carol" in md
    assert "**succeeded**" in md
    assert "| approve | resolve | alice | update | yes | evidence says absent |" in md
    assert "| approve | deploy | bob | update | yes |" in md
    assert "**refused**" in md and "carol" in md  # the self-approval attempt is on record
    assert "### SQL of `20241226000000_add_leads_questionnaire_models`" in md
    assert 'CREATE TABLE "leads"' in md

    audit = json.loads((await cli("show", env, "--json")).stdout)
    applied = [a["name"] for a in audit["status"]["applied"]]
    assert applied == ["20241226000000_add_leads_questionnaire_models", "20260115000000_add_landing_sections"]
    bundle_checksums = {m["name"]: m["checksum"] for m in audit["request"]["bundle"]["migrations"]}
    for a in audit["status"]["applied"]:
        assert a["checksum"] == bundle_checksums[a["name"]]
    stages = [s["stage"] for s in audit["stages"]]
    assert stages[0] == "preflight" and "deploy" in stages and "verify" in stages

    listed = json.loads((await cli("runs", "--env", env, "--json")).stdout)
    assert [(r["environment"], r["outcome"], r["requested_by"]) for r in listed] == [(env, "succeeded", "carol")]


async def test_reject_leaves_the_database_unchanged(stack: Stack) -> None:
    cli, env = stack.cli, stack.environment
    before = await ledger_dump(stack.database_url)
    started = await cli("deploy", "--env", env, "--migrations-dir", str(INCIDENT_DIR), "--requested-by", "carol")
    assert started.returncode == 0, started.stderr
    rejected = await cli("reject", env, "--stage", "resolve", "--by", "bob", "--comment", "not tonight")
    assert rejected.returncode == 0 and "rejected by bob" in rejected.stdout
    done = await cli("watch", env)
    assert done.returncode == 1
    assert "outcome: rejected" in done.stdout and "not tonight" in done.stdout
    assert await ledger_dump(stack.database_url) == before

    by_outcome = json.loads((await cli("runs", "--env", env, "--outcome", "rejected", "--json")).stdout)
    assert len(by_outcome) == 1 and by_outcome[0]["outcome"] == "rejected"
    assert json.loads((await cli("runs", "--env", env, "--outcome", "succeeded", "--json")).stdout) == []

    report = (await cli("show", env, "--format", "markdown")).stdout
    assert "**rejected**" in report and "| reject | resolve | bob | update | yes | not tonight |" in report


async def test_deploy_wait_exit_code_follows_the_outcome(dev_env, database_url: str) -> None:
    """`deploy --wait` exits 0 only when the run succeeded (an environment without gates)."""
    environment = f"dev{uuid.uuid4().hex[:6]}"
    worker = new_worker(dev_env.client, make_settings(environment, database_url))
    cli = Cli({"MIGRATOR_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
               "MIGRATOR_TASK_QUEUE": worker.task_queue})
    async with worker:
        ok = await cli("deploy", "--env", environment, "--migrations-dir", str(INCIDENT_DIR), "--wait", "--json")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        result = json.loads(ok.stdout)
        assert result["outcome"] == "succeeded" and result["run_id"]
        assert PG_TEST_PASSWORD not in ok.stdout + ok.stderr

        unknown = await cli("deploy", "--env", "nosuchenv", "--migrations-dir", str(INCIDENT_DIR), "--wait")
        assert unknown.returncode == 1
        assert "unknown environment 'nosuchenv'" in unknown.stdout + unknown.stderr
        assert environment in unknown.stdout + unknown.stderr  # says which ones the worker knows


@pytest.mark.parametrize("real_process", [False, True], ids=["in-process", "subprocess"])
async def test_errors_are_one_clear_line(dev_env, tmp_path: Path, real_process: bool) -> None:
    address = dev_env.client.service_client.config.target_host
    cli = Cli({"MIGRATOR_TEMPORAL_ADDRESS": address}, subprocess=real_process)

    unreachable = await Cli({"MIGRATOR_TEMPORAL_ADDRESS": "127.0.0.1:1"}, subprocess=real_process)("runs")
    assert unreachable.returncode == 3
    assert "cannot reach Temporal at 127.0.0.1:1" in one_line_error(unreachable)

    never = f"never{uuid.uuid4().hex[:6]}"
    unknown_run = await cli("show", never)
    assert unknown_run.returncode == 3 and f"no run prisma-deploy-{never}" in one_line_error(unknown_run)
    unknown_approve = await cli("approve", never, "--stage", "deploy", "--by", "alice")
    assert unknown_approve.returncode == 3 and "no run" in one_line_error(unknown_approve)

    broken = tmp_path / "migrations"
    (broken / "20240101000000_init").mkdir(parents=True)
    (broken / "20240101000000_init" / "migration.sql").write_text("SELECT 1;\n")
    (broken / "migration_lock.toml").write_text('provider = "mysql"\n')  # Prisma refuses it too (P3019)
    deploy = await cli("deploy", "--env", "prod", "--migrations-dir", str(broken))
    status = await Cli({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}, subprocess=real_process)(
        "status", "--migrations-dir", str(broken))
    assert deploy.returncode == 3 and status.returncode == 3
    assert one_line_error(deploy) == one_line_error(status)  # the same words as `status`
    assert "P3019" in one_line_error(deploy)

    bad_date = await cli("runs", "--since", "yesterday")
    assert bad_date.returncode == 3 and "--since" in one_line_error(bad_date)


async def test_plan_for_an_unknown_environment_is_one_clear_line(stack: Stack) -> None:
    plan = await stack.cli("plan", "--env", "nowhere", "--migrations-dir", str(INCIDENT_DIR))
    assert plan.returncode == 3
    message = one_line_error(plan)
    assert "no plan for 'nowhere'" in message and "unknown environment 'nowhere'" in message
    assert stack.environment in message  # the environments this worker knows
