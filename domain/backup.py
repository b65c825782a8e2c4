"""Which data a migration destroys, and the backup that keeps it: decided from the parse tree
and the catalog facts preflight read (TableFacts). Pure: no I/O.

Destroying statements on tables that existed before the migration, and what is saved for each,
before the migration's script and in its transaction (activities/backup.py):
- DROP TABLE, TRUNCATE, DELETE [WHERE]: the whole rows (of the WHERE only, when the migration does
  not touch the table earlier); put back by INSERT.
- UPDATE [WHERE], ALTER TABLE ... DROP COLUMN, ALTER COLUMN ... TYPE: the table's key and the
  old values of those columns; put back by UPDATE, which needs a key (primary key, or a unique
  index on NOT NULL columns) to find each row again.
Tables the run creates hold nothing to lose, whatever it renames them to; a table of the
database that the run renames (or whose columns it renames) keeps its facts under its new names
(domain/backup_names.py), in the same migration and in later ones of the run. What cannot be
backed up is said in one sentence (a schema or type dropped with CASCADE, a table without a key
for a column backup).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pglast import parse_sql
from pglast.stream import RawStream

from domain.backup_items import BackupItem, MigrationBackups, TableFacts
from domain.backup_names import LiveTable, RunNames
from domain.sql.parse import StatementInfo, names, qualified

_DEFAULT_WIDTH = 32  # bytes per value when pg_stats has no width yet


def tables_to_inspect(migrations: Sequence[list[StatementInfo]], default_schema: str) -> list[str]:
    """schema.table, as named before the run, of every table of the database before the run that a
    destroying statement of the run's migrations (in order) touches: preflight reads their facts."""
    run = RunNames()
    out: list[str] = []
    for statements in migrations:
        run.begin_migration()
        for s, schema in _with_search_path(statements, default_schema):
            for table, _ in destroyed_data(s, schema):
                t = run.live(table)
                if t is not None and t.origin not in out:
                    out.append(t.origin)
            run.follow(s, schema)
    return out


def cascade_targets(migrations: Sequence[list[StatementInfo]], default_schema: str) -> list[str]:
    """`schema:name` / `type:schema.name`, as named before the run, of what the run's migrations
    drop with CASCADE (preflight checks which exist)."""
    run = RunNames()
    out: list[str] = []
    for statements in migrations:
        for s, schema in _with_search_path(statements, default_schema):
            target = _before(run, _cascade_target(s.node(), schema)) if _drops_cascade(s) else None
            if target and target not in out:
                out.append(target)
            run.follow(s, schema)
    return out


def plan_run_backups(migrations: Sequence[tuple[str, list[StatementInfo]]], facts: Mapping[str, TableFacts],
                     default_schema: str, existing: frozenset[str] = frozenset()) -> dict[str, MigrationBackups]:
    """The backups each of the run's migrations (in the order they run) needs, given the facts of
    the tables of the database before the run (keyed by their names then). Renames are followed
    (domain/backup_names.py): a live table renamed by the run keeps its facts under its new name,
    and its backups are taken and put back under the names it has at the start of the migration
    that destroys its data. A table the run created holds nothing to lose, and neither does a
    column it added. `existing`: what of cascade_targets exists before the run."""
    run = RunNames()
    out: dict[str, MigrationBackups] = {}
    for name, statements in migrations:
        run.begin_migration()
        out[name] = _plan_migration(statements, facts, default_schema, existing, run)
    return out


def plan_backups(statements: list[StatementInfo], facts: Mapping[str, TableFacts], default_schema: str,
                 existing: frozenset[str] = frozenset()) -> MigrationBackups:
    """The backups of one migration that is the whole run."""
    return plan_run_backups([("", statements)], facts, default_schema, existing)[""]


def _plan_migration(statements: list[StatementInfo], facts: Mapping[str, TableFacts], default_schema: str,
                    existing: frozenset[str], run: RunNames) -> MigrationBackups:
    result = MigrationBackups()
    touched: set[int] = set()  # tables an earlier statement of this migration wrote to or renamed
    for s, schema in _with_search_path(statements, default_schema):
        node = s.node()
        if _drops_cascade(s) and _before(run, _cascade_target(node, schema)) in existing:
            what = node["removeType"].removeprefix("OBJECT_").lower()
            result.impossible.append(f"statement {s.index + 1} (line {s.line}): DROP {what.upper()} ... CASCADE "
                                     "drops whatever depends on it; what that holds cannot be backed up statically")
        for table, (kind, columns, reason) in destroyed_data(s, schema):
            t = run.live(table)
            fact = facts.get(t.origin) if t is not None and t.origin is not None else None
            if t is None or fact is None:
                continue  # created by the run (under this name or another), or not in the database before it
            where = f"statement {s.index + 1} (line {s.line})"
            item = _item(s, fact, t, run, kind, columns, reason, t.ident in touched)
            if isinstance(item, BackupItem):
                result.items.append(item)
            elif item:
                result.impossible.append(f"{where}: {item}")
        for table in _writes(s, schema):
            if (t := run.table(table)) is not None:
                touched.add(t.ident)
        run.follow(s, schema)
    return result


def _item(s: StatementInfo, fact: TableFacts, t: LiveTable, run: RunNames, kind: str, columns: list[str],
          reason: str, touched: bool) -> BackupItem | str | None:
    """The backup of what `s` destroys of the live table `t`, under the names it has at the start
    of the migration (the backup is taken before its script); a sentence when it cannot be taken;
    None when nothing of it exists before the run."""
    start_name, start = run.at_start(t)
    if kind == "rows":  # whole rows as the migration finds them, the run's own added columns included
        cols = [c for c in fact.columns if start.now(c) is not None]
        added = [c for c, before in start.columns.items() if before is None]
    else:
        cols = [b for c in columns if (b := t.before(c)) is not None and b in fact.columns and start.now(b)]
        added = []
    if not cols:
        return None  # only columns this run adds: nothing of them exists before the run
    key_now = [start.now(k) for k in fact.key]
    has_key = bool(fact.key) and all(key_now)
    if kind == "columns" and not has_key:
        return (f"{reason}: table {fact.schema_name}.{fact.name} has no primary key or unique key on "
                "NOT NULL columns, so old values could not be matched back to their rows")
    key = list(fact.key) if has_key else []
    saved = [c for c in cols if c not in key] if kind == "columns" else cols
    schema_name, _, table = start_name.partition(".")
    return BackupItem(
        statement=s.index + 1, line=s.line, reason=reason, schema_name=schema_name, table=table, kind=kind,
        columns=[str(start.now(c)) for c in saved] + added, key=[str(start.now(k)) for k in key],
        where=None if touched else where_text(s), estimated_rows=fact.rows,
        estimated_bytes=_estimate(fact, kind, cols, key) + fact.rows * _DEFAULT_WIDTH * len(added),
    )


def _drops_cascade(s: StatementInfo) -> bool:
    node = s.node()
    return s.kind == "DropStmt" and node.get("behavior") == "DROP_CASCADE" and node.get("removeType") in (
        "OBJECT_SCHEMA", "OBJECT_TYPE", "OBJECT_DOMAIN")


def _before(run: RunNames, target: str | None) -> str | None:
    """A cascade target under its name before the run (None: the run created it)."""
    if target is None:
        return None
    kind, _, name = target.partition(":")
    before = run.schema_before(name) if kind == "schema" else run.type_before(name)
    return f"{kind}:{before}" if before is not None else None


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
    """Tables whose rows (or names, which a WHERE may use) `s` changes."""
    node = s.node()
    if s.kind in ("InsertStmt", "UpdateStmt", "DeleteStmt", "AlterTableStmt", "RenameStmt", "AlterObjectSchemaStmt") \
            and node.get("relation"):
        return [qualified(node.get("relation"), schema)]
    return [t for t, _ in destroyed_data(s, schema)]


def where_text(s: StatementInfo) -> str | None:
    if s.kind not in ("DeleteStmt", "UpdateStmt") or not s.node().get("whereClause"):
        return None
    stmt: Any = parse_sql(s.text)[0].stmt
    if (stmt.usingClause if s.kind == "DeleteStmt" else stmt.fromClause) or stmt.relation.alias or stmt.withClause:
        return None  # the WHERE refers to other tables or an alias: back up every row
    return RawStream()(stmt.whereClause)
