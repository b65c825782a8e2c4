"""Which data a migration destroys and what is backed up before it (domain/backup.py), what the
plan says about it (domain/backup_plan.py, cli/render.py), and the backups taken and put back on
real PostgreSQL (activities/backup.py)."""

from __future__ import annotations

import io
from pathlib import Path

import asyncpg
import pytest
from rich.console import Console

from activities import backup, bookkeeping
from cli.render import render_plan
from domain.backup import cascade_targets, plan_backups, plan_run_backups, tables_to_inspect
from domain.backup_items import MigrationBackups, TableFacts
from domain.bundle import build_bundle
from domain.models import BlockerCode, RollbackSource
from domain.plan import build_plan
from domain.prisma.diagnosis import diagnose
from domain.prisma.folder import read_migrations_dir
from domain.sql.parse import split_statements
from domain.sql.rules import analyze_migration
from tests.helpers import migration, request
from tests.test_plan import row, snap

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
USERS = TableFacts(schema_name="public", name="users", columns=["id", "email", "phone"], key=["id"],
                   types={"id": "integer", "email": "text", "phone": "text"}, bytes=8192 * 10, rows=1000,
                   widths={"id": 4, "phone": 12})
LOG = TableFacts(schema_name="public", name="log", columns=["at", "line"], bytes=4096, rows=10)


def plan_for(migs, snapshot, **kwargs):
    req = request("prod", list(migs))
    analyses = {m.name: analyze_migration(m.name, m.sql) for m in migs}
    return build_plan(req, diagnose(req.bundle.migrations, snapshot), analyses, {}, snapshot=snapshot,
                      required_approvals={"low": 1, "medium": 1, "high": 2}, **kwargs)


def backups(sql: str, facts=None, existing=frozenset({"type:public.mood"})):
    return plan_backups(split_statements(sql), facts or {"public.users": USERS, "public.log": LOG}, "public", existing)


def run_backups(*sqls: str, facts=None, existing=frozenset()) -> list[MigrationBackups]:
    """The backups of each migration of a run of these migrations, in order."""
    migs = [(str(n), split_statements(sql)) for n, sql in enumerate(sqls)]
    got = plan_run_backups(migs, facts or {"public.users": USERS, "public.log": LOG}, "public", existing)
    return [got[str(n)] for n in range(len(sqls))]


def test_each_destroying_statement_gets_the_backup_that_undoes_it() -> None:
    got = backups("ALTER TABLE users DROP COLUMN phone;\nDELETE FROM users WHERE email LIKE '%@old.example';\n"
                  "UPDATE users SET email = lower(email);\nTRUNCATE log;\nDROP TABLE log;")
    assert [(i.statement, i.kind, i.table, i.columns, i.key, i.where) for i in got.items] == [
        (1, "columns", "users", ["phone"], ["id"], None),
        # users was changed by statement 1 already: every row is saved, not only the WHERE's
        (2, "rows", "users", ["id", "email", "phone"], ["id"], None),
        (3, "columns", "users", ["email"], ["id"], None),
        (4, "rows", "log", ["at", "line"], [], None),
        (5, "rows", "log", ["at", "line"], [], None),
    ]
    assert got.items[0].estimated_bytes == 1000 * (4 + 12) and got.items[3].estimated_bytes == 4096
    only_where = backups("DELETE FROM users WHERE email LIKE '%@old.example'")
    assert only_where.items[0].where == "email LIKE '%@old.example'"


def test_what_holds_nothing_to_lose_is_not_backed_up_and_what_cannot_be_is_said() -> None:
    assert backups("CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\nDROP TABLE t;").items == []
    assert run_backups("CREATE TABLE users (id int);", "DROP TABLE users;")[1].items == []
    assert backups("ALTER TABLE users ADD COLUMN x int;\nALTER TABLE users DROP COLUMN x;").items == []
    # a table that is not in the database before the run holds nothing to lose
    assert backups("ALTER TABLE not_there DROP COLUMN x;\nDROP TABLE gone;") == MigrationBackups()
    got = backups("UPDATE log SET line = '';\nDROP TYPE mood CASCADE;\nDROP TYPE made_by_the_run CASCADE;")
    assert got.items == []
    assert [s.split(": ", 1)[1] for s in got.impossible] == [
        "UPDATE public.log SET line: table public.log has no primary key or unique key on NOT NULL columns, so old "
        "values could not be matched back to their rows",
        "DROP TYPE ... CASCADE drops whatever depends on it; what that holds cannot be backed up statically",
    ]


def _items(b: MigrationBackups) -> list[tuple]:
    return [(i.statement, i.kind, f"{i.schema_name}.{i.table}", i.columns, i.key, i.where) for i in b.items]


def test_a_live_table_renamed_by_the_run_keeps_its_rows_to_back_up() -> None:
    """Renamed into place is not created: the rows are the application's, under a new name. The
    backup is taken (before the migration's script) and put back (after its rollback) under the
    names the table has when the migration starts."""
    (one,) = run_backups("ALTER TABLE users RENAME TO members;\nALTER TABLE members DROP COLUMN phone;")
    assert _items(one) == [(2, "columns", "public.users", ["phone"], ["id"], None)]
    assert one.items[0].reason == "DROP COLUMN public.members.phone" and one.items[0].estimated_bytes == 1000 * 16
    # across two migrations of the run: the second finds the table under its new name
    assert [_items(b) for b in run_backups("ALTER TABLE users RENAME TO members;",
                                           "DELETE FROM members WHERE id > 10;\nDROP TABLE members;")] == [
        [], [(1, "rows", "public.members", ["id", "email", "phone"], ["id"], "id > 10"),
             (2, "rows", "public.members", ["id", "email", "phone"], ["id"], None)]]
    # a WHERE written after a rename in the same migration is not trusted: every row is saved
    (same,) = run_backups("ALTER TABLE users RENAME TO members;\nUPDATE members SET email = '' WHERE members.id = 1;")
    assert _items(same) == [(2, "columns", "public.users", ["email"], ["id"], None)]


def test_schemas_and_columns_renamed_by_the_run_are_followed() -> None:
    app = USERS.model_copy(update={"schema_name": "app"})
    facts = {"app.users": app, "public.log": LOG}
    _, gone = run_backups("ALTER TABLE log SET SCHEMA archive;", "TRUNCATE archive.log;", facts=facts)
    assert _items(gone) == [(1, "rows", "archive.log", ["at", "line"], [], None)]
    first, second = run_backups("ALTER SCHEMA app RENAME TO crm;\nALTER TABLE crm.users RENAME COLUMN phone TO tel;",
                                "ALTER TABLE crm.users DROP COLUMN tel;", facts=facts)
    assert _items(first) == [] and _items(second) == [(1, "columns", "crm.users", ["tel"], ["id"], None)]
    assert second.items[0].estimated_bytes == 1000 * (4 + 12)  # the facts of phone apply to tel
    # a column dropped earlier in the run is not in a later whole-row backup; a column it added is
    _, _, last = run_backups("ALTER TABLE users DROP COLUMN phone;", "ALTER TABLE users ADD COLUMN nick text;",
                             "DROP TABLE users;")
    assert _items(last) == [(1, "rows", "public.users", ["id", "email", "nick"], ["id"], None)]
    # renaming the key away and back: still the key
    (keyed,) = run_backups("ALTER TABLE users RENAME COLUMN id TO user_id;\nALTER TABLE users DROP COLUMN phone;")
    assert _items(keyed) == [(2, "columns", "public.users", ["phone"], ["id"], None)]
    assert tables_to_inspect([split_statements("ALTER SCHEMA app RENAME TO crm;\nDROP TABLE crm.users;")],
                             "public") == ["app.users"]


def test_what_the_run_created_holds_nothing_whatever_its_name() -> None:
    """A new table under the name a live table had before the run renamed it away is the run's."""
    (b,) = run_backups("ALTER TABLE users RENAME TO old_users;\nCREATE TABLE users (id int PRIMARY KEY);\n"
                       "DROP TABLE users;\nDROP TABLE old_users;")
    assert _items(b) == [(4, "rows", "public.users", ["id", "email", "phone"], ["id"], None)]
    assert run_backups("CREATE TABLE draft (id int);", "ALTER TABLE draft RENAME TO log2;",
                       "DROP TABLE log2;")[2] == MigrationBackups()
    assert run_backups("ALTER TABLE users RENAME TO u2;", "ALTER TABLE users DROP COLUMN phone;")[1] == MigrationBackups()
    # a type the run renames and then drops with CASCADE is the type that exists before the run
    stmts = split_statements("ALTER TYPE mood RENAME TO feeling;\nDROP TYPE feeling CASCADE;")
    assert cascade_targets([stmts], "public") == ["type:public.mood"]
    (typ,) = run_backups("ALTER TYPE mood RENAME TO feeling;\nDROP TYPE feeling CASCADE;",
                         existing=frozenset({"type:public.mood"}))
    assert len(typ.impossible) == 1 and "DROP TYPE ... CASCADE" in typ.impossible[0]
    assert run_backups("CREATE TYPE t2 AS ENUM ('a');\nALTER TYPE t2 RENAME TO mood;\nDROP TYPE mood CASCADE;",
                       existing=frozenset({"type:public.mood"}))[0].impossible == []


@pytest.mark.skipif(not CORPUS.exists(), reason="the corpus of real histories is not beside the repo")
@pytest.mark.parametrize("project", ["documenso", "formbricks", "rallly", "hoppscotch"])
def test_a_real_history_on_an_empty_database_needs_no_backup(project: str) -> None:
    """Everything its destructive statements touch was created (or renamed into place) by the run."""
    bundle = build_bundle(read_migrations_dir(CORPUS / project / "migrations"), revision="t", source=project)
    migs = [(m.name, analyze_migration(m.name, m.sql).statements) for m in bundle.migrations]
    stmts = [s for _, s in migs]
    assert tables_to_inspect(stmts, "public") == [] and cascade_targets(stmts, "public") == []
    assert all(b == MigrationBackups() for b in plan_run_backups(migs, {}, "public").values())


def test_the_plan_shows_backups_their_size_and_makes_data_only_migrations_undoable() -> None:
    init = migration("20240101000000_init", 'CREATE TABLE "users" ("id" INT PRIMARY KEY, "email" TEXT, "phone" TEXT);')
    fix = migration("20240102000000_fix", 'UPDATE "users" SET "phone" = NULL WHERE "phone" = \'\';')
    s = snap(row(init.name, init.checksum))
    plan = plan_for([init, fix], s, backups={fix.name: backups(fix.sql)})
    by = {m.name: m for m in plan.migrations}
    assert by[fix.name].rollback == RollbackSource.backup and by[fix.name].rollback_sql == ""
    assert plan.blockers == [] and plan.backup_bytes == 1000 * (4 + 12)
    out = io.StringIO()
    render_plan(plan, Console(file=out, width=200))
    text = out.getvalue()
    assert "backup first: UPDATE public.users SET phone (about 15.6 kB)" in text
    assert "backups before destruction: about 15.6 kB" in text

    over = plan_for([init, fix], s, backups={fix.name: backups(fix.sql)}, backup_max_bytes=1000)
    assert [b.code for b in over.blockers] == [BlockerCode.no_backup_needs_approval] and over.no_backup == [fix.name]


async def test_a_backup_is_taken_and_put_back(db: asyncpg.Connection) -> None:
    await db.execute("CREATE TABLE users (id int PRIMARY KEY, email text, phone text GENERATED ALWAYS AS (email) STORED);"
                     "INSERT INTO users (id, email) VALUES (1, 'a@x'), (2, 'b@x');")
    facts = await backup.table_facts(db, ["public.users", "public.nope"])
    assert list(facts) == ["public.users"] and facts["public.users"].key == ["id"]
    items = plan_backups(split_statements("DELETE FROM users WHERE id = 2"), facts, "public").items
    await bookkeeping.ensure(db)
    async with db.transaction():
        assert await backup.take(db, "row-1", "m", items) == [1]
        await db.execute("DELETE FROM users WHERE id = 2")
    await db.execute("INSERT INTO users (id, email) VALUES (3, 'c@x')")  # the application goes on
    async with db.transaction():
        done = await backup.restore(db, "row-1")
    assert done == ['DELETE FROM public.users: 1 of 1 row(s) put back from "_migrator_backup".'
                    f'"{backup.backup_table_name("row-1", 1, items[0])}"']
    assert [tuple(r) for r in await db.fetch("SELECT id, email, phone FROM users ORDER BY id")] == [
        (1, "a@x", "a@x"), (2, "b@x", "b@x"), (3, "c@x", "c@x")]
    async with db.transaction():
        assert await backup.restore(db, "row-1") == []  # put back once


async def test_one_statement_changing_two_column_types_keeps_two_backups(db: asyncpg.Connection) -> None:
    """As documenso's `model_folder_update_id_type...`: one ALTER TABLE changes the types of two
    columns of an existing table; each column's values are kept in a table of its own and put back."""
    await db.execute('CREATE TABLE "Folder" (id int PRIMARY KEY, "parentId" int, "rank" int);'
                     'INSERT INTO "Folder" VALUES (1, NULL, 10), (2, 1, 20);')
    sql = 'ALTER TABLE "Folder" ALTER COLUMN "parentId" SET DATA TYPE TEXT, ALTER COLUMN "rank" SET DATA TYPE TEXT;'
    items = plan_backups(split_statements(sql), await backup.table_facts(db, ["public.Folder"]), "public").items
    assert [(i.statement, i.columns) for i in items] == [(1, ["parentId"]), (1, ["rank"])]
    await bookkeeping.ensure(db)
    async with db.transaction():
        assert await backup.take(db, "row-2", "m", items) == [2, 2]
        await db.execute(sql)
    await db.execute("""UPDATE "Folder" SET "parentId" = 'x', "rank" = 'y'""")
    async with db.transaction():  # the rollback, then the values back
        await db.execute('ALTER TABLE "Folder" ALTER COLUMN "parentId" TYPE int USING NULL, '
                         'ALTER COLUMN "rank" TYPE int USING NULL')
        assert len(await backup.restore(db, "row-2")) == 2
    assert [tuple(r) for r in await db.fetch('SELECT id, "parentId", "rank" FROM "Folder" ORDER BY id')] == [
        (1, None, 10), (2, 1, 20)]


def test_set_search_path_moves_what_is_backed_up() -> None:
    app = USERS.model_copy(update={"schema_name": "app"})
    got = backups("SET search_path TO app;\nALTER TABLE users DROP COLUMN phone;\nRESET search_path;\nDROP TABLE log;",
                  facts={"app.users": app, "public.log": LOG})
    assert [(i.schema_name, i.table) for i in got.items] == [("app", "users"), ("public", "log")]


@pytest.mark.skipif(not CORPUS.exists(), reason="the corpus of real histories is not beside the repo")
async def test_preflight_of_a_real_history_on_an_empty_database_plans_no_backup(database_url: str) -> None:
    from temporalio.testing import ActivityEnvironment

    from tests.helpers import StageActivities, make_settings

    bundle = build_bundle(read_migrations_dir(CORPUS / "rallly" / "migrations"), revision="t", source="rallly")
    result = await ActivityEnvironment().run(StageActivities(make_settings("t", database_url)).preflight,
                                             request("t", bundle.migrations))
    assert result.plan.blockers == [] and result.plan.backup_bytes == 0
    assert not any(m.backups or m.unbacked for m in result.plan.migrations)
