"""Over the backup limit, "no backup" is approved explicitly (issue 13 item 3): the deploy gate's
approval must name exactly the migrations the plan runs without a backup of the data they
destroy, a signed approval signs that list (format v2 of the approval statement; every other
approval stays v1), the acknowledgement is shown in the plan, the UI's details and the audit, and
an environment without a deploy gate cannot accept "no backup" at all.

Pure rules first, then real runs: the Temporal CLI dev server, a worker with the real activities,
real PostgreSQL, real SSH keys and the real CLI (`starter.py approve --no-backup`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import WorkflowUpdateFailedError

from domain import approval, details
from domain.allowed_signers import parse_allowed_signers
from domain.approval_proof import NAMESPACE, ApprovalStatement, Proven, Refused, verify_approval
from domain.models import ApprovalPolicy, BlockerCode, DeployPlan, Outcome
from runtime.settings import EnvironmentSettings, Settings
from tests.helpers import final_status, migration, new_worker, request, run_cli_in_process, start, wait_gate
from tests.ssh_keys import keygen_verifies, make_key, sign

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
CUSTOMERS = migration("20250101000000_customers",
                      "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, phone text);\n"
                      "INSERT INTO customers VALUES (1, 'ann', '+1 555 0101'), (2, 'bob', NULL), (3, 'cy', '+44 20');\n")
DROP_PHONE = migration("20250102000000_drop_phone", "ALTER TABLE customers DROP COLUMN phone;\n",
                       down="ALTER TABLE customers ADD COLUMN phone text;\n")
LATER = migration("20250103000000_later", "CREATE TABLE audit (id int);\n", down="DROP TABLE audit;\n",
                  verify="SELECT count(*) = 1 FROM audit;\n")


# -- the rules, pure ---------------------------------------------------------------------------

def _plan(no_backup: list[str]) -> DeployPlan:
    return DeployPlan(environment="prod", operation="full", fingerprint="ab" * 32, no_backup=no_backup)


def _judge(payload: dict, plan: DeployPlan, *, stage_gates=("deploy",), decision="approve", proofs=None):
    policy = ApprovalPolicy(gates=list(stage_gates), proofs=["ssh", "typed"], allow_self_approval=True)
    return approval.check_attempt(payload, decision=decision, via="update", at=NOW, plan=plan, policy=policy,
                                  requested_by="carol", gates=list(stage_gates), passed=[], records=[],
                                  proofs=proofs)


def test_a_deploy_approval_must_name_exactly_the_migrations_without_a_backup() -> None:
    plan = _plan(["20250102000000_drop_phone"])
    bare = _judge({"stage": "deploy", "approver": "alice"}, plan)
    assert not bare.accepted and bare.refusal == (
        "the plan runs 20250102000000_drop_phone without a backup of the data it destroys (see the plan: over "
        "backup_max_bytes, or impossible to back up): the deploy approval must acknowledge exactly that, with "
        '"no_backup": ["20250102000000_drop_phone"] (`starter.py approve ... --no-backup 20250102000000_drop_phone`)')
    other = _judge({"stage": "deploy", "approver": "alice", "no_backup": ["20250102000000_drop_phone", "x"]}, plan)
    assert not other.accepted and other.refusal.startswith(
        "'no_backup' must name exactly the migrations the plan runs without a backup, 20250102000000_drop_phone; "
        "it names 20250102000000_drop_phone, x")
    typo = _judge({"stage": "deploy", "approver": "alice", "no_backup": {"a": 1}}, plan)
    assert typo.refusal == "'no_backup' must be a list of migration names (the ones the plan runs without a backup)"
    ok = _judge({"stage": "deploy", "approver": "alice", "no_backup": ["20250102000000_drop_phone"]}, plan)
    assert ok.accepted and ok.no_backup == ["20250102000000_drop_phone"] and ok.proof == "typed"
    assert approval.no_backup_approved([bare, ok]) == ["20250102000000_drop_phone"]
    # A rejection needs no acknowledgement; a plan that backs everything up takes none.
    assert _judge({"stage": "deploy", "approver": "alice"}, plan, decision="reject").accepted
    extra = _judge({"stage": "deploy", "approver": "alice", "no_backup": ["x"]}, _plan([]))
    assert extra.refusal == "'no_backup' names x, but this plan backs up all the data it destroys: leave it out"
    resolve = _judge({"stage": "resolve", "approver": "alice", "no_backup": ["20250102000000_drop_phone"]}, plan,
                     stage_gates=("resolve", "deploy"))
    assert resolve.refusal.endswith("but only a deploy approval acknowledges running without a backup: leave it out")


def test_the_signed_statement_gains_the_list_only_when_there_is_one(tmp_path: Path) -> None:
    v1 = ApprovalStatement("prisma-deploy-prod", "run-1", "deploy", "approve", "alice", "AB" * 32)
    assert v1.message() == (
        "prisma-temporal-deploy approval v1\nworkflow: prisma-deploy-prod\nrun: run-1\nstage: deploy\n"
        "decision: approve\napprover: alice\nfingerprint: " + "ab" * 32 + "\n").encode()
    v2 = ApprovalStatement("prisma-deploy-prod", "run-1", "deploy", "approve", "alice", "AB" * 32,
                           no_backup=("20250103000000_b", "20250102000000_a"))
    assert v2.message() == (
        "prisma-temporal-deploy approval v2\nworkflow: prisma-deploy-prod\nrun: run-1\nstage: deploy\n"
        "decision: approve\napprover: alice\nfingerprint: " + "ab" * 32 + "\n"
        "no-backup: 20250102000000_a\nno-backup: 20250103000000_b\n").encode()
    assert ApprovalStatement("w", "r", "deploy", "approve", "alice", "f", no_backup=("bad\nname",)).problem()

    key = make_key(tmp_path, "alice", "ed25519")
    signers = parse_allowed_signers(f"alice {key.public}\n")
    signed_v2 = sign(key, v2.message(), NAMESPACE)
    assert keygen_verifies(f"alice {key.public}\n", "alice", NAMESPACE, signed_v2, v2.message())
    assert isinstance(verify_approval(signed_v2, v2, signers, at=NOW), Proven)
    # A signature over v1 does not cover the acknowledgement, and says so; nor does v2 pass for v1.
    refused = verify_approval(sign(key, v1.message(), NAMESPACE), v2, signers, at=NOW)
    assert isinstance(refused, Refused) and refused.reason.startswith(
        "the signature does not cover the acknowledgement that 20250102000000_a, 20250103000000_b run(s) without "
        "a backup")
    assert isinstance(verify_approval(signed_v2, v1, signers, at=NOW), Refused)


def test_the_gate_page_says_what_runs_without_a_backup_and_how_to_acknowledge_it() -> None:
    plan = _plan(["20250102000000_drop_phone"])
    policy = ApprovalPolicy(gates=["deploy"], proofs=["ssh", "typed"])
    page = details.gate("deploy", plan, policy, "carol", workflow_id="prisma-deploy-prod")
    assert "#### Runs WITHOUT a backup" in page and "- `20250102000000_drop_phone`" in page
    assert "--no-backup 20250102000000_drop_phone" in page
    assert '"no_backup": ["20250102000000_drop_phone"]' in page


# -- real runs -----------------------------------------------------------------------------------

def _settings(url: str, **env) -> Settings:
    env.setdefault("approval_proofs", ["ssh", "typed"])
    env.setdefault("allow_self_approval", True)
    env.setdefault("required_approvals", {"low": 1, "medium": 1, "high": 1})
    return Settings(environments={"dev": EnvironmentSettings(database_url=url, backup_max_bytes=10, **env)},
                    _env_file=None)


async def _with_customers(client, url: str) -> None:
    async with new_worker(client, _settings(url, gates=[])) as worker:
        assert (await final_status(await start(client, worker, request("dev", [CUSTOMERS])))).outcome == "succeeded"
    conn = await asyncpg.connect(url)
    await conn.execute("ANALYZE customers")
    await conn.close()


async def _phones(url: str) -> list:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch(
            "SELECT phone FROM customers ORDER BY id") ] if await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'phone'") else []
    finally:
        await conn.close()


async def test_an_environment_without_a_deploy_gate_cannot_accept_no_backup(dev_env, database_url: str) -> None:
    client = dev_env.client
    await _with_customers(client, database_url)
    async with new_worker(client, _settings(database_url, gates=[])) as worker:
        final = await final_status(await start(client, worker, request("dev", [CUSTOMERS, DROP_PHONE])))
    assert final.outcome == Outcome.failed_needs_attention and final.applied == []
    (blocker,) = final.plan.blockers
    assert blocker.code == BlockerCode.no_backup_needs_approval and blocker.migration == DROP_PHONE.name
    assert "exceed backup_max_bytes" in blocker.message
    assert "this environment cannot give: it has no deploy gate; add a deploy gate" in blocker.message
    assert await _phones(database_url) == ["+1 555 0101", None, "+44 20"]


async def test_no_backup_is_approved_explicitly_then_deployed_without_one(dev_env, database_url: str) -> None:
    client = dev_env.client
    await _with_customers(client, database_url)
    async with new_worker(client, _settings(database_url, gates=["deploy"])) as worker:
        handle = await start(client, worker, request("dev", [CUSTOMERS, DROP_PHONE]))
        waiting = await wait_gate(handle, "deploy")
        assert waiting.plan.blockers == [] and waiting.plan.no_backup == [DROP_PHONE.name]
        assert any(f"--no-backup {DROP_PHONE.name}" in n for n in waiting.plan.notes)
        fp = waiting.plan.fingerprint
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("approve_update", {"stage": "deploy", "approver": "alice", "fingerprint": fp})
        assert "the deploy approval must acknowledge exactly that" in str(refused.value.cause)
        assert await _phones(database_url) == ["+1 555 0101", None, "+44 20"]  # the gate stayed closed
        await handle.execute_update("approve_update", {"stage": "deploy", "approver": "alice", "fingerprint": fp,
                                                       "no_backup": [DROP_PHONE.name]})
        final = await final_status(handle)
        history = await handle.fetch_history()
    assert final.outcome == Outcome.succeeded, final.error
    assert [a.name for a in final.applied] == [DROP_PHONE.name] and await _phones(database_url) == []
    assert [(r.accepted, r.no_backup) for r in final.approvals] == [(False, []), (True, [DROP_PHONE.name])]
    patches = [p.data for e in history.events if e.HasField("marker_recorded_event_attributes")
               for d in e.marker_recorded_event_attributes.details.values() for p in d.payloads]
    assert any(b"no-backup-approval" in data for data in patches)  # the patch marker: old runs replay as they ran
    record = details.finished(final, workflow_id=handle.id)
    assert f"acknowledged **no backup** for `{DROP_PHONE.name}`" in record


async def test_a_signed_cli_approval_acknowledges_no_backup_and_compensation_says_what_is_lost(
        dev_env, database_url: str, tmp_path: Path) -> None:
    client = dev_env.client
    await _with_customers(client, database_url)
    key = make_key(tmp_path, "alice", "ed25519")
    settings = _settings(database_url, gates=["deploy"], approval_proofs=["ssh"], allow_self_approval=False,
                         allowed_signers=f"alice {key.public}\n")
    env = {"MIGRATOR_TEMPORAL_ADDRESS": client.service_client.config.target_host}
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, request("dev", [CUSTOMERS, DROP_PHONE, LATER]))
        await wait_gate(handle, "deploy")
        ref = f"{handle.id}/{handle.result_run_id}"
        plain = await run_cli_in_process(["approve", ref, "--stage", "deploy", "--by", "alice",
                                          "--sign-with", str(key.path)], env)
        assert plain.returncode == 1
        assert f"WITHOUT A BACKUP: {DROP_PHONE.name}" in plain.stdout
        assert f"refused: the plan runs {DROP_PHONE.name} without a backup" in plain.stderr
        signed = await run_cli_in_process(["approve", ref, "--stage", "deploy", "--by", "alice",
                                           "--sign-with", str(key.path), "--no-backup", DROP_PHONE.name], env)
        assert signed.returncode == 0, signed.stdout + signed.stderr
        final = await final_status(handle)
        from cli.show import load_audit
        from domain.audit import render_markdown

        report = render_markdown(await load_audit(client, ref))
    accepted = [r for r in final.approvals if r.accepted]
    assert [(r.proof, r.no_backup) for r in accepted] == [("ssh", [DROP_PHONE.name])]
    # verify.sql of LATER fails: compensation undoes both, and cannot give the phones back.
    assert final.outcome == Outcome.failed_needs_attention
    assert "data the run destroyed without a backup is not" in final.human_action
    assert await _phones(database_url) == [None, None, None]
    assert f"| ssh {accepted[0].key_fingerprint} | {DROP_PHONE.name} |" in report
    assert f"**Runs without a backup** (the deploy approval acknowledged it): `{DROP_PHONE.name}`" in report
