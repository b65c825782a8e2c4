"""The schema model of one database: every object a migration can create or a person can change by
hand, in every non-system schema, at definition level.

Held as one list per kind (typed, and plain JSON for Temporal payloads); `objects()` gives the
uniform view the comparison works on. Out of the model, by design:
- system schemas (pg_catalog, information_schema, pg_toast*, pg_temp*) and every object that is a
  member of an extension (the extension itself is listed, with its version);
- Prisma's ledger table `_prisma_migrations` (in whatever schema holds it): it is bookkeeping that
  the product writes and checks on its own, never part of what a migration defines;
- data-like state: sequence values, statistics, comments, tablespaces, column order.

Owners and grants are part of the model. A shadow database built by another role than the one
that built the live database will differ in owners; `with_roles_mapped` renames roles on one side
so that such a comparison can still be exact (see docs/schema-model.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from pydantic import BaseModel, ConfigDict

from domain.schema.objects import (
    Column,
    CompositeType,
    Constraint,
    Domain,
    Enum,
    Extension,
    Grant,
    Index,
    OwnedObject,
    Policy,
    RangeType,
    Routine,
    Schema,
    SchemaObject,
    Sequence,
    Table,
    Trigger,
    View,
)
from domain.schema.refs import ObjectRef

LEDGER_TABLE = "_prisma_migrations"
_KIND_FIELDS = (
    "schemas",
    "extensions",
    "enums",
    "domains",
    "composite_types",
    "range_types",
    "sequences",
    "tables",
    "columns",
    "constraints",
    "indexes",
    "triggers",
    "policies",
    "views",
    "routines",
)


class SchemaModel(BaseModel):
    """One database's schema. Build it with activities.catalog.read_schema_model (live) or
    activities.shadow (expected after replaying migrations 1..k)."""

    model_config = ConfigDict(frozen=True)

    schemas: tuple[Schema, ...] = ()
    extensions: tuple[Extension, ...] = ()
    enums: tuple[Enum, ...] = ()
    domains: tuple[Domain, ...] = ()
    composite_types: tuple[CompositeType, ...] = ()
    range_types: tuple[RangeType, ...] = ()
    sequences: tuple[Sequence, ...] = ()
    tables: tuple[Table, ...] = ()
    columns: tuple[Column, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    indexes: tuple[Index, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    policies: tuple[Policy, ...] = ()
    views: tuple[View, ...] = ()  # views and materialized views
    routines: tuple[Routine, ...] = ()  # functions, procedures, aggregates

    def iter_objects(self) -> Iterator[SchemaObject]:
        for field in _KIND_FIELDS:
            yield from getattr(self, field)

    def objects(self) -> dict[ObjectRef, SchemaObject]:
        """Every object by reference. A reference is unique within one database."""
        return {obj.ref: obj for obj in self.iter_objects()}

    def __len__(self) -> int:
        return sum(len(getattr(self, field)) for field in _KIND_FIELDS)

    def with_roles_mapped(self, roles: Mapping[str, str]) -> SchemaModel:
        """The same model with role names renamed (owners, grantees, policy roles), e.g.
        {"shadow_builder": "migrator"} so a shadow built by another role compares to the live
        database. Roles absent from the mapping stay as they are."""
        if not roles:
            return self

        def role(name: str) -> str:
            return roles.get(name, name)

        def grants(items: tuple[Grant, ...]) -> tuple[Grant, ...]:
            merged: dict[str, set[str]] = {}
            for g in items:  # two roles may map onto one: their privileges add up
                merged.setdefault(role(g.grantee), set()).update(g.privileges)
            return tuple(Grant(grantee=k, privileges=tuple(sorted(v))) for k, v in sorted(merged.items()))

        def mapped(obj: SchemaObject) -> SchemaObject:
            update: dict = {}
            if isinstance(obj, OwnedObject):
                update = {"owner": role(obj.owner), "grants": grants(obj.grants)}
            elif isinstance(obj, Column):
                update = {"grants": grants(obj.grants)}
            elif isinstance(obj, Policy):
                update = {"roles": tuple(sorted(role(r) for r in obj.roles))}
            return obj.model_copy(update=update) if update else obj

        return SchemaModel(**{f: tuple(mapped(o) for o in getattr(self, f)) for f in _KIND_FIELDS})


__all__ = [
    "LEDGER_TABLE",
    "SchemaModel",
    "Column",
    "CompositeType",
    "Constraint",
    "Domain",
    "Enum",
    "Extension",
    "Index",
    "Policy",
    "RangeType",
    "Routine",
    "Schema",
    "Sequence",
    "Table",
    "Trigger",
    "View",
]
