"""What preflight gathered from the database and the folder, and the environment's rules: the
inputs of the plan. Activities fill these in (read-only); domain/plan.py decides from them."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from domain.backup_items import MigrationBackups
from domain.models import Blocker
from domain.prisma.diagnosis import HistoryDiagnosis
from domain.prisma.ledger import LedgerSnapshot
from domain.risk import Risk
from domain.schema.compare import Difference
from domain.schema.evidence import MigrationEffects
from domain.schema.replay import ReplayFailure, ReplaySequence
from domain.schema.roles import RoleMap
from domain.sql.rules import MigrationAnalysis


class EnvironmentPolicy(BaseModel):
    """The environment's approval rules, from the worker's settings (never its database URL)."""

    gates: list[str] = Field(default_factory=list)  # stages that wait for a human: resolve | deploy | verify
    approvers: list[str] = Field(default_factory=list)  # empty: anyone proven may approve
    allow_self_approval: bool = False
    approval_timeout: timedelta = timedelta(hours=24)
    required_approvals: dict[Risk, int] = Field(default_factory=lambda: {Risk.low: 1, Risk.medium: 1, Risk.high: 2})
    approval_proofs: list[str] = Field(default_factory=lambda: ["ssh"])  # ssh | typed
    allowed_signers: str = ""  # the approvers' public keys (ssh-keygen ALLOWED SIGNERS text)
    # Backups before destruction larger than this (all of one run's together) need an explicit
    # approval of "no backup" instead.
    backup_max_bytes: int = 1 << 30
    # `drift_proof: always`: a run whose schema cannot be compared (no shadow database) stops.
    require_schema: bool = False

    def approvals_for(self, risk: Risk) -> int:
        return max(1, int(self.required_approvals.get(risk, 1)))


class SchemaState(StrEnum):
    compared = "compared"  # the shadow replay ran (it may still have stopped at a failing migration)
    unavailable = "unavailable"  # no shadow database could be used (e.g. no CREATEDB): nothing compared
    off = "off"  # the environment turned schema checks off (drift_proof: never)


class SchemaFacts(BaseModel):
    """What the run's shadow replay showed, compared inside the activity (activities/schema_facts.py):
    differences and verdicts only, never whole models."""

    state: SchemaState
    reason: str | None = None  # unavailable: why, in one sentence
    shadow_database: str | None = None
    sequence: ReplaySequence = Field(default_factory=ReplaySequence)
    # Where the replay stopped, if a migration failed in the shadow (as it would in Prisma).
    failure: ReplayFailure | None = None
    # Live vs expected after the applied local migrations; None when the replay did not get there.
    drift: list[Difference] | None = None
    # Failed migrations the replay got past: what of their effects the live database holds.
    effects: dict[str, MigrationEffects] = Field(default_factory=dict)
    # Which live roles the shadow's roles stood for in those comparisons (domain/schema/roles.py).
    roles: RoleMap | None = None
    replayed: int = 0  # migrations executed (0 when every prefix came from the cache)
    seconds: float = 0.0

    @property
    def reaches_end(self) -> bool:
        """The whole sequence replayed: the expected schema after the run is known."""
        return self.state == SchemaState.compared and self.failure is None


class PreflightFacts(BaseModel):
    server_version: str = ""
    snapshot: LedgerSnapshot
    diagnosis: HistoryDiagnosis
    analyses: dict[str, MigrationAnalysis] = Field(default_factory=dict)  # migrations whose SQL parsed
    # Problems found before any SQL runs, each already a blocker (unparseable SQL of a migration to
    # run, unparseable verify.sql, duplicate names, a BOM).
    input_problems: list[Blocker] = Field(default_factory=list)
    # Migrations whose derived rollback must not be used (e.g. the rows it would delete already exist).
    unsafe_derived_rollbacks: dict[str, str] = Field(default_factory=dict)
    schema_facts: SchemaFacts = Field(default_factory=lambda: SchemaFacts(state=SchemaState.off))
    # What each migration to run destroys, and its backups (domain/backup.py), by name.
    backups: dict[str, MigrationBackups] = Field(default_factory=dict)
    # Verify statements the run will execute (sizes the run's result).
    verify_statements: int = 0
    # Extensions the server can create (pg_available_extensions); None when not read.
    available_extensions: list[str] | None = None
