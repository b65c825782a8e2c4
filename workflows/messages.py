"""The contract between DeployWorkflow and whoever talks to it (the CLI, the demo, the Temporal UI):
message names, payload models, and how a finished run's RunStatus is recovered.

Kept free of activities (and asyncpg) so starters import it cheaply.

- signals `approve`, `reject`: payload ApprovalPayload as JSON; any JSON is accepted and judged,
  refused attempts are recorded, never dropped (what a person types in the UI's Send a Signal);
- updates `approve_update`, `reject_update`: same payload, answer ApprovalAnswer; a refused attempt
  is recorded too and fails the update with the reason (ApplicationError type ApprovalRefused);
- query `status` -> RunStatus;
- update `bundle_part` (BundlePart): one part of a bundle too large for one payload, sent by the
  starter right after the start (domain/bundle.py); refused (not recorded) unless it matches the
  digest the request announced for it (ApplicationError type BundlePartRefused).

A run's result is its RunStatus when it succeeded (or only planned); otherwise the run fails with a
non-retryable ApplicationError whose details[0] is the final RunStatus as JSON.
"""

from __future__ import annotations

from typing import Any

from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from domain.models import ApprovalAnswer, ApprovalPayload, RunStatus

APPROVE_SIGNAL = "approve"
REJECT_SIGNAL = "reject"
APPROVE_UPDATE = "approve_update"
REJECT_UPDATE = "reject_update"
STATUS_QUERY = "status"
APPROVAL_REFUSED = "ApprovalRefused"  # ApplicationError type of a refused update
BUNDLE_PART_UPDATE = "bundle_part"
BUNDLE_PART_REFUSED = "BundlePartRefused"
# workflow.patched() ids of workflow changes (runs recorded before them replay without them).
PATCH_DROP_SHADOW = "drop-shadow-at-end"  # the run drops its shadow database when it ends
PATCH_VERIFY_READS_BUNDLE = "verify-reads-bundle"  # verify's input carries no SQL: it reads the run's bundle
# The end-of-run drop is skipped when every activity that may replay said it left no shadow database.
PATCH_DROP_ONLY_LEFT_SHADOW = "drop-only-left-shadow"

__all__ = [
    "APPROVAL_REFUSED", "ApprovalRefusedError", "APPROVE_SIGNAL", "APPROVE_UPDATE", "BUNDLE_PART_REFUSED",
    "BUNDLE_PART_UPDATE", "PATCH_DROP_ONLY_LEFT_SHADOW", "PATCH_DROP_SHADOW", "PATCH_VERIFY_READS_BUNDLE", "REJECT_SIGNAL",
    "REJECT_UPDATE", "STATUS_QUERY",
    "ApprovalAnswer", "ApprovalPayload", "RunStatus", "final_status", "query_status", "status_from_failure",
]


class ApprovalRefusedError(ApplicationError):
    """How an update handler answers a refused attempt: the reason, one sentence, and nothing else.

    The Temporal UI's Send an Update dialog shows an update's failure message followed by its
    stack trace; a plain ApplicationError raised in a handler carries the SDK's and the workflow's
    frames (file paths of the worker). The SDK sends a FailureError's own `failure` proto as is, so
    this one supplies its failure without a stack trace."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, type=APPROVAL_REFUSED, non_retryable=True)

    @property
    def failure(self) -> Failure:
        return Failure(message=self.message,
                       application_failure_info=ApplicationFailureInfo(type=APPROVAL_REFUSED, non_retryable=True))


def status_from_failure(failure: BaseException | None, model: type[Any] = RunStatus) -> Any:
    """The RunStatus (or another status `model`, e.g. a rollout's) a failed run carries in its
    ApplicationError's details (through any chain); None when it has none."""
    while failure is not None:
        for detail in getattr(failure, "details", None) or ():
            try:
                return model.model_validate(detail)
            except Exception:  # noqa: BLE001 - not a RunStatus; keep looking
                continue
        failure = getattr(failure, "cause", None) or failure.__cause__
    return None


async def final_status(handle: WorkflowHandle[Any, Any]) -> RunStatus | None:
    """The RunStatus a closed run returned or carried in its failure; None when it has none
    (terminated, cancelled, or ended before preflight)."""
    try:
        return RunStatus.model_validate(await handle.result())
    except WorkflowFailureError as exc:
        return status_from_failure(exc.cause)


async def query_status(handle: WorkflowHandle[Any, Any]) -> RunStatus:
    return await handle.query(STATUS_QUERY, result_type=RunStatus)


# -- rollouts (workflows/rollout.py) -------------------------------------------------------------
# approve / reject: the same signal and update names as a deploy run (payload ApprovalPayload; the
# fingerprint names the plan state, or stage "wave" continues to the next wave). Controls take
# ControlPayload ({"by": "<your name>", "reason": "..."}); the query `status` -> RolloutStatus.
PAUSE_SIGNAL = "pause"
RESUME_SIGNAL = "resume"
CANCEL_SIGNAL = "cancel"
PAUSE_UPDATE = "pause_update"
RESUME_UPDATE = "resume_update"
CANCEL_UPDATE = "cancel_update"
CONTROL_REFUSED = "ControlRefused"  # ApplicationError type of a refused control update
