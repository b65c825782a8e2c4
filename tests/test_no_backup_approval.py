"""Over the backup limit, "no backup" is approved explicitly (issue 13 item 3): the deploy gate's
approval must name exactly the migrations the plan runs without a backup of the data they
destroy, a signed approval signs that list (format v2 of the approval statement; every other
approval stays v1), the acknowledgement is shown in the plan, the UI's details and the audit, and
an environment without a deploy gate cannot accept "no backup" at all.

Pure rules first, then real runs: the Temporal CLI dev server, a worker with the real activities,
real PostgreSQL, real SSH keys and the real CLI (`starter.py approve --no-backup`, `show`); last,
the deploy activity's own refusal of what no approval acknowledged.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import ActivityEnvironment

from domain import approval, details
from domain.allowed_signers import parse_allowed_signers
from domain.approval_proof import (
    NAMESPACE,
    ApprovalStatement,
    Proven,
    Refused,
    verify_approval,
)
from domain.models import (
    ApprovalPolicy,
    BlockerCode,
    DeployInput,
    DeployPlan,
    Operation,
    Outcome,
    RunMarks,
    RunStatus,
)
from runtime.settings import EnvironmentSettings, Settings
from tests.customers import CUSTOMERS, DROP_PHONE, LATER
from tests.helpers import (
    StageActivities,
    catalog_dump,
    final_status,
    ledger_rows,
    new_worker,
    patch_ids,
    request,
    run_cli_in_process,
    start,
    wait_gate,
)
from tests.ssh_keys import keygen_verifies, make_key, sign
from workflows.deploy import CURRENT_CODE_PATCH

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


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
    """CUSTOMERS deployed (three customers, two phones), its statistics fresh: the backup of the
    phone column is then estimated over the 10 bytes every test here allows."""
    async with new_worker(client, _settings(url, gates=[])) as worker:
        assert (await final_status(await start(client, worker, request("dev", [CUSTOMERS])))).outcome == "succeeded"
    conn = await asyncpg.connect(url)
    await conn.execute("ANALYZE customers")
    await conn.close()


async def _phones(url: str) -> list:
    """The phone column's values by customer, or [] once the column is gone."""
    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' "
                                   "AND column_name = 'phone'"):
            return []
        return [r[0] for r in await conn.fetch("SELECT phone FROM customers ORDER BY id")]
    finally:
        await conn.close()


async def _dump(url: str) -> dict:
    conn = await asyncpg.connect(url)
    try:
        return await catalog_dump(conn)
    finally:
        await conn.close()


async def _refused(handle, payload: dict) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("approve_update", payload)
    return refused.value.cause.message  # the one sentence the UI's dialog shows


async def test_an_environment_without_a_deploy_gate_cannot_accept_no_backup(dev_env, database_url: str) -> None:
    client = dev_env.client
    await _with_customers(client, database_url)
    before = await _dump(database_url)
    async with new_worker(client, _settings(database_url, gates=[])) as worker:
        final = await final_status(await start(client, worker, request("dev", [CUSTOMERS, DROP_PHONE])))
    assert final.outcome == Outcome.failed_needs_attention and final.applied == []
    (blocker,) = final.plan.blockers
    assert blocker.code == BlockerCode.no_backup_needs_approval and blocker.migration == DROP_PHONE.name
    assert "exceed backup_max_bytes" in blocker.message
    assert "this environment cannot give: it has no deploy gate; add a deploy gate" in blocker.message
    assert "the plan is blocked, nothing was changed" in final.error
    assert await _dump(database_url) == before  # schema, rows and ledger as they were
    assert await _phones(database_url) == ["+1 555 0101", None, "+44 20"]


async def test_an_operation_that_deploys_nothing_is_not_stopped_by_a_backup_it_would_not_take(
        dev_env, database_url: str) -> None:
    """`resolve` alone runs no pending migration: the backup limit is no business of its plan."""
    client = dev_env.client
    await _with_customers(client, database_url)
    async with new_worker(client, _settings(database_url, gates=[])) as worker:
        final = await final_status(await start(client, worker, request("dev", [CUSTOMERS, DROP_PHONE],
                                                                        operation=Operation.resolve)))
    assert final.outcome == Outcome.succeeded and final.plan.blockers == [] and final.plan.no_backup == []
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
        bare = await _refused(handle, {"stage": "deploy", "approver": "alice", "fingerprint": fp})
        assert f'the deploy approval must acknowledge exactly that, with "no_backup": ["{DROP_PHONE.name}"]' in bare
        wrong = await _refused(handle, {"stage": "deploy", "approver": "alice", "fingerprint": fp,
                                        "no_backup": ["20250101000000_customers"]})
        assert wrong == (f"'no_backup' must name exactly the migrations the plan runs without a backup, "
                         f"{DROP_PHONE.name}; it names 20250101000000_customers "
                         f"(`starter.py approve ... --no-backup {DROP_PHONE.name}`)")
        still = await handle.query("status", result_type=RunStatus)  # the gate stayed closed
        assert still.awaiting == "deploy" and still.gates_passed == [] and still.applied == []
        assert await _phones(database_url) == ["+1 555 0101", None, "+44 20"]
        await handle.execute_update("approve_update", {"stage": "deploy", "approver": "alice", "fingerprint": fp,
                                                       "no_backup": [DROP_PHONE.name]})
        final = await final_status(handle)
        history = await handle.fetch_history()
    assert final.outcome == Outcome.succeeded, final.error
    assert [a.name for a in final.applied] == [DROP_PHONE.name] and await _phones(database_url) == []
    assert [(r.accepted, r.no_backup) for r in final.approvals] == [(False, []), (False, []),
                                                                     (True, [DROP_PHONE.name])]
    # The current code's one marker stands for the no-backup change too: older runs replay as they ran.
    assert patch_ids(history) == [CURRENT_CODE_PATCH]
    record = details.finished(final, workflow_id=handle.id)
    assert f"acknowledged **no backup** for `{DROP_PHONE.name}`" in record


async def test_a_signed_cli_approval_acknowledges_no_backup_and_the_audit_shows_it(
        dev_env, database_url: str, tmp_path: Path) -> None:
    client = dev_env.client
    await _with_customers(client, database_url)
    key = make_key(tmp_path, "alice", "ed25519")
    settings = _settings(database_url, gates=["deploy"], approval_proofs=["ssh"], allow_self_approval=False,
                         allowed_signers=f"alice {key.public}\n")
    env = {"MIGRATOR_TEMPORAL_ADDRESS": client.service_client.config.target_host}
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, request("dev", [CUSTOMERS, DROP_PHONE]))
        await wait_gate(handle, "deploy")
        ref = f"{handle.id}/{handle.result_run_id}"
        approve = ["approve", ref, "--stage", "deploy", "--by", "alice", "--sign-with", str(key.path)]
        plain = await run_cli_in_process(approve, env)
        assert plain.returncode == 1
        assert f"WITHOUT A BACKUP: {DROP_PHONE.name}" in plain.stdout
        assert f"refused: the plan runs {DROP_PHONE.name} without a backup" in plain.stderr
        assert f"--no-backup {DROP_PHONE.name}" in plain.stderr
        wrong = await run_cli_in_process([*approve, "--no-backup", CUSTOMERS.name], env)
        assert wrong.returncode == 1 and "'no_backup' must name exactly the migrations" in wrong.stderr
        assert (await handle.query("status", result_type=RunStatus)).awaiting == "deploy"
        assert await _phones(database_url) == ["+1 555 0101", None, "+44 20"]
        signed = await run_cli_in_process([*approve, "--no-backup", DROP_PHONE.name], env)
        assert signed.returncode == 0, signed.stdout + signed.stderr
        final = await final_status(handle)
        shown = await run_cli_in_process(["show", ref, "--format", "markdown"], env)
    assert final.outcome == Outcome.succeeded, final.error
    assert await _phones(database_url) == []
    (accepted,) = [r for r in final.approvals if r.accepted]
    assert (accepted.proof, accepted.principal, accepted.no_backup) == ("ssh", "alice", [DROP_PHONE.name])
    assert shown.returncode == 0, shown.stderr
    assert "| no backup acknowledged |" in shown.stdout
    assert f"| ssh {accepted.key_fingerprint} | {DROP_PHONE.name} |" in shown.stdout
    assert f"**Runs without a backup** (each deploy approval had to acknowledge it; see Approvals): " \
           f"`{DROP_PHONE.name}`" in shown.stdout


async def test_compensation_of_a_run_without_a_backup_says_what_is_lost(dev_env, database_url: str) -> None:
    client = dev_env.client
    await _with_customers(client, database_url)
    async with new_worker(client, _settings(database_url, gates=["deploy"])) as worker:
        handle = await start(client, worker, request("dev", [CUSTOMERS, DROP_PHONE, LATER]))
        waiting = await wait_gate(handle, "deploy")
        await handle.execute_update("approve_update", {"stage": "deploy", "approver": "alice",
                                                       "fingerprint": waiting.plan.fingerprint,
                                                       "no_backup": [DROP_PHONE.name]})
        final = await final_status(handle)
    # LATER's verify.sql fails (its table is empty): compensation undoes both, and cannot give the phones back.
    assert final.outcome == Outcome.failed_needs_attention
    assert "data the run destroyed without a backup is not" in final.human_action
    assert await _phones(database_url) == [None, None, None]


async def test_the_deploy_activity_refuses_what_no_approval_acknowledged(database_url: str) -> None:
    """Should a workflow ever pass no acknowledgement, the activity itself changes nothing."""
    stages = StageActivities(_settings(database_url, gates=["deploy"]))
    await ActivityEnvironment().run(stages.deploy, await _deploy_input(stages, [CUSTOMERS]))
    conn = await asyncpg.connect(database_url)
    await conn.execute("ANALYZE customers")
    await conn.close()
    inp = await _deploy_input(stages, [CUSTOMERS, DROP_PHONE])
    assert inp.plan.no_backup == [DROP_PHONE.name]
    result = await ActivityEnvironment().run(stages.deploy, inp)
    assert result.applied == [] and result.refused and result.stopped == (
        f"{DROP_PHONE.name} would destroy data without a backup, and no deploy approval acknowledged that "
        '("no_backup"); nothing was changed: start a new run and approve it with --no-backup for each')
    conn = await asyncpg.connect(database_url)
    try:
        assert [r["migration_name"] for r in await ledger_rows(conn)] == [CUSTOMERS.name]
    finally:
        await conn.close()
    assert await _phones(database_url) == ["+1 555 0101", None, "+44 20"]
    done = await ActivityEnvironment().run(stages.deploy, inp.model_copy(update={"no_backup_approved": [DROP_PHONE.name]}))
    assert [m.name for m in done.applied] == [DROP_PHONE.name] and await _phones(database_url) == []


async def _deploy_input(stages: StageActivities, migrations: list) -> DeployInput:
    plan = (await ActivityEnvironment().run(stages.preflight, request("dev", migrations))).plan
    todo = [m for m in migrations if m.name in {p.name for p in plan.by_action("apply")}]
    marks = RunMarks(deploy_ids={m.name: str(uuid.uuid4()) for m in todo}, resolve_at=datetime.now(timezone.utc))
    return DeployInput(environment="dev", plan=plan, migrations=todo, marks=marks)
