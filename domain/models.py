"""Models that cross the workflow boundary: the deploy request, the plan, approvals and the run's status.

Everything here is a pydantic model serialised by Temporal's pydantic data converter, so it is
recorded verbatim in workflow history: that is what the audit reads. Nothing here may hold a
database URL or a password.

Long module: the payload shapes of one workflow's boundary, read together by the audit and by
replay (a field added to one stage's input is seen beside the others it travels with).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, model_validator

from domain.approval_models import (  # noqa: F401 - part of this module's interface
    ApprovalAnswer,
    ApprovalPayload,
    ApprovalPolicy,
    ApprovalRecord,
)
from domain.bundle_models import (  # noqa: F401 - part of this module's interface (the request carries them)
    MAX_BUNDLE_BYTES,
    BundledMigration,
    BundlePart,
    BundlePartDigest,
    MigrationBundle,
    UnreadableMigration,
)
from domain.backup_items import BackupItem
from domain.drift import DriftReport
from domain.lock_waits import LockWait
from domain.risk import Risk, Severity
from domain.schema.evidence import EffectsVerdict


class Operation(StrEnum):
    full = "full"  # resolve, then deploy, then verify
    resolve = "resolve"
    migrate = "migrate"  # deploy, then verify
    verify = "verify"


class Stage(StrEnum):
    preflight = "preflight"
    resolve = "resolve"
    deploy = "deploy"
    verify = "verify"
    compensate = "compensate"
    done = "done"


class Outcome(StrEnum):
    succeeded = "succeeded"
    rejected = "rejected"  # a gate was rejected; anything the run changed was undone
    expired = "expired"  # a gate waited past its timeout; anything the run changed was undone
    cancelled = "cancelled"  # the run was cancelled; anything it changed was undone
    failed_no_changes = "failed_no_changes"  # failed before changing anything in the database
    failed_rolled_back = "failed_rolled_back"  # failed after changing the database, and its changes were undone
    failed_needs_attention = "failed_needs_attention"  # a person must act: the remaining state is in human_action


# -- input -----------------------------------------------------------------------------------


class DeployRequest(BaseModel):
    environment: str
    operation: Operation = Operation.full
    dry_run: bool = False
    requested_by: str
    bundle: MigrationBundle
    # Stop after preflight and return the plan (`starter.py plan`): nothing waits, nothing is written.
    plan_only: bool = False
    # Set by a rollout (workflows/rollout.py) for its runs: the approvals it accepted for one plan state.
    approved_plan: ApprovedPlan | None = None


def workflow_id_for(environment: str) -> str:
    """One open run per target database: a second start with the same id is refused by Temporal."""
    return f"prisma-deploy-{environment}"


# -- plan ------------------------------------------------------------------------------------


class Action(StrEnum):
    apply = "apply"  # pending: run migration.sql, write a ledger row
    reapply = "reapply"  # failed: resolve --rolled-back, then run it again in deploy
    resolve_applied = "resolve_applied"  # failed: resolve --applied (its effects are already there)
    leave_phantom = "leave_phantom"  # in the ledger, not in the bundle: left alone, reported
    already_applied = "already_applied"
    needs_human = "needs_human"  # failed and not provably safe to re-run: the run stops before changes


class Finding(BaseModel):
    """One statement-level observation from SQL analysis (see domain.sql.rules)."""

    code: str
    severity: Severity
    message: str
    line: int | None = None
    statement: str | None = None


class RollbackSource(StrEnum):
    down_sql = "down.sql"  # the migration's own down.sql
    derived = "derived"  # derived from its SQL (domain.sql.rollback)
    backup = "backup"  # it only changes data: undone by putting its backups back


class BlockerCode(StrEnum):
    """Why a plan stops the run before any change (stable: tests, the CLI and the UI switch on it)."""

    needs_baseline = "needs_baseline"  # P3005: tables but no _prisma_migrations
    modified = "modified"  # an applied migration's file changed
    duplicate_unfinished_rows = "duplicate_unfinished_rows"
    failed_blocks_migrate = "failed_blocks_migrate"  # P3009 under operation 'migrate'
    failed_needs_human = "failed_needs_human"
    failed_phantom = "failed_phantom"  # failed in the ledger, no folder
    unknown_state = "unknown_state"
    unparseable_sql = "unparseable_sql"
    unparseable_verify_sql = "unparseable_verify_sql"
    duplicate_name = "duplicate_name"
    case_duplicate_name = "case_duplicate_name"
    byte_order_mark = "byte_order_mark"
    missing_migration_file = "missing_migration_file"  # P3015: a directory to deploy has no readable migration.sql
    extension_unavailable = "extension_unavailable"  # CREATE EXTENSION of one the server does not have
    plan_too_large = "plan_too_large"
    result_too_large = "result_too_large"
    fails_in_prisma = "fails_in_prisma"  # PostgreSQL refuses the file as Prisma sends it (one script)
    # Data it destroys would not be backed up (over the limit, or impossible): needs an explicit "no backup"
    no_backup_needs_approval = "no_backup_needs_approval"  # approval (DeployPlan.no_backup); until then, a stop
    fails_in_shadow = "fails_in_shadow"  # a migration to run fails when replayed: it would fail on deploy (P3018)
    schema_unavailable = "schema_unavailable"  # drift_proof 'always', and no shadow database could be used
    legacy = "legacy"  # a blocker recorded as plain text by an older version


class Blocker(BaseModel):
    code: BlockerCode
    message: str
    migration: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        # Histories recorded before blockers had codes hold plain sentences.
        return {"code": BlockerCode.legacy, "message": value} if isinstance(value, str) else value

    def __str__(self) -> str:
        return self.message


class PlannedMigration(BaseModel):
    name: str
    action: Action
    reason: str
    checksum: str | None = None
    # How the deploy runs the file (domain.sql.script.ExecutionMode): transaction | alone | script.
    execution: str = "transaction"
    in_transaction: bool = True
    rollback: RollbackSource | None = None
    rollback_sql: str | None = None
    risk: Risk = Risk.low
    findings: list[Finding] = Field(default_factory=list)
    backups: list[BackupItem] = Field(default_factory=list)  # taken before its destructive statements
    unbacked: list[str] = Field(default_factory=list)  # data it destroys that no backup will hold, and why
    evidence: list[str] = Field(default_factory=list)  # failed migrations: what was found in the database
    effects: EffectsVerdict | None = None  # failed migrations: the schema model's verdict on its effects


class DeployPlan(BaseModel):
    environment: str
    operation: Operation
    server_version: str = ""
    ledger_exists: bool = True
    # No _prisma_migrations yet and nothing to apply (an empty folder): deploy still creates the
    # table, as `prisma migrate deploy` does.
    creates_ledger: bool = False
    # Migrations already applied that the plan does not list one by one (a long history, to fit a
    # Temporal payload: domain/plan_budget.py).
    unlisted_applied: int = 0
    migrations: list[PlannedMigration] = Field(default_factory=list)
    blockers: list[Blocker] = Field(default_factory=list)  # non-empty: the run stops before any change
    notes: list[str] = Field(default_factory=list)
    risk: Risk = Risk.low
    required_approvals: int = 1
    drift: DriftReport | None = None
    # Preflight replayed the whole folder in the run's shadow database: verify compares the live
    # schema with it. Otherwise why not (schema checks off, no shadow database, history does not replay).
    verify_schema: bool = False
    verify_schema_skipped: str | None = None
    # The migrations whose replay, in this order, is the schema expected once the run is done.
    expected_sequence: list[str] = Field(default_factory=list)
    fingerprint: str = ""
    backup_bytes: int = 0  # estimated size of every backup the run takes
    # Migrations that destroy data no backup will hold: they need an explicit "no backup" approval.
    no_backup: list[str] = Field(default_factory=list)
    # Digest of the ledger rows the plan was made from (part of the fingerprint): deploy and resolve
    # re-read the ledger under the advisory lock and stop if anyone else changed it since.
    ledger_digest: str = ""
    # The plan without environment name or row ids (fingerprint.state_fingerprint): one rollout approval.
    state_fingerprint: str = ""

    def by_action(self, *actions: Action) -> list[PlannedMigration]:
        return [m for m in self.migrations if m.action in actions]


# -- approvals -------------------------------------------------------------------------------


class ApprovedPlan(BaseModel):
    """A rollout's accepted approvals for one plan state: a run takes them only as that rollout's child
    whose plan has `state_fingerprint`, judging each again by its own rules (domain/rollout_approval.py)."""

    state_fingerprint: str
    approvals: list[ApprovalRecord] = Field(default_factory=list)
    signatures: list[str | None] = Field(default_factory=list)  # each approval's SSH signature, or None
    rollout_workflow_id: str
    rollout_run_id: str  # the first run of the rollout (stable across continue-as-new)


# -- stage results ---------------------------------------------------------------------------


class AppliedMigration(BaseModel):
    name: str
    checksum: str
    ledger_id: str
    started_at: datetime
    finished_at: datetime
    duration_ms: float  # from the first lock attempt to the commit (lock_wait says how much was waiting)
    lock_wait: LockWait | None = None


class ResolveDecision(BaseModel):
    name: str
    resolution: str  # rolled_back | applied
    reason: str
    ledger_ids: list[str] = Field(default_factory=list)  # rows touched (rolled_back_at set) or inserted
    marked_ids: list[str] = Field(default_factory=list)  # failed rows this run marked rolled back
    inserted_id: str | None = None  # the row `resolve --applied` inserted


class VerifyCheck(BaseModel):
    check: str
    migration: str | None = None
    passed: bool
    detail: str = ""
    skipped: bool = False  # not run (e.g. no shadow database to compare the schema with); passed stays True


class CompensationStep(BaseModel):
    name: str
    action: str  # ran down.sql | ran derived rollback | restored resolve | skipped | blocked
    ok: bool
    detail: str = ""
    lock_wait: LockWait | None = None  # set when its rollback had to wait for locks


class Progress(BaseModel):
    done: int = 0
    total: int = 0
    current: str | None = None


class PreflightResult(BaseModel):
    plan: DeployPlan
    policy: ApprovalPolicy
    # The worker's settings.heartbeat_timeout: the workflow uses it for every later activity.
    heartbeat_timeout: timedelta = timedelta(seconds=30)
    # No shadow database of the run is left (activities/cleanup.py shadow_left): nothing to drop at the end.
    shadow_clean: bool = False


class RunMarks(BaseModel):
    """Identifiers this run chose (workflow.uuid4 / workflow.now) for everything it writes, so any
    activity attempt — first, retried after a crash, or compensating — recognises its own rows."""

    deploy_ids: dict[str, str] = Field(default_factory=dict)  # migration -> row id of its deploy row
    resolve_ids: dict[str, str] = Field(default_factory=dict)  # migration -> row id `resolve --applied` inserts
    resolve_at: datetime | None = None  # rolled_back_at this run's resolve writes

    def own_ids(self) -> set[str]:
        return set(self.deploy_ids.values()) | set(self.resolve_ids.values())


class ResolveInput(BaseModel):
    environment: str
    plan: DeployPlan
    marks: RunMarks


class ResolveResult(BaseModel):
    decisions: list[ResolveDecision] = Field(default_factory=list)
    stopped: str | None = None  # set when nothing was done, and why (e.g. the ledger changed)


class DeployInput(BaseModel):
    environment: str
    plan: DeployPlan
    migrations: list[BundledMigration]  # the ones to run, in order (apply and reapply actions)
    marks: RunMarks
    # Set when the run's bundle came in parts: `migrations` then carry names and checksums only, and
    # the activity reads their SQL back from the run's history (activities/bundle_store.py).
    bundle_parts: list[BundlePartDigest] = Field(default_factory=list)
    # The migrations of plan.no_backup the deploy approvals acknowledged to run without a backup;
    # the activity refuses to run any of plan.no_backup missing here.
    no_backup_approved: list[str] = Field(default_factory=list)


class FailedMigration(BaseModel):
    name: str
    ledger_id: str | None = None
    error: str
    partial: bool = False  # statements outside a transaction ran before the failure: effects remain
    statements_done: int = 0
    invalid_index_dropped: bool = False  # a failed CONCURRENTLY build's INVALID index (its only effect) dropped
    lock_wait: LockWait | None = None  # how it waited for its locks (the reason, when the budget ran out)


class DeployResult(BaseModel):
    applied: list[AppliedMigration] = Field(default_factory=list)  # this run's rows, in order
    failed: FailedMigration | None = None
    stopped: str | None = None  # nothing was changed, and why
    # With `stopped`: the activity refused its input before touching the database (a plan's
    # no_backup migration no approval acknowledged), so the run's deploy changed nothing at all.
    refused: bool = False
    needs_attention: str | None = None  # a crash left a non-transactional migration half-done


class VerifyInput(BaseModel):
    environment: str
    plan: DeployPlan
    migrations: list[BundledMigration]  # checksums, verify_sql; sql too when the schema is compared
    # Set when the run's bundle came in parts: `migrations` is then empty and the activity reads
    # the whole bundle back from the run's history.
    bundle_parts: list[BundlePartDigest] = Field(default_factory=list)
    # Compare the live schema with the replay of the plan's expected_sequence (from the worker's
    # cache of preflight's replay, mostly); drift the approved plan showed is accepted by digest.
    compare_schema: bool = False
    expected_sequence: list[str] = Field(default_factory=list)
    accepted_drift: list[str] = Field(default_factory=list)
    accepted_drift_moved: list[str] = Field(default_factory=list)
    schema_skipped: str | None = None  # why the schema is not compared, when it is not


class VerifyResult(BaseModel):
    checks: list[VerifyCheck] = Field(default_factory=list)
    shadow_clean: bool = False  # as PreflightResult's

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


class UndoStep(BaseModel):
    """One migration this run may have applied, and how to undo it (newest first in the input)."""

    name: str
    ledger_id: str
    rollback: RollbackSource | None = None
    rollback_sql: str | None = None
    in_transaction: bool = True
    unbacked: list[str] = Field(default_factory=list)  # data it destroyed that no backup holds
    # Set for this run's failed migration when its failure provably changed nothing (rolled-back
    # transaction, or no statement done outside one): its failed row is simply marked rolled back.
    failed_without_effects: bool = False


class CompensateInput(BaseModel):
    environment: str
    undo: list[UndoStep] = Field(default_factory=list)  # newest first
    marks: RunMarks  # resolve decisions are restored from these (rows marked at marks.resolve_at)


class CompensateResult(BaseModel):
    steps: list[CompensationStep] = Field(default_factory=list)
    complete: bool = True  # schema and data as before the run
    human_action: str | None = None
    schema_differences: list[str] = Field(default_factory=list)  # what still differs from before the run
    data_lost: list[str] = Field(default_factory=list)  # destroyed without a backup (approved "no backup")


class RunStatus(BaseModel):
    """Answer of the `status` query, and the workflow's result."""

    environment: str
    operation: Operation
    dry_run: bool
    requested_by: str
    revision: str | None = None
    stage: Stage = Stage.preflight
    awaiting: str | None = None  # stage whose gate waits for a human
    approvals_needed: int = 0
    plan: DeployPlan | None = None
    progress: Progress = Field(default_factory=Progress)
    stage_times: dict[str, dict[str, datetime | None]] = Field(default_factory=dict)
    approvals: list[ApprovalRecord] = Field(default_factory=list)  # bounded: domain/attempts.py
    refused_not_kept: int = 0  # refused attempts no longer listed in `approvals` (all are in history)
    resolved: list[ResolveDecision] = Field(default_factory=list)
    applied: list[AppliedMigration] = Field(default_factory=list)
    failed: FailedMigration | None = None  # the migration that failed (with its lock waits), if one did
    verification: list[VerifyCheck] = Field(default_factory=list)
    compensation: list[CompensationStep] = Field(default_factory=list)
    outcome: Outcome | None = None
    error: str | None = None
    human_action: str | None = None  # what a person must do, when the run could not clean up
    policy: ApprovalPolicy | None = None
    gates_passed: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # e.g. what a dry run skipped

