"""The catalog reader (activities.catalog) on real PostgreSQL: every change a person can make by hand
is seen and named, extension members and Prisma's ledger stay out, and on a real history deployed
by the real Prisma CLI the model agrees with PostgreSQL's own serializer (pg_dump)."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from activities.catalog import read_schema_model
from devstack.pgcluster import find_pg_bin
from domain.schema import Change, Difference, ObjectKind, SchemaModel, compare
from tests.oracle import prisma

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"

BASE = """
CREATE TYPE "Role" AS ENUM ('USER', 'ADMIN');
CREATE TABLE "User" ("id" SERIAL PRIMARY KEY, "email" TEXT NOT NULL, "role" "Role" NOT NULL DEFAULT 'USER');
CREATE UNIQUE INDEX "User_email_key" ON "User"("email");
CREATE TABLE "orders" ("id" SERIAL PRIMARY KEY, "userId" INTEGER NOT NULL, "total" NUMERIC(10,2) NOT NULL);
ALTER TABLE "orders" ADD CONSTRAINT "orders_userId_fkey" FOREIGN KEY ("userId") REFERENCES "User"("id")
    ON DELETE RESTRICT ON UPDATE CASCADE;
CREATE FUNCTION "order_total"(o "orders") RETURNS NUMERIC LANGUAGE sql AS $$ SELECT o.total $$;
"""


async def _change(db: asyncpg.Connection, sql: str) -> list[Difference]:
    """The differences a hand change makes, read from the catalog before and after it."""
    before = await read_schema_model(db)
    await db.execute(sql)
    return compare(before, await read_schema_model(db))


@pytest.fixture
async def base(db: asyncpg.Connection) -> asyncpg.Connection:
    await db.execute(BASE)
    return db


@pytest.fixture
async def app_role(db: asyncpg.Connection) -> AsyncIterator[str]:
    """A role of our own (roles are cluster-wide), gone after the test."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    await db.execute(f"CREATE ROLE {name}")
    try:
        yield name
    finally:
        await db.execute(f"DROP OWNED BY {name}; DROP ROLE {name}")


# -- each hand change is detected and named ---------------------------------------------------


async def test_column_type_changed(base: asyncpg.Connection) -> None:
    [diff] = await _change(base, 'ALTER TABLE "orders" ALTER COLUMN "total" TYPE TEXT')
    assert diff.sentence == "column public.orders.total differs: expected numeric(10,2) NOT NULL, live has text NOT NULL"


async def test_non_unique_index_under_the_unique_index_name(base: asyncpg.Connection) -> None:
    [diff] = await _change(base, 'DROP INDEX "User_email_key"; CREATE INDEX "User_email_key" ON "User"("email")')
    assert diff.change == Change.changed and diff.attributes == ("definition", "uniqueness")
    assert diff.sentence == (
        'index public."User_email_key" on public."User" differs: expected CREATE UNIQUE INDEX "User_email_key" '
        'ON public."User" USING btree (email), live has CREATE INDEX "User_email_key" ON public."User" USING btree (email)'
    )


async def test_check_true_in_place_of_the_foreign_key(base: asyncpg.Connection) -> None:
    [diff] = await _change(
        base, 'ALTER TABLE "orders" DROP CONSTRAINT "orders_userId_fkey", ADD CONSTRAINT "orders_userId_fkey" CHECK (true)'
    )
    assert diff.sentence == (
        'constraint "orders_userId_fkey" on public.orders differs: expected FOREIGN KEY ("userId") REFERENCES '
        'public."User"(id) ON UPDATE CASCADE ON DELETE RESTRICT, live has CHECK (true)'
    )


async def test_invalid_index_left_by_a_failed_concurrent_unique_index(base: asyncpg.Connection) -> None:
    await base.execute('CREATE UNIQUE INDEX "orders_total_key" ON "orders"("total")')
    expected = await read_schema_model(base)  # the index as a migration means it
    await base.execute('DROP INDEX "orders_total_key"; INSERT INTO "User"("email") VALUES (\'a@x\')')
    await base.execute('INSERT INTO "orders"("userId", "total") VALUES (1, 5), (1, 5)')
    with pytest.raises(asyncpg.UniqueViolationError):
        await base.execute('CREATE UNIQUE INDEX CONCURRENTLY "orders_total_key" ON "orders"("total")')
    [diff] = compare(expected, await read_schema_model(base))
    assert diff.attributes == ("validity",)
    assert diff.sentence == "index public.orders_total_key on public.orders differs in validity: expected valid, live has INVALID"
    assert diff.live == "CREATE UNIQUE INDEX orders_total_key ON public.orders USING btree (total) (INVALID)"


async def test_trigger_and_its_function(base: asyncpg.Connection) -> None:
    diffs = await _change(
        base,
        """CREATE FUNCTION "audit"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
           CREATE TRIGGER "orders_audit" AFTER INSERT ON "orders" FOR EACH ROW EXECUTE FUNCTION "audit"();""",
    )
    assert [(str(d.ref), d.change) for d in diffs] == [
        ("function public.audit()", Change.extra),
        ("trigger orders_audit on public.orders", Change.extra),
    ]
    assert diffs[1].sentence == (
        "trigger orders_audit on public.orders exists only in the live database: CREATE TRIGGER orders_audit "
        "AFTER INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION public.audit()"
    )
    [disabled] = await _change(base, 'ALTER TABLE "orders" DISABLE TRIGGER "orders_audit"')
    assert disabled.sentence == (
        "trigger orders_audit on public.orders differs in enabled state: expected enabled, live has disabled"
    )


async def test_view(base: asyncpg.Connection) -> None:
    [diff] = await _change(base, 'CREATE VIEW "big_orders" AS SELECT * FROM "orders" WHERE "total" > 100')
    assert diff.sentence.startswith("view public.big_orders exists only in the live database: AS SELECT orders.id,")
    assert "FROM public.orders WHERE (orders.total > (100)::numeric)" in diff.sentence


async def test_row_level_security_and_a_policy(base: asyncpg.Connection) -> None:
    diffs = await _change(
        base,
        """ALTER TABLE "orders" ENABLE ROW LEVEL SECURITY;
           CREATE POLICY "own_orders" ON "orders" FOR SELECT USING ("userId" = 42);""",
    )
    assert [d.sentence for d in diffs] == [
        "table public.orders differs in row level security: expected disabled, live has enabled",
        'policy own_orders on public.orders exists only in the live database: AS PERMISSIVE FOR SELECT TO PUBLIC '
        'USING (("userId" = 42))',
    ]


async def test_revoked_grants(base: asyncpg.Connection, app_role: str) -> None:
    await base.execute(f'GRANT SELECT, INSERT ON "orders" TO {app_role}; GRANT USAGE ON SCHEMA public TO {app_role}')
    diffs = await _change(base, f'REVOKE ALL ON "orders" FROM {app_role}; REVOKE USAGE ON SCHEMA public FROM {app_role}')
    assert [d.sentence for d in diffs] == [
        f"schema public differs in grants: privileges of {app_role} expected USAGE, live has none",
        f"table public.orders differs in grants: privileges of {app_role} expected INSERT, SELECT, live has none",
    ]


async def test_enum_value_added(base: asyncpg.Connection) -> None:
    [diff] = await _change(base, "ALTER TYPE \"Role\" ADD VALUE 'OWNER' BEFORE 'ADMIN'")
    assert diff.sentence == "enum public.\"Role\" differs: expected ('USER', 'ADMIN'), live has ('USER', 'OWNER', 'ADMIN')"


async def test_function_body_changed(base: asyncpg.Connection) -> None:
    [diff] = await _change(
        base, 'CREATE OR REPLACE FUNCTION "order_total"(o "orders") RETURNS NUMERIC LANGUAGE sql AS $$ SELECT o.total * 2 $$'
    )
    assert str(diff.ref) == "function public.order_total(o public.orders)"
    assert diff.attributes == ("definition",)
    assert "SELECT o.total $function$" in diff.sentence and "SELECT o.total * 2 $function$" in diff.sentence


async def test_constraint_added_not_valid_then_validated(base: asyncpg.Connection) -> None:
    [added] = await _change(base, 'ALTER TABLE "orders" ADD CONSTRAINT "total_positive" CHECK ("total" > 0) NOT VALID')
    assert added.live == "CHECK ((total > (0)::numeric)) NOT VALID"
    [validated] = await _change(base, 'ALTER TABLE "orders" VALIDATE CONSTRAINT "total_positive"')
    assert validated.attributes == ("definition", "validation")


async def test_column_details_identity_generated_collation_default(base: asyncpg.Connection) -> None:
    diffs = await _change(
        base,
        """ALTER TABLE "orders" ADD COLUMN "seq" BIGINT GENERATED BY DEFAULT AS IDENTITY,
                                ADD COLUMN "double" NUMERIC GENERATED ALWAYS AS ("total" * 2) STORED,
                                ADD COLUMN "code" TEXT COLLATE "C" DEFAULT 'x';""",
    )
    assert {str(d.ref): d.live for d in diffs if d.ref.kind == ObjectKind.column} == {
        "column public.orders.code": "text COLLATE \"C\" DEFAULT 'x'::text",
        "column public.orders.double": "numeric GENERATED ALWAYS AS ((total * (2)::numeric)) STORED",
        "column public.orders.seq": "bigint NOT NULL GENERATED BY DEFAULT AS IDENTITY",
    }
    assert "sequence public.orders_seq_seq" in {str(d.ref) for d in diffs}  # the identity's sequence


async def test_other_kinds_are_read(db: asyncpg.Connection) -> None:
    await db.execute(
        """CREATE SCHEMA "audit";
           CREATE DOMAIN "audit"."positive" AS INTEGER NOT NULL CHECK (VALUE > 0);
           CREATE TYPE "audit"."pair" AS ("a" INTEGER, "b" TEXT COLLATE "C");
           CREATE TYPE "audit"."span" AS RANGE (SUBTYPE = INTEGER);
           CREATE SEQUENCE "audit"."ticket" START 100 INCREMENT 5 CACHE 10;
           CREATE TABLE "audit"."log" ("id" "audit"."positive", "at" TIMESTAMPTZ) PARTITION BY RANGE ("at");
           CREATE TABLE "audit"."log_2026" PARTITION OF "audit"."log" FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
           CREATE MATERIALIZED VIEW "audit"."counts" AS SELECT count(*) AS n FROM "audit"."log";
           CREATE PROCEDURE "audit"."purge"() LANGUAGE sql AS $$ DELETE FROM "audit"."log" $$;
           CREATE AGGREGATE "audit"."total"(INTEGER) (SFUNC = int4pl, STYPE = INTEGER, INITCOND = '0');"""
    )
    model = await read_schema_model(db)
    described = {str(o.ref): o.describe() for o in model.iter_objects()}
    assert described["domain audit.positive"] == "integer NOT NULL CONSTRAINT positive_check CHECK ((VALUE > 0))"
    assert described["composite type audit.pair"] == '(a integer, b text COLLATE "C")'
    assert described["range type audit.span"].startswith("(subtype = integer, subtype_opclass = int4_ops")
    assert described["sequence audit.ticket"] == "AS bigint START 100 INCREMENT 5 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 10"
    assert described["table audit.log"] == "PARTITION BY RANGE (at)"
    assert described["table audit.log_2026"] == "PARTITION OF audit.log FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2027-01-01 00:00:00+00')"
    assert described["materialized view audit.counts"].startswith("AS  SELECT count(*) AS n")
    assert described["procedure audit.purge()"].startswith("CREATE OR REPLACE PROCEDURE audit.purge()")
    assert described["aggregate audit.total(integer)"] == (
        "CREATE AGGREGATE audit.total(integer) (SFUNC = int4pl, STYPE = integer, INITCOND = '0')"
    )
    # The range type's constructor functions are PostgreSQL's, not the user's.
    assert not [r for r in model.routines if r.ref.name == "span"]


async def test_extension_members_and_the_ledger_are_left_out(db: asyncpg.Connection) -> None:
    before = await read_schema_model(db)
    await db.execute(
        """CREATE EXTENSION "citext"; CREATE EXTENSION "pg_trgm";
           CREATE TABLE "_prisma_migrations" ("id" VARCHAR(36) PRIMARY KEY, "checksum" VARCHAR(64) NOT NULL);
           CREATE TABLE "person" ("email" citext);"""
    )
    diffs = compare(before, await read_schema_model(db))
    assert [str(d.ref) for d in diffs] == ["extension citext", "extension pg_trgm", "table public.person"]
    assert diffs[0].sentence.startswith("extension citext exists only in the live database: version ")
    model = await read_schema_model(db)
    assert [c.type for c in model.columns] == ["public.citext"]
    assert not [o for o in model.iter_objects() if "prisma_migrations" in str(o.ref)]


async def test_system_schemas_are_left_out_and_other_schemas_read(db: asyncpg.Connection) -> None:
    await db.execute('CREATE SCHEMA "billing"; CREATE TABLE "billing"."invoice" ("id" INT); CREATE TEMP TABLE "scratch" ("x" INT)')
    model = await read_schema_model(db)
    assert {s.ref.name for s in model.schemas} == {"public", "billing"}
    assert [str(t.ref) for t in model.tables] == ["table billing.invoice"]


async def test_reading_inside_a_transaction_keeps_the_callers_search_path(base: asyncpg.Connection) -> None:
    async with base.transaction():
        await base.execute("SET LOCAL search_path = public")
        inside = await read_schema_model(base)
        assert await base.fetchval("SHOW search_path") == "public"
    assert inside == await read_schema_model(base)


# -- a real history, deployed by the real Prisma CLI -----------------------------------------


@pytest.fixture(scope="module")
async def documenso(pg_server) -> AsyncIterator[str]:
    name = await pg_server.create_database("cat_documenso")
    url = pg_server.url(name)
    try:
        result = prisma(url, CORPUS / "documenso" / "migrations", "deploy")
        assert result.returncode == 0, result.stderr[-2000:]
        yield url
    finally:
        await pg_server.drop_database(name)


def _pg_dump_schema(url: str) -> str:
    parts = urlsplit(url)
    env = {**os.environ, "PGPASSWORD": parts.password or ""}
    args = ["-h", parts.hostname, "-p", str(parts.port), "-U", parts.username, "--schema-only", parts.path.lstrip("/")]
    return subprocess.run([str(find_pg_bin() / "pg_dump"), *args], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.oracle
async def test_documenso_model_agrees_with_pg_dump(documenso: str) -> None:
    conn = await asyncpg.connect(documenso)
    try:
        model = await read_schema_model(conn)
        assert await read_schema_model(conn) == model  # stable
    finally:
        await conn.close()
    dump = _pg_dump_schema(documenso)
    dumped_tables = set(re.findall(r"^CREATE TABLE public\.(\S+) \(", dump, re.M)) - {"_prisma_migrations"}
    dumped_indexes = set(re.findall(r"^CREATE (?:UNIQUE )?INDEX (\S+) ON ", dump, re.M))
    dumped_enums = set(re.findall(r"^CREATE TYPE public\.(\S+) AS ENUM", dump, re.M))
    dumped_functions = set(re.findall(r"^CREATE FUNCTION public\.([^(]+)\(", dump, re.M))
    quoted = lambda refs: {r.qualified_name.split(".", 1)[1] for r in refs}  # noqa: E731
    assert len(dumped_tables) > 40
    assert quoted(t.ref for t in model.tables) == dumped_tables
    # pg_dump writes primary-key and unique-constraint indexes as constraints, the rest as indexes.
    constraint_backed = {c.ref.name for c in model.constraints if c.constraint_type in ("primary key", "unique")}
    assert quoted(i.ref for i in model.indexes if i.ref.name not in constraint_backed) == dumped_indexes
    assert quoted(e.ref for e in model.enums) == dumped_enums
    assert {r.ref.name for r in model.routines} == dumped_functions  # not pgcrypto's or pg_trgm's
    assert {e.ref.name for e in model.extensions} >= {"pgcrypto", "pg_trgm", "plpgsql"}
    model_json = model.model_dump_json()
    assert SchemaModel.model_validate_json(model_json) == model
