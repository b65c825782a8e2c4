"""Reading a rollout back from Temporal: the runs of its continue-as-new chain and their histories,
its final (or current) RolloutStatus. Used by `starter.py rollout show` and the tests."""

from __future__ import annotations

from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory

from domain.rollout_models import RolloutStatus
from workflows.messages import STATUS_QUERY, status_from_failure


async def run_chain(client: Client, workflow_id: str, run_id: str | None = None) -> list[tuple[str, WorkflowHistory]]:
    """(run id, history) of every run of the rollout, oldest first: from the latest run (or
    `run_id`) back through each run's `continued_execution_run_id`."""
    if run_id is None:
        run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
    chain: list[tuple[str, WorkflowHistory]] = []
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        chain.append((run_id, history))
        first = history.events[0] if history.events else None
        run_id = (first.workflow_execution_started_event_attributes.continued_execution_run_id or None
                  if first is not None and first.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED else None)
    return list(reversed(chain))


async def final_rollout_status(handle: WorkflowHandle[Any, Any]) -> RolloutStatus | None:
    """The RolloutStatus a closed rollout returned or carried in its failure (None: terminated)."""
    try:
        return RolloutStatus.model_validate(await handle.result())
    except WorkflowFailureError as exc:
        return status_from_failure(exc.cause, RolloutStatus)


async def query_rollout(handle: WorkflowHandle[Any, Any]) -> RolloutStatus:
    return await handle.query(STATUS_QUERY, result_type=RolloutStatus)
