"""The role mapping of schema comparisons (domain/schema/roles.py), pure: which live roles the
shadow's role stands for by default and by setting, and that only differences coming from role
names go away (a hand-made grant, an owner outside the mapped roles, stay). Real PostgreSQL:
tests/test_role_map.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from domain.schema import (
    Column,
    Grant,
    LiveRoles,
    ObjectKind,
    ObjectRef,
    Policy,
    RoleMap,
    Schema,
    SchemaModel,
    Sequence,
    Table,
    compare,
    default_role_map,
    map_roles,
)
from runtime.settings import EnvironmentSettings

ORDERS = ObjectRef.of(ObjectKind.table, "public", "orders")
USERS = ObjectRef.of(ObjectKind.table, "public", "User")
SEQ = ObjectRef.of(ObjectKind.sequence, "public", "orders_id_seq")
PUBLIC = Schema(ref=ObjectRef.for_schema("public"), owner="pg_database_owner",
                grants=(Grant(grantee="PUBLIC", privileges=("USAGE",)),
                        Grant(grantee="pg_database_owner", privileges=("CREATE", "USAGE"))))
ALL = ("DELETE", "INSERT", "REFERENCES", "SELECT", "TRIGGER", "TRUNCATE", "UPDATE")


def owned(ref: ObjectRef, owner: str, *extra: Grant) -> Table:
    """A table as the catalog reads it: its owner holds every privilege (acldefault)."""
    return Table(ref=ref, owner=owner, grants=tuple(sorted((Grant(grantee=owner, privileges=ALL), *extra),
                                                           key=lambda g: g.grantee)))


def sequence(owner: str) -> Sequence:
    return Sequence(ref=SEQ, owner=owner, grants=(Grant(grantee=owner, privileges=("SELECT", "UPDATE", "USAGE")),),
                    data_type="integer", start=1, increment=1, minimum=1, maximum=2147483647, cache=1, cycle=False,
                    owned_by="public.orders.id")


def shadow_model(role: str = "migrator") -> SchemaModel:
    """What the replay builds: everything owned by the shadow session's role."""
    return SchemaModel(schemas=(PUBLIC,), tables=(owned(ORDERS, role), owned(USERS, role)), sequences=(sequence(role),))


def live_model(orders: str = "app_owner", users: str = "app_owner", seq: str = "app_owner",
               *, orders_grants: tuple[Grant, ...] = ()) -> SchemaModel:
    return SchemaModel(schemas=(PUBLIC,), tables=(owned(ORDERS, orders, *orders_grants), owned(USERS, users)),
                       sequences=(sequence(seq),))


# -- which roles the shadow's role stands for ---------------------------------------------------


def test_by_default_the_shadow_role_stands_for_the_ledger_owner_then_the_session_role():
    roles = default_role_map("migrator", LiveRoles(session_role="migrator", ledger_owner="app_owner"))
    assert roles.live_roles("migrator") == ("app_owner", "migrator")
    assert roles.live_roles("someone_else") == ("someone_else",)
    assert roles.sentence == ("owners and grants compared with role migrator of the shadow replay standing for "
                              "app_owner or migrator in the live database")


def test_before_the_first_deploy_the_shadow_role_stands_for_the_session_role_only():
    """No _prisma_migrations yet: what exists after the run is what this session creates; the
    database's owner (often an administrator's role) is not a candidate."""
    same = default_role_map("migrator", LiveRoles(session_role="migrator"))
    assert same.is_identity and same.sentence == ""
    # The migration login runs as app_owner on the live database (ALTER ROLE ... IN DATABASE ... SET role).
    other = default_role_map("migrator", LiveRoles(session_role="app_owner"))
    assert other.live_roles("migrator") == ("app_owner",)


def test_the_role_map_setting_replaces_the_default_for_the_roles_it_names():
    live = LiveRoles(session_role="migrator", ledger_owner="migrator")
    roles = default_role_map("migrator", live, {"migrator": "app_owner", "reporting": ["reporting_prod"]})
    assert roles.live_roles("migrator") == ("app_owner",)
    assert roles.live_roles("reporting") == ("reporting_prod",)
    assert default_role_map("migrator", live, {"migrator": ["app_owner", "migrator"]}).live_roles("migrator") == (
        "app_owner", "migrator")


# -- what the mapping makes equal, and what it leaves ---------------------------------------------


def test_objects_owned_by_another_role_compare_equal_under_the_default_map():
    roles = default_role_map("migrator", LiveRoles(session_role="migrator", ledger_owner="app_owner"))
    diffs = compare(shadow_model(), live_model())
    assert {str(d.ref) for d in diffs} == {"table public.orders", 'table public."User"', "sequence public.orders_id_seq"}
    assert all(d.attributes == ("owner", "grants") for d in diffs)
    assert compare(shadow_model(), live_model(), roles=roles) == []


def test_objects_owned_by_either_mapped_role_compare_equal_whichever_owns_which():
    """The history's objects were handed to app_owner; a later run (as migrator) created USERS."""
    roles = default_role_map("migrator", LiveRoles(session_role="migrator", ledger_owner="app_owner"))
    assert compare(shadow_model(), live_model(users="migrator"), roles=roles) == []


def test_an_owner_outside_the_mapped_roles_is_a_difference():
    roles = default_role_map("migrator", LiveRoles(session_role="migrator", ledger_owner="app_owner"))
    [diff] = compare(shadow_model(), live_model(orders="intruder"), roles=roles)
    assert diff.ref == ORDERS and diff.attributes == ("owner", "grants")
    assert "owner expected app_owner, live has intruder" in diff.sentence
    assert "privileges of app_owner expected DELETE" in diff.sentence


def test_a_grant_made_by_hand_is_still_drift_to_a_role_of_its_own_or_to_a_mapped_one():
    roles = default_role_map("migrator", LiveRoles(session_role="migrator", ledger_owner="app_owner"))
    analyst = Grant(grantee="analyst", privileges=("SELECT",))
    [diff] = compare(shadow_model(), live_model(orders_grants=(analyst,)), roles=roles)
    assert diff.sentence == "table public.orders differs in grants: privileges of analyst expected none, live has SELECT"
    # migrator is one of the roles the shadow's role stands for, but on a table app_owner owns a
    # grant to migrator is a grant like any other.
    to_migrator = Grant(grantee="migrator", privileges=("SELECT",))
    [diff] = compare(shadow_model(), live_model(orders_grants=(to_migrator,)), roles=roles)
    assert diff.sentence == "table public.orders differs in grants: privileges of migrator expected none, live has SELECT"


def test_a_strict_setting_reports_an_object_owned_by_the_migration_login():
    strict = default_role_map("migrator", LiveRoles(session_role="migrator", ledger_owner="app_owner"),
                              {"migrator": "app_owner"})
    [diff] = compare(shadow_model(), live_model(users="migrator"), roles=strict)
    assert diff.ref == USERS and "owner expected app_owner, live has migrator" in diff.sentence


def test_policy_and_column_roles_follow_their_table_and_two_roles_onto_one_add_up():
    policy = Policy(ref=ORDERS.child(ObjectKind.policy, "own"), roles=("migrator",), using="true")
    col = Column(ref=ORDERS.child(ObjectKind.column, "total"), type="integer",
                 grants=(Grant(grantee="migrator", privileges=("UPDATE",)),))
    shadow = SchemaModel(tables=(owned(ORDERS, "migrator", Grant(grantee="app_owner", privileges=("SELECT",))),),
                         columns=(col,), policies=(policy,))
    roles = RoleMap.of({"migrator": ["app_owner", "migrator"]})
    mapped = map_roles(shadow, SchemaModel(tables=(owned(ORDERS, "app_owner"),)), roles)
    [table] = mapped.tables
    assert table.owner == "app_owner" and table.grants == (Grant(grantee="app_owner", privileges=ALL),)
    assert mapped.policies[0].roles == ("app_owner",)
    assert mapped.columns[0].grants == (Grant(grantee="app_owner", privileges=("UPDATE",)),)
    # Where the live table is owned by the migration login, its column and policy follow it.
    mapped = map_roles(shadow, SchemaModel(tables=(owned(ORDERS, "migrator"),)), roles)
    assert mapped.tables[0].owner == "migrator" and mapped.policies[0].roles == ("migrator",)


def test_an_identity_map_changes_nothing():
    model = shadow_model()
    assert map_roles(model, live_model(), RoleMap.of({"migrator": "migrator"})) is model


# -- the setting ------------------------------------------------------------------------------


def test_the_role_map_setting_takes_a_role_or_a_list_and_refuses_empty_names():
    url = "postgresql://migrator@db:5432/app"
    assert EnvironmentSettings(database_url=url).role_map == {}
    env = EnvironmentSettings(database_url=url, role_map={"migrator": "app_owner", "ci": ["app_owner", "ci"]})
    assert RoleMap.of(env.role_map).live_roles("ci") == ("app_owner", "ci")
    for bad in ({"migrator": ""}, {"migrator": []}, {"": "app_owner"}):
        with pytest.raises(ValidationError, match="role_map maps a role name"):
            EnvironmentSettings(database_url=url, role_map=bad)
