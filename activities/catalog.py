"""Reading a database's schema model (domain.schema.SchemaModel) from its catalog.

One query per object kind (activities.catalog_queries), all in one read-only REPEATABLE READ
transaction so that every kind is read from the same snapshot, with `search_path = pg_catalog` so
that PostgreSQL's renderings are fully qualified. On documenso's 163 migrations this takes about
30 ms (docs/schema-model.md compares it with pg_dump and the `results` library, and says why we
read the catalog ourselves: both of those hide an INVALID index).

A 10,000-migration history's model holds ~50,000 objects. Building it allocates a few hundred
thousand Python objects, so the build shares what repeats (one Grant tuple per distinct ACL, one
reference per relation for all its columns, indexes...) and runs with the cyclic garbage collector
paused (see _collector_paused): without both, a build took ~2.4 s there, three quarters of it in
the collector scanning the worker's heap.

The reader gathers facts only: it decides nothing, and the comparison is domain.schema.compare.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterable, Iterator
from typing import Any

import asyncpg

from activities import catalog_queries as q
from domain.schema import (
    LEDGER_TABLE,
    Column,
    CompositeType,
    Constraint,
    Domain,
    Enum,
    Extension,
    Grant,
    Index,
    LiveRoles,
    ObjectKind,
    ObjectRef,
    Policy,
    RangeType,
    Routine,
    Schema,
    SchemaModel,
    Sequence,
    Table,
    Trigger,
    View,
)

_RELKIND = {"r": ObjectKind.table, "p": ObjectKind.table, "v": ObjectKind.view, "m": ObjectKind.materialized_view}
_CONTYPE = {"p": "primary key", "u": "unique", "f": "foreign key", "c": "check", "x": "exclusion", "t": "trigger"}
_IDENTITY = {"a": "ALWAYS", "d": "BY DEFAULT"}
_TRIGGER_ENABLED = {"O": "enabled", "D": "disabled", "R": "enabled on replica only", "A": "enabled always"}
_POLICY_COMMAND = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
_PROKIND = {"f": ObjectKind.function, "w": ObjectKind.function, "p": ObjectKind.procedure, "a": ObjectKind.aggregate}


async def read_schema_model(conn: asyncpg.Connection) -> SchemaModel:
    """The schema model of the database `conn` is connected to, read from one snapshot.

    Works inside or outside a caller's transaction (inside one, it reads the caller's snapshot and
    leaves the caller's search_path as it was)."""
    nested = conn.is_in_transaction()
    # Nested, we are a savepoint (isolation is the caller's); on its own, one snapshot for all kinds.
    transaction = conn.transaction() if nested else conn.transaction(isolation="repeatable_read", readonly=True)
    async with transaction:
        previous = await conn.fetchval("SELECT current_setting('search_path')")
        await conn.execute("SET LOCAL search_path = pg_catalog")
        rows = {name: await conn.fetch(sql) for name, sql in _QUERIES}
        if nested:
            # A released savepoint keeps SET LOCAL until the caller's transaction ends: put it back.
            await conn.execute("SELECT set_config('search_path', $1, true)", previous)
    with _collector_paused():
        return _model(rows)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for one synchronous stretch (no await inside, so nothing
    else of the worker runs meanwhile). The objects a model build creates hold no reference cycles,
    so the collector has nothing to find in them, but the allocations alone would trigger several
    full passes over the worker's heap, cached models included."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def read_live_roles(conn: asyncpg.Connection) -> LiveRoles:
    """The roles that say who owns what the migrations built (domain/schema/roles.py): this
    session's current_user, and the owner of Prisma's ledger in the session's schema (where
    activities/ledger.py reads it), None before the first deploy."""
    row = await conn.fetchrow(
        "SELECT current_user AS session_role, (SELECT pg_get_userbyid(c.relowner) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
        "AND c.relname = $1 AND c.relkind IN ('r', 'p')) AS ledger_owner", LEDGER_TABLE)
    return LiveRoles(session_role=row["session_role"], ledger_owner=row["ledger_owner"])


_QUERIES = (
    ("schemas", q.SCHEMAS),
    ("extensions", q.EXTENSIONS),
    ("relations", q.RELATIONS),
    ("columns", q.COLUMNS),
    ("constraints", q.CONSTRAINTS),
    ("indexes", q.INDEXES),
    ("sequences", q.SEQUENCES),
    ("types", q.TYPES),
    ("routines", q.ROUTINES),
    ("triggers", q.TRIGGERS),
    ("policies", q.POLICIES),
)


def _parse_grants(raw: str | None) -> tuple[Grant, ...]:
    """Sorted in Python (not by the server's collation) so that the order is the same everywhere."""
    items = json.loads(raw) if raw else []
    return tuple(
        sorted((Grant(grantee=grantee, privileges=tuple(sorted(privs))) for grantee, privs in items), key=lambda g: g.grantee)
    )


class _Shared:
    """What one read builds once and shares (all of it immutable): the grants of each distinct
    ACL text (most objects hold their kind's default ACL), and each relation's reference, used by
    the relation itself and by its columns, constraints, indexes, triggers and policies."""

    def __init__(self) -> None:
        self._grants: dict[str | None, tuple[Grant, ...]] = {}
        self._relations: dict[tuple[ObjectKind, str, str], ObjectRef] = {}

    def grants(self, raw: str | None) -> tuple[Grant, ...]:
        found = self._grants.get(raw)
        if found is None:
            found = self._grants[raw] = _parse_grants(raw)
        return found

    def relation_ref(self, kind: ObjectKind, schema: str, name: str) -> ObjectRef:
        key = (kind, schema, name)
        found = self._relations.get(key)
        if found is None:
            found = self._relations[key] = ObjectRef.of(kind, schema, name)
        return found

    def parent(self, row: Any) -> ObjectRef:
        """The relation a column, constraint, index, trigger or policy row belongs to."""
        return self.relation_ref(_RELKIND.get(row["relkind"], ObjectKind.table), row["schema"], row["relation"])


def _sorted(objects: Iterable[Any]) -> tuple:
    return tuple(sorted(objects, key=lambda o: o.ref.sort_key()))


def _model(rows: dict[str, list[asyncpg.Record]]) -> SchemaModel:
    shared = _Shared()
    tables, views = [], []
    for r in rows["relations"]:
        kind = _RELKIND[r["relkind"]]
        ref = shared.relation_ref(kind, r["schema"], r["name"])
        common = {"ref": ref, "owner": r["owner"], "grants": shared.grants(r["grants"]), "options": tuple(sorted(r["options"]))}
        if kind == ObjectKind.table:
            tables.append(
                Table(
                    **common,
                    unlogged=r["unlogged"],
                    partition_key=r["partition_key"],
                    partition_of=r["partition_of"],
                    inherits=tuple(r["inherits"]),
                    rls_enabled=r["rls_enabled"],
                    rls_forced=r["rls_forced"],
                )
            )
        else:
            views.append(View(**common, definition=r["view_definition"]))
    return SchemaModel(
        schemas=_sorted(
            Schema(ref=ObjectRef.for_schema(r["name"]), owner=r["owner"], grants=shared.grants(r["grants"]))
            for r in rows["schemas"]
        ),
        extensions=_sorted(
            Extension(ref=ObjectRef.for_extension(r["name"]), version=r["version"], installed_in=r["installed_in"])
            for r in rows["extensions"]
        ),
        tables=_sorted(tables),
        views=_sorted(views),
        columns=_sorted(_column(r, shared) for r in rows["columns"]),
        constraints=_sorted(
            Constraint(
                ref=shared.parent(r).child(ObjectKind.constraint, r["name"]),
                constraint_type=_CONTYPE.get(r["contype"], r["contype"]),
                definition=r["definition"],
                validated=r["validated"],
            )
            for r in rows["constraints"]
        ),
        indexes=_sorted(
            Index(
                ref=shared.parent(r).child(ObjectKind.index, r["name"]),
                definition=r["definition"],
                unique=r["is_unique"],
                primary=r["is_primary"],
                valid=r["valid"],
            )
            for r in rows["indexes"]
        ),
        sequences=_sorted(_sequence(r, shared) for r in rows["sequences"]),
        **_types(rows["types"], shared),
        routines=_sorted(
            Routine(
                ref=ObjectRef.of(_PROKIND.get(r["prokind"], ObjectKind.function), r["schema"], r["name"], args=r["args"]),
                owner=r["owner"],
                grants=shared.grants(r["grants"]),
                definition=r["definition"],
            )
            for r in rows["routines"]
        ),
        triggers=_sorted(
            Trigger(
                ref=shared.parent(r).child(ObjectKind.trigger, r["name"]),
                definition=r["definition"],
                enabled=_TRIGGER_ENABLED.get(r["enabled"], r["enabled"]),
            )
            for r in rows["triggers"]
        ),
        policies=_sorted(
            Policy(
                ref=shared.parent(r).child(ObjectKind.policy, r["name"]),
                permissive=r["permissive"],
                command=_POLICY_COMMAND.get(r["command"], r["command"]),
                roles=tuple(sorted(r["roles"] or ("PUBLIC",))),
                using=r["using_expression"],
                with_check=r["check_expression"],
            )
            for r in rows["policies"]
        ),
    )


def _column(r: Any, shared: _Shared) -> Column:
    generated = r["generated"] or None  # "" when the column is not generated
    return Column(
        ref=shared.parent(r).child(ObjectKind.column, r["name"]),
        type=r["type"],
        not_null=r["not_null"],
        # pg_attrdef holds either the default or the generation expression.
        default=None if generated else r["expression"],
        generated=r["expression"] if generated else None,
        identity=_IDENTITY.get(r["identity"]),
        collation=r["collation"],
        grants=shared.grants(r["grants"]),
    )


def _sequence(r: Any, shared: _Shared) -> Sequence:
    return Sequence(
        ref=ObjectRef.of(ObjectKind.sequence, r["schema"], r["name"]),
        owner=r["owner"],
        grants=shared.grants(r["grants"]),
        data_type=r["data_type"],
        start=r["start"],
        increment=r["increment"],
        minimum=r["minimum"],
        maximum=r["maximum"],
        cache=r["cache"],
        cycle=r["cycle"],
        owned_by=r["owned_by"],
    )


def _types(rows: list[asyncpg.Record], shared: _Shared) -> dict[str, tuple]:
    enums, domains, composites, ranges = [], [], [], []
    for r in rows:
        owned = {"owner": r["owner"], "grants": shared.grants(r["grants"])}
        kind = {"e": ObjectKind.enum, "d": ObjectKind.domain, "c": ObjectKind.composite_type, "r": ObjectKind.range_type}[
            r["typtype"]
        ]
        ref = ObjectRef.of(kind, r["schema"], r["name"])
        if kind == ObjectKind.enum:
            enums.append(Enum(ref=ref, **owned, values=tuple(r["labels"] or ())))
        elif kind == ObjectKind.domain:
            domains.append(
                Domain(
                    ref=ref,
                    **owned,
                    base_type=r["base_type"],
                    not_null=r["not_null"],
                    default=r["default_value"],
                    collation=r["collation"],
                    constraints=tuple(r["domain_constraints"]),
                )
            )
        elif kind == ObjectKind.composite_type:
            composites.append(CompositeType(ref=ref, **owned, fields=tuple(r["fields"])))
        else:
            ranges.append(RangeType(ref=ref, **owned, definition=r["range_definition"]))
    return {
        "enums": _sorted(enums),
        "domains": _sorted(domains),
        "composite_types": _sorted(composites),
        "range_types": _sorted(ranges),
    }
