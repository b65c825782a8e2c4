"""What preflight gathered from the database and the folder, and the environment's rules: the
inputs of the plan. Activities fill these in (read-only); domain/plan.py decides from them."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field

from domain.backup_items import MigrationBackups
from domain.catalog import DriftReport
from domain.evidence import Evidence
from domain.models import Blocker
from domain.prisma.diagnosis import HistoryDiagnosis
from domain.prisma.ledger import LedgerSnapshot
from domain.risk import Risk
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

    def approvals_for(self, risk: Risk) -> int:
        return max(1, int(self.required_approvals.get(risk, 1)))


class PreflightFacts(BaseModel):
    server_version: str = ""
    snapshot: LedgerSnapshot
    diagnosis: HistoryDiagnosis
    analyses: dict[str, MigrationAnalysis] = Field(default_factory=dict)  # migrations whose SQL parsed
    # Problems found before any SQL runs, each already a blocker (unparseable SQL of a migration to
    # run, unparseable verify.sql, duplicate names, a BOM).
    input_problems: list[Blocker] = Field(default_factory=list)
    evidence: dict[str, Evidence] = Field(default_factory=dict)  # failed migrations
    # Migrations whose derived rollback must not be used (e.g. the rows it would delete already exist).
    unsafe_derived_rollbacks: dict[str, str] = Field(default_factory=dict)
    drift: DriftReport | None = None
    # What each migration to run destroys, and its backups (domain/backup.py), by name.
    backups: dict[str, MigrationBackups] = Field(default_factory=dict)
    # Verify statements the run will execute (sizes the run's result).
    verify_statements: int = 0
    # Extensions the server can create (pg_available_extensions); None when not read.
    available_extensions: list[str] | None = None
