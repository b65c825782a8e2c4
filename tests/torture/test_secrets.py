"""Case 5: a run against a database with a known password, then everything Temporal keeps about it
(history: inputs, results, failures, summaries, details, heartbeat details; describe: search
attributes, memo, pending activities; visibility; the status query) and the worker's own log file
are searched for the password and the DSN. Payloads are base64 in the history JSON: each one is
decoded before searching."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from google.protobuf.json_format import MessageToJson

from domain.models import Outcome
from tests.conftest import PG_TEST_PASSWORD
from tests.helpers import approval, migration
from tests.torture import report, scenario
from tests.torture.harness import (
    active_queries,
    env_config,
    make_request,
    new_env_name,
    run_result,
    start_run,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.torture

WRONG_PASSWORD = "wr0ng-Pa55-for-torture"


def decoded_texts(node: Any, out: list[str]) -> list[str]:
    """Every string in a JSON tree, plus the decoded bytes of every base64 `data` field."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "data" and isinstance(value, str):
                try:
                    out.append(base64.b64decode(value).decode("utf-8", "replace"))
                except ValueError:
                    pass
            decoded_texts(value, out)
    elif isinstance(node, list):
        for value in node:
            decoded_texts(value, out)
    elif isinstance(node, str):
        out.append(node)
    return out


async def everything_about(client, handle) -> str:
    texts: list[str] = []
    history = await handle.fetch_history()
    decoded_texts(json.loads(history.to_json()), texts)
    desc = await handle.describe()
    decoded_texts(json.loads(MessageToJson(desc.raw_description)), texts)
    async for wf in client.list_workflows(f"WorkflowId = '{handle.id}'"):
        decoded_texts(json.loads(MessageToJson(wf.raw_info)), texts)
    return "\n".join(texts)


def assert_no_secret(text: str, secrets: list[str], where: str) -> None:
    for s in secrets:
        assert s not in text, f"{where} contains a secret ({s[:12]}…)"


async def test_no_password_or_dsn_anywhere(tclient, workers, pg_server) -> None:
    name = await pg_server.create_database("secret")
    url = pg_server.url(name)
    assert PG_TEST_PASSWORD in url
    wrong = url.replace(PG_TEST_PASSWORD, WRONG_PASSWORD)
    env, bad_env = new_env_name("sec"), new_env_name("secbad")
    worker = workers({env: env_config(url, gates=["deploy"], approvers=["alice"]), bad_env: env_config(wrong)})
    secrets = [PG_TEST_PASSWORD, WRONG_PASSWORD, url, wrong, url.split("://", 1)[1], wrong.split("://", 1)[1]]
    tq = worker.env["MIGRATOR_TASK_QUEUE"]
    with report.Trial("secrets: history, visibility, logs"):
        # 1. A run that waits at a gate, deploys with heartbeats, then fails verification and compensates.
        migs = scenario.bundle(sleep_m2=2, verify_fails=True)
        handle = await start_run(tclient, make_request(env, migs), tq)
        st = await wait_status(handle, lambda s: s.awaiting == "deploy", 60, "the deploy gate")
        await handle.signal("approve", {"stage": "deploy", "approver": "mallory"})  # refused, recorded
        await handle.execute_update("approve_update", approval("deploy", "alice", st.plan.fingerprint))
        await wait_for(lambda: active_queries(pg_server.admin_url, name, "pg_sleep"), 60, "the slow migration")
        during = await everything_about(tclient, handle)  # pending activity with heartbeat details
        final = await run_result(handle)
        assert final.outcome == Outcome.failed_rolled_back, final.error
        # 2. A migration failing inside PostgreSQL: error text and Prisma's logs travel in history.
        failing = [migration("20240201000000_boom", "CREATE TABLE boom (id int);\nSELECT 1/0;\n")]
        handle2 = await start_run(tclient, make_request(env, failing), tq)
        st2 = await wait_status(handle2, lambda s: s.awaiting == "deploy", 60, "the deploy gate")
        await handle2.signal("approve", approval("deploy", "alice", st2.plan.fingerprint))
        final2 = await run_result(handle2)
        assert final2.outcome == Outcome.failed_rolled_back and "division by zero" in final2.error, final2.error
        # 3. A connection refused for a wrong password: the error names the database, not the secret.
        handle3 = await start_run(tclient, make_request(bad_env, failing), tq)
        final3 = await run_result(handle3, timeout=120)
        assert "authentication failed" in (final3.error or ""), final3.error

        for label, h in (("run 1", handle), ("run 2", handle2), ("run 3", handle3)):
            text = await everything_about(tclient, h)
            assert "pg_sleep" in text or "boom" in text  # the search really covers the decoded payloads
            assert_no_secret(text, secrets, f"{label}'s history/visibility")
        assert '"current"' in during and '"total"' in during, "the deploy's heartbeat details were not captured"
        assert_no_secret(during, secrets, "the running deploy's describe (heartbeat details)")
        for final_status in (final, final2, final3):
            assert_no_secret(final_status.model_dump_json(), secrets, "a RunStatus")
        await asyncio.sleep(0.5)
        log = worker.log_text()
        assert "preflight done" in log and "approval attempt" in log, log[-800:]  # DEBUG JSON log of real work
        assert_no_secret(log, secrets, "the worker's log")
    await pg_server.drop_database(name)
