"""Static analysis rules: each fires on a positive example and stays quiet on a near-miss.

Every example is also executed on real PostgreSQL (against a small existing schema), so the rules
are proven on SQL the server actually accepts, not on strings only our parser likes.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from domain.risk import Risk, max_risk
from domain.schema.refs import ObjectKind, ObjectRef
from domain.sql.parse import SqlParseError, split_statements
from domain.sql.rules import analyze_migration

INCIDENT = Path(__file__).resolve().parent.parent / "examples" / "incident" / "prisma" / "migrations"

# An "existing" database the examples run against: tables created before the migration.
SETUP = """
CREATE TYPE "Mood" AS ENUM ('happy', 'sad');
CREATE TABLE existing (id int PRIMARY KEY, name text, n int, mood "Mood");
CREATE TABLE other (id int PRIMARY KEY, existing_id int);
CREATE TABLE kv (key text PRIMARY KEY, value text);
INSERT INTO existing VALUES (1, 'a', 1, 'happy');
INSERT INTO other VALUES (1, 1);
"""

# (code, positive, near-miss negative)
RULES = [
    ("drop-table", "DROP TABLE other", "DROP VIEW IF EXISTS some_view"),
    ("drop-column", "ALTER TABLE existing DROP COLUMN n", "ALTER TABLE existing ALTER COLUMN n DROP DEFAULT"),
    ("drop-type", 'DROP TABLE existing; DROP TYPE "Mood"', 'CREATE TYPE "Other" AS ENUM (\'x\')'),
    ("drop-schema", "CREATE SCHEMA s; DROP SCHEMA s", "CREATE SCHEMA s"),
    ("truncate", "TRUNCATE other", "DELETE FROM other WHERE id = 1"),
    ("delete-without-where", "DELETE FROM other", "DELETE FROM other WHERE id = 2"),
    ("update-without-where", "UPDATE existing SET n = 2", "UPDATE existing SET n = 2 WHERE id = 1"),
    ("alter-column-type", "ALTER TABLE existing ALTER COLUMN n TYPE bigint",
     "CREATE TABLE fresh (n int); ALTER TABLE fresh ALTER COLUMN n TYPE bigint"),
    ("add-column-volatile-default", "ALTER TABLE existing ADD COLUMN u uuid DEFAULT gen_random_uuid()",
     "ALTER TABLE existing ADD COLUMN t timestamptz DEFAULT now()"),
    ("add-column-volatile-default", "ALTER TABLE existing ADD COLUMN s bigserial",
     "ALTER TABLE existing ADD COLUMN s bigint"),
    ("add-column-required", "CREATE TABLE empty_t (id int); ALTER TABLE empty_t ADD COLUMN c int NOT NULL; "
     "DROP TABLE empty_t; ALTER TABLE kv ADD COLUMN c int NOT NULL",
     "ALTER TABLE existing ADD COLUMN c int NOT NULL DEFAULT 0"),
    ("set-not-null", "ALTER TABLE existing ALTER COLUMN name SET NOT NULL",
     "ALTER TABLE existing ALTER COLUMN name DROP NOT NULL"),
    ("index-not-concurrent", "CREATE INDEX existing_name_idx ON existing (name)",
     "CREATE TABLE fresh (name text); CREATE INDEX fresh_name_idx ON fresh (name)"),
    ("constraint-not-valid", "ALTER TABLE existing ADD CONSTRAINT n_pos CHECK (n > 0)",
     "ALTER TABLE existing ADD CONSTRAINT n_pos CHECK (n > 0) NOT VALID"),
    ("foreign-key", "ALTER TABLE other ADD CONSTRAINT other_fk FOREIGN KEY (existing_id) REFERENCES existing (id)",
     "ALTER TABLE other ADD CONSTRAINT other_fk FOREIGN KEY (existing_id) REFERENCES existing (id) NOT VALID"),
    ("foreign-key", "ALTER TABLE other ADD CONSTRAINT other_fk FOREIGN KEY (existing_id) REFERENCES existing (id)",
     "CREATE TABLE fresh (id int, existing_id int); "
     "ALTER TABLE fresh ADD CONSTRAINT fresh_fk FOREIGN KEY (existing_id) REFERENCES existing (id)"),
    ("foreign-key", "ALTER TABLE other ADD COLUMN e2 int DEFAULT 1 REFERENCES existing (id)",
     "ALTER TABLE other ADD COLUMN e2 int REFERENCES existing (id)"),
    ("foreign-key", "ALTER TABLE other ADD COLUMN e2 int; UPDATE other SET e2 = 1; "
     "ALTER TABLE other ADD CONSTRAINT other_e2_fk FOREIGN KEY (e2) REFERENCES existing (id)",
     "ALTER TABLE other ADD COLUMN e2 int; "
     "ALTER TABLE other ADD CONSTRAINT other_e2_fk FOREIGN KEY (e2) REFERENCES existing (id)"),
    ("foreign-key-new-column", "ALTER TABLE other ADD COLUMN e2 int REFERENCES existing (id)",
     "ALTER TABLE other ADD COLUMN e2 int DEFAULT 1 REFERENCES existing (id)"),
    ("add-unique-constraint", "ALTER TABLE existing ADD COLUMN code text UNIQUE",
     "ALTER TABLE existing ADD COLUMN code text"),
    ("add-unique-constraint", "ALTER TABLE existing ADD CONSTRAINT name_uq UNIQUE (name)",
     "CREATE TABLE fresh (name text); ALTER TABLE fresh ADD CONSTRAINT fresh_uq UNIQUE (name)"),
    ("non-transactional", "CREATE INDEX CONCURRENTLY existing_name_idx ON existing (name)",
     "CREATE INDEX existing_name_idx ON existing (name)"),
    ("non-transactional", "VACUUM existing", "ANALYZE existing"),
    ("insert-idempotent", "INSERT INTO kv (key, value) VALUES ('a', 'b') ON CONFLICT (key) DO NOTHING",
     "INSERT INTO kv (key, value) VALUES ('a', 'b')"),
    ("insert-not-idempotent", "INSERT INTO kv (key, value) VALUES ('a', 'b')",
     "INSERT INTO kv (key, value) VALUES ('a', 'b') ON CONFLICT DO NOTHING"),
    ("insert-upsert", "INSERT INTO kv (key, value) VALUES ('a', 'b') ON CONFLICT (key) DO UPDATE SET value = excluded.value",
     "INSERT INTO kv (key, value) VALUES ('a', 'b') ON CONFLICT (key) DO NOTHING"),
    ("rename-table", "ALTER TABLE other RENAME TO others", "ALTER INDEX other_pkey RENAME TO others_pkey"),
    ("rename-column", "ALTER TABLE existing RENAME COLUMN name TO full_name",
     "ALTER TABLE existing RENAME CONSTRAINT existing_pkey TO existing_pk"),
    ("drop-index", "CREATE INDEX i ON other (existing_id); DROP INDEX i", "CREATE INDEX i ON other (existing_id)"),
    ("drop-cascade", "DROP TABLE existing CASCADE", "DROP TABLE other"),
    ("delete-rows", "DELETE FROM other WHERE id = 1", "SELECT 1 FROM other WHERE id = 1"),
    ("enum-add-value", "ALTER TYPE \"Mood\" ADD VALUE 'meh'", "ALTER TYPE \"Mood\" RENAME VALUE 'sad' TO 'blue'"),
    ("rename-enum-value", "ALTER TYPE \"Mood\" RENAME VALUE 'sad' TO 'blue'", "ALTER TYPE \"Mood\" ADD VALUE 'meh'"),
    ("transaction-control", "BEGIN; CREATE TABLE fresh (id int); COMMIT", "CREATE TABLE fresh (id int)"),
    ("opaque-code", "DO $$ BEGIN PERFORM 1; END $$", "SELECT 1"),
    ("creates-only",
     'CREATE TYPE "Q" AS ENUM (\'a\'); CREATE TABLE fresh (id int PRIMARY KEY, q "Q"); '
     "CREATE INDEX fresh_q ON fresh (q); ALTER TABLE fresh ADD CONSTRAINT fresh_fk FOREIGN KEY (id) REFERENCES existing (id)",
     "CREATE TABLE fresh (id int PRIMARY KEY); CREATE INDEX existing_name_idx ON existing (name)"),
]


def _ids() -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for code, *_ in RULES:
        seen[code] = seen.get(code, 0) + 1
        out.append(code if seen[code] == 1 else f"{code}-{seen[code]}")
    return out


@pytest.mark.parametrize(("code", "positive", "negative"), RULES, ids=_ids())
def test_rule_fires_on_positive_and_not_on_near_miss(code: str, positive: str, negative: str) -> None:
    assert code in analyze_migration("pos", positive).codes(), f"{code} should fire on: {positive}"
    assert code not in analyze_migration("neg", negative).codes(), f"{code} should stay quiet on: {negative}"


async def _runs_on_postgres(conn: asyncpg.Connection, sql: str) -> None:
    """Execute an example against the setup schema, then undo it."""
    statements = [s.text for s in split_statements(sql)]
    transactional = all(
        not (s.upper().startswith(("VACUUM", "BEGIN", "COMMIT")) or "CONCURRENTLY" in s.upper()) for s in statements
    )
    if transactional:
        tx = conn.transaction()
        await tx.start()
        try:
            for s in statements:
                await conn.execute(s)
        finally:
            await tx.rollback()
    else:  # cannot run inside a transaction block: run, then rebuild the schema
        for s in statements:
            await conn.execute(s)
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;" + SETUP)


async def test_every_example_is_sql_postgresql_accepts(db: asyncpg.Connection) -> None:
    await db.execute(SETUP)
    for code, positive, negative in RULES:
        for sql in (positive, negative):
            try:
                await _runs_on_postgres(db, sql)
            except asyncpg.PostgresError as exc:
                pytest.fail(f"example for {code} fails on PostgreSQL: {sql!r}: {exc}")


def test_parse_error_names_the_line() -> None:
    sql = "CREATE TABLE a (id int);\n\n-- comment\nCREATE TABLE (oops int);\n"
    with pytest.raises(SqlParseError) as info:
        analyze_migration("broken", sql)
    assert info.value.line == 4
    assert "line 4" in str(info.value) and "broken" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("sql", "line"),
    [
        ("SELECT 1;\nSELEC 2", 2),  # error at the first character of a line
        ("é;\nSELECT 1", 1),  # at offset 0, after a multi-byte character
        ("SELECT 1;\n\nCREATE TABLE x (\n\n", 3),  # at end of input: the last line with text
        ("SELECT 1;\nSELECT 'abc", 2),  # unterminated string
    ],
)
def test_parse_error_line_edge_cases(sql: str, line: int) -> None:
    with pytest.raises(SqlParseError) as info:
        split_statements(sql)
    assert info.value.line == line


def test_split_statements_lines_skip_leading_comments_and_handle_unicode() -> None:
    sql = "-- héllo wörld\n/* multi\nline */\nCREATE TABLE \"ä\" (id int);\n\n  -- next\nSELECT 'ü';"
    stmts = split_statements(sql)
    assert [(s.index, s.line, s.kind) for s in stmts] == [(0, 4, "CreateStmt"), (1, 7, "SelectStmt")]
    assert stmts[0].text == 'CREATE TABLE "ä" (id int)'
    assert stmts[1].text == "SELECT 'ü'"


def test_findings_carry_line_and_statement() -> None:
    a = analyze_migration("m", "CREATE TABLE t (id int);\nDROP TABLE existing;")
    (finding,) = [f for f in a.findings if f.code == "drop-table"]
    assert finding.line == 2 and finding.severity == "error" and finding.statement.startswith("DROP TABLE")
    assert a.statements[1].findings == [finding]


def test_risk_is_the_worst_statement() -> None:
    assert analyze_migration("a", "CREATE TABLE t (id int)").risk == Risk.low
    assert analyze_migration("b", "CREATE TABLE t (id int); CREATE INDEX i ON existing (x)").risk == Risk.medium
    assert analyze_migration("c", "CREATE TABLE t (id int); ALTER TABLE t RENAME TO u; DROP TABLE x").risk == Risk.high
    assert max_risk([]) == Risk.low
    assert max_risk(["low", Risk.high, "medium"]) == Risk.high
    assert Risk.low < Risk.medium < Risk.high


def test_in_transaction_and_idempotent_flags() -> None:
    a = analyze_migration("m", "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (x)")
    assert not a.in_transaction and a.idempotent
    b = analyze_migration("m", "CREATE TABLE IF NOT EXISTS t (id int); INSERT INTO t (id) VALUES (1) ON CONFLICT (id) DO NOTHING")
    assert b.in_transaction and b.idempotent
    # without conflict columns nothing proves that a second run finds its own row
    assert not analyze_migration("m", "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING").idempotent
    c = analyze_migration("m", "CREATE TABLE t (id int)")
    assert c.in_transaction and not c.idempotent
    d = analyze_migration("m", "ALTER TYPE \"Q\" ADD VALUE 'x'", server_version=11)
    assert not d.in_transaction and "non-transactional" in d.codes()
    assert analyze_migration("m", "ALTER TYPE \"Q\" ADD VALUE 'x'").in_transaction
    e = analyze_migration("m", "ALTER TABLE t ADD COLUMN IF NOT EXISTS c int; DROP INDEX IF EXISTS j")
    assert e.idempotent


def test_creates_lists_objects_with_schema() -> None:
    a = analyze_migration(
        "m",
        'CREATE TYPE "QuestionType" AS ENUM (\'a\'); CREATE TABLE app.leads (id int); CREATE INDEX x ON app.leads (id);'
        "CREATE SEQUENCE s; ALTER TABLE t ADD COLUMN c int, ADD CONSTRAINT t_c UNIQUE (c); CREATE VIEW v AS SELECT 1",
    )
    assert [str(ref) for ref in a.creates] == [
        'enum public."QuestionType"',
        "table app.leads",
        "index app.x on app.leads",
        "sequence public.s",
        "column public.t.c",
        "constraint t_c on public.t",
        "view public.v",
    ]
    # Typed references, as the schema model names objects (the index belongs to its table).
    assert a.creates[2] == ObjectRef.of(ObjectKind.table, "app", "leads").child(ObjectKind.index, "x")
    summary = next(f.message for f in a.findings if f.code == "creates-only") if "creates-only" in a.codes() else ""
    b = analyze_migration("m", "CREATE TABLE a (id int); CREATE INDEX ON a (id); ALTER TYPE \"E\" ADD VALUE 'x';")
    assert b.creates == [ObjectRef.of(ObjectKind.table, "public", "a")]  # no name to refer to, no value kind
    assert "1 table, 1 index, 1 enum value" in next(f.message for f in b.findings if f.code == "creates-only")
    assert summary == ""  # ALTER TABLE t on an existing table is not creating-only


def _incident(name: str) -> str:
    return (INCIDENT / name / "migration.sql").read_text()


@pytest.mark.skipif(not INCIDENT.exists(), reason="incident example not in this checkout")
def test_incident_migrations_are_judged_as_the_write_up_did() -> None:
    leads = analyze_migration("leads", _incident("20241226000000_add_leads_questionnaire_models"))
    assert leads.risk == Risk.low
    assert "creates-only" in leads.codes()
    assert {ObjectRef.of(ObjectKind.table, "public", "leads"),
            ObjectRef.of(ObjectKind.table, "public", "lead_page_views")} <= set(leads.creates)
    assert leads.derived_rollback is not None

    landing = analyze_migration("landing", _incident("20260115000000_add_landing_sections"))
    assert landing.risk == Risk.low and landing.idempotent
    assert landing.codes() == {"insert-idempotent"}
    assert landing.derived_rollback is not None and "DELETE FROM" in landing.derived_rollback


def test_analysis_serialises() -> None:
    a = analyze_migration("m", "CREATE TABLE t (id int); DROP TABLE u")
    again = type(a).model_validate_json(a.model_dump_json())
    assert again.model_dump() == a.model_dump()
    # The statement's parse tree comes back by re-parsing after a round trip.
    assert again.statements[1].node()["removeType"] == "OBJECT_TABLE"


DOCUMENSO = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "documenso" / "migrations"


@pytest.mark.skipif(not DOCUMENSO.exists(), reason="the corpus is not on this machine")
async def test_foreign_keys_on_columns_added_in_the_same_migration_are_no_warning(db: asyncpg.Connection) -> None:
    """documenso's add_email_transports: two optional relations, each a new NULL column plus its
    foreign key. Nothing can fail the check, so it is an info finding, not a warning; and the
    migration really does run on tables that hold rows."""
    sql = (DOCUMENSO / "20260604143030_add_email_transports" / "migration.sql").read_text()
    analysis = analyze_migration("20260604143030_add_email_transports", sql)
    codes = [f.code for f in analysis.findings]
    assert "foreign-key" not in codes
    assert codes.count("foreign-key-new-column") == 2
    assert analysis.risk == Risk.low
    await db.execute('CREATE TABLE "OrganisationClaim" (id text PRIMARY KEY); '
                     'CREATE TABLE "SubscriptionClaim" (id text PRIMARY KEY); '
                     "INSERT INTO \"OrganisationClaim\" VALUES ('a'); INSERT INTO \"SubscriptionClaim\" VALUES ('b');")
    await db.execute(sql)
    assert await db.fetchval('SELECT count(*) FROM "OrganisationClaim" WHERE "emailTransportId" IS NULL') == 1


def test_set_search_path_moves_what_follows_and_blocks_a_derived_rollback() -> None:
    sql = ('CREATE SCHEMA IF NOT EXISTS "d7";\nSET search_path TO "d7", public;\nCREATE TABLE "User" ("id" INT);\n'
           'RESET search_path;\nCREATE TABLE "Other" ("id" INT);\n')
    analysis = analyze_migration("m", sql)
    assert [str(ref) for ref in analysis.creates] == ['schema d7', 'table d7."User"', 'table public."Other"']
    assert analysis.derived_rollback is None
    assert any("changes search_path" in b for b in analysis.rollback_blockers)
    plain = analyze_migration("m", "SET lock_timeout = '1s';\nCREATE TABLE t (id int);\n")
    assert plain.derived_rollback is not None  # other settings do not matter
