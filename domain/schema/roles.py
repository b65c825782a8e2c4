"""Which live roles each role of the shadow replay stands for, so that owners and grants are judged
by what the live database holds, not by the role name the shadow happens to be built with.

The shadow database is built by the session the worker opens on it: its current_user (the
*shadow role*) owns everything the replay creates, and holds the owner's privileges on it. On the
live database the same objects are often owned by another role: the history was deployed by another
login, a DBA handed the application's objects to an owner role (`ALTER ... OWNER TO app_owner`,
`REASSIGN OWNED`), or the migration login runs as another role there (`ALTER ROLE migrator IN
DATABASE app SET role = app_owner`). Comparing an expected model with a live one maps the expected
side's owners, grantees and policy roles through a `RoleMap` (compare(..., roles=...)): the one
place this is decided, for the drift proof, failed-migration evidence and verification alike.

Per object, a shadow role becomes the one of its live roles that owns the live object, else the
first of them (the difference then reads "owner expected app_owner, live has someone_else"). So
*which* of those roles owns an object is not a difference; an owner outside them is, and a grant
to any other role is compared exactly as it is: a GRANT made by hand in production is drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from domain.schema.model import SchemaModel
from domain.schema.objects import Column, Grant, OwnedObject, Policy, SchemaObject
from domain.schema.refs import ObjectRef


class LiveRoles(BaseModel):
    """What the live database says about roles, read beside its model (activities/catalog.py)."""

    model_config = ConfigDict(frozen=True)

    session_role: str  # current_user of the migration connection: owns what the deploy creates
    ledger_owner: str | None = None  # owner of Prisma's _prisma_migrations; None when it does not exist yet


class RoleMap(BaseModel):
    """shadow role -> the live roles it stands for, first one preferred. A role not in the map
    stands for itself only."""

    model_config = ConfigDict(frozen=True)

    roles: dict[str, tuple[str, ...]] = {}

    @classmethod
    def of(cls, mapping: Mapping[str, str | Sequence[str]]) -> RoleMap:
        roles = {}
        for shadow, live in mapping.items():
            names = (live,) if isinstance(live, str) else tuple(live)
            roles[shadow] = tuple(dict.fromkeys(n for n in names if n)) or (shadow,)
        return cls(roles=roles)

    def live_roles(self, shadow: str) -> tuple[str, ...]:
        return self.roles.get(shadow, (shadow,))

    @property
    def is_identity(self) -> bool:
        return all(live == (shadow,) for shadow, live in self.roles.items())

    @property
    def sentence(self) -> str:
        """For the plan: `owners and grants compared with role migrator of the shadow replay
        standing for app_owner or migrator in the live database`."""
        parts = [f"role {shadow} of the shadow replay standing for {' or '.join(live)}"
                 for shadow, live in sorted(self.roles.items()) if live != (shadow,)]
        return "owners and grants compared with " + "; ".join(parts) + " in the live database" if parts else ""


def default_role_map(shadow_role: str | None, live: LiveRoles,
                     configured: Mapping[str, str | Sequence[str]] | None = None) -> RoleMap:
    """The shadow role stands for, in this order:

    1. the owner of the live `_prisma_migrations`: Prisma's first deploy creates it as the role the
       history is deployed as, and a DBA who hands the application's objects to an owner role moves
       it with them (REASSIGN OWNED), while no migration ever defines it: of all the live objects it
       is the one that says who owns the history;
    2. the live session's current_user: the role this run's deploy creates its objects as (and
       earlier runs through this product theirs), so a database whose history is owned by
       `app_owner` and whose newer objects by the migration login compares equal too.

    Not the database's owner: it is often an administrator's role that owns no table (`postgres`,
    a cloud provider's master user), and the public schema, the one object it stands behind, is
    owned by pg_database_owner on both sides anyway. An environment's `role_map` setting replaces
    this for the roles it names (e.g. {"migrator": "app_owner"}: owners must be app_owner, strictly).
    """
    roles: dict[str, str | Sequence[str]] = {}
    if shadow_role:
        roles[shadow_role] = [r for r in (live.ledger_owner, live.session_role) if r]
    roles.update(configured or {})
    return RoleMap.of(roles)


def map_roles(expected: SchemaModel, live: SchemaModel, roles: RoleMap) -> SchemaModel:
    """`expected` with its roles renamed to the live ones they stand for, object by object: a
    shadow role that owns an object becomes the live object's owner when that owner is one of the
    roles it stands for, else the first of them; a column's and a policy's roles follow their
    relation's. Two roles renamed onto one have their privileges added up."""
    if roles.is_identity:
        return expected
    have = live.objects()

    def names_for(obj: SchemaObject) -> dict[str, str]:
        there = have.get(obj.ref)
        owner = there.owner if isinstance(there, OwnedObject) else None
        mine = obj.owner if isinstance(obj, OwnedObject) else None
        return {shadow: owner if (mine == shadow and owner in live_roles) else live_roles[0]
                for shadow, live_roles in roles.roles.items()}

    relations: dict[ObjectRef, dict[str, str]] = {}
    for obj in expected.iter_objects():
        if isinstance(obj, OwnedObject):
            relations[obj.ref] = names_for(obj)

    def mapped(obj: SchemaObject) -> SchemaObject:
        if isinstance(obj, OwnedObject):
            names = relations[obj.ref]
            return obj.model_copy(update={"owner": names.get(obj.owner, obj.owner), "grants": _grants(obj.grants, names)})
        if isinstance(obj, (Column, Policy)):
            names = relations.get(obj.ref.parent) if obj.ref.parent is not None else None
            names = names or names_for(obj)
            if isinstance(obj, Column):
                return obj.model_copy(update={"grants": _grants(obj.grants, names)}) if obj.grants else obj
            return obj.model_copy(update={"roles": tuple(sorted({names.get(r, r) for r in obj.roles}))})
        return obj

    return expected.map_objects(mapped)


def _grants(items: tuple[Grant, ...], names: Mapping[str, str]) -> tuple[Grant, ...]:
    merged: dict[str, set[str]] = {}
    for g in items:  # two roles may map onto one: their privileges add up
        merged.setdefault(names.get(g.grantee, g.grantee), set()).update(g.privileges)
    return tuple(Grant(grantee=k, privileges=tuple(sorted(v))) for k, v in sorted(merged.items()))
