"""Which data a migration destroys, and the backup that keeps it: decided from the parse tree
and the catalog facts preflight read (TableFacts). Pure: no I/O.

Destroying statements on tables that existed before the migration, and what is saved for each,
before the migration's script and in its transaction (activities/backup.py):
- DROP TABLE, TRUNCATE, DELETE [WHERE]: the whole rows (of the WHERE only, when the migration does
  not touch the table earlier); put back by INSERT.
- UPDATE [WHERE], ALTER TABLE ... DROP COLUMN, ALTER COLUMN ... TYPE: the table's key and the
  old values of those columns; put back by UPDATE, which needs a key (primary key, or a unique
  index on NOT NULL columns) to find each row again.
Tables the migration creates itself hold nothing to lose. What cannot be backed up is said in one
sentence (a schema or type dropped with CASCADE, a table without a key for a column backup, a
table the catalog does not show).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pglast import parse_sql
from pglast.stream import RawStream

from domain.backup_items import BackupItem, MigrationBackups, TableFacts
from domain.sql.parse import StatementInfo, names, qualified

_DEFAULT_WIDTH = 32  # bytes per value when pg_stats has no width yet


def tables_to_inspect(statements: list[StatementInfo], default_schema: str,
                      created_before: frozenset[str] = frozenset()) -> list[str]:
    """schema.table of every existing table a destroying statement touches (preflight reads their
    facts). `created_before`: tables earlier migrations of the same run create."""
    created: set[str] = set(created_before)
    out: list[str] = []
    for s, schema in _with_search_path(statements, default_schema):
        node = s.node()
        if s.kind in ("CreateStmt", "CreateTableAsStmt"):
            rel = node.get("relation") or node.get("into", {}).get("rel")
            created.add(qualified(rel, schema))
        for table, _ in destroyed_data(s, schema):
            if table not in created and table not in out:
                out.append(table)
    return out


def plan_backups(statements: list[StatementInfo], facts: Mapping[str, TableFacts], default_schema: str,
                 created_before: frozenset[str] = frozenset(), existing: frozenset[str] = frozenset()) -> MigrationBackups:
    """The backups `statements` need, given the facts of the tables they touch (only tables that
    exist before the run have facts: any other is created or renamed into place by the run, and
    holds nothing to lose, as do tables created by this migration or an earlier one of the run,
    `created_before`). `existing`: the schemas and types (cascade_targets) that exist now."""
    result = MigrationBackups()
    created: set[str] = set(created_before)
    touched: set[str] = set()
    for s, schema in _with_search_path(statements, default_schema):
        node = s.node()
        if s.kind in ("CreateStmt", "CreateTableAsStmt"):
            created.add(qualified(node.get("relation") or node.get("into", {}).get("rel"), schema))
        if s.kind == "DropStmt" and node.get("behavior") == "DROP_CASCADE" and node.get("removeType") in (
                "OBJECT_SCHEMA", "OBJECT_TYPE", "OBJECT_DOMAIN") and _cascade_target(node, schema) in existing:
            what = node["removeType"].removeprefix("OBJECT_").lower()
            result.impossible.append(f"statement {s.index + 1} (line {s.line}): DROP {what.upper()} ... CASCADE "
                                     "drops whatever depends on it; what that holds cannot be backed up statically")
        for table, (kind, columns, reason) in destroyed_data(s, schema):
            if table in created:
                continue
            fact = facts.get(table)
            where = "statement {} (line {})".format(s.index + 1, s.line)
            if fact is None:
                continue  # not in the database before the run: an earlier migration of it creates or renames it
            cols = fact.columns if kind == "rows" else [c for c in columns if c in fact.columns]
            if not cols:
                continue  # a column this run adds first: nothing of it exists before the run
            if kind == "columns" and not fact.key:
                result.impossible.append(f"{where}: {reason}: table {table} has no primary key or unique key on "
                                         "NOT NULL columns, so old values could not be matched back to their rows")
                continue
            condition = where_text(s) if table not in touched else None
            key = [k for k in fact.key if kind == "columns" or k in cols]
            result.items.append(BackupItem(
                statement=s.index + 1, line=s.line, reason=reason, schema_name=fact.schema_name, table=fact.name,
                kind=kind, columns=[c for c in cols if c not in key] if kind == "columns" else cols, key=key,
                where=condition, estimated_rows=fact.rows, estimated_bytes=_estimate(fact, kind, cols, key),
            ))
        for table in _writes(s, schema):
            touched.add(table)
    return result


def cascade_targets(statements: list[StatementInfo], default_schema: str) -> list[str]:
    """`schema:name` / `type:schema.name` of what the statements drop with CASCADE."""
    return [t for s, schema in _with_search_path(statements, default_schema)
            if s.kind == "DropStmt" and s.node().get("behavior") == "DROP_CASCADE"
            and (t := _cascade_target(s.node(), schema))]


def _cascade_target(node: dict[str, Any], schema: str) -> str | None:
    objects = node.get("objects", [])
    if not objects:
        return None
    if node.get("removeType") == "OBJECT_SCHEMA":
        return "schema:" + objects[0].get("String", {}).get("sval", "")
    if node.get("removeType") in ("OBJECT_TYPE", "OBJECT_DOMAIN"):
        parts = names(objects[0].get("TypeName", {}).get("names"))
        return "type:" + (".".join(parts) if len(parts) > 1 else f"{schema}.{parts[-1]}")
    return None


def _with_search_path(statements: list[StatementInfo], default_schema: str):
    """Each statement with the schema its unqualified names land in: SET search_path moves them
    (Prisma runs the whole file in one session) until a RESET."""
    schema = default_schema
    for s in statements:
        node = s.node()
        if s.kind == "VariableSetStmt" and str(node.get("name", "")).lower() == "search_path":
            values = [a.get("A_Const", {}).get("sval", {}).get("sval") for a in node.get("args", [])]
            schemas = [v for v in values if v and v != "$user"]
            schema = schemas[0] if node.get("kind") == "VAR_SET_VALUE" and schemas else default_schema
        yield s, schema


def _estimate(fact: TableFacts, kind: str, cols: list[str], key: list[str]) -> int:
    if kind == "rows" or not fact.columns:
        return fact.bytes
    width = sum(fact.widths.get(c, _DEFAULT_WIDTH) for c in {*cols, *key})
    return max(fact.rows * width, 0)


def destroyed_data(s: StatementInfo, schema: str) -> list[tuple[str, tuple[str, list[str], str]]]:
    """(table, (kind, columns, reason)) for each table whose data `s` destroys."""
    node = s.node()
    kind = s.kind
    if kind == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
        out = []
        for obj in node.get("objects", []):
            parts = names(obj.get("List", {}).get("items"))
            table = ".".join(parts) if len(parts) > 1 else f"{schema}.{parts[-1]}"
            out.append((table, ("rows", [], f"DROP TABLE {table}")))
        return out
    if kind == "TruncateStmt":
        return [(qualified(r.get("RangeVar"), schema), ("rows", [], f"TRUNCATE {qualified(r.get('RangeVar'), schema)}"))
                for r in node.get("relations", [])]
    if kind == "DeleteStmt":
        table = qualified(node.get("relation"), schema)
        return [(table, ("rows", [], f"DELETE FROM {table}"))]
    if kind == "UpdateStmt":
        table = qualified(node.get("relation"), schema)
        cols = [t["ResTarget"]["name"] for t in node.get("targetList", []) if "ResTarget" in t]
        return [(table, ("columns", cols, f"UPDATE {table} SET {', '.join(cols)}"))]
    if kind == "AlterTableStmt" and node.get("objtype") in (None, "OBJECT_TABLE"):
        table = qualified(node.get("relation"), schema)
        out = []
        for item in node.get("cmds", []):
            cmd = item.get("AlterTableCmd", {})
            if cmd.get("subtype") == "AT_DropColumn":
                out.append((table, ("columns", [cmd.get("name")], f"DROP COLUMN {table}.{cmd.get('name')}")))
            elif cmd.get("subtype") == "AT_AlterColumnType":
                out.append((table, ("columns", [cmd.get("name")], f"ALTER COLUMN {table}.{cmd.get('name')} TYPE")))
        return out
    return []


def _writes(s: StatementInfo, schema: str) -> list[str]:
    node = s.node()
    if s.kind in ("InsertStmt", "UpdateStmt", "DeleteStmt", "AlterTableStmt"):
        return [qualified(node.get("relation"), schema)]
    return [t for t, _ in destroyed_data(s, schema)]


def where_text(s: StatementInfo) -> str | None:
    if s.kind not in ("DeleteStmt", "UpdateStmt") or not s.node().get("whereClause"):
        return None
    stmt: Any = parse_sql(s.text)[0].stmt
    if (stmt.usingClause if s.kind == "DeleteStmt" else stmt.fromClause) or stmt.relation.alias or stmt.withClause:
        return None  # the WHERE refers to other tables or an alias: back up every row
    return RawStream()(stmt.whereClause)
