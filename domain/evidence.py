"""Evidence about a failed migration: for each of its statements, whether its effect is in the
database. Gathered by activities/evidence.py (read-only); the plan decides from it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class StatementEvidence(BaseModel):
    index: int
    line: int
    effect: str  # e.g. "table public.leads exists"
    present: bool | None  # None: unknown or partial
    detail: str = ""


class Evidence(BaseModel):
    migration: str
    statements: list[StatementEvidence] = Field(default_factory=list)
    all_absent: bool = False
    all_present: bool = False
    summary: list[str] = Field(default_factory=list)


def summarise(evidence: Evidence) -> list[str]:
    lines = []
    for s in evidence.statements:
        state = {True: "present", False: "absent", None: "unknown"}[s.present]
        lines.append(f"statement {s.index + 1} (line {s.line}): {s.effect}: {state}" + (f" ({s.detail})" if s.detail else ""))
    if evidence.all_absent:
        lines.append(f"None of the effects of {evidence.migration} are in the database: it left nothing behind.")
    elif evidence.all_present:
        lines.append(f"Every effect of {evidence.migration} is in the database.")
    elif not evidence.statements:
        lines.append(f"{evidence.migration} has no statement whose effect can be looked for.")
    else:
        present = sum(1 for s in evidence.statements if s.present is True)
        unknown = sum(1 for s in evidence.statements if s.present is None)
        lines.append(
            f"{evidence.migration} is partially applied or unverifiable: {present} of {len(evidence.statements)} "
            f"effects present, {unknown} unknown."
        )
    return lines
