"""Typed references to schema objects: what a difference, an evidence item or a plan line points at.

A reference is a value (kind, schema, name, optional routine arguments, optional parent), never a
dotted string that someone parses back: `public."a.b"` and `public.a.b` are different objects, and
only a structured reference keeps them apart. `str(ref)` is for people (plans, errors) and quotes
identifiers the way PostgreSQL would need them.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ObjectKind(StrEnum):
    """Every kind of object the schema model holds. The order here is the order within one
    relation in sorted differences (a table before its columns, constraints, indexes...)."""

    schema = "schema"
    extension = "extension"
    enum = "enum"
    domain = "domain"
    composite_type = "composite type"
    range_type = "range type"
    sequence = "sequence"
    table = "table"
    column = "column"
    constraint = "constraint"
    index = "index"
    trigger = "trigger"
    policy = "policy"
    view = "view"
    materialized_view = "materialized view"
    function = "function"
    procedure = "procedure"
    aggregate = "aggregate"


KIND_RANK = {kind: rank for rank, kind in enumerate(ObjectKind)}
# Kinds whose reference always has a parent relation (their names are unique per relation only,
# or, for indexes, are reported with the table they index).
CHILD_KINDS = frozenset(
    {ObjectKind.column, ObjectKind.constraint, ObjectKind.index, ObjectKind.trigger, ObjectKind.policy}
)
ROUTINE_KINDS = frozenset({ObjectKind.function, ObjectKind.procedure, ObjectKind.aggregate})

_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")


def quote_ident(name: str) -> str:
    """`orders` stays as is, `User` becomes `"User"` (as PostgreSQL's quote_ident, without the
    keyword list: readers need to see case and odd characters, not reserved words)."""
    if _PLAIN_IDENT.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


class ObjectRef(BaseModel):
    """One object of a database schema.

    - `schema_name` is None for objects that belong to the database, not to a schema: schemas
      themselves and extensions.
    - `args` is set for routines only: the identity argument types as PostgreSQL prints them
      (`pg_get_function_identity_arguments`), because functions are identified by signature.
    - `parent` is the table, view or materialized view a column, constraint, index, trigger or
      policy belongs to.
    """

    model_config = ConfigDict(frozen=True)

    kind: ObjectKind
    schema_name: str | None
    name: str
    args: str | None = None
    parent: ObjectRef | None = None

    @classmethod
    def for_schema(cls, name: str) -> ObjectRef:
        return cls(kind=ObjectKind.schema, schema_name=None, name=name)

    @classmethod
    def for_extension(cls, name: str) -> ObjectRef:
        return cls(kind=ObjectKind.extension, schema_name=None, name=name)

    @classmethod
    def of(cls, kind: ObjectKind, schema: str, name: str, *, args: str | None = None) -> ObjectRef:
        """A schema-level object: table, view, type, sequence, routine."""
        return cls(kind=kind, schema_name=schema, name=name, args=args)

    def child(self, kind: ObjectKind, name: str) -> ObjectRef:
        """A column, constraint, index, trigger or policy of this relation."""
        return ObjectRef(kind=kind, schema_name=self.schema_name, name=name, parent=self)

    @property
    def container(self) -> ObjectRef | None:
        """What this object lives in: its relation, else its schema, else nothing. A missing
        container implies its contents are missing, so comparisons report only the container."""
        if self.parent is not None:
            return self.parent
        if self.schema_name is not None:
            return ObjectRef.for_schema(self.schema_name)
        return None

    def within(self, scope: frozenset[ObjectRef] | set[ObjectRef]) -> bool:
        """Whether this object or one of its containers is in `scope`."""
        ref: ObjectRef | None = self
        while ref is not None:
            if ref in scope:
                return True
            ref = ref.container
        return False

    @property
    def qualified_name(self) -> str:
        """`public.orders`, `public.orders.total`, `public.f(integer)`: the name alone, quoted."""
        if self.kind in (ObjectKind.schema, ObjectKind.extension):
            return quote_ident(self.name)
        if self.kind == ObjectKind.column:
            return f"{self.parent.qualified_name}.{quote_ident(self.name)}"  # type: ignore[union-attr]
        if self.kind in (ObjectKind.constraint, ObjectKind.trigger, ObjectKind.policy):
            return quote_ident(self.name)
        base = f"{quote_ident(self.schema_name)}.{quote_ident(self.name)}"  # type: ignore[arg-type]
        return f"{base}({self.args})" if self.kind in ROUTINE_KINDS else base

    def sort_key(self) -> tuple:
        """Deterministic order: by schema, then the relation an object belongs to (so a table's
        columns, indexes and triggers follow it), then kind, then name and signature."""
        anchor = self.parent.name if self.parent is not None else self.name
        return (
            self.schema_name or "",
            self.kind not in (ObjectKind.schema, ObjectKind.extension),
            anchor,
            KIND_RANK[self.kind],
            self.name,
            self.args or "",
        )

    def __str__(self) -> str:
        text = f"{self.kind.value} {self.qualified_name}"
        if self.kind in (ObjectKind.constraint, ObjectKind.index, ObjectKind.trigger, ObjectKind.policy):
            text += f" on {self.parent.qualified_name}"  # type: ignore[union-attr]
        return text
