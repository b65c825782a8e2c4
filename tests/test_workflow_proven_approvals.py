"""Proven approvers end to end (issue 15) on the real dev server, a worker and PostgreSQL in the
incident's state: production defaults refuse unsigned and typed approvals (nothing resolved or
applied, the refusals on top of the run's Current Details); signed approvals made by `starter.py
approve --sign-with`, the ssh-agent and `starter.py sign` are proven by the workflow, and
signatures by another key, for another run or tampered are refused and recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import asyncpg
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowUpdateFailedError

from devstack.incident import reproduce_incident
from domain.models import ApprovalAnswer, Outcome, workflow_id_for
from runtime.settings import EnvironmentSettings, Settings
from tests.helpers import (
    catalog_dump,
    final_status,
    incident_request,
    new_worker,
    run_cli_in_process,
    start,
    wait_gate,
    wait_status,
)
from tests.ssh_keys import make_key


def cli_env(dev_env) -> dict[str, str]:
    return {"MIGRATOR_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "MIGRATOR_ENVIRONMENTS": "{}", "DATABASE_URL": "", "SSH_AUTH_SOCK": ""}


async def current_details(handle) -> str:
    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return meta.current_details


def attempt_lines(details: str) -> list[str]:
    top = details.split("\n---\n", 1)[0]
    return [line for line in top.splitlines() if line.startswith("- ")]


async def dump(database_url: str) -> dict:
    conn = await asyncpg.connect(database_url)
    try:
        return await catalog_dump(conn)
    finally:
        await conn.close()


@contextmanager
def ssh_agent(tmp_path: Path, *keys) -> Iterator[str]:
    socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if socket.exists():
                break
            time.sleep(0.1)
        for key in keys:
            subprocess.run(["ssh-add", str(key.path)], env={**os.environ, "SSH_AUTH_SOCK": str(socket)},
                           check=True, capture_output=True)
        yield str(socket)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=10)


async def test_production_defaults_refuse_an_unsigned_cli_approval_and_a_typed_ui_signal(
        dev_env, database_url: str) -> None:
    await reproduce_incident(database_url)
    env = f"prod{uuid.uuid4().hex[:6]}"
    # Only what the issue names: the database, the approvers, no self-approval. Everything else is default.
    settings = Settings(environments={env: EnvironmentSettings(database_url=database_url, approvers=["alice", "bob"],
                                                               allow_self_approval=False)},
                        advisory_lock_timeout=timedelta(seconds=2), _env_file=None)
    before = await dump(database_url)
    async with new_worker(dev_env.client, settings) as worker:
        handle = await start(dev_env.client, worker, incident_request(env, requested_by="carol"),
                             workflow_id=workflow_id_for(env))
        status = await wait_gate(handle, "resolve")
        fingerprint = status.plan.fingerprint

        unsigned = await run_cli_in_process(["approve", env, "--stage", "resolve", "--by", "alice"], cli_env(dev_env))
        assert unsigned.returncode == 1, unsigned.stdout + unsigned.stderr
        error = unsigned.stderr.strip()
        assert error.startswith("error: refused: the approval is not signed, and "
                                f"{env} accepts only SSH-signed approvals"), error
        assert "\n" not in error and "Traceback" not in error
        # The CLI showed the plan it was approving, with the whole fingerprint, and sent it.
        assert "You approve the 'resolve' gate of this plan:" in unsigned.stdout
        assert f"fingerprint: {fingerprint}" in unsigned.stdout

        # What a person types into the UI's Send a Signal dialog, claiming to be bob.
        await handle.signal("approve", {"stage": "resolve", "approver": "bob", "comment": "typed in the UI",
                                        "fingerprint": fingerprint})
        status = await wait_status(handle, lambda s: len(s.approvals) == 2)
        assert [(a.approver, a.via, a.accepted, a.proof) for a in status.approvals] == [
            ("alice", "update", False, None), ("bob", "signal", False, None)]
        assert status.awaiting == "resolve" and status.gates_passed == []
        assert status.resolved == [] and status.applied == []

        details = await current_details(handle)
        assert details.startswith("#### Latest approval attempts (newest first; 2 in all)")
        first, second = attempt_lines(details)
        assert first.startswith("- **REFUSED**: approve **resolve** by bob via signal") and "not signed" in first
        assert second.startswith("- **REFUSED**: approve **resolve** by alice via update")
        assert "lists no allowed signers yet" in first
        assert "Waiting for approval: **resolve**" in details
        # Where the details point for the full SQL: the audit of the waiting run holds what it will run.
        shown = await run_cli_in_process(["show", env, "--format", "markdown"], cli_env(dev_env))
        assert "## SQL the plan will run" in shown.stdout
        assert "### SQL of `20241226000000_add_leads_questionnaire_models`" in shown.stdout
        await handle.terminate("test over")
    assert await dump(database_url) == before, "nothing may be resolved or applied"


async def test_signed_approvals_are_proven_and_wrong_signatures_refused_and_recorded(
        dev_env, database_url: str, tmp_path: Path) -> None:
    await reproduce_incident(database_url)
    env = f"prod{uuid.uuid4().hex[:6]}"
    keys = {who: make_key(tmp_path, who, "ed25519") for who in ("alice", "bob", "mallory")}
    settings = Settings(environments={env: EnvironmentSettings(
        database_url=database_url, approvers=["alice", "bob"], required_approvals={"low": 2, "medium": 2, "high": 2},
        allowed_signers=[f"alice {keys['alice'].public}", f"bob {keys['bob'].public}"])},
        advisory_lock_timeout=timedelta(seconds=2), _env_file=None)
    cli = cli_env(dev_env)
    async with new_worker(dev_env.client, settings) as worker:
        handle = await start(dev_env.client, worker, incident_request(env, requested_by="carol"),
                             workflow_id=workflow_id_for(env))
        status = await wait_gate(handle, "resolve")

        # alice, with her key file.
        ok = await run_cli_in_process(["approve", env, "--stage", "resolve", "--by", "alice", "--sign-with",
                                       str(keys["alice"].path), "-m", "evidence says absent"], cli)
        assert ok.returncode == 0, ok.stderr
        assert f"resolve approved by alice (proven by SSH key {keys['alice'].fingerprint}); 1/2" in ok.stdout
        # mallory's key claiming to be bob: sent, refused by the workflow, and on record.
        wrong_key = await run_cli_in_process(["approve", env, "--stage", "resolve", "--by", "bob", "--sign-with",
                                              str(keys["mallory"].path)], cli)
        assert wrong_key.returncode == 1
        assert f"the signing key {keys['mallory'].fingerprint} is not in this environment's allowed signers" \
            in wrong_key.stderr

        # bob through `starter.py sign`, the line an approver pastes into the UI.
        signed = await run_cli_in_process(["sign", env, "--stage", "resolve", "--by", "bob", "--key",
                                           str(keys["bob"].path)], cli)
        assert signed.returncode == 0, signed.stderr
        payload = json.loads(signed.stdout)
        tampered = {**payload, "approver": "alice"}
        other_run = {**payload, "run_id": str(uuid.uuid4())}
        for bad, reason in ((tampered, "was made by bob, but the approval says alice"),
                            (other_run, "this approval is for run")):
            try:
                await handle.execute_update("approve_update", bad, result_type=ApprovalAnswer)
                raise AssertionError("a wrong signature was accepted")
            except WorkflowUpdateFailedError as err:
                assert reason in err.cause.message
                assert not err.cause.failure.stack_trace  # one sentence in the UI's dialog
        await handle.signal("approve", payload)  # as pasted into Send a Signal
        status = await wait_gate(handle, "deploy")
        assert status.gates_passed == ["resolve"]

        # The deploy gate: bob through his ssh-agent (no key named), alice with her file.
        with ssh_agent(tmp_path, keys["bob"]) as sock:
            by_agent = await run_cli_in_process(["approve", env, "--stage", "deploy", "--by", "bob"],
                                                {**cli, "SSH_AUTH_SOCK": sock})
        assert by_agent.returncode == 0, by_agent.stderr
        assert f"proven by SSH key {keys['bob'].fingerprint}" in by_agent.stdout
        ok = await run_cli_in_process(["approve", env, "--stage", "deploy", "--by", "alice", "--sign-with",
                                       str(keys["alice"].path)], cli)
        assert ok.returncode == 0, ok.stderr
        final = await final_status(handle)
        details = await current_details(handle)

    assert final.outcome == Outcome.succeeded, final.error
    accepted = [(a.stage, a.principal, a.proof, a.key_fingerprint, a.via) for a in final.approvals if a.accepted]
    assert accepted == [
        ("resolve", "alice", "ssh", keys["alice"].fingerprint, "update"),
        ("resolve", "bob", "ssh", keys["bob"].fingerprint, "signal"),
        ("deploy", "bob", "ssh", keys["bob"].fingerprint, "update"),
        ("deploy", "alice", "ssh", keys["alice"].fingerprint, "update"),
    ]
    refused = [a for a in final.approvals if not a.accepted]
    assert len(refused) == 3 and refused[0].key_fingerprint == keys["mallory"].fingerprint
    # The finished run's details are its record.
    assert details.startswith("### Run succeeded on `" + env + "`")
    assert "accepted: approve **resolve** by alice via update" in details
    assert f"proven: SSH key `{keys['bob'].fingerprint}` of bob" in details
    assert "3 refused attempt(s)" in details
    assert "applied `20241226000000_add_leads_questionnaire_models`" in details
    assert "PASS" in details

    report = await run_cli_in_process(["show", workflow_id_for(env), "--format", "markdown"], cli)
    assert f"| ssh {keys['alice'].fingerprint} |" in report.stdout, report.stdout


async def test_a_reset_run_keeps_its_signed_approvals(dev_env, database_url: str, tmp_path: Path) -> None:
    """Approvals are signed over the run's first execution id, so a run reset by an operator replays
    the approvals it had (a signature over the old run id would not verify in the new run) and
    takes new ones signed the same way."""
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.enums.v1 import EventType
    from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

    await reproduce_incident(database_url)
    env = f"prod{uuid.uuid4().hex[:6]}"
    keys = {who: make_key(tmp_path, who, "ed25519") for who in ("alice", "bob")}
    settings = Settings(environments={env: EnvironmentSettings(
        database_url=database_url, approvers=["alice", "bob"],
        allowed_signers=[f"alice {keys['alice'].public}", f"bob {keys['bob'].public}"])},
        advisory_lock_timeout=timedelta(seconds=2), _env_file=None)
    cli = cli_env(dev_env)
    async with new_worker(dev_env.client, settings) as worker:
        handle = await start(dev_env.client, worker, incident_request(env, requested_by="carol"),
                             workflow_id=workflow_id_for(env))
        await wait_gate(handle, "resolve")
        ok = await run_cli_in_process(["approve", env, "--stage", "resolve", "--by", "alice", "--sign-with",
                                       str(keys["alice"].path)], cli)
        assert ok.returncode == 0, ok.stderr
        await wait_gate(handle, "deploy")
        first_run = handle.result_run_id
        history = await handle.fetch_history()
        last_task = max(e.event_id for e in history.events
                        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
        reset = await dev_env.client.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
            namespace=dev_env.client.namespace, workflow_execution=WorkflowExecution(workflow_id=handle.id,
                                                                                     run_id=first_run),
            reason="operator reset in a test", workflow_task_finish_event_id=last_task, request_id=str(uuid.uuid4())))
        assert reset.run_id != first_run
        new = dev_env.client.get_workflow_handle(handle.id, run_id=reset.run_id)
        status = await wait_gate(new, "deploy")
        assert status.gates_passed == ["resolve"] and status.approvals[0].proof == "ssh"
        ok = await run_cli_in_process(["approve", env, "--stage", "deploy", "--by", "bob", "--sign-with",
                                       str(keys["bob"].path)], cli)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        final = await final_status(new)
    assert final.outcome == Outcome.succeeded, final.error
    assert [(a.principal, a.proof) for a in final.approvals if a.accepted] == [("alice", "ssh"), ("bob", "ssh")]
