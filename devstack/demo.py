"""`make demo`: the incident, end to end, on embedded defaults.

1. a Temporal dev server with its Web UI (history persisted under .run/, custom search attributes),
2. a throwaway PostgreSQL put in the incident's production state (phantom, out-of-order pending,
   failed landing migration: P3009 blocks every `prisma migrate deploy`),
3. throwaway SSH keys for alice and bob (.run/demo-keys/), and a worker that knows the
   environment `prod` with production's approval rules: approvers alice and bob, no
   self-approval, only approvals signed by a key its allowed signers list (the demo's keys),
4. `starter.py status`, then `starter.py deploy --env prod` of examples/incident,
5. approvals, signed: `starter.py approve --sign-with KEY`, or in the Temporal UI the line
   `starter.py sign` prints, pasted into Send an Update; DEMO_AUTO_APPROVE=1 first shows an
   unsigned approval refused, then approves both gates as alice and bob, signed,
6. `starter.py show` prints the audit of the run.

DEMO_KEEP=1 leaves everything running at the end so the UI can be explored (Ctrl-C stops it).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from devstack.incident import reproduce_incident
from devstack.pgcluster import PgCluster
from devstack.services import REPO, TemporalDevServer, WorkerProcess
from workflows.messages import query_status

RUN_DIR = REPO / ".run"
EXAMPLE = REPO / "examples" / "incident" / "prisma" / "migrations"
REQUESTER = "carol"
APPROVERS = ["alice", "bob"]
KEY_DIR = RUN_DIR / "demo-keys"


def demo_keys() -> dict[str, Path]:
    """Fresh throwaway ed25519 keys (no passphrase) for the demo's approvers, made by ssh-keygen."""
    import shutil

    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise SystemExit("demo stopped: ssh-keygen not found (Debian: apt-get install openssh-client)")
    shutil.rmtree(KEY_DIR, ignore_errors=True)
    KEY_DIR.mkdir(parents=True)
    keys = {}
    for who in APPROVERS:
        path = KEY_DIR / who
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"{who}@demo", "-f", str(path)], check=True)
        keys[who] = path
    return keys


def allowed_signers(keys: dict[str, Path]) -> list[str]:
    """The allowed-signers lines for the keys: `NAME TYPE BASE64` (ssh-keygen -Y verify's format)."""
    lines = []
    for who, path in keys.items():
        key_type, b64 = Path(f"{path}.pub").read_text().split()[:2]
        lines.append(f"{who} {key_type} {b64}")
    return lines


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def starter(env: dict[str, str], *args: str, check: bool = False) -> subprocess.CompletedProcess:
    print(f"$ python starter.py {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, str(REPO / "starter.py"), *args], env={**os.environ, **env}, cwd=REPO)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo stopped: starter.py {args[0]} exited {proc.returncode}")
    return proc


def latest_run_row(env: dict[str, str]) -> dict | None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "starter.py"), "runs", "--env", "prod", "--limit", "1", "--json"],
        env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True,
    )
    try:
        rows = json.loads(proc.stdout)
    except ValueError:
        return None
    return rows[0] if rows else None


async def wait_past_gate(address: str, stage: str) -> None:
    """Block until the run no longer waits at `stage` (approved from the UI or the CLI) or ends."""
    from temporalio.client import Client, WorkflowExecutionStatus
    from temporalio.contrib.pydantic import pydantic_data_converter

    from domain.models import workflow_id_for

    client = await Client.connect(address, data_converter=pydantic_data_converter)
    handle = client.get_workflow_handle(workflow_id_for("prod"))
    while True:
        desc = await handle.describe()
        if desc.status != WorkflowExecutionStatus.RUNNING:
            return
        status = await query_status(handle)
        if status.awaiting is not None and status.awaiting != stage:
            return
        if status.awaiting is None and status.stage not in ("preflight", stage):
            return
        await asyncio.sleep(0.5)


def main() -> int:
    RUN_DIR.mkdir(exist_ok=True)
    auto = os.environ.get("DEMO_AUTO_APPROVE") == "1"
    keep = os.environ.get("DEMO_KEEP") == "1"
    temporal = TemporalDevServer(
        db_file=RUN_DIR / "temporal-history.db",
        port=int(os.environ.get("DEMO_TEMPORAL_PORT", "0")) or None,
        ui_port=int(os.environ.get("DEMO_UI_PORT", "0")) or None,
        log_file=RUN_DIR / "temporal.log",
    )
    pg = PgCluster(password="demo-password")
    worker = None
    try:
        say("Starting the Temporal dev server (Web UI) and a throwaway PostgreSQL")
        temporal.start()
        pg.start()
        dsn = pg.url("postgres").rsplit("/", 1)[0] + "/shop"
        subprocess.run(
            [str(pg.bin / "createdb"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "shop"],
            env={**os.environ, "PGPASSWORD": "demo-password"}, check=True,
        )
        print(f"Temporal UI: {temporal.ui_url}   (history kept in {RUN_DIR / 'temporal-history.db'})")

        say("Reproducing the incident's production database")
        asyncio.run(reproduce_incident(dsn))

        say("Making throwaway SSH keys for the approvers alice and bob (prod accepts only signed approvals)")
        keys = demo_keys()
        for who, path in keys.items():
            print(f"{who}: {path} (public key {path}.pub, listed in prod's allowed signers)")

        env = {
            "MIGRATOR_TEMPORAL_ADDRESS": temporal.address,
            "MIGRATOR_TEMPORAL_UI_URL": temporal.ui_url,
            "MIGRATOR_TASK_QUEUE": "prisma-migrations-demo",
            "MIGRATOR_ENVIRONMENTS": json.dumps(
                {
                    "prod": {
                        "database_url": dsn,
                        "gates": ["resolve", "deploy"],
                        "approvers": APPROVERS,
                        "allow_self_approval": False,
                        "approval_proofs": ["ssh"],
                        "allowed_signers": allowed_signers(keys),
                    }
                }
            ),
        }
        # The starter needs only Temporal; the database URL stays with the worker.
        starter_env = {k: v for k, v in env.items() if k != "MIGRATOR_ENVIRONMENTS"}

        say("What `status` sees (read-only; Prisma's own status hides the failure behind the pending migration)")
        starter({"DATABASE_URL": dsn}, "status", "--migrations-dir", str(EXAMPLE))

        say("Starting a worker next to the database")
        worker = WorkerProcess(env, log_file=RUN_DIR / "worker.log").start()

        say(f"Deploying examples/incident to prod, requested by {REQUESTER}")
        starter(starter_env, "deploy", "--env", "prod", "--migrations-dir", str(EXAMPLE), "--requested-by", REQUESTER, check=True)

        for stage, approver in (("resolve", APPROVERS[0]), ("deploy", APPROVERS[1])):
            key = keys[approver]
            if auto:
                if stage == "resolve":
                    say("Approving without a signature: refused, prod accepts only SSH-signed approvals")
                    starter(starter_env, "approve", "prod", "--stage", stage, "--by", approver)
                say(f"Approving stage '{stage}' as {approver}, signed with {key} (DEMO_AUTO_APPROVE=1)")
                starter(starter_env, "approve", "prod", "--stage", stage, "--by", approver, "--sign-with", str(key),
                        "--comment", "reviewed the plan in the demo", check=True)
            else:
                say(f"Your turn: approve stage '{stage}' as alice or bob (carol requested it and may not)")
                print(f"In another terminal (with MIGRATOR_TEMPORAL_ADDRESS={temporal.address}):")
                print(f"  python starter.py approve prod --stage {stage} --by {approver} --sign-with {key}")
                print(f"Or in the Temporal UI ({temporal.ui_url}): open the run prisma-deploy-prod; its User Metadata")
                print("tab shows the plan and the fingerprint under Current Details. Then sign on the command line:")
                print(f"  python starter.py sign prod --stage {stage} --by {approver} --key {key}")
                print("and paste the line it prints in More Actions > Send an Update > approve_update (a refusal")
                print('stays in the dialog with its reason). A typed {"approver": "alice"} without a signature is refused.')
            asyncio.run(wait_past_gate(temporal.address, stage))

        say("Following the run to its end")
        starter(starter_env, "watch", "prod")

        say("The audit of the run, from its workflow history")
        starter(starter_env, "show", "prod", "--format", "markdown")

        say("Status after the run")
        code = starter({"DATABASE_URL": dsn}, "status", "--migrations-dir", str(EXAMPLE)).returncode
        row = latest_run_row(starter_env)
        outcome = row.get("outcome") if row else None
        print(f"\nrun outcome: {outcome}; status exit code: {code}")
        if keep:
            say(f"DEMO_KEEP=1: Temporal UI stays at {temporal.ui_url}; Ctrl-C to stop")
            while True:
                time.sleep(3600)
        return 0 if outcome == "succeeded" else 1
    finally:
        if worker:
            worker.stop()
        temporal.stop()
        pg.destroy()


if __name__ == "__main__":
    sys.exit(main())
