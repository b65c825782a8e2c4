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
that owns the live database's objects differs in owners; domain/schema/roles.py says which live
roles the shadow's roles stand for, so that such a comparison can still be exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pydantic import BaseModel, ConfigDict

from domain.schema.objects import (
    Column,
    CompositeType,
    Constraint,
    Domain,
    Enum,
    Extension,
    Index,
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

    def kinds(self) -> Iterator[tuple[SchemaObject, ...]]:
        """The objects of each kind (schemas, extensions, ..., routines), always in this order."""
        for field in _KIND_FIELDS:
            yield getattr(self, field)

    def objects(self) -> dict[ObjectRef, SchemaObject]:
        """Every object by reference. A reference is unique within one database."""
        return {obj.ref: obj for obj in self.iter_objects()}

    def __len__(self) -> int:
        return sum(len(getattr(self, field)) for field in _KIND_FIELDS)

    def map_objects(self, fn: Callable[[SchemaObject], SchemaObject]) -> SchemaModel:
        """The same model with every object replaced by fn(object) (e.g. roles renamed:
        domain/schema/roles.py)."""
        return SchemaModel(**{f: tuple(fn(o) for o in getattr(self, f)) for f in _KIND_FIELDS})


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
