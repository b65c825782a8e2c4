"""The schema model: what a database's schema is at definition level, and how two compare.

Pure (no I/O): activities.catalog reads a model from a live database, activities.shadow builds the
expected model by replaying migrations. See docs/schema-model.md for what is covered and why.
"""

from domain.schema.compare import Change, Difference, compare
from domain.schema.evidence import (
    EffectsVerdict,
    MigrationEffects,
    ObjectState,
    TouchedObject,
    migration_effects,
    touched_objects,
)
from domain.schema.model import LEDGER_TABLE, SchemaModel
from domain.schema.objects import (
    Column,
    CompositeType,
    Constraint,
    Domain,
    Enum,
    Extension,
    Grant,
    Index,
    Policy,
    RangeType,
    Routine,
    Schema,
    Sequence,
    Table,
    Trigger,
    View,
)
from domain.schema.refs import ObjectKind, ObjectRef, quote_ident
from domain.schema.roles import LiveRoles, RoleMap, default_role_map, map_roles

__all__ = [
    "LEDGER_TABLE",
    "Change",
    "Column",
    "CompositeType",
    "Constraint",
    "Difference",
    "Domain",
    "EffectsVerdict",
    "Enum",
    "Extension",
    "Grant",
    "Index",
    "LiveRoles",
    "MigrationEffects",
    "ObjectKind",
    "ObjectRef",
    "ObjectState",
    "Policy",
    "RangeType",
    "RoleMap",
    "Routine",
    "Schema",
    "SchemaModel",
    "Sequence",
    "Table",
    "TouchedObject",
    "Trigger",
    "View",
    "compare",
    "default_role_map",
    "map_roles",
    "migration_effects",
    "quote_ident",
    "touched_objects",
]
