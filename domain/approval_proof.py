"""Proven approvers: an approval signed with the approver's SSH key, checked against the
environment's allowed signers (issue 15, item 1).

Why a signature: Temporal records no trustworthy caller identity for a signal or an update (see
docs/approver-identity.md), so a typed `"approver": "alice"` proves nothing. A signature by a key
listed for `alice` does, and it is checked by the workflow itself, from history alone.

What is signed (the canonical message, format v1; UTF-8, `\\n` line ends, one trailing newline):

    prisma-temporal-deploy approval v1
    workflow: prisma-deploy-prod
    run: 0194f3a2-7c1e-7d55-9f5c-6d0b1e2a3c4d
    stage: deploy
    decision: approve
    approver: alice
    fingerprint: 5d41402abc4b2a76b9719d911017c592...

A deploy approval of a plan that runs migrations without a backup of the data they destroy
(DeployPlan.no_backup) also signs that acknowledgement. Its message is format v2: the same lines,
with `v2` in the first, then one line per such migration, in sorted order:

    prisma-temporal-deploy approval v2
    ...
    fingerprint: 5d41402abc4b2a76b9719d911017c592...
    no-backup: 20250102000000_drop_phone

Every other approval's message is exactly v1 (signatures made before v2 existed still verify),
and a v1 signature can never pass for a v2 statement or the reverse (the bytes differ).

in the SSHSIG namespace `prisma-deploy-approval` (`ssh-keygen -Y sign -n prisma-deploy-approval`),
so a signature made for git commits or files can never pass for an approval, nor the reverse.
Values are the run's own facts, never the payload's: the workflow id and the run's first
execution run id from workflow.info() (the run id, unless the run was reset), the plan fingerprint from preflight's plan, the decision from the handler that
received it (approve or reject); stage and approver are the ones the payload asks for. The
approver's name is signed too, so a key listed for several principals cannot approve once per name
with one signature; the comment is not signed (it is free text, recorded as sent).

Pure and deterministic: no I/O, no clock (the caller passes `at`, workflow.now() in the workflow).
Import it in workflow code through workflow.unsafe.imports_passed_through().
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from domain.allowed_signers import AllowedSigner
from domain.sshsig import SshSigError, SshSignature, parse_armored, unsupported_key_reason

FORMAT = "prisma-temporal-deploy approval v1"
FORMAT_NO_BACKUP = "prisma-temporal-deploy approval v2"  # v1 plus the no-backup lines
NAMESPACE = "prisma-deploy-approval"
DECISIONS = ("approve", "reject")
STAGES = ("resolve", "deploy", "verify")
MAX_VALUE_CHARS = 200
# Payload keys (the JSON pasted into the Temporal UI or sent by the CLI).
SIGNATURE_KEY = "signature"
SIGNED_IDS = ("workflow_id", "run_id")


@dataclass(frozen=True)
class ApprovalStatement:
    """What an approver signs: this decision, on this stage, of this plan, in this run."""

    workflow_id: str
    run_id: str
    stage: str
    decision: str
    approver: str
    fingerprint: str
    # Migrations the approval accepts to run without a backup (deploy gate; empty: a v1 message).
    no_backup: tuple[str, ...] = ()

    def problem(self) -> str | None:
        """Why this statement cannot be signed or checked (one sentence), or None."""
        if self.decision not in DECISIONS:
            return f"unknown decision '{self.decision}' (approve or reject)"
        for field in ("workflow_id", "run_id", "stage", "approver", "fingerprint"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value.strip():
                return f"the {field.replace('_', ' ')} to sign is empty"
            if value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
                return f"the {field.replace('_', ' ')} to sign has surrounding spaces or control characters"
            if len(value) > MAX_VALUE_CHARS:
                return f"the {field.replace('_', ' ')} to sign is longer than {MAX_VALUE_CHARS} characters"
        for name in self.no_backup:
            if (not isinstance(name, str) or not name.strip() or name != name.strip() or len(name) > MAX_VALUE_CHARS
                    or any(ord(c) < 32 or ord(c) == 127 for c in name)):
                return f"the migration name {name!r} to acknowledge without a backup cannot be signed"
        return None

    def message(self) -> bytes:
        """The exact bytes signed. Raises ValueError for a statement `problem()` refuses."""
        problem = self.problem()
        if problem:
            raise ValueError(problem)
        text = (
            f"{FORMAT_NO_BACKUP if self.no_backup else FORMAT}\n"
            f"workflow: {self.workflow_id}\n"
            f"run: {self.run_id}\n"
            f"stage: {self.stage}\n"
            f"decision: {self.decision}\n"
            f"approver: {self.approver}\n"
            f"fingerprint: {self.fingerprint.lower()}\n"
        )
        text += "".join(f"no-backup: {name}\n" for name in sorted(set(self.no_backup)))
        return text.encode("utf-8")


@dataclass(frozen=True)
class Proven:
    """The signature is good: `principal` (the approver's name, matched by an allowed-signers line)
    holds the key `key_fingerprint`. Count distinct approvers by principal, and refuse a second
    principal proven by a key that already counted for the gate."""

    principal: str
    key_fingerprint: str
    key_type: str
    signer_line: int  # the allowed-signers line that vouched for the key
    proof: str = "ssh"

    accepted = True


@dataclass(frozen=True)
class Refused:
    """The approval is not proven, and why, in one sentence for the approver."""

    reason: str
    key_fingerprint: str | None = None

    accepted = False


ProofVerdict = Proven | Refused


def verify_approval(
    signature: Any,
    statement: ApprovalStatement,
    allowed_signers: Sequence[AllowedSigner],
    *,
    at: datetime,
    claims: Mapping[str, Any] | None = None,
    namespace: str = NAMESPACE,
) -> ProofVerdict:
    """Whether `signature` (armored SSHSIG text) proves `statement` by a key the allowed signers
    list for its approver, valid at `at`.

    `claims` is the payload as sent (its workflow_id, run_id, fingerprint): used only to say what
    a wrong signature was made for, never to decide that a signature is good."""
    if signature is None or (isinstance(signature, str) and not signature.strip()):
        return Refused("the approval is not signed: sign it with `starter.py sign` and paste the JSON it prints")
    if not isinstance(signature, str):
        return Refused(f"'{SIGNATURE_KEY}' must be a text (the armored SSH signature), not {type(signature).__name__}")
    problem = statement.problem()
    if problem:
        return Refused(problem)
    try:
        sig = parse_armored(signature)
    except SshSigError as exc:
        return Refused(f"the signature is malformed: {exc}")
    fp = sig.key_fingerprint
    unsupported = unsupported_key_reason(sig.key_type)
    if unsupported:
        return Refused(unsupported, fp)
    if sig.namespace != namespace:
        return Refused(
            f"the signature was made for the namespace '{sig.namespace}', not '{namespace}': "
            f"sign with `starter.py sign` (ssh-keygen -Y sign -n {namespace})", fp)
    holding = [s for s in allowed_signers if s.holds(sig.key_type, sig.public_key)]
    if not holding:
        return Refused(f"the signing key {fp} is not in this environment's allowed signers", fp)
    if not sig.verifies(statement.message(), namespace):
        return Refused(_mismatch(sig, statement, holding, claims or {}, namespace), fp)

    approver = statement.approver
    for_name = [s for s in holding if s.allows_principal(approver)]
    if not for_name:
        listed = "; ".join(s.principals for s in holding)
        return Refused(f"the key {fp} is allowed for {listed}, not for {approver}", fp)
    in_namespace = [s for s in for_name if s.allows_namespace(namespace)]
    if not in_namespace:
        limits = "; ".join(f'line {s.line}: namespaces="{s.namespaces}"' for s in for_name)
        return Refused(f"the key {fp} of {approver} may not sign deploy approvals ({limits})", fp)
    when = at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)
    reasons = []
    for signer in in_namespace:
        invalid = signer.validity_refusal(when)
        if invalid is None:
            return Proven(principal=approver, key_fingerprint=fp, key_type=sig.key_type, signer_line=signer.line)
        reasons.append(invalid)
    return Refused(f"the key {fp} of {approver} {'; '.join(reasons)}", fp)


def _mismatch(
    sig: SshSignature,
    statement: ApprovalStatement,
    holding: Sequence[AllowedSigner],
    claims: Mapping[str, Any],
    namespace: str,
) -> str:
    """The signature is by a listed key but not over this statement: find what it was made for, by
    trying the statements a person could plausibly have signed instead (one field changed)."""
    here = f"run {statement.workflow_id}/{statement.run_id}"
    candidates: list[tuple[ApprovalStatement, str]] = []
    other = "reject" if statement.decision == "approve" else "approve"
    candidates.append((replace(statement, decision=other),
                       f"the signature is for the decision '{other}', not '{statement.decision}'"))
    run_id, workflow_id = _text(claims.get("run_id")), _text(claims.get("workflow_id"))
    if run_id or workflow_id:
        signed_for = replace(statement, run_id=run_id or statement.run_id, workflow_id=workflow_id or statement.workflow_id)
        if signed_for != statement:
            candidates.append((signed_for,
                               f"the signature is for run {signed_for.workflow_id}/{signed_for.run_id}, not this {here}: "
                               "sign again for this run (`starter.py sign`)"))
    fingerprint = _text(claims.get("fingerprint"))
    if fingerprint and fingerprint.lower() != statement.fingerprint.lower():
        candidates.append((replace(statement, fingerprint=fingerprint),
                           f"the signature is for the plan fingerprint {fingerprint}, but this run's plan is "
                           f"{statement.fingerprint}: review the current plan and sign again"))
    if statement.no_backup:
        candidates.append((replace(statement, no_backup=()),
                           "the signature does not cover the acknowledgement that "
                           f"{', '.join(sorted(statement.no_backup))} run(s) without a backup: sign again with "
                           "`starter.py sign ... --no-backup NAME` for each of them"))
    for stage in STAGES:
        if stage != statement.stage:
            candidates.append((replace(statement, stage=stage),
                               f"the signature is for the '{stage}' stage, not '{statement.stage}'"))
    for signer in holding:
        for name in signer.principals.split(","):
            if name != statement.approver and not any(c in name for c in "*?!"):
                candidates.append((replace(statement, approver=name),
                                   f"the signature was made by {name}, but the approval says {statement.approver}"))
    for candidate, explanation in candidates[:16]:
        if candidate.problem() is None and sig.verifies(candidate.message(), namespace):
            return explanation
    return (f"the signature by key {sig.key_fingerprint} does not match this approval ({statement.stage}, "
            f"{statement.decision} by {statement.approver}, plan {statement.fingerprint[:12]}…, {here}): "
            "it was altered, or made for something else; sign again with `starter.py sign`")


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def signed_payload(statement: ApprovalStatement, signature: str, comment: str | None = None) -> dict[str, Any]:
    """The approval payload carrying its proof, as the workflow's approve/reject signals and updates
    take it. Keys in reading order: what is approved first, the long signature last."""
    payload = {
        "stage": statement.stage,
        "approver": statement.approver,
        "fingerprint": statement.fingerprint,
        "workflow_id": statement.workflow_id,
        "run_id": statement.run_id,
    }
    if comment:
        payload["comment"] = comment
    if statement.no_backup:
        payload["no_backup"] = sorted(set(statement.no_backup))
    payload[SIGNATURE_KEY] = signature.strip() + "\n"
    return payload


def payload_json(payload: Mapping[str, Any]) -> str:
    """One line of JSON (the signature's line breaks escaped as \\n), ready to paste whole into
    the Temporal UI's Send an Update / Send a Signal dialog."""
    return json.dumps(dict(payload), ensure_ascii=True, separators=(", ", ": "))
