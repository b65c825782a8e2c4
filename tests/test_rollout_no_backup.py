"""A rollout whose plan runs a migration without a backup (issue 13 item 3, for fleets): the group's
deploy approval must acknowledge exactly that list, as a single run's does, and every child run
judges the acknowledgement again and records it.

Real parts: a fleet of databases on the test PostgreSQL cluster, each holding customers with phone
numbers; the bundle drops the phone column, over a backup limit of 10 bytes; the dev server, a
worker with the real activities, a real SSH key, and `starter.py rollout start|watch`,
`approve --no-backup` and `show` as a user types them.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import asyncpg
import pytest

from cli.rollout_view import gate_hint
from domain import details, rollout_details
from domain.models import ApprovalPolicy, DeployPlan, RunStatus
from domain.rollout_models import PlanGroup, RolloutGate, RolloutStatus, WaveState
from tests.customers import CUSTOMERS, DROP_PHONE, PHONES
from tests.helpers import catalog_dump, new_worker, run_cli_in_process
from tests.rollout_helpers import apply_by_hand, create_fleet, drop_fleet, fleet_settings
from tests.ssh_keys import make_key
from tests.torture.harness import write_folder
from workflows.messages import final_status


def test_the_gate_page_and_the_cli_hint_say_what_to_acknowledge() -> None:
    """What a user copies from the rollout's Current Details or `rollout start|watch` names the list."""
    plan = DeployPlan(environment="tenants:db1", operation="full", fingerprint="ab" * 32,
                      no_backup=[DROP_PHONE.name])
    typed = PlanGroup(key="k1", state_fingerprint="cd" * 32, plan=plan, members=2, gates=["deploy"],
                      policy=ApprovalPolicy(gates=["deploy"], proofs=["ssh", "typed"]))
    signed = typed.model_copy(update={"key": "k2", "state_fingerprint": "ef" * 32,
                                      "policy": ApprovalPolicy(gates=["deploy"], proofs=["ssh"])})
    wave = WaveState(number=1, stage="tenants", label="100%", targets=["a", "b", "c", "d"],
                     membership={"a": "k1", "b": "k1", "c": "k2", "d": "k2"})
    status = RolloutStatus(name="r", stages=["tenants"], requested_by="carol", operation="full",
                           groups={"k1": typed, "k2": signed}, waves=[wave])
    gate = RolloutGate(wave=1, groups=["k1", "k2"])
    page = rollout_details.gate(status, gate, "prisma-rollout-r")
    assert (f'"fingerprint": "{"cd" * 32}", "no_backup": ["{DROP_PHONE.name}"]}}') in page
    assert f"--key <your key> --no-backup {DROP_PHONE.name}`" in page
    assert f"runs WITHOUT a backup: `{DROP_PHONE.name}`" in page
    hint = gate_hint(status, gate, "prisma-rollout-r")
    assert f"--fingerprint {'cd' * 32} --no-backup {DROP_PHONE.name}" in hint
    assert f"--fingerprint {'ef' * 32} --sign-with YOUR_KEY --no-backup {DROP_PHONE.name}" in hint


async def _state(url: str) -> tuple[dict, list]:
    """(every object and row of the database, the phone column's values or [] once it is gone)."""
    conn = await asyncpg.connect(url)
    try:
        has_phone = await conn.fetchval("SELECT count(*) FROM information_schema.columns WHERE table_name = "
                                        "'customers' AND column_name = 'phone'")
        phones = [r[0] for r in await conn.fetch("SELECT phone FROM customers ORDER BY id")] if has_phone else []
        return await catalog_dump(conn), phones
    finally:
        await conn.close()


@pytest.fixture
async def fleet(pg_server):
    """Three databases with CUSTOMERS applied as Prisma leaves it, statistics fresh (so the backup of
    the phone column is estimated over the 10 bytes allowed)."""
    prefix, names = await create_fleet(pg_server, 3)
    for name in names:
        await apply_by_hand(pg_server.url(name), [CUSTOMERS])
        conn = await asyncpg.connect(pg_server.url(name))
        await conn.execute("ANALYZE customers")
        await conn.close()
    yield prefix, names
    await drop_fleet(pg_server, names)


async def test_a_fleet_plan_without_a_backup_needs_exactly_that_acknowledged_then_every_database_records_it(
        dev_env, pg_server, fleet, tmp_path: Path) -> None:
    prefix, names = fleet
    key = make_key(tmp_path, "alice", "ed25519")
    settings = fleet_settings(pg_server, prefix, gates=["deploy"], approvers=["alice", "bob"],
                              allow_self_approval=False, approval_proofs=["ssh"],
                              allowed_signers=f"alice {key.public}\n", backup_max_bytes=10,
                              required_approvals={"low": 1, "medium": 1, "high": 1})
    folder = write_folder(tmp_path / "migrations", [CUSTOMERS, DROP_PHONE])
    client = dev_env.client
    name = f"nb{uuid.uuid4().hex[:6]}"
    rollout_id = f"prisma-rollout-{name}"
    before = {n: await _state(pg_server.url(n)) for n in names}
    assert all(phones == PHONES for _, phones in before.values())

    async with new_worker(client, settings) as worker:
        env = {"MIGRATOR_TEMPORAL_ADDRESS": client.service_client.config.target_host,
               "MIGRATOR_TASK_QUEUE": worker.task_queue, "MIGRATOR_ENVIRONMENTS": "{}", "DATABASE_URL": "",
               "USER": "carol"}

        async def cli(*args: str):
            return await run_cli_in_process(list(args), env)

        started = await cli("rollout", "start", "--stages", "tenants", "-d", str(folder), "--name", name,
                            "--waves", "100%")
        assert started.returncode == 0, started.stderr
        # The gate says how to approve, acknowledgement included.
        line = next(ln for ln in started.stderr.splitlines() if "starter.py approve" in ln)
        fingerprint = line.split("--fingerprint ")[1].split()[0]
        assert re.fullmatch(r"[0-9a-f]{64}", fingerprint), line
        assert f"--no-backup {DROP_PHONE.name}" in line, line
        handle = client.get_workflow_handle(rollout_id)
        status = await handle.query("status", result_type=RolloutStatus)
        (group,) = status.groups.values()
        assert group.members == 3 and group.plan.no_backup == [DROP_PHONE.name] and group.plan.blockers == []
        assert group.state_fingerprint == fingerprint

        # `starter.py sign` (to paste into the UI) signs only the list the plan needs.
        unsigned = await cli("sign", rollout_id, "--stage", "deploy", "--by", "alice", "--key", str(key.path))
        assert unsigned.returncode == 3 and (f"the plan runs {DROP_PHONE.name} without a backup of the data it "
                                             f"destroys: sign with --no-backup {DROP_PHONE.name}") in unsigned.stderr
        pasted = await cli("sign", rollout_id, "--stage", "deploy", "--by", "alice", "--key", str(key.path),
                           "--no-backup", DROP_PHONE.name)
        assert pasted.returncode == 0 and json.loads(pasted.stdout)["no_backup"] == [DROP_PHONE.name], pasted.stderr

        approve = ["approve", rollout_id, "--stage", "deploy", "--by", "alice", "--fingerprint", fingerprint,
                   "--sign-with", str(key.path)]
        bare = await cli(*approve)
        assert bare.returncode == 1
        assert f"The plan runs {DROP_PHONE.name} without a backup: approve it with --no-backup {DROP_PHONE.name}" \
            in bare.stdout
        assert f"refused: the plan runs {DROP_PHONE.name} without a backup of the data it destroys" in bare.stderr
        assert f'"no_backup": ["{DROP_PHONE.name}"] (`starter.py approve ... --no-backup {DROP_PHONE.name}`)' \
            in bare.stderr
        wrong = await cli(*approve, "--no-backup", CUSTOMERS.name)
        assert wrong.returncode == 1
        assert (f"refused: 'no_backup' must name exactly the migrations the plan runs without a backup, "
                f"{DROP_PHONE.name}; it names {CUSTOMERS.name}") in wrong.stderr
        # The gate stayed closed and no database was touched.
        status = await handle.query("status", result_type=RolloutStatus)
        assert status.awaiting is not None and status.awaiting.groups == [group.key]
        assert status.groups[group.key].gates_passed == [] and status.children_started == 0
        assert [a.record.accepted for a in status.attempts] == [False, False]
        assert {n: await _state(pg_server.url(n)) for n in names} == before

        signed = await cli(*approve, "--no-backup", DROP_PHONE.name, "--comment", "phones are retired")
        assert signed.returncode == 0 and "approved by alice" in signed.stdout, signed.stdout + signed.stderr
        watched = await cli("rollout", "watch", name)
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert "outcome: succeeded — 3/3 database(s) succeeded" in watched.stdout
        status = await handle.query("status", result_type=RolloutStatus)
        runs: dict[str, RunStatus] = {}
        for result in status.results():
            runs[result.target] = await final_status(client.get_workflow_handle(
                f"prisma-deploy-{result.target}", run_id=result.run_id))
        shown = {t: await cli("show", f"prisma-deploy-{t}/{r.run_id}", "--format", "markdown")
                 for t, r in {r.target: r for r in status.results()}.items()}
        report = await cli("rollout", "show", name, "--format", "markdown")

    assert sorted(runs) == [f"tenants:{n}" for n in names]
    for n in names:
        _, phones = await _state(pg_server.url(n))
        assert phones == []  # dropped, as approved: without a backup
    for target, run in runs.items():
        assert run.outcome == "succeeded", (target, run.error)
        assert [a.name for a in run.applied] == [DROP_PHONE.name]
        # Each run judged the rollout's approval again (alice's signature over the v2 statement) and kept
        # its acknowledgement.
        (taken,) = [r for r in run.approvals if r.accepted]
        assert (taken.via, taken.approver, taken.proof, taken.principal, taken.no_backup) == (
            "rollout", "alice", "ssh", "alice", [DROP_PHONE.name])
        assert f"acknowledged **no backup** for `{DROP_PHONE.name}`" in details.finished(run, workflow_id=target)
        audit = shown[target]
        assert audit.returncode == 0, audit.stderr
        assert f"| ssh {taken.key_fingerprint} | {DROP_PHONE.name} |" in audit.stdout
    assert report.returncode == 0, report.stderr
    assert f"runs WITHOUT a backup: `{DROP_PHONE.name}`" in report.stdout
    assert f"| yes | phones are retired | `{fingerprint[:12]}` | {DROP_PHONE.name} |" in report.stdout
