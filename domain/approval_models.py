"""The approval models that cross the workflow boundary: what an approver sends, how each attempt
is recorded, the answer to an update, and the environment's approval rules as a run holds them.
Re-exported by domain/models.py, where the rest of the boundary's models live."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field


class ApprovalPayload(BaseModel):
    """What a person types into the Temporal UI's "Send a Signal" dialog, or the CLI sends.

    Loose on purpose: a malformed signal must not be dropped by the converter but recorded as a
    refused attempt, so every field is optional and any type is accepted here, then validated.
    """

    model_config = {"extra": "allow"}

    stage: Any = None
    approver: Any = None
    comment: Any = None
    fingerprint: Any = None
    # A proven approval (`starter.py sign`, `approve --sign-with`): the run it was signed for and
    # the armored SSH signature over domain/approval_proof.py's statement.
    workflow_id: Any = None
    run_id: Any = None
    signature: Any = None
    # A deploy approval of a plan that destroys data no backup will hold (DeployPlan.no_backup):
    # the names of exactly those migrations, acknowledging that they run without a backup.
    no_backup: Any = None


class ApprovalRecord(BaseModel):
    decision: str  # approve | reject
    stage: str | None
    approver: str | None
    comment: str | None = None
    fingerprint: str | None = None
    at: datetime
    via: str  # signal | update | rollout (accepted by the rollout that started this run)
    accepted: bool
    refusal: str | None = None  # why it was refused
    # How the approver's identity was established: "ssh" (a signature by `key_fingerprint`, listed
    # for `principal` in the environment's allowed signers) or "typed" (the name as typed,
    # unproven). None: refused before the proof was judged, or recorded before proofs existed.
    proof: str | None = None
    principal: str | None = None
    key_fingerprint: str | None = None
    # The migrations this approval accepted to run without a backup (the plan's no_backup list).
    no_backup: list[str] = Field(default_factory=list)


class ApprovalAnswer(BaseModel):
    accepted: bool
    message: str


class ApprovalPolicy(BaseModel):
    """The environment's approval rules as preflight read them from the worker's settings.

    Travels in the preflight result so the workflow decides from history, without I/O. Never holds
    the database URL."""

    gates: list[str] = Field(default_factory=list)  # stages that wait for a human: resolve | deploy | verify
    approvers: list[str] = Field(default_factory=list)  # empty: anyone proven may approve
    allow_self_approval: bool = False
    approval_timeout: timedelta = timedelta(hours=24)
    required_approvals: int = 1  # distinct approvers per gate, for this plan's risk
    # Which proofs of identity count (ssh | typed), and the public keys signatures are checked
    # against (ALLOWED SIGNERS text; not secret). In history, so every verdict can be replayed.
    proofs: list[str] = Field(default_factory=lambda: ["ssh"])
    allowed_signers: str = ""
