"""`starter.py rollout ...` as a user drives it, in-process, against the dev server, a worker and real
PostgreSQL: start a promotion, approve prod's plan with an SSH-signed approval (prod's rules, as
for a single run), watch it end, read the audit; pause, resume and cancel another; one-line errors."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from runtime.settings import EnvironmentSettings, Settings
from tests.helpers import new_worker, run_cli_in_process
from tests.rollout_fakes import wait_rollout
from tests.rollout_helpers import BUNDLE, deployed_once, holdings
from tests.ssh_keys import make_key
from tests.torture.harness import write_folder


@pytest.fixture(scope="module")
def alice_key(tmp_path_factory):
    return make_key(tmp_path_factory.mktemp("rollout-keys"), "alice", "ed25519")


@pytest.fixture
async def stack(dev_env, pg_server, tmp_path: Path, alice_key):
    dbs = [await pg_server.create_database("cli") for _ in range(2)]
    tag = uuid.uuid4().hex[:6]
    staging, prod = f"staging{tag}", f"prod{tag}"
    settings = Settings(environments={
        staging: EnvironmentSettings(database_url=pg_server.url(dbs[0]), gates=[]),
        # Production's rules: only SSH-signed approvals count, by alice's key.
        prod: EnvironmentSettings(database_url=pg_server.url(dbs[1]), gates=["deploy"], approvers=["alice", "bob"],
                                  allow_self_approval=False, allowed_signers=f"alice {alice_key.public}\n"),
    }, advisory_lock_timeout=timedelta(seconds=5), _env_file=None)
    folder = write_folder(tmp_path / "migrations", BUNDLE)
    worker = new_worker(dev_env.client, settings)
    env = {"MIGRATOR_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
           "MIGRATOR_TASK_QUEUE": worker.task_queue, "MIGRATOR_ENVIRONMENTS": "{}", "DATABASE_URL": "",
           "USER": "carol"}

    async def cli(*args: str):
        return await run_cli_in_process(list(args), env)

    async with worker:
        yield cli, staging, prod, folder, [pg_server.url(d) for d in dbs]
    for d in dbs:
        await pg_server.drop_database(d)


async def test_start_approve_watch_show(stack, alice_key) -> None:
    cli, staging, prod, folder, urls = stack
    name = f"promo{uuid.uuid4().hex[:6]}"
    started = await cli("rollout", "start", "--stages", f"{staging},{prod}", "-d", str(folder), "--name", name)
    assert started.returncode == 0, started.stderr
    assert f"started rollout prisma-rollout-{name}/" in started.stdout
    # It follows the rollout until prod's gate, and says exactly how to approve.
    assert f"waiting before wave 2 ({prod}" in started.stderr
    line = next(ln for ln in started.stderr.splitlines() if "starter.py approve" in ln)
    fingerprint = line.split("--fingerprint ")[1].split()[0]
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint) and line.endswith("--sign-with YOUR_KEY"), line
    assert deployed_once(await holdings(urls[0])) and (await holdings(urls[1]))["tables"] == set()

    refused = await cli("approve", f"prisma-rollout-{name}", "--stage", "deploy", "--by", "carol",
                        "--fingerprint", fingerprint)
    assert refused.returncode == 1 and "carol is not an approver" in refused.stderr
    typed = await cli("approve", f"prisma-rollout-{name}", "--stage", "deploy", "--by", "alice", "--fingerprint",
                      fingerprint)
    assert typed.returncode == 1 and "accepts only SSH-signed approvals" in typed.stderr
    ok = await cli("approve", f"prisma-rollout-{name}", "--stage", "deploy", "--by", "alice", "--fingerprint",
                   fingerprint, "--comment", "staging looks good", "--sign-with", str(alice_key.path))
    assert ok.returncode == 0 and "approved by alice" in ok.stdout, ok.stderr

    watched = await cli("rollout", "watch", name)
    assert watched.returncode == 0 and "outcome: succeeded — 2/2 database(s) succeeded" in watched.stdout, watched.stderr
    assert deployed_once(await holdings(urls[1]))

    shown = await cli("rollout", "show", name, "--format", "markdown")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "- Outcome: **succeeded**" in text and "Requested by: carol" in text
    assert "| approve | deploy of plan" in text and "| alice | update | yes | staging looks good |" in text
    assert "carol is not an approver" in text  # the refused attempt is in the audit too
    assert f"| `{prod}` | succeeded |" in text and "| rollout | 2 |" in text
    assert "SQL of the bundle" in text and 'CREATE TABLE "accounts"' in text
    assert "Messages received" in text and "approve_update" in text and f"'fingerprint': '{fingerprint}'" in text
    as_json = json.loads((await cli("rollout", "show", name, "--json")).stdout)
    assert as_json["status"]["outcome"] == "succeeded" and len(as_json["runs"]) == 1
    # prod's own run took the rollout's approval only after checking alice's signature itself.
    prod_result = next(r for r in as_json["status"]["waves"][1]["results"].values())
    prod_run = json.loads((await cli("show", f"prisma-deploy-{prod}/{prod_result['run_id']}", "--json")).stdout)
    taken = [a for a in prod_run["status"]["approvals"] if a["via"] == "rollout"]
    assert [(a["approver"], a["proof"], a["principal"], a["accepted"]) for a in taken] == [("alice", "ssh", "alice", True)]


async def test_pause_resume_cancel_and_errors(stack, alice_key, dev_env) -> None:
    cli, staging, prod, folder, urls = stack
    name = f"ctl{uuid.uuid4().hex[:6]}"
    started = await cli("rollout", "start", "--stages", f"{staging},{prod}", "-d", str(folder), "--name", name)
    assert started.returncode == 0, started.stderr
    paused = await cli("rollout", "pause", name, "--by", "dave", "--reason", "incident")
    assert paused.returncode == 0 and "pause by dave" in paused.stdout
    # What `starter.py sign` prints is pasted into the UI's Send a Signal: it opens the gate, but
    # the paused rollout starts nothing.
    signed = await cli("sign", f"prisma-rollout-{name}", "--stage", "deploy", "--by", "alice", "--key",
                       str(alice_key.path))
    assert signed.returncode == 0, signed.stderr
    payload = json.loads(signed.stdout)
    assert payload["workflow_id"] == f"prisma-rollout-{name}" and payload["signature"].startswith("-----BEGIN")
    handle = dev_env.client.get_workflow_handle(f"prisma-rollout-{name}")
    await handle.signal("approve", payload)
    status = await wait_rollout(handle, lambda s: s.phase == "paused")
    assert [(a.record.approver, a.record.proof, a.record.accepted) for a in status.attempts] == [("alice", "ssh", True)]
    assert (await holdings(urls[1]))["tables"] == set()
    again = await cli("rollout", "pause", name, "--by", "dave")
    assert again.returncode == 1 and "refused: the rollout is paused already" in again.stderr
    assert (await cli("rollout", "resume", name, "--by", "dave")).returncode == 0
    cancelled = await cli("rollout", "cancel", name, "--by", "erin", "--reason", "wrong window")
    assert cancelled.returncode == 0, cancelled.stderr
    watched = await cli("rollout", "watch", name)
    assert watched.returncode == 1 and "outcome: cancelled" in watched.stdout and "erin cancelled" in watched.stdout
    assert (await holdings(urls[1]))["tables"] == set()
    late = await cli("rollout", "resume", name, "--by", "dave")
    assert late.returncode == 3 and "has already ended" in late.stderr
    shown = (await cli("rollout", "show", name, "--format", "markdown")).stdout
    assert "**pause** by dave: incident" in shown and "**cancel** by erin: wrong window" in shown

    busy = await cli("rollout", "start", "--stages", f"{staging}", "-d", str(folder), "--name", name, "--waves", "0")
    assert busy.returncode == 3 and busy.stderr.startswith("error: wave '0' is not a count")
    twice = await cli("rollout", "start", "--stages", f"{staging},{staging}", "-d", str(folder))
    assert twice.returncode == 3 and "distinct names" in twice.stderr
    missing = await cli("rollout", "show", "nope-never-started")
    assert missing.returncode == 3 and "no run prisma-rollout-nope-never-started" in missing.stderr
