"""How a rollout is started: its workflow id, UI summary/details and search attributes.

Kept apart from workflows/rollout.py so starters import it without the activities (and asyncpg).
"""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributePair, TypedSearchAttributes

from domain.rollout_models import RolloutRequest
from workflows import search_attributes as sa

ROLLOUT_WORKFLOW_NAME = "RolloutWorkflow"
ROLLOUT_ID_PREFIX = "prisma-rollout-"


def rollout_workflow_id(name: str) -> str:
    """One open rollout per name: a second start with the same name is refused by Temporal."""
    return name if name.startswith(ROLLOUT_ID_PREFIX) else f"{ROLLOUT_ID_PREFIX}{name}"


def rollout_start_options(request: RolloutRequest, *, task_queue: str) -> dict[str, Any]:
    """Keyword arguments for `client.start_workflow(ROLLOUT_WORKFLOW_NAME, request, **options)`."""
    stages = " → ".join(request.stages)
    names = [m.name for m in request.bundle.migrations]
    summary = (f"rollout {request.name}: {stages}" + (" (dry run)" if request.dry_run else "")
               + f" by {request.requested_by}")[:200]
    details = "\n".join([
        f"### Prisma migrations rollout `{request.name}`: {stages}",
        f"- requested by **{request.requested_by}**, operation {request.operation}"
        + (" — dry run, nothing is written" if request.dry_run else ""),
        f"- source: {request.bundle.source or 'bundle'} @ `{request.bundle.revision or 'unknown revision'}`",
        f"- {len(names)} migration(s) in the bundle, last: `{names[-1] if names else '-'}`",
        f"- waves {', '.join(request.waves or ['fleet default'])}; {request.concurrency} database(s) at a time; "
        f"a wave halts the rollout past {request.max_failures} failure(s)",
    ])
    return {
        "id": rollout_workflow_id(request.name),
        "task_queue": task_queue,
        "static_summary": summary,
        "static_details": details,
        "search_attributes": TypedSearchAttributes([
            SearchAttributePair(sa.OPERATION, str(request.operation)),
            SearchAttributePair(sa.REQUESTED_BY, request.requested_by),
            SearchAttributePair(sa.STAGE, "starting"),
        ]),
    }
