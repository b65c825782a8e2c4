"""How DeployWorkflow calls its activities: timeouts, retry policies, and the slimmed plan each
activity receives. Imported by the workflow inside imports_passed_through()."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from activities.failures import NON_RETRYABLE
from domain.models import Action, DeployPlan

QUICK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=NON_RETRYABLE,
)
PREFLIGHT_TIMEOUT = timedelta(minutes=5)
RESOLVE_TIMEOUT = timedelta(minutes=5)
VERIFY_TIMEOUT = timedelta(minutes=15)
# Deploy runs every planned migration in one attempt: generous overall, but a stuck or orphaned
# attempt is noticed within the heartbeat timeout and cancelled.
DEPLOY_TIMEOUT = timedelta(hours=6)
# Preflight's; later activities use the worker's settings.heartbeat_timeout, which preflight returns.
# Every activity heartbeats, so one on a dead worker is retried elsewhere after this, not after
# its start_to_close timeout (verify: 15 minutes).
HEARTBEAT_TIMEOUT = timedelta(seconds=30)
DEPLOY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=5,
    non_retryable_error_types=NON_RETRYABLE,
)
# Dropping the run's shadow database when the run ends (one DROP DATABASE).
CLEANUP_TIMEOUT = timedelta(minutes=2)
COMPENSATE_TIMEOUT = timedelta(hours=2)
COMPENSATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
    non_retryable_error_types=NON_RETRYABLE,
)


def slim_plan(plan: DeployPlan, *actions: Action) -> DeployPlan:
    """The plan as an activity needs it: only the migrations it acts on, without the review
    material (findings, evidence, rollback SQL) already recorded once in preflight's result.
    Keeps activity inputs, and so history, small."""
    return plan.model_copy(update={
        "migrations": [m.model_copy(update={"findings": [], "evidence": [], "rollback_sql": None})
                       for m in plan.migrations if m.action in actions],
        "notes": [],
        "blockers": [],
        "drift": None,
    })
