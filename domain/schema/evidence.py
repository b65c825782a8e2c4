"""What a (failed) migration left in the database, judged by definitions, not by names.

The objects a migration touches are the difference between the expected schema before it and the
expected schema after it (both from shadow replay). Each of those objects is then looked up in the
live database:
- as after the migration (same definition)  -> applied
- as before the migration                   -> not applied
- anything else (an INVALID index where a valid one is expected, a non-unique index under the
  unique index's name, `CHECK (true)` where a foreign key should be) -> differs

and the migration's verdict is `none` (every object as before: re-applying is right), `all` (every
object as after, definitions equal: resolving as applied is right) or `partial` (a human must
look; each differing object is named). A migration that touches no schema object (data only)
cannot be judged from the schema: `no_schema_effect`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from domain.schema.compare import Difference, compare
from domain.schema.model import SchemaModel
from domain.schema.refs import ObjectRef
from domain.schema.roles import RoleMap


class EffectsVerdict(StrEnum):
    none = "none"
    all = "all"
    partial = "partial"
    no_schema_effect = "no_schema_effect"


class ObjectState(StrEnum):
    applied = "applied"  # as expected after the migration
    not_applied = "not_applied"  # as expected before the migration
    differs = "differs"  # neither


class TouchedObject(BaseModel):
    model_config = ConfigDict(frozen=True)

    ref: ObjectRef
    state: ObjectState
    # What separates the live object from the expected-after one (empty when applied).
    differences: tuple[Difference, ...] = ()


class MigrationEffects(BaseModel):
    model_config = ConfigDict(frozen=True)

    verdict: EffectsVerdict
    objects: tuple[TouchedObject, ...] = ()
    # Set when the migration cannot be replayed (it fails in the shadow too), so the verdict `none`
    # comes from the whole live schema being as before it (see effects_of_unreplayable).
    whole_schema: bool = False

    @property
    def differing(self) -> list[TouchedObject]:
        return [o for o in self.objects if o.state == ObjectState.differs]

    @property
    def sentence(self) -> str:
        n = len(self.objects)
        if self.verdict == EffectsVerdict.no_schema_effect:
            return "it changes no schema object, so the schema cannot show whether it ran"
        if self.verdict == EffectsVerdict.none and self.whole_schema:
            return "none of its effects are in the database: the whole schema is exactly as before it"
        if self.verdict == EffectsVerdict.none:
            return f"none of its effects are in the database ({_objects(n)} as before it)"
        if self.verdict == EffectsVerdict.all:
            return f"all of its effects are in the database with the expected definitions ({_objects(n)})"
        counts = {s: sum(1 for o in self.objects if o.state == s) for s in ObjectState}
        head = (
            f"partly applied: {counts[ObjectState.applied]} of {_objects(n)} as after it, "
            f"{counts[ObjectState.not_applied]} as before it, {counts[ObjectState.differs]} different from both"
        )
        named = [d.sentence for o in self.differing for d in o.differences]
        before = [str(o.ref) for o in self.objects if o.state == ObjectState.not_applied]
        if before:
            named.append("still as before it: " + ", ".join(before))
        return head + ": " + "; ".join(named)


def _objects(n: int) -> str:
    return f"{n} object" + ("" if n == 1 else "s")


def touched_objects(before: SchemaModel, after: SchemaModel) -> list[ObjectRef]:
    """The objects a migration creates, drops or changes: the subset of the schema it touches.
    A created table counts once (its columns and indexes are within it)."""
    return [d.ref for d in compare(before, after)]


def migration_effects(
    before: SchemaModel, after: SchemaModel, live: SchemaModel, *, roles: RoleMap | None = None
) -> MigrationEffects:
    """Which of the migration's effects (`before` -> `after`) the live database holds.
    `roles`: which live roles the shadow's roles stand for, as in compare()."""
    touched = touched_objects(before, after)
    if not touched:
        return MigrationEffects(verdict=EffectsVerdict.no_schema_effect)
    vs_after = _by_touched(compare(after, live, only=touched, roles=roles), touched)
    vs_before = _by_touched(compare(before, live, only=touched, roles=roles), touched)
    objects = []
    for ref in touched:
        if not vs_after[ref]:
            state = ObjectState.applied
        elif not vs_before[ref]:
            state = ObjectState.not_applied
        else:
            state = ObjectState.differs
        diffs = () if state == ObjectState.applied else tuple(vs_after[ref])
        objects.append(TouchedObject(ref=ref, state=state, differences=diffs))
    states = {o.state for o in objects}
    if states == {ObjectState.applied}:
        verdict = EffectsVerdict.all
    elif states == {ObjectState.not_applied}:
        verdict = EffectsVerdict.none
    else:
        verdict = EffectsVerdict.partial
    return MigrationEffects(verdict=verdict, objects=tuple(objects))


def effects_of_unreplayable(before: SchemaModel, live: SchemaModel, *,
                            roles: RoleMap | None = None) -> MigrationEffects | None:
    """For a migration that fails when replayed too (no expected model after it) and whose only
    statement creates an object (e.g. a CREATE UNIQUE INDEX CONCURRENTLY meeting duplicates): its
    only possible effect is that object, so `none` when the live schema is exactly the expected one
    before it; None otherwise (its effects cannot be told apart). The caller checks the shape."""
    if compare(before, live, roles=roles):
        return None
    return MigrationEffects(verdict=EffectsVerdict.none, whole_schema=True)


def _by_touched(diffs: list[Difference], touched: list[ObjectRef]) -> dict[ObjectRef, list[Difference]]:
    """Each difference to the innermost touched object it belongs to (a migration that changes a
    table's RLS and adds one of its columns touches both; the column's difference is the column's)."""
    out: dict[ObjectRef, list[Difference]] = {t: [] for t in touched}
    touched_set = set(touched)
    for d in diffs:
        ref: ObjectRef | None = d.ref
        while ref is not None and ref not in touched_set:
            ref = ref.container
        if ref is not None:
            out[ref].append(d)
    return out
