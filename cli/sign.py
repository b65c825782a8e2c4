"""`starter.py sign`: sign an approval with your SSH key, for pasting into the Temporal UI.

The Temporal UI sends whatever JSON is typed into it, under no verified name (docs/approver-identity.md),
so a proven approval carries its own proof: an SSH signature (`ssh-keygen -Y sign`, the tool git's
commit signing uses) over the canonical statement of domain/approval_proof.py, checked by the
workflow against the environment's allowed signers. The signing is done by OpenSSH itself, so any
key it can use works: a private key file (its passphrase asked on the terminal), or a `.pub` file
whose private half is held by ssh-agent (SSH_AUTH_SOCK), a hardware token's agent included.

The JSON goes to stdout alone, on one line, so it can be piped (`| pbcopy`, `| xclip`) and is never
wrapped; the explanation goes to stderr. Without --key, the key is the one ssh-agent holds that the
run's allowed signers list for the approver (`signing_key`, shared with `approve --sign-with`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import typer

from cli.app import app
from cli.common import describe_or_fail, err_console, fail, load_settings, resolve_run, run, temporal
from cli.rollout_approve import rollout_statement
from domain.allowed_signers import AllowedSignersError, parse_allowed_signers
from domain.approval_proof import (
    DECISIONS,
    NAMESPACE,
    STAGES,
    ApprovalStatement,
    Refused,
    payload_json,
    signed_payload,
    verify_approval,
)
from domain.models import RunStatus
from domain.sshsig import SshSigError, parse_armored
from workflows.rollout_start import ROLLOUT_WORKFLOW_NAME

SIGN_TIMEOUT_SECONDS = 300  # long enough to type a passphrase or touch a security key


class SigningError(Exception):
    """ssh-keygen could not sign; the message is one sentence saying what to do."""


def sign_message(
    message: bytes,
    key: Path,
    *,
    namespace: str = NAMESPACE,
    env: Mapping[str, str] | None = None,
    timeout: float = SIGN_TIMEOUT_SECONDS,
) -> str:
    """The armored signature `ssh-keygen -Y sign -f KEY -n NAMESPACE` makes over `message`.

    The message is written to a private temporary file rather than piped in, so ssh-keygen's
    standard input stays the terminal and it can ask for a passphrase there."""
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise SigningError("ssh-keygen not found: install OpenSSH's client tools (Debian/Ubuntu: openssh-client)")
    key = key.expanduser()
    if not key.is_file():
        raise SigningError(f"no key file {key}: give your private key, or its .pub with the key loaded in ssh-agent")
    with tempfile.TemporaryDirectory(prefix="approval-") as tmp:
        statement = Path(tmp) / "approval.txt"
        statement.write_bytes(message)
        try:
            done = subprocess.run(
                [keygen, "-Y", "sign", "-f", str(key), "-n", namespace, str(statement)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout,
                env=dict(env) if env is not None else None,
            )
        except subprocess.TimeoutExpired:
            raise SigningError(f"ssh-keygen did not finish signing within {timeout:.0f} s") from None
        signature_file = Path(f"{statement}.sig")
        if done.returncode != 0 or not signature_file.is_file():
            raise SigningError(f"ssh-keygen could not sign with {key}: {_reason(done.stderr, key)}")
        signature = signature_file.read_text(encoding="ascii")
    try:
        parse_armored(signature)
    except SshSigError as exc:
        raise SigningError(f"ssh-keygen's output is not a usable signature: {exc}") from None
    return signature


def _reason(stderr: str, key: Path) -> str:
    lines = [line.strip() for line in (stderr or "").splitlines()
             if line.strip() and not line.startswith(("Signing file", "Write signature"))]
    text = lines[-1] if lines else "no reason given"
    if key.suffix == ".pub" and ("agent" in text.lower() or "private key" in text.lower()):
        text += " (a .pub key signs through ssh-agent: is SSH_AUTH_SOCK set and the key added with ssh-add?)"
    return text


def statement_for(workflow_id: str, run_id: str, status: RunStatus, stage: str, decision: str,
                  approver: str, no_backup: list[str] | None = None) -> ApprovalStatement:
    """The statement to sign for this run, from what its `status` query says. Fails (one line)
    when the run cannot take this decision, rather than printing a signature that will be refused."""
    if stage not in STAGES:
        fail(f"unknown stage '{stage}': gates are named {', '.join(STAGES)}")
    if decision not in DECISIONS:
        fail(f"unknown decision '{decision}': approve or reject")
    if status.plan is None or not status.plan.fingerprint:
        fail(f"run {workflow_id} has no plan yet (preflight is still running): sign when it waits at a gate")
    gates = status.policy.gates if status.policy else []
    if stage not in gates:
        fail(f"run {workflow_id} has no '{stage}' gate (its gates: {', '.join(gates) or 'none'})")
    if stage in status.gates_passed:
        fail(f"the '{stage}' gate of run {workflow_id} was already passed")
    needed = sorted(status.plan.no_backup) if stage == "deploy" and decision == "approve" else []
    check_no_backup(needed, no_backup)
    statement = ApprovalStatement(workflow_id, run_id, stage, decision, approver, status.plan.fingerprint,
                                  no_backup=tuple(needed))
    problem = statement.problem()
    if problem:
        fail(problem)
    return statement


def check_no_backup(needed: list[str], given: list[str] | None) -> None:
    """Fails (one line) unless --no-backup names exactly the migrations this decision must
    acknowledge to run without a backup."""
    if sorted(set(given or [])) != sorted(needed):
        fail(("the plan runs " + ", ".join(needed) + " without a backup of the data it destroys: sign with "
              + " ".join(f"--no-backup {n}" for n in needed)) if needed else
             "this plan needs no acknowledgement of a missing backup for this decision: leave --no-backup out")


def agent_key_for(approver: str, status: RunStatus, env: Mapping[str, str] | None = None) -> str | None:
    """The public key (`TYPE BASE64`) ssh-agent holds that the run's allowed signers list for
    `approver`, or None (no agent, no such key, or the run lists no signers)."""
    env = dict(env if env is not None else os.environ)
    if not env.get("SSH_AUTH_SOCK") or not status.policy or not status.policy.allowed_signers:
        return None
    try:
        listed = [s for s in parse_allowed_signers(status.policy.allowed_signers) if s.allows_principal(approver)]
    except AllowedSignersError:
        return None
    ssh_add = shutil.which("ssh-add")
    if not listed or ssh_add is None:
        return None
    try:
        held = subprocess.run([ssh_add, "-L"], capture_output=True, text=True, timeout=10, env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in held.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(s.holds(parts[0], blob) for s in listed):
            return f"{parts[0]} {parts[1]}"
    return None


@contextmanager
def signing_key(key: Path | None, approver: str, status: RunStatus) -> Iterator[Path | None]:
    """The key file to give ssh-keygen: `key` as given, else a temporary .pub of the agent's key
    listed for `approver` (ssh-keygen then signs through the agent), else None."""
    if key is not None:
        yield key
        return
    public = agent_key_for(approver, status)
    if public is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="approval-key-") as tmp:
        path = Path(tmp) / "agent-key.pub"
        path.write_text(public + "\n", encoding="ascii")
        yield path


def check_against_policy(status: RunStatus, statement: ApprovalStatement, signature: str) -> None:
    """Check the signature against the run's allowed signers here too, so a wrong key is said
    before anything is pasted or sent."""
    signers = status.policy.allowed_signers if status.policy else None
    if not signers:
        return
    try:
        allowed = parse_allowed_signers(signers)
    except AllowedSignersError:
        return  # the worker reports its own settings
    verdict = verify_approval(signature, statement, allowed, at=datetime.now(timezone.utc))
    if isinstance(verdict, Refused):
        fail(f"this signature would be refused: {verdict.reason}", exit_code=1)


def signed_run_id(desc) -> str:
    """The run id an approval is signed for: the run's first execution id (what the workflow checks;
    the same as the run id unless the run was reset)."""
    first = getattr(desc.raw_description.workflow_execution_info, "first_run_id", "")
    return first or desc.run_id


RunArg = typer.Argument(..., help="Environment name, workflow id, or WORKFLOW_ID/RUN_ID.")


@app.command("sign")
@run
async def sign(
    run_ref: str = RunArg,
    stage: str = typer.Option(..., "--stage", "-s", help="The gate: resolve, deploy or verify."),
    by: str = typer.Option(..., "--by", help="Your name, exactly as the allowed signers list it."),
    key: Path = typer.Option(
        None, "--key", "-k",
        help="Your SSH private key, or its .pub file with the private key in ssh-agent (SSH_AUTH_SOCK). "
             "Default: the ssh-agent key the run's allowed signers list for --by."),
    decision: str = typer.Option("approve", "--decision", help="approve or reject."),
    comment: str = typer.Option(None, "--comment", "-m", help="Why (kept in the audit; not signed)."),
    no_backup: list[str] = typer.Option(
        None, "--no-backup", help="A migration the plan runs without a backup (repeat for each): signed with the approval."),
) -> int:
    """Sign an approval (or rejection) of a waiting run with your SSH key and print the one-line JSON
    to paste into the Temporal UI (Send an Update / Send a Signal)."""
    settings = load_settings()
    client = await temporal(settings)
    handle = resolve_run(client, run_ref)
    desc = await describe_or_fail(handle)
    if desc.status is None or desc.status.name != "RUNNING":
        fail(f"run {desc.id} has already ended ({desc.status.name.lower() if desc.status else 'unknown'})")
    if desc.workflow_type == ROLLOUT_WORKFLOW_NAME:  # a rollout's gate: its ids and the plan state (or wave)
        statement, status = await rollout_statement(handle, desc.id, signed_run_id(desc), stage, decision, by, None)
        check_no_backup(list(status.no_backup), no_backup)
        statement = dataclasses.replace(statement, no_backup=status.no_backup)
    else:
        status = await handle.query("status", result_type=RunStatus)
        statement = statement_for(desc.id, signed_run_id(desc), status, stage, decision, by, no_backup)
    with signing_key(key, by, status) as key_file:
        if key_file is None:
            fail(f"no key to sign with: give --key, or add the key the allowed signers list for {by} to ssh-agent")
        try:
            signature = sign_message(statement.message(), key_file)
        except SigningError as exc:
            fail(str(exc))
    check_against_policy(status, statement, signature)
    key_fp = parse_armored(signature).key_fingerprint
    update, signal = f"{decision}_update", decision
    err_console.print(
        f"Signed: {decision} {stage} of {desc.id} (run {desc.run_id}), plan {statement.fingerprint}, "
        f"as {by} with key {key_fp}.\n"
        f"Paste the line below in the Temporal UI: More Actions → Send an Update → {update} "
        f"(a refusal stays in the dialog with its reason), or Send a Signal → {signal}.",
        markup=False, soft_wrap=True,
    )
    sys.stdout.write(payload_json(signed_payload(statement, signature, comment)) + "\n")
    sys.stdout.flush()
    return 0

