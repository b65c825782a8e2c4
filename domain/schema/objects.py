"""The objects of a schema model, one class per kind, each at definition level.

Every object has a `ref` and two renderings used by the comparison:
- `attributes()`: name -> canonical text of everything that is compared. Two objects are equal
  exactly when these dicts are equal. The names are words a plan can print ("type", "grants").
- `describe()`: one line of definition (without owner and grants) that a person can read in a
  plan, e.g. `numeric(10,2) NOT NULL DEFAULT 0` for a column.

Definitions are PostgreSQL's own renderings (pg_get_indexdef, pg_get_constraintdef, ...), read
with `search_path = pg_catalog` so that every name in them is schema-qualified and the text does
not depend on the reader's session. Nothing here holds an OID, a statistic or data (a sequence's
current value, a table's row count): two databases built by the same SQL have equal objects.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from domain.schema.refs import ObjectRef

_FROZEN = ConfigDict(frozen=True)


class Grant(BaseModel):
    """The privileges one role (or PUBLIC) holds on an object, e.g. `app: INSERT, SELECT`.
    Privileges held WITH GRANT OPTION carry that suffix. The grantor is not kept: who granted a
    privilege does not change what the grantee can do."""

    model_config = _FROZEN

    grantee: str
    privileges: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.grantee}: {', '.join(self.privileges)}"


def render_grants(grants: tuple[Grant, ...]) -> str:
    return "; ".join(str(g) for g in grants) if grants else "no privileges"


class SchemaObject(BaseModel):
    model_config = _FROZEN

    ref: ObjectRef

    def attributes(self) -> dict[str, str]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class OwnedObject(SchemaObject):
    """An object with an owner and an access control list. `grants` is the effective ACL: where
    the catalog holds NULL (never granted or revoked), PostgreSQL's default for the kind
    (acldefault) is filled in, so `GRANT ALL TO owner` on a fresh table compares equal to nothing."""

    owner: str
    grants: tuple[Grant, ...] = ()

    def _own_attributes(self) -> dict[str, str]:
        return {}

    def attributes(self) -> dict[str, str]:
        return {**self._own_attributes(), "owner": self.owner, "grants": render_grants(self.grants)}


class Schema(OwnedObject):
    def describe(self) -> str:
        return ""


class Extension(SchemaObject):
    """An installed extension. The objects it creates (functions, types, PostGIS's
    spatial_ref_sys table...) are its members and are not listed as the user's own."""

    version: str
    installed_in: str

    def attributes(self) -> dict[str, str]:
        return {"version": self.version, "schema": self.installed_in}

    def describe(self) -> str:
        return f"version {self.version} in schema {self.installed_in}"


class Table(OwnedObject):
    unlogged: bool = False
    partition_key: str | None = None  # pg_get_partkeydef: "RANGE (created_at)"
    partition_of: str | None = None  # "public.events FOR VALUES FROM (...) TO (...)"
    inherits: tuple[str, ...] = ()
    rls_enabled: bool = False
    rls_forced: bool = False
    options: tuple[str, ...] = ()  # reloptions, e.g. "fillfactor=70"

    def _own_attributes(self) -> dict[str, str]:
        return {
            "persistence": "UNLOGGED" if self.unlogged else "logged",
            "partitioning": f"PARTITION BY {self.partition_key}" if self.partition_key else "not partitioned",
            "partition of": self.partition_of or "not a partition",
            "inheritance": ", ".join(self.inherits) or "inherits nothing",
            "row level security": "enabled" if self.rls_enabled else "disabled",
            "forced row level security": "forced" if self.rls_forced else "not forced",
            "options": ", ".join(self.options) or "no options",
        }

    def describe(self) -> str:
        parts = []
        if self.unlogged:
            parts.append("UNLOGGED")
        if self.partition_key:
            parts.append(f"PARTITION BY {self.partition_key}")
        if self.partition_of:
            parts.append(f"PARTITION OF {self.partition_of}")
        if self.inherits:
            parts.append(f"INHERITS ({', '.join(self.inherits)})")
        if self.rls_enabled:
            parts.append("ROW LEVEL SECURITY" + (" FORCED" if self.rls_forced else ""))
        elif self.rls_forced:
            parts.append("ROW LEVEL SECURITY disabled but FORCED")
        if self.options:
            parts.append(f"WITH ({', '.join(self.options)})")
        return " ".join(parts)


class Column(SchemaObject):
    type: str  # format_type(): "numeric(10,2)", "public.\"Role\"[]"
    not_null: bool = False
    default: str | None = None  # pg_get_expr of the default (not of a generation expression)
    identity: str | None = None  # "ALWAYS" | "BY DEFAULT"
    generated: str | None = None  # the stored generation expression
    collation: str | None = None  # only when it is not the type's default collation
    grants: tuple[Grant, ...] = ()  # column-level privileges only (usually none)

    def attributes(self) -> dict[str, str]:
        return {
            "type": self.type,
            "nullability": "NOT NULL" if self.not_null else "NULL",
            "default": self.default or "no default",
            "identity": f"GENERATED {self.identity} AS IDENTITY" if self.identity else "no identity",
            "generation": f"GENERATED ALWAYS AS ({self.generated}) STORED" if self.generated else "not generated",
            "collation": self.collation or "default collation",
            "column grants": render_grants(self.grants),
        }

    def describe(self) -> str:
        text = self.type
        if self.collation:
            text += f" COLLATE {self.collation}"
        if self.not_null:
            text += " NOT NULL"
        if self.default is not None:
            text += f" DEFAULT {self.default}"
        if self.generated is not None:
            text += f" GENERATED ALWAYS AS ({self.generated}) STORED"
        if self.identity is not None:
            text += f" GENERATED {self.identity} AS IDENTITY"
        return text


class Constraint(SchemaObject):
    constraint_type: str  # "primary key" | "unique" | "foreign key" | "check" | "exclusion" | "trigger"
    definition: str  # pg_get_constraintdef, which ends in NOT VALID when not validated
    validated: bool = True

    def attributes(self) -> dict[str, str]:
        return {
            "type": self.constraint_type,
            "definition": self.definition,
            "validation": "validated" if self.validated else "NOT VALID",
        }

    def describe(self) -> str:
        return self.definition


class Index(SchemaObject):
    """An index. `valid` is False for the leftovers of a failed CREATE INDEX CONCURRENTLY: the
    index exists and blocks its name, but the planner ignores it and a UNIQUE one enforces
    nothing for the rows it never saw. Such an index is never equal to a valid one."""

    definition: str  # pg_get_indexdef
    unique: bool = False
    primary: bool = False
    valid: bool = True

    def attributes(self) -> dict[str, str]:
        return {
            "definition": self.definition,
            "uniqueness": "unique" if self.unique else "not unique",
            "primary key": "primary key" if self.primary else "not primary key",
            "validity": "valid" if self.valid else "INVALID",
        }

    def describe(self) -> str:
        return self.definition + ("" if self.valid else " (INVALID)")


class Enum(OwnedObject):
    values: tuple[str, ...]  # in their sort order, which is the enum's semantics

    def _own_attributes(self) -> dict[str, str]:
        return {"values": self.describe()}

    def describe(self) -> str:
        return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in self.values) + ")"


class Domain(OwnedObject):
    base_type: str
    not_null: bool = False
    default: str | None = None
    collation: str | None = None
    constraints: tuple[str, ...] = ()  # "name: CHECK (...)", sorted by name

    def _own_attributes(self) -> dict[str, str]:
        return {"definition": self.describe()}

    def describe(self) -> str:
        text = self.base_type
        if self.collation:
            text += f" COLLATE {self.collation}"
        if self.not_null:
            text += " NOT NULL"
        if self.default is not None:
            text += f" DEFAULT {self.default}"
        for constraint in self.constraints:
            text += f" CONSTRAINT {constraint}"
        return text


class CompositeType(OwnedObject):
    fields: tuple[str, ...]  # "name type [COLLATE c]", in attribute order (it is positional)

    def _own_attributes(self) -> dict[str, str]:
        return {"fields": self.describe()}

    def describe(self) -> str:
        return "(" + ", ".join(self.fields) + ")"


class RangeType(OwnedObject):
    definition: str  # "subtype = integer, subtype_opclass = ..., ..."

    def _own_attributes(self) -> dict[str, str]:
        return {"definition": self.definition}

    def describe(self) -> str:
        return f"({self.definition})"


class Sequence(OwnedObject):
    """A sequence's definition. Its current value is data, not schema, and is not compared."""

    data_type: str
    start: int
    increment: int
    minimum: int
    maximum: int
    cache: int
    cycle: bool
    owned_by: str | None = None  # "public.orders.id"

    def _own_attributes(self) -> dict[str, str]:
        return {"definition": self.describe(), "owned by": self.owned_by or "owned by no column"}

    def describe(self) -> str:
        return (
            f"AS {self.data_type} START {self.start} INCREMENT {self.increment} "
            f"MINVALUE {self.minimum} MAXVALUE {self.maximum} CACHE {self.cache}"
            + (" CYCLE" if self.cycle else "")
        )


class View(OwnedObject):
    """A view or a materialized view (the ref's kind says which)."""

    definition: str  # pg_get_viewdef
    options: tuple[str, ...] = ()  # security_barrier, check_option, security_invoker...

    def _own_attributes(self) -> dict[str, str]:
        return {"definition": self.definition, "options": ", ".join(self.options) or "no options"}

    def describe(self) -> str:
        return (f"WITH ({', '.join(self.options)}) " if self.options else "") + "AS " + self.definition


class Routine(OwnedObject):
    """A function, procedure or aggregate, identified by its signature (the ref's args)."""

    definition: str  # pg_get_functiondef; for aggregates, the aggregate's parts

    def _own_attributes(self) -> dict[str, str]:
        return {"definition": self.definition}

    def describe(self) -> str:
        return self.definition


class Trigger(SchemaObject):
    definition: str  # pg_get_triggerdef
    enabled: str = "enabled"  # "enabled" | "disabled" | "enabled on replica only" | "enabled always"

    def attributes(self) -> dict[str, str]:
        return {"definition": self.definition, "enabled state": self.enabled}

    def describe(self) -> str:
        return self.definition + ("" if self.enabled == "enabled" else f" ({self.enabled})")


class Policy(SchemaObject):
    permissive: bool = True
    command: str = "ALL"
    roles: tuple[str, ...] = ("PUBLIC",)
    using: str | None = None
    with_check: str | None = None

    def attributes(self) -> dict[str, str]:
        return {"definition": self.describe()}

    def describe(self) -> str:
        text = (
            f"AS {'PERMISSIVE' if self.permissive else 'RESTRICTIVE'} FOR {self.command} "
            f"TO {', '.join(self.roles)}"
        )
        if self.using is not None:
            text += f" USING ({self.using})"
        if self.with_check is not None:
            text += f" WITH CHECK ({self.with_check})"
        return text
