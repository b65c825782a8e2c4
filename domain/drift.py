"""The drift proof's verdict, from the schema model: does the live schema equal what the applied
local migrations build? Pure; domain.plan calls `judge_drift` with what preflight found.

- no_drift: the live schema equals the replay of the applied local migrations.
- explained_by_phantom: equal, and the ledger holds phantoms: they changed nothing the local
  history does not create itself.
- explained_by_resolve: every difference is the effect of a failed migration this plan records as
  applied (or re-runs) because all of its effects are in the database already (the hotfix case):
  once it is resolved, the schema equals the history.
- unexplained_drift: some object differs and nothing in the plan accounts for it; each is named.
- replay_failed / unavailable: no proof either way (the local history does not replay on its own;
  no shadow database could be used).

Approvers see every difference; verification then accepts exactly those (by digest) and reports
any other difference as a failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, model_validator

from domain.schema.compare import Difference
from domain.schema.refs import ObjectRef

# Differences a plan shows in full; all of them are accepted by digest.
SHOWN_DIFFERENCES = 100


class DriftVerdict(StrEnum):
    no_drift = "no_drift"
    explained_by_phantom = "explained_by_phantom"
    explained_by_resolve = "explained_by_resolve"
    unexplained_drift = "unexplained_drift"
    replay_failed = "replay_failed"
    unavailable = "unavailable"


class DriftReport(BaseModel):
    verdict: DriftVerdict
    summary: str
    # Unexplained differences (the first SHOWN_DIFFERENCES), then those a resolve accounts for.
    differences: list[Difference] = Field(default_factory=list)
    explained: list[Difference] = Field(default_factory=list)
    resolved_by: list[str] = Field(default_factory=list)  # failed migrations whose resolve explains them
    count: int = 0  # unexplained differences in all (differences may show fewer)
    # Digest of every difference the plan showed (unexplained and explained): what verify accepts;
    # and, paired by position, the same without the object's schema and relation (a later
    # migration may rename those).
    accepted: list[str] = Field(default_factory=list)
    accepted_moved: list[str] = Field(default_factory=list)
    phantoms: list[str] = Field(default_factory=list)
    replayed: int = 0  # applied local migrations replayed
    shadow_database: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict in (DriftVerdict.no_drift, DriftVerdict.explained_by_phantom, DriftVerdict.explained_by_resolve)

    @model_validator(mode="before")
    @classmethod
    def _from_older_versions(cls, value: Any) -> Any:
        # Histories recorded before the schema model hold name-based differences ({kind, name,
        # change, ...}) and the replayed names as a list: kept readable, never accepted.
        if isinstance(value, dict) and isinstance(value.get("replayed"), list):
            value = dict(value)
            value["replayed"] = len(value["replayed"])
            value["differences"] = []
        return value


def difference_digest(d: Difference) -> str:
    """Identifies one difference by everything but its sentence: the object, how it differs and
    both definitions. The same difference seen again after the deploy has the same digest."""
    canonical = d.model_dump_json(include={"ref", "change", "attributes", "expected", "live"})
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def moved_digest(d: Difference) -> str:
    """difference_digest without where the object lives: a hand-made column of a table that a
    later migration renames is the same difference after the rename."""
    canonical = d.model_dump_json(include={"change", "attributes", "expected", "live"}) + "|" + "|".join(
        (d.ref.kind.value, d.ref.name, d.ref.args or ""))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class DriftAfterDeploy(BaseModel):
    """Verification's split of the differences left after the deploy."""

    as_shown: list[Difference] = Field(default_factory=list)  # the plan showed them, unchanged
    moved: list[Difference] = Field(default_factory=list)  # shown, under a relation renamed since
    new: list[Difference] = Field(default_factory=list)  # not shown: a failure


def split_after_deploy(differences: Sequence[Difference], accepted: Sequence[str],
                       accepted_moved: Sequence[str] = ()) -> DriftAfterDeploy:
    """Each accepted difference excuses at most one difference after the deploy: the same one,
    else one that moved (`accepted` and `accepted_moved` are paired by position)."""
    pairs = list(zip(accepted, accepted_moved or [None] * len(accepted), strict=True))
    out = DriftAfterDeploy()
    rest = []
    for d in differences:
        exact = next((p for p in pairs if p[0] == difference_digest(d)), None)
        if exact is not None:
            pairs.remove(exact)
            out.as_shown.append(d)
        else:
            rest.append(d)
    for d in rest:  # exact matches first, so a moved match never takes a pair an exact one needs
        moved = next((p for p in pairs if p[1] == moved_digest(d)), None)
        if moved is not None:
            pairs.remove(moved)
            out.moved.append(d)
        else:
            out.new.append(d)
    return out


def accounted_for(drift: Sequence[Difference], touched: Sequence[ObjectRef]) -> list[Difference]:
    """The drift differences that lie within what a migration touches (or contain it)."""
    scope = frozenset(touched)
    return [d for d in drift if d.ref.within(scope) or any(t.within({d.ref}) for t in scope)]


def judge_drift(
    drift: Sequence[Difference],
    *,
    phantoms: Sequence[str],
    replayed: int,
    resolved: Mapping[str, Sequence[ObjectRef]] = {},
    shadow_database: str | None = None,
) -> DriftReport:
    """The verdict on `drift` (live vs expected after the `replayed` applied local migrations).
    `resolved`: failed migrations this plan resolves with all their effects present, and the
    objects each touches; differences within those are explained by the resolve."""
    explained: list[Difference] = []
    by: list[str] = []
    for name, touched in resolved.items():
        found = [d for d in accounted_for(drift, touched) if d not in explained]
        if found:
            explained += found
            by.append(name)
    unexplained = [d for d in drift if d not in explained]
    common = dict(
        phantoms=list(phantoms),
        replayed=replayed,
        shadow_database=shadow_database,
        differences=unexplained[:SHOWN_DIFFERENCES],
        explained=explained,
        resolved_by=by,
        count=len(unexplained),
        accepted=[difference_digest(d) for d in drift],  # in the drift's (sorted) order, paired
        accepted_moved=[moved_digest(d) for d in drift],
    )
    applied = f"the {replayed} applied local migration(s)"
    if unexplained:
        names = "; ".join(d.sentence for d in unexplained[:10])
        more = f"; and {len(unexplained) - 10} more" if len(unexplained) > 10 else ""
        hint = (
            f" The phantom migration(s) {', '.join(phantoms)} may be the cause, but their SQL is not in the "
            "repository, so nothing proves it."
            if phantoms
            else ""
        )
        return DriftReport(
            verdict=DriftVerdict.unexplained_drift,
            summary=f"unexplained drift: {len(unexplained)} object(s) differ between the live database and the "
            f"replay of {applied}: {names}{more}.{hint}",
            **common,
        )
    if explained:
        return DriftReport(
            verdict=DriftVerdict.explained_by_resolve,
            summary=f"explained by the resolve of {', '.join(by)}: the live schema differs from the replay of "
            f"{applied} only by the effects of {'that migration' if len(by) == 1 else 'those migrations'} "
            f"({len(explained)} object(s)), which the plan records as applied.",
            **common,
        )
    if phantoms:
        return DriftReport(
            verdict=DriftVerdict.explained_by_phantom,
            summary=f"explained by phantom: no unexplained drift. The live schema equals the replay of {applied}, "
            f"so the phantom migration(s) {', '.join(phantoms)} changed nothing the local history does not "
            "already create.",
            **common,
        )
    return DriftReport(verdict=DriftVerdict.no_drift, summary=f"no drift: the live schema equals the replay of {applied}.",
                       **common)


def no_proof(verdict: DriftVerdict, reason: str, *, phantoms: Sequence[str], replayed: int = 0,
             shadow_database: str | None = None) -> DriftReport:
    """replay_failed / unavailable: the schema could not be compared."""
    what = "drift not proven" if verdict == DriftVerdict.replay_failed else "drift not checked"
    return DriftReport(verdict=verdict, summary=f"{what}: {reason}", phantoms=list(phantoms), replayed=replayed,
                       shadow_database=shadow_database, error=reason)
