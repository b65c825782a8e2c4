"""`starter.py sign`: OpenSSH signs the canonical statement (key file or ssh-agent) and the CLI prints
the one-line JSON an approver pastes into the Temporal UI. The end-to-end test signs for a real run
waiting at its gate (dev server, worker, PostgreSQL in the incident's state) and checks the result
with our verifier and with `ssh-keygen -Y verify`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cli.sign import SigningError, sign_message
from devstack.incident import reproduce_incident
from domain.allowed_signers import parse_allowed_signers
from domain.approval_proof import (
    NAMESPACE,
    ApprovalStatement,
    Proven,
    payload_json,
    signed_payload,
    verify_approval,
)
from domain.models import ApprovalAnswer
from tests.helpers import incident_request, make_settings, new_worker, start, wait_gate
from tests.ssh_keys import keygen_verifies, make_key

REPO = Path(__file__).resolve().parent.parent
STATEMENT = ApprovalStatement("prisma-deploy-prod", "0194f3a2-7c1e-7d55-9f5c-6d0b1e2a3c4d", "deploy", "approve",
                              "alice", "ab" * 32)


def allowed_for(who: str, key) -> list:
    return parse_allowed_signers(f"{who} {key.public}\n")


def test_the_payload_is_one_line_with_the_signature_whole(tmp_path: Path) -> None:
    key = make_key(tmp_path, "alice", "rsa", 4096)  # the longest signature people will paste
    signature = sign_message(STATEMENT.message(), key.path)
    line = payload_json(signed_payload(STATEMENT, signature, comment="ok, reviewed the plan"))
    assert "\n" not in line and len(line) > 1000
    payload = json.loads(line)
    assert list(payload) == ["stage", "approver", "fingerprint", "workflow_id", "run_id", "comment", "signature"]
    assert payload["signature"] == signature.strip() + "\n"
    assert payload["signature"].startswith("-----BEGIN SSH SIGNATURE-----\n")
    verdict = verify_approval(payload["signature"], STATEMENT, allowed_for("alice", key),
                              at=datetime.now(timezone.utc), claims=payload)
    assert isinstance(verdict, Proven) and verdict.principal == "alice"
    assert "comment" not in json.loads(payload_json(signed_payload(STATEMENT, signature)))


def test_sign_with_a_key_file(tmp_path: Path) -> None:
    key = make_key(tmp_path, "alice", "ed25519")
    signature = sign_message(STATEMENT.message(), key.path)
    assert keygen_verifies(f"alice {key.public}\n", "alice", NAMESPACE, signature, STATEMENT.message())
    assert not keygen_verifies(f"alice {key.public}\n", "alice", "git", signature, STATEMENT.message())
    assert not list(tmp_path.glob("*.sig"))  # nothing left beside the key


def test_sign_through_ssh_agent_with_only_the_public_key(tmp_path: Path) -> None:
    key = make_key(tmp_path, "alice", "ecdsa", 256)
    socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket)}
        for _ in range(50):
            if socket.exists():
                break
            time.sleep(0.1)
        subprocess.run(["ssh-add", str(key.path)], env=env, check=True, capture_output=True)
        only_public = tmp_path / "only" / "alice.pub"
        only_public.parent.mkdir()
        shutil.copy(key.pub_path, only_public)  # no private key beside it: the agent must sign
        signature = sign_message(STATEMENT.message(), only_public, env=env)
        assert keygen_verifies(f"alice {key.public}\n", "alice", NAMESPACE, signature, STATEMENT.message())
        without_agent = {k: v for k, v in env.items() if k != "SSH_AUTH_SOCK"}
        with pytest.raises(SigningError) as err:
            sign_message(STATEMENT.message(), only_public, env=without_agent)
        assert str(err.value).startswith(f"ssh-keygen could not sign with {only_public}: ")
        assert "\n" not in str(err.value)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=10)


def test_signing_errors_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(SigningError) as err:
        sign_message(b"x", tmp_path / "nope")
    assert str(err.value) == (f"no key file {tmp_path / 'nope'}: give your private key, "
                              "or its .pub with the key loaded in ssh-agent")
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("hello\n")
    with pytest.raises(SigningError) as err:
        sign_message(b"x", not_a_key)
    assert str(err.value).startswith(f"ssh-keygen could not sign with {not_a_key}: ")


async def test_sign_a_waiting_run_and_paste_the_json(dev_env, database_url: str, tmp_path: Path) -> None:
    await reproduce_incident(database_url)
    environment = f"prod{uuid.uuid4().hex[:6]}"
    key = make_key(tmp_path, "alice", "ed25519")
    settings = make_settings(environment, database_url, gates=["resolve", "deploy"], approvers=["alice", "bob"],
                             allow_self_approval=False, approval_proofs=["ssh"], allowed_signers=f"alice {key.public}\n")
    cli_env = {
        **os.environ,
        "MIGRATOR_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "MIGRATOR_ENVIRONMENTS": "{}",
        "DATABASE_URL": "",
    }

    def starter(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "starter.py"), *args], env=cli_env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    async with new_worker(dev_env.client, settings) as worker:
        handle = await start(dev_env.client, worker, incident_request(environment, requested_by="carol"),
                             workflow_id=f"prisma-deploy-{environment}")
        status = await wait_gate(handle, "resolve")
        run_id = (await handle.describe()).run_id

        done = await asyncio.to_thread(starter, "sign", environment, "--stage", "resolve", "--by", "alice",
                                       "--key", str(key.path), "-m", "checked the plan")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 1  # exactly the line to paste, nothing else on stdout
        payload = json.loads(lines[0])
        assert (payload["workflow_id"], payload["run_id"], payload["fingerprint"]) == (
            handle.id, run_id, status.plan.fingerprint)
        assert "Send an Update → approve_update" in done.stderr and key.fingerprint in done.stderr
        statement = ApprovalStatement(handle.id, run_id, "resolve", "approve", "alice", status.plan.fingerprint)
        assert keygen_verifies(f"alice {key.public}\n", "alice", NAMESPACE, payload["signature"], statement.message())
        verdict = verify_approval(payload["signature"], statement, allowed_for("alice", key),
                                  at=datetime.now(timezone.utc), claims=payload)
        assert isinstance(verdict, Proven)

        # The workflow proves it, from the payload as it is pasted.
        answer = await handle.execute_update("approve_update", payload, result_type=ApprovalAnswer)
        assert answer.accepted and answer.message == f"resolve approved by alice (proven by SSH key {key.fingerprint})"

        # A gate the run does not have, and a decision that does not exist: one line, nothing printed.
        for args, error in (
            (["--stage", "verify"], f"error: run {handle.id} has no 'verify' gate (its gates: resolve, deploy)"),
            (["--stage", "deploy", "--decision", "maybe"], "error: unknown decision 'maybe': approve or reject"),
            (["--stage", "resolve"], f"error: the 'resolve' gate of run {handle.id} was already passed"),
        ):
            if args == ["--stage", "resolve"]:
                await wait_gate(handle, "deploy")
            refused = await asyncio.to_thread(starter, "sign", environment, *args, "--by", "alice",
                                              "--key", str(key.path))
            assert refused.returncode != 0 and refused.stdout == ""
            assert refused.stderr.strip() == error, refused.stderr
        await handle.terminate("test over")
