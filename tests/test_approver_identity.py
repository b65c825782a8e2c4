"""What Temporal records about who sent a signal or an update (docs/approver-identity.md, §1): the
`identity` is whatever the sender's client says, and the handler is told nothing. Checked on the
real dev server, with the Python client and the `temporal` CLI binary."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from devstack.temporal import temporal_cli_path


@workflow.defn(name="IdentityProbe")
class IdentityProbe:
    """Keeps every payload its handlers receive: that is all a handler learns about a message."""

    def __init__(self) -> None:
        self.received: list[dict] = []

    @workflow.run
    async def run(self) -> list[dict]:
        await workflow.wait_condition(lambda: len(self.received) >= 3)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.received

    @workflow.signal(name="approve")
    def approve(self, payload: dict) -> None:
        self.received.append(payload)

    @workflow.update(name="approve_update")
    def approve_update(self, payload: dict) -> str:
        self.received.append(payload)
        return "ok"


async def test_the_sender_identity_in_history_is_whatever_the_client_claims(dev_env) -> None:
    address = dev_env.client.service_client.config.target_host
    queue = f"identity-{uuid.uuid4()}"
    workflow_id = f"identity-probe-{uuid.uuid4()}"
    async with Worker(dev_env.client, task_queue=queue, workflows=[IdentityProbe]):
        handle = await dev_env.client.start_workflow(IdentityProbe.run, id=workflow_id, task_queue=queue)
        claiming = await Client.connect(address, identity="alice@example.com")
        await claiming.get_workflow_handle(workflow_id).signal("approve", {"approver": "alice"})
        await claiming.get_workflow_handle(workflow_id).execute_update("approve_update", {"approver": "alice"})
        cli = await asyncio.to_thread(
            subprocess.run,
            [temporal_cli_path(), "workflow", "signal", "--address", address, "-w", workflow_id, "--name", "approve",
             "--input", '{"approver": "bob"}', "--identity", "bob@example.com"],
            capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        received = await handle.result()
        history = await handle.fetch_history()
    assert received == [{"approver": "alice"}, {"approver": "alice"}, {"approver": "bob"}]
    senders = []
    for event in history.events:
        if event.HasField("workflow_execution_signaled_event_attributes"):
            senders.append(("signal", event.workflow_execution_signaled_event_attributes.identity))
        elif event.HasField("workflow_execution_update_accepted_event_attributes"):
            senders.append(("update", event.workflow_execution_update_accepted_event_attributes.accepted_request.meta.identity))
        # No authorizer on the dev server: no server-computed principal on any event.
        assert not event.HasField("principal"), json.dumps(str(event.principal))
    assert senders == [("signal", "alice@example.com"), ("update", "alice@example.com"), ("signal", "bob@example.com")]
