"""One risk model for the whole product: the severity of a finding and the risk of a migration or
a plan (low < medium < high). The environment's policy turns a plan's risk into the number of
distinct approvers its gates need."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Severity(StrEnum):
    info = "info"
    warning = "warning"
    error = "error"


class Risk(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"

    @property
    def rank(self) -> int:
        return _RISK_ORDER[self]

    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        if isinstance(other, Risk):
            return self.rank < other.rank
        return NotImplemented

    def __le__(self, other: object) -> bool:  # type: ignore[override]
        if isinstance(other, Risk):
            return self.rank <= other.rank
        return NotImplemented

    def __gt__(self, other: object) -> bool:  # type: ignore[override]
        if isinstance(other, Risk):
            return self.rank > other.rank
        return NotImplemented

    def __ge__(self, other: object) -> bool:  # type: ignore[override]
        if isinstance(other, Risk):
            return self.rank >= other.rank
        return NotImplemented


_RISK_ORDER = {Risk.low: 0, Risk.medium: 1, Risk.high: 2}
_SEVERITY_ORDER = {Severity.info: 0, Severity.warning: 1, Severity.error: 2}
RISK_OF_SEVERITY = {Severity.info: Risk.low, Severity.warning: Risk.medium, Severity.error: Risk.high}


def max_risk(risks: Iterable[Risk | str]) -> Risk:
    """The highest risk of an iterable (low when empty)."""
    best = Risk.low
    for risk in risks:
        risk = Risk(risk)
        if risk.rank > best.rank:
            best = risk
    return best


def severity_rank(severity: Severity | str) -> int:
    return _SEVERITY_ORDER[Severity(severity)]


