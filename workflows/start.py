"""How a run of DeployWorkflow is started: its id, UI summary/details and initial search attributes.

Kept apart from workflows/deploy.py so starters import it without the activities (and asyncpg).
"""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributePair, TypedSearchAttributes

from domain.models import DeployRequest, Stage, workflow_id_for
from workflows import search_attributes as sa

WORKFLOW_NAME = "DeployWorkflow"


def start_options(request: DeployRequest, *, task_queue: str, workflow_id: str | None = None) -> dict[str, Any]:
    """Keyword arguments for `client.start_workflow(WORKFLOW_NAME, request, **options)`: the id (one
    open run per environment), static summary/details for the UI, and the search attributes."""
    bundle = request.bundle
    summary = (f"{request.operation} on {request.environment}" + (" (dry run)" if request.dry_run else "")
               + f" by {request.requested_by}")[:200]
    details = "\n".join([
        f"### Prisma migrations: {request.operation} on `{request.environment}`",
        f"- requested by **{request.requested_by}**" + (" — dry run, nothing is written" if request.dry_run else ""),
        f"- source: {request.bundle.source or 'bundle'} @ `{request.bundle.revision or 'unknown revision'}`",
        f"- {bundle.count} migration(s) in the bundle, last: `{bundle.last_name or '-'}`"
        + (f" (sent in {len(bundle.parts)} parts after the start)" if bundle.in_parts else ""),
        "- the plan, the latest approval attempts and how to approve: **Current Details** "
        "(User Metadata tab; press R to refresh them)",
    ])
    return {
        "id": workflow_id or workflow_id_for(request.environment),
        "task_queue": task_queue,
        "static_summary": summary,
        "static_details": details,
        "search_attributes": TypedSearchAttributes([
            SearchAttributePair(sa.ENVIRONMENT, request.environment),
            SearchAttributePair(sa.OPERATION, str(request.operation)),
            SearchAttributePair(sa.REQUESTED_BY, request.requested_by),
            SearchAttributePair(sa.STAGE, Stage.preflight.value),
        ]),
    }
