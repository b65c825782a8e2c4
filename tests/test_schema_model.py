"""The pure schema comparison (domain.schema): sentences a plan can print, determinism, scoping,
role mapping and migration-effects verdicts. No database here: models are built by hand; the
catalog reader and the shadow replay have their own tests on real PostgreSQL."""

from __future__ import annotations

import random

from domain.schema import (
    Change,
    Column,
    Constraint,
    EffectsVerdict,
    Enum,
    Grant,
    Index,
    ObjectKind,
    ObjectRef,
    ObjectState,
    Routine,
    Schema,
    SchemaModel,
    Table,
    compare,
    migration_effects,
    touched_objects,
)

PUBLIC = Schema(ref=ObjectRef.for_schema("public"), owner="pg_database_owner")
ORDERS = ObjectRef.of(ObjectKind.table, "public", "orders")
USERS = ObjectRef.of(ObjectKind.table, "public", "User")


def table(ref: ObjectRef = ORDERS, **kw) -> Table:
    return Table(ref=ref, owner=kw.pop("owner", "migrator"), **kw)


def column(name: str, type_: str, parent: ObjectRef = ORDERS, **kw) -> Column:
    return Column(ref=parent.child(ObjectKind.column, name), type=type_, **kw)


def model(*objects) -> SchemaModel:
    by_kind: dict[str, list] = {}
    field = {
        Schema: "schemas", Table: "tables", Column: "columns", Index: "indexes", Constraint: "constraints",
        Enum: "enums", Routine: "routines",
    }
    for obj in objects:
        by_kind.setdefault(field[type(obj)], []).append(obj)
    return SchemaModel(**{k: tuple(v) for k, v in by_kind.items()})


def test_a_changed_column_reads_as_one_sentence_with_both_definitions():
    expected = model(PUBLIC, table(), column("total", "numeric(10,2)", not_null=True))
    live = model(PUBLIC, table(), column("total", "text"))
    [diff] = compare(expected, live)
    assert diff.sentence == "column public.orders.total differs: expected numeric(10,2) NOT NULL, live has text"
    assert diff.change == Change.changed and diff.kind == "column"
    assert diff.attributes == ("type", "nullability")
    assert (diff.expected, diff.live) == ("numeric(10,2) NOT NULL", "text")


def test_identical_models_have_no_difference():
    objects = (PUBLIC, table(), column("id", "integer", not_null=True), column("note", "text"))
    assert compare(model(*objects), model(*objects)) == []


def test_the_same_objects_in_another_order_are_no_difference_and_one_change_among_many_is_found():
    """compare looks object by object only at kinds that are not equal as a whole: objects in
    another order are still the same schema, and one changed column among many is the only one named."""
    columns = [column(f"c{i}", "integer") for i in range(200)]
    objects = (PUBLIC, table(), *columns)
    shuffled = list(columns)
    random.Random(14).shuffle(shuffled)
    assert compare(model(*objects), model(PUBLIC, table(), *shuffled)) == []
    changed = [*columns[:150], column("c150", "bigint"), *columns[151:]]
    [diff] = compare(model(*objects), model(PUBLIC, table(), *changed))
    assert diff.sentence == "column public.orders.c150 differs: expected integer, live has bigint"


def test_a_missing_table_is_one_difference_not_one_per_column_and_index():
    expected = model(
        PUBLIC,
        table(),
        column("id", "integer"),
        Index(ref=ORDERS.child(ObjectKind.index, "orders_pkey"), definition="CREATE UNIQUE INDEX orders_pkey ON public.orders USING btree (id)", unique=True, primary=True),
    )
    [diff] = compare(expected, model(PUBLIC))
    assert diff.ref == ORDERS and diff.change == Change.missing
    assert diff.sentence == "table public.orders is missing from the live database"
    # The other way round, the table is extra.
    [extra] = compare(model(PUBLIC), expected)
    assert extra.change == Change.extra and extra.sentence == "table public.orders exists only in the live database"


def test_a_missing_column_of_an_existing_table_is_named():
    expected = model(PUBLIC, table(), column("id", "integer"), column("total", "numeric(10,2)", not_null=True, default="0"))
    live = model(PUBLIC, table(), column("id", "integer"))
    [diff] = compare(expected, live)
    assert diff.sentence == "column public.orders.total is missing from the live database: expected numeric(10,2) NOT NULL DEFAULT 0"


def test_differences_are_sorted_and_independent_of_input_order():
    objects = [PUBLIC, table(), table(USERS)] + [column(f"c{i}", "integer") for i in range(10)]
    objects += [column(f"u{i}", "text", parent=USERS) for i in range(5)]
    live = model(PUBLIC, table(), table(USERS))
    first = compare(model(*objects), live)
    for seed in range(5):
        shuffled = objects[:]
        random.Random(seed).shuffle(shuffled)
        assert compare(model(*shuffled), live) == first
    # A relation's objects follow each other, relations by name ("User" < "orders" in code points).
    assert [str(d.ref) for d in first][:2] == ['column public."User".u0', 'column public."User".u1']
    assert [d.ref for d in first] == sorted((d.ref for d in first), key=lambda r: r.sort_key())


def test_names_with_dots_and_capitals_are_never_confused():
    dotted_table = ObjectRef.of(ObjectKind.table, "public", "orders.total")
    column_ref = ORDERS.child(ObjectKind.column, "total")
    assert dotted_table != column_ref
    assert str(dotted_table) == 'table public."orders.total"'
    assert str(column_ref) == "column public.orders.total"
    assert str(USERS.child(ObjectKind.index, "User_email_key")) == 'index public."User_email_key" on public."User"'


def test_a_non_unique_index_under_the_unique_name_is_a_changed_index():
    ref = USERS.child(ObjectKind.index, "User_email_key")
    unique = Index(ref=ref, definition='CREATE UNIQUE INDEX "User_email_key" ON public."User" USING btree (email)', unique=True)
    plain = Index(ref=ref, definition='CREATE INDEX "User_email_key" ON public."User" USING btree (email)')
    [diff] = compare(model(PUBLIC, table(USERS), unique), model(PUBLIC, table(USERS), plain))
    assert diff.attributes == ("definition", "uniqueness")
    assert diff.sentence.startswith('index public."User_email_key" on public."User" differs: expected CREATE UNIQUE INDEX')


def test_an_invalid_index_never_equals_the_valid_one():
    ref = USERS.child(ObjectKind.index, "User_email_key")
    definition = 'CREATE UNIQUE INDEX "User_email_key" ON public."User" USING btree (email)'
    [diff] = compare(
        model(PUBLIC, table(USERS), Index(ref=ref, definition=definition, unique=True)),
        model(PUBLIC, table(USERS), Index(ref=ref, definition=definition, unique=True, valid=False)),
    )
    assert diff.attributes == ("validity",)
    assert diff.sentence == 'index public."User_email_key" on public."User" differs in validity: expected valid, live has INVALID'
    assert diff.live == definition + " (INVALID)"


def test_grant_differences_name_only_the_grantees_that_differ():
    owner = Grant(grantee="migrator", privileges=("DELETE", "INSERT", "SELECT", "UPDATE"))
    app = Grant(grantee="app", privileges=("SELECT",))
    [diff] = compare(model(PUBLIC, table(grants=(app, owner))), model(PUBLIC, table(grants=(owner,))))
    assert diff.sentence == "table public.orders differs in grants: privileges of app expected SELECT, live has none"


def test_role_mapping_makes_a_shadow_built_by_another_role_comparable():
    shadow = model(PUBLIC, table(owner="shadow_builder", grants=(Grant(grantee="shadow_builder", privileges=("SELECT",)),)))
    live = model(PUBLIC, table(owner="migrator", grants=(Grant(grantee="migrator", privileges=("SELECT",)),)))
    [diff] = compare(shadow, live)
    assert diff.attributes == ("owner", "grants")
    assert "owner expected shadow_builder, live has migrator" in diff.sentence
    assert compare(shadow, live, roles={"shadow_builder": "migrator"}) == []


def test_only_restricts_to_the_given_objects_and_what_they_contain():
    expected = model(PUBLIC, table(), column("total", "numeric"), table(USERS), column("email", "text", parent=USERS))
    live = model(PUBLIC, table(), column("total", "text"), table(USERS), column("email", "citext", parent=USERS))
    assert [str(d.ref) for d in compare(expected, live, only=[ORDERS])] == ["column public.orders.total"]
    email = USERS.child(ObjectKind.column, "email")
    assert [d.ref for d in compare(expected, live, only=[email])] == [email]
    assert compare(expected, live, only=[]) == []


def test_a_long_function_body_shows_where_it_differs():
    ref = ObjectRef.of(ObjectKind.function, "public", "total", args="o public.orders")
    body = "CREATE OR REPLACE FUNCTION public.total(o public.orders) RETURNS numeric LANGUAGE sql AS $$ SELECT " + "1 + " * 40
    [diff] = compare(
        model(PUBLIC, Routine(ref=ref, owner="m", definition=body + "o.total $$")),
        model(PUBLIC, Routine(ref=ref, owner="m", definition=body + "o.total * 2 $$")),
    )
    assert str(ref) == "function public.total(o public.orders)"
    assert diff.sentence.startswith("function public.total(o public.orders) differs: expected …")
    assert "o.total $$" in diff.sentence and "o.total * 2 $$" in diff.sentence
    assert len(diff.sentence) < 400


def test_enum_values_are_ordered():
    ref = ObjectRef.of(ObjectKind.enum, "public", "Role")
    [diff] = compare(
        model(PUBLIC, Enum(ref=ref, owner="m", values=("USER", "ADMIN"))),
        model(PUBLIC, Enum(ref=ref, owner="m", values=("ADMIN", "USER"))),
    )
    assert diff.sentence == "enum public.\"Role\" differs: expected ('USER', 'ADMIN'), live has ('ADMIN', 'USER')"


def test_the_model_survives_a_json_round_trip():
    m = model(PUBLIC, table(grants=(Grant(grantee="app", privileges=("SELECT",)),)), column("total", "numeric"))
    assert SchemaModel.model_validate_json(m.model_dump_json()) == m


# -- migration effects ------------------------------------------------------------------------

FK = ORDERS.child(ObjectKind.constraint, "orders_user_fkey")
FK_DEF = 'FOREIGN KEY ("userId") REFERENCES public."User"(id) ON DELETE CASCADE'
BEFORE = model(PUBLIC, table(), column("id", "integer"), table(USERS), column("id", "integer", parent=USERS))
AFTER = model(
    PUBLIC, table(), column("id", "integer"), column("userId", "integer"), table(USERS), column("id", "integer", parent=USERS),
    Constraint(ref=FK, constraint_type="foreign key", definition=FK_DEF),
)


def test_touched_objects_are_what_the_migration_changes():
    assert [str(r) for r in touched_objects(BEFORE, AFTER)] == [
        'column public.orders."userId"',
        "constraint orders_user_fkey on public.orders",
    ]


def test_effects_none_all_and_no_schema_effect():
    assert migration_effects(BEFORE, AFTER, BEFORE).verdict == EffectsVerdict.none
    effects = migration_effects(BEFORE, AFTER, AFTER)
    assert effects.verdict == EffectsVerdict.all
    assert effects.sentence == "all of its effects are in the database with the expected definitions (2 objects)"
    assert migration_effects(BEFORE, BEFORE, AFTER).verdict == EffectsVerdict.no_schema_effect


def test_check_true_where_the_foreign_key_should_be_is_partial_and_named():
    patched = model(
        PUBLIC, table(), column("id", "integer"), column("userId", "integer"), table(USERS), column("id", "integer", parent=USERS),
        Constraint(ref=FK, constraint_type="check", definition="CHECK (true)"),
    )
    effects = migration_effects(BEFORE, AFTER, patched)
    assert effects.verdict == EffectsVerdict.partial
    states = {str(o.ref): o.state for o in effects.objects}
    assert states == {'column public.orders."userId"': ObjectState.applied, "constraint orders_user_fkey on public.orders": ObjectState.differs}
    assert effects.sentence == (
        "partly applied: 1 of 2 objects as after it, 0 as before it, 1 different from both: "
        f"constraint orders_user_fkey on public.orders differs: expected {FK_DEF}, live has CHECK (true)"
    )


def test_half_applied_is_partial_and_names_what_is_still_as_before():
    half = model(PUBLIC, table(), column("id", "integer"), column("userId", "integer"), table(USERS), column("id", "integer", parent=USERS))
    effects = migration_effects(BEFORE, AFTER, half)
    assert effects.verdict == EffectsVerdict.partial
    assert effects.sentence.endswith("still as before it: constraint orders_user_fkey on public.orders")
