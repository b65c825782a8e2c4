"""Rollbacks derived from a migration's own SQL, for statements that are provably reversible.

CREATE TABLE/INDEX/TYPE/SEQUENCE/VIEW -> DROP; ADD COLUMN -> DROP COLUMN; ADD CONSTRAINT name ->
DROP CONSTRAINT; INSERT of literal rows into an existing table -> DELETE of exactly those keys.
The DELETE is only right when those keys did not exist before the migration ran: the caller checks
that with `insert_keys` + `select_keys_sql` before deploying. Everything else blocks a derived rollback
(one reason per statement). SQL is produced by pglast's printer, so identifiers are quoted properly.
Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pglast import ast, enums
from pglast.stream import RawStream, maybe_double_quote_name

from domain.sql.parse import (
    DEFAULT_SCHEMA,
    StatementInfo,
    literal_value,
    names,
    qualified,
    split_statements,
)

_RESTRICT = enums.DropBehavior.DROP_RESTRICT


class InsertKey(NamedTuple):
    """Rows an INSERT adds to an existing table, identified by literal key values."""

    table: str  # schema.table
    key_columns: tuple[str, ...]
    values: list[tuple[Any, ...]]  # one tuple per row, in key_columns order


# -- SQL builders (pglast AST -> text) -------------------------------------------------------


def _split(qualified_name: str) -> tuple[str, str]:
    schema, _, name = qualified_name.partition(".")
    return schema, name


def _rangevar(qualified_name: str) -> ast.RangeVar:
    schema, name = _split(qualified_name)
    return ast.RangeVar(schemaname=schema, relname=name, inh=True, relpersistence="p")


def _drop(object_type: enums.ObjectType, *parts: str) -> ast.DropStmt:
    obj: Any = tuple(ast.String(sval=p) for p in parts)
    if object_type in (enums.ObjectType.OBJECT_TYPE, enums.ObjectType.OBJECT_DOMAIN):
        obj = ast.TypeName(names=obj, typemod=-1)
    elif object_type in (enums.ObjectType.OBJECT_SCHEMA, enums.ObjectType.OBJECT_EXTENSION):
        obj = ast.String(sval=parts[-1])
    return ast.DropStmt(objects=(obj,), removeType=object_type, behavior=_RESTRICT, missing_ok=False, concurrent=False)


def _const(value: Any) -> ast.A_Const:
    if value is None:
        return ast.A_Const(isnull=True)
    if isinstance(value, bool):
        return ast.A_Const(isnull=False, val=ast.Boolean(boolval=value))
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return ast.A_Const(isnull=False, val=ast.Integer(ival=value))
        return ast.A_Const(isnull=False, val=ast.Float(fval=str(value)))
    if isinstance(value, float):
        return ast.A_Const(isnull=False, val=ast.Float(fval=repr(value)))
    return ast.A_Const(isnull=False, val=ast.String(sval=str(value)))


def _column(name: str) -> ast.ColumnRef:
    return ast.ColumnRef(fields=(ast.String(sval=name),))


def _match(key: InsertKey) -> ast.Node:
    """WHERE clause matching exactly the key values of `key`."""
    if len(key.key_columns) == 1:
        return ast.A_Expr(
            kind=enums.A_Expr_Kind.AEXPR_IN,
            name=(ast.String(sval="="),),
            lexpr=_column(key.key_columns[0]),
            rexpr=tuple(_const(row[0]) for row in key.values),
        )
    rows = []
    for row in key.values:
        eqs = tuple(
            ast.A_Expr(kind=enums.A_Expr_Kind.AEXPR_OP, name=(ast.String(sval="="),), lexpr=_column(c), rexpr=_const(v))
            for c, v in zip(key.key_columns, row)
        )
        rows.append(ast.BoolExpr(boolop=enums.BoolExprType.AND_EXPR, args=eqs))
    return rows[0] if len(rows) == 1 else ast.BoolExpr(boolop=enums.BoolExprType.OR_EXPR, args=tuple(rows))


_DROP_KEYWORDS = {
    enums.ObjectType.OBJECT_TABLE: "TABLE",
    enums.ObjectType.OBJECT_INDEX: "INDEX",
    enums.ObjectType.OBJECT_TYPE: "TYPE",
    enums.ObjectType.OBJECT_DOMAIN: "DOMAIN",
    enums.ObjectType.OBJECT_SEQUENCE: "SEQUENCE",
    enums.ObjectType.OBJECT_VIEW: "VIEW",
    enums.ObjectType.OBJECT_MATVIEW: "MATERIALIZED VIEW",
    enums.ObjectType.OBJECT_SCHEMA: "SCHEMA",
    enums.ObjectType.OBJECT_EXTENSION: "EXTENSION",
}


def _name_of(obj: Any) -> str:
    if isinstance(obj, ast.TypeName):
        obj = obj.names
    if isinstance(obj, ast.String):
        obj = (obj,)
    return ".".join(maybe_double_quote_name(part.sval) for part in obj)


def _fast_print(node: ast.Node) -> str | None:
    """DROP statements printed with pglast's own identifier quoting, without the general printer
    (which costs ~0.15 ms a node: most of the analysis benchmark). Same text as RawStream."""
    if isinstance(node, ast.DropStmt) and node.removeType in _DROP_KEYWORDS:
        return f"DROP {_DROP_KEYWORDS[node.removeType]} {', '.join(_name_of(o) for o in node.objects)}"
    if isinstance(node, ast.AlterTableStmt) and all(
        c.subtype in (enums.AlterTableType.AT_DropColumn, enums.AlterTableType.AT_DropConstraint) for c in node.cmds
    ):
        rel = node.relation
        table = ".".join(maybe_double_quote_name(p) for p in (rel.schemaname, rel.relname) if p)
        cmds = ", ".join(
            ("DROP COLUMN " if c.subtype == enums.AlterTableType.AT_DropColumn else "DROP CONSTRAINT ")
            + maybe_double_quote_name(c.name)
            for c in node.cmds
        )
        return f"ALTER TABLE {table} {cmds}"
    return None


def _print(node: ast.Node) -> str:
    return _fast_print(node) or RawStream()(node)


def select_keys_sql(key: InsertKey) -> str:
    """SELECT of the key columns of the rows (among `key.values`) that exist."""
    return _print(
        ast.SelectStmt(
            targetList=tuple(ast.ResTarget(val=_column(c)) for c in key.key_columns),
            fromClause=(_rangevar(key.table),),
            whereClause=_match(key),
        )
    )


def delete_keys_sql(key: InsertKey) -> str:
    return _print(ast.DeleteStmt(relation=_rangevar(key.table), whereClause=_match(key)))


# -- inserted keys ---------------------------------------------------------------------------


def _is_json_cast(node: dict[str, Any]) -> bool:
    cast = node.get("TypeCast")
    return bool(cast) and names(cast.get("typeName", {}).get("names"))[-1:] in (["json"], ["jsonb"])


def insert_key_of(node: dict[str, Any], default_schema: str = DEFAULT_SCHEMA) -> InsertKey | str:
    """The literal key rows an INSERT adds, or why they cannot be known statically."""
    table = qualified(node.get("relation"), default_schema)
    columns = [t["ResTarget"]["name"] for t in node.get("cols", []) if "ResTarget" in t]
    values_lists = node.get("selectStmt", {}).get("SelectStmt", {}).get("valuesLists")
    if not columns:
        return f"INSERT into {table} names no columns"
    if not values_lists:
        return f"INSERT into {table} does not insert literal VALUES"
    rows = [[item for item in v.get("List", {}).get("items", [])] for v in values_lists]
    conflict = node.get("onConflictClause") or {}
    target = [e["IndexElem"].get("name") for e in conflict.get("infer", {}).get("indexElems", []) if "IndexElem" in e]
    if target:
        if not all(c in columns for c in target):
            return f"INSERT into {table}: the ON CONFLICT columns are not all inserted"
        key_columns = target
    else:
        # No declared key: identify the rows by every column that is a non-null literal in all rows.
        key_columns = [
            c
            for i, c in enumerate(columns)
            if all(literal_value(r[i])[0] and literal_value(r[i])[1] is not None and not _is_json_cast(r[i]) for r in rows)
        ]
        if not key_columns:
            return f"INSERT into {table} has no literal values to identify its rows"
    positions = [columns.index(c) for c in key_columns]
    values: list[tuple[Any, ...]] = []
    for row in rows:
        key: list[Any] = []
        for p in positions:
            ok, value = literal_value(row[p])
            if not ok or value is None:
                return f"INSERT into {table}: key column {columns[p]} is not a literal value"
            key.append(value)
        if tuple(key) not in values:
            values.append(tuple(key))
    return InsertKey(table, tuple(key_columns), values)


def insert_keys(sql: str, default_schema: str = DEFAULT_SCHEMA) -> list[InsertKey]:
    """Literal key rows inserted into tables that existed before this migration.

    Inserts into tables the migration itself creates are left out (the rollback drops the table).
    Raises SqlParseError on unparseable SQL.
    """
    return _insert_keys(split_statements(sql), default_schema)


def _insert_keys(statements: list[StatementInfo], default_schema: str) -> list[InsertKey]:
    new_tables: set[str] = set()
    keys = []
    for stmt in statements:
        node = stmt.node()
        if stmt.kind == "CreateStmt":
            new_tables.add(qualified(node.get("relation"), default_schema))
        elif stmt.kind == "InsertStmt" and qualified(node.get("relation"), default_schema) not in new_tables:
            key = insert_key_of(node, default_schema)
            if isinstance(key, InsertKey):
                keys.append(key)
    return keys


# -- derivation ------------------------------------------------------------------------------

_SIMPLE_CREATES = {
    "CreateEnumStmt": (enums.ObjectType.OBJECT_TYPE, "typeName", "names"),
    "CreateDomainStmt": (enums.ObjectType.OBJECT_DOMAIN, "domainname", "names"),
}


def _undo(stmt: StatementInfo, schema: str, new_tables: set[str]) -> list[ast.Node] | str:
    """Statements undoing `stmt` (in execution order), or a reason it cannot be undone."""
    kind, node = stmt.kind, stmt.node()
    O = enums.ObjectType
    if kind == "CreateStmt":
        table = qualified(node.get("relation"), schema)
        if node.get("if_not_exists"):
            return f"CREATE TABLE IF NOT EXISTS {table}: the table may have existed before"
        new_tables.add(table)
        return [_drop(O.OBJECT_TABLE, *_split(table))]
    if kind == "CreateTableAsStmt":
        table = qualified(node.get("into", {}).get("rel"), schema)
        if node.get("if_not_exists"):
            return f"CREATE ... IF NOT EXISTS {table}: it may have existed before"
        new_tables.add(table)
        otype = O.OBJECT_MATVIEW if node.get("objtype") == "OBJECT_MATVIEW" else O.OBJECT_TABLE
        return [_drop(otype, *_split(table))]
    if kind == "IndexStmt":
        if not node.get("idxname"):
            return "CREATE INDEX without a name cannot be dropped by name"
        if node.get("if_not_exists"):
            return f"CREATE INDEX IF NOT EXISTS {node['idxname']}: the index may have existed before"
        table_schema = _split(qualified(node.get("relation"), schema))[0]
        return [_drop(O.OBJECT_INDEX, table_schema, node["idxname"])]
    if kind in ("CreateEnumStmt", "CreateDomainStmt"):
        field = "typeName" if kind == "CreateEnumStmt" else "domainname"
        parts = names(node.get(field))
        parts = parts if len(parts) > 1 else [schema, *parts]
        return [_drop(O.OBJECT_TYPE if kind == "CreateEnumStmt" else O.OBJECT_DOMAIN, *parts)]
    if kind == "CompositeTypeStmt":
        return [_drop(O.OBJECT_TYPE, *_split(qualified(node.get("typevar"), schema)))]
    if kind == "CreateSeqStmt":
        seq = qualified(node.get("sequence"), schema)
        if node.get("if_not_exists"):
            return f"CREATE SEQUENCE IF NOT EXISTS {seq}: the sequence may have existed before"
        return [_drop(O.OBJECT_SEQUENCE, *_split(seq))]
    if kind == "ViewStmt":
        view = qualified(node.get("view"), schema)
        if node.get("replace"):
            return f"CREATE OR REPLACE VIEW {view} may have replaced an earlier definition"
        return [_drop(O.OBJECT_VIEW, *_split(view))]
    if kind == "CreateSchemaStmt":
        if node.get("if_not_exists") or node.get("schemaElts"):
            return f"CREATE SCHEMA {node.get('schemaname')} with IF NOT EXISTS or elements is not provably reversible"
        return [_drop(O.OBJECT_SCHEMA, node["schemaname"])]
    if kind == "AlterTableStmt" and node.get("objtype") in (None, "OBJECT_TABLE"):
        return _undo_alter_table(node, schema)
    if kind == "InsertStmt":
        table = qualified(node.get("relation"), schema)
        if table in new_tables:
            return []  # the rows go with the table
        key = insert_key_of(node, schema)
        if isinstance(key, str):
            return key
        return [ast.DeleteStmt(relation=_rangevar(key.table), whereClause=_match(key))]
    if kind == "VariableSetStmt" and str(node.get("name", "")).lower() == "search_path":
        # What follows lands in another schema, decided at run time: a DROP of the default
        # schema's object of the same name would be the wrong object.
        return "it changes search_path, so the schema of what it creates is not known statically"
    if kind in ("VariableSetStmt", "TransactionStmt"):
        return []
    if kind == "AlterEnumStmt" and node.get("newVal"):
        return "PostgreSQL cannot remove a value from an enum type"
    return f"{kind.removesuffix('Stmt')} has no derived inverse"


def _undo_alter_table(node: dict[str, Any], schema: str) -> list[ast.Node] | str:
    table = qualified(node.get("relation"), schema)
    drops = []
    for item in node.get("cmds", []):
        cmd = item.get("AlterTableCmd", {})
        sub = cmd.get("subtype")
        if sub == "AT_AddColumn" and not cmd.get("missing_ok"):
            col = cmd.get("def", {}).get("ColumnDef", {}).get("colname")
            drops.append(ast.AlterTableCmd(subtype=enums.AlterTableType.AT_DropColumn, name=col, behavior=_RESTRICT))
        elif sub == "AT_AddConstraint" and cmd.get("def", {}).get("Constraint", {}).get("conname"):
            name = cmd["def"]["Constraint"]["conname"]
            drops.append(ast.AlterTableCmd(subtype=enums.AlterTableType.AT_DropConstraint, name=name, behavior=_RESTRICT))
        else:
            what = str(sub).removeprefix("AT_")
            return f"ALTER TABLE {table} {what} cannot be undone without knowing the previous state"
    return [
        ast.AlterTableStmt(relation=_rangevar(table), objtype=enums.ObjectType.OBJECT_TABLE, cmds=tuple(reversed(drops)))
    ]


# Statements that change only data: undone by putting their backup back, when one is taken.
RESTORABLE = {"UpdateStmt", "DeleteStmt", "TruncateStmt"}


def derive_rollback(statements: list[StatementInfo], default_schema: str = DEFAULT_SCHEMA, *,
                    restored: frozenset[int] = frozenset()) -> tuple[str | None, list[str]]:
    """(rollback SQL, blockers): SQL only when every statement is provably reversible. Statements
    whose index is in `restored` (data-only statements with a backup) need no SQL: their backup is
    put back; with nothing else to undo the rollback is the empty string."""
    undo: list[list[ast.Node]] = []
    blockers: list[str] = []
    new_tables: set[str] = set()
    for stmt in statements:
        if stmt.index in restored and stmt.kind in RESTORABLE:
            continue
        result = _undo(stmt, default_schema, new_tables)
        if isinstance(result, str):
            blockers.append(f"statement {stmt.index + 1} (line {stmt.line}): {result}")
        else:
            undo.append(result)
    if blockers or not statements:
        return None, blockers
    nodes = [n for group in reversed(undo) for n in group]
    if not nodes:
        if restored:
            return "", []
        return None, ["the migration changes nothing a rollback could undo"]
    return "".join(_print(n) + ";\n" for n in nodes), []
