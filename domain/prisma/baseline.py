"""Whether Prisma calls a database "not empty" (P3005) before its first deploy.

Contract:

    MIGRATIONS_TABLE = "_prisma_migrations"
    POSTGIS_TABLES: tuple[str, ...]          # the names Prisma ignores, matched case-insensitively
    TABLE_NAMES_SQL: str                     # Prisma's own catalog query; $1 = text[] of schemas
    P3005_MESSAGE: str                       # Prisma's wording
    def table_should_be_ignored(name: str) -> bool
    def ignored_tables(table_names: Iterable[str]) -> list[str]
    def blocking_tables(table_names: Iterable[str]) -> list[str]     # the ones that cause P3005
    def schema_is_empty_for_prisma(table_names: Iterable[str]) -> bool
    def deploy_refused_with_p3005(table_names: Iterable[str]) -> bool

Source (prisma/prisma-engines; the strings are the same in the schema engine that Prisma 6.19.3
ships, `prisma/build/schema_engine_bg.wasm`):

- `schema-engine/connectors/sql-schema-connector/src/sql_migration_persistence.rs`
  (commit 17a550caa0318a411d3def95563d4aa77bf057f5), `initialize`: if the table names include
  `_prisma_migrations` (exact, case-sensitive), nothing is checked; else if any name is not
  `table_should_be_ignored`, the deploy fails with P3005 (DatabaseSchemaNotEmpty) and creates
  nothing; else it creates `_prisma_migrations`.
- `.../src/flavour/postgres.rs` (commit 042511990ea2dc539b711cfaa3f692c6997d4533), `table_names`:
  `pg_class.relkind = 'r'` in the connection's schema (`?schema=`, default public) plus the
  datasource's `schemas`. Only ordinary tables count: views, materialized views, partitioned
  parents (relkind 'p'; their partitions are 'r' and do count), sequences, types, functions and
  tables in other schemas never make a database "not empty".
- `.../src/flavour/postgres/schema_differ.rs` (commit 0953f510bb25abbc7eff2860f14418c7380955c1),
  `table_should_be_ignored`: the RegexSet POSTGIS_TABLES_OR_VIEWS, `(?i)^spatial_ref_sys$`,
  `(?i)^geometry_columns$`, `(?i)^geography_columns$`, `(?i)^raster_columns$`,
  `(?i)^raster_overviews$`: whole names (Rust's `$` is the end of the text), compared with Rust
  regex's Unicode simple case folding. (`pg_buffercache` is ignored only as a view, by the
  differ, which does not matter here since views never count.)

Each rule is checked against the real Prisma CLI in tests/test_prisma_baseline.py.
"""

from __future__ import annotations

from collections.abc import Iterable

MIGRATIONS_TABLE = "_prisma_migrations"

POSTGIS_TABLES = ("spatial_ref_sys", "geometry_columns", "geography_columns", "raster_columns", "raster_overviews")

TABLE_NAMES_SQL = """
SELECT tbl.relname AS table_name
FROM pg_class AS tbl
INNER JOIN pg_namespace AS namespace ON namespace.oid = tbl.relnamespace
WHERE tbl.relkind = 'r' AND namespace.nspname = ANY ($1::text[])
"""

P3005_MESSAGE = (
    "The database schema is not empty. Read more about how to baseline an existing production database: "
    "https://pris.ly/d/migrate-baseline"
)

# Rust's regex crate folds case with Unicode's simple case folding (CaseFolding.txt, statuses C
# and S). Beyond the ASCII letters themselves, exactly two code points fold onto ASCII letters:
# LATIN SMALL LETTER LONG S -> s and KELVIN SIGN -> k. The Turkish dotted/dotless i are status T
# and do not fold to i. (Python's re.IGNORECASE does match them, which is why it is not used.)
_NON_ASCII_FOLDS = {"\u017f": "s", "\u212a": "k"}


def _simple_fold(ch: str) -> str:
    if ch.isascii():
        return ch.lower()
    return _NON_ASCII_FOLDS.get(ch, ch)


def table_should_be_ignored(name: str) -> bool:
    """True for the PostGIS tables Prisma does not count (any case, whole name only)."""
    if len(name) not in {len(t) for t in POSTGIS_TABLES}:
        return False
    folded = "".join(_simple_fold(c) for c in name)
    return folded in POSTGIS_TABLES


def ignored_tables(table_names: Iterable[str]) -> list[str]:
    """The names among `table_names` that Prisma ignores, in the given order."""
    return [n for n in table_names if table_should_be_ignored(n)]


def blocking_tables(table_names: Iterable[str]) -> list[str]:
    """The names that make Prisma call the schema not empty (what to show a user with P3005)."""
    return [n for n in table_names if n != MIGRATIONS_TABLE and not table_should_be_ignored(n)]


def schema_is_empty_for_prisma(table_names: Iterable[str]) -> bool:
    """True when Prisma would call a schema with these ordinary tables (relkind 'r') empty:
    every one of them is a PostGIS table it ignores. `_prisma_migrations` is a table like any
    other here; use deploy_refused_with_p3005 for the whole first-deploy rule."""
    return all(table_should_be_ignored(n) for n in table_names)


def deploy_refused_with_p3005(table_names: Iterable[str]) -> bool:
    """True when `prisma migrate deploy` stops with P3005 on a database whose schema(s) hold
    these ordinary tables (the result of TABLE_NAMES_SQL)."""
    names = list(table_names)
    return MIGRATIONS_TABLE not in names and not schema_is_empty_for_prisma(names)
