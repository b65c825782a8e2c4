"""What the run's status keeps of approval attempts: bounded, so that refused attempts (any JSON
anyone sends to a signal) cannot grow the run's result past Temporal's payload limit. Every attempt
stays in full in workflow history (the signal or update event with its payload); the status keeps
every accepted one, the latest refused ones, each field cut to a readable length, and a count of
the refused attempts it no longer lists. Pure.
"""

from __future__ import annotations

from domain.models import ApprovalRecord

MAX_REFUSED_KEPT = 20
MAX_FIELD_CHARS = 500


def _short(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_FIELD_CHARS:
        return text
    return text[: MAX_FIELD_CHARS - 1] + "…"


def keep_attempt(records: list[ApprovalRecord], record: ApprovalRecord) -> int:
    """Append `record` to `records` (the status's list, in place), cut to size; drop the oldest
    refused attempt beyond MAX_REFUSED_KEPT. Returns how many records were dropped (0 or 1)."""
    records.append(record.model_copy(update={
        field: _short(getattr(record, field)) for field in ("stage", "approver", "comment", "fingerprint", "refusal")
    }))
    refused = [r for r in records if not r.accepted]
    if len(refused) <= MAX_REFUSED_KEPT:
        return 0
    records.remove(refused[0])
    return 1
