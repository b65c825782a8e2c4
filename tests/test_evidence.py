"""Failed-migration evidence on real PostgreSQL, judged by the schema model: the live schema against
the shadow replay before and after the failed migration, as the plan a person approves shows it.

The issue's cases: a failed migration whose transaction rolled back is re-applied (not blocked);
one patched by hand with other definitions under the same names stops, naming each difference;
an INVALID index left by a failed CREATE INDEX CONCURRENTLY is partial; one completed by hand with
the very definitions is resolved as applied.
"""

from __future__ import annotations

import asyncpg

from activities.insert_keys import existing_insert_keys
from devstack.incident import LANDING, MIGRATIONS_DIR, reproduce_incident
from domain.models import Action, BlockerCode
from domain.prisma.folder import read_migrations_dir
from domain.schema import EffectsVerdict
from tests.helpers import history_state, incident_request, make_settings, migration, plan_of, request

INIT = migration("20250101000000_init", 'CREATE TABLE "users" ("id" INT PRIMARY KEY, "email" TEXT);\n'
                 'CREATE TABLE "orders" ("id" INT PRIMARY KEY, "total" INT);')
# Eight effects, none idempotent; fails on its last statement while a row has an empty name.
EIGHT = migration("20250102000000_eight", """
CREATE TYPE "Kind" AS ENUM ('a', 'b');
CREATE TABLE "items" ("id" INT PRIMARY KEY, "kind" "Kind");
CREATE SEQUENCE "items_seq";
ALTER TABLE "orders" ADD COLUMN "note" TEXT;
CREATE INDEX "orders_total_idx" ON "orders" ("total");
CREATE VIEW "big_orders" AS SELECT * FROM "orders" WHERE "total" > 100;
ALTER TABLE "users" ADD COLUMN "name" TEXT NOT NULL DEFAULT '';
ALTER TABLE "users" ADD CONSTRAINT "users_email_check" CHECK ("email" <> '');
""")
LINK = migration("20250102000000_link", """
ALTER TABLE "orders" ADD COLUMN "user_id" INT NOT NULL, ADD COLUMN "placed_at" TIMESTAMP(3);
CREATE UNIQUE INDEX "orders_user_id_key" ON "orders" ("user_id");
ALTER TABLE "orders" ADD CONSTRAINT "orders_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "users"("id");
""")
UNIQUE_EMAIL = migration("20250102000000_unique_email", 'CREATE UNIQUE INDEX CONCURRENTLY "users_email_key" ON "users" ("email");')


def _planned(plan, name):
    return next(m for m in plan.migrations if m.name == name)


async def test_failed_inside_its_transaction_is_reapplied(database_url: str) -> None:
    """Nothing of it is in the database (its transaction rolled back): resolve --rolled-back and run
    it again, not "0 of 8 effects present, 2 unknown" and a person."""
    await history_state(database_url, applied=[INIT], failed_by_hand="INSERT INTO users VALUES (1, '')", failed=EIGHT)
    plan = await plan_of(make_settings("dev", database_url), request("dev", [INIT, EIGHT]))
    pm = _planned(plan, EIGHT.name)
    assert pm.action == Action.reapply and plan.blockers == []
    assert pm.effects == EffectsVerdict.none
    assert pm.evidence == ["none of its effects are in the database (8 objects as before it)"]


async def test_hand_patch_with_other_definitions_stops_naming_each_difference(database_url: str) -> None:
    """A column missing, a non-unique index under the unique index's name, CHECK (true) where the
    foreign key should be: never "resolve as applied"."""
    await history_state(
        database_url, applied=[INIT], failed=LINK,
        # the failure: a row without a user; the patch a person then made by hand
        failed_by_hand="INSERT INTO orders VALUES (1, 10)",
        by_hand='DELETE FROM orders; ALTER TABLE "orders" ADD COLUMN "user_id" INT NOT NULL;'
                'CREATE INDEX "orders_user_id_key" ON "orders" ("user_id");'
                'ALTER TABLE "orders" ADD CONSTRAINT "orders_user_id_fkey" CHECK (true);',
    )
    plan = await plan_of(make_settings("dev", database_url), request("dev", [INIT, LINK]))
    pm = _planned(plan, LINK.name)
    assert pm.action == Action.needs_human and pm.effects == EffectsVerdict.partial
    [blocker] = plan.blockers
    assert blocker.code == BlockerCode.failed_needs_human and blocker.migration == LINK.name
    message = blocker.message
    assert "still as before it: column public.orders.placed_at" in message
    assert ('index public.orders_user_id_key on public.orders differs: expected CREATE UNIQUE INDEX orders_user_id_key'
            in message and "live has CREATE INDEX orders_user_id_key" in message)
    assert ("constraint orders_user_id_fkey on public.orders differs: expected FOREIGN KEY (user_id) REFERENCES "
            "public.users(id), live has CHECK (true)") in message
    # user_id itself is as the migration makes it
    assert "partly applied: 1 of 4 objects as after it, 1 as before it, 2 different from both" in message


async def test_invalid_index_from_a_failed_concurrent_build_is_partial(database_url: str) -> None:
    await history_state(database_url, applied=[INIT], failed_by_hand="INSERT INTO users VALUES (1, 'a'), (2, 'a')",
                        failed=UNIQUE_EMAIL, failed_in_transaction=False)
    plan = await plan_of(make_settings("dev", database_url), request("dev", [INIT, UNIQUE_EMAIL]))
    pm = _planned(plan, UNIQUE_EMAIL.name)
    assert pm.action == Action.needs_human and pm.effects == EffectsVerdict.partial
    assert ('index public.users_email_key on public.users differs in validity: expected valid, live has INVALID'
            in plan.blockers[0].message)


async def test_completed_by_hand_with_the_same_definitions_is_resolved_as_applied(database_url: str) -> None:
    await history_state(database_url, applied=[INIT], failed=LINK, failed_by_hand="INSERT INTO orders VALUES (1, 10)",
                        by_hand="DELETE FROM orders;" + LINK.sql)
    plan = await plan_of(make_settings("dev", database_url), request("dev", [INIT, LINK]))
    pm = _planned(plan, LINK.name)
    assert pm.action == Action.resolve_applied and pm.effects == EffectsVerdict.all and plan.blockers == []
    assert pm.evidence == ["all of its effects are in the database with the expected definitions (4 objects)"]


async def test_incident_failed_migration_changes_no_schema_and_is_idempotent(database_url: str,
                                                                           db: asyncpg.Connection) -> None:
    """The incident's failed migration only inserts rows (ON CONFLICT DO NOTHING): the schema cannot
    show whether it ran, and it is safe to repeat, so it is re-applied."""
    await reproduce_incident(database_url)
    plan = await plan_of(make_settings("prod", database_url), incident_request("prod"))
    pm = _planned(plan, LANDING)
    assert pm.action == Action.reapply and pm.effects == EffectsVerdict.no_schema_effect
    sql = next(m.sql for m in read_migrations_dir(MIGRATIONS_DIR) if m.name == LANDING)
    assert await existing_insert_keys(db, sql) == []


async def test_existing_insert_keys_reports_rows_a_delete_would_remove(db: asyncpg.Connection) -> None:
    await db.execute('CREATE TABLE "base" ("id" INT PRIMARY KEY, "name" TEXT)')
    await db.execute("INSERT INTO base VALUES (11, 'already here')")
    found = await existing_insert_keys(
        db, "INSERT INTO \"base\" (\"id\", \"name\") VALUES (10, 'ten'), (11, 'eleven') ON CONFLICT (\"id\") DO NOTHING;")
    assert found == ["1 of the rows public.base would receive already exist (keyed by id)"]
