"""Which statements are safe to run a second time: the parser must prove it, or the answer is no.

A failed migration may be re-run ("reapply") without looking at its effects only when running
any of its statements twice leaves the database as running it once. That is proven here from the
parse tree alone, statement by statement:

- safe: CREATE ... IF NOT EXISTS, CREATE OR REPLACE, DROP ... IF EXISTS, ADD/DROP COLUMN IF
  [NOT] EXISTS, SET/DROP DEFAULT, SET/DROP NOT NULL, ALTER COLUMN TYPE without USING, INSERT of
  literal rows with ON CONFLICT DO NOTHING (or DO UPDATE with literals / EXCLUDED), UPDATE setting
  literals or columns it does not write and filtering on columns it does not write, ADD VALUE IF
  NOT EXISTS, GRANT/REVOKE, COMMENT, SET, ANALYZE, VACUUM, REINDEX, transaction control, SELECT
  without function calls (or only pg_sleep);
- never: ALTER COLUMN TYPE ... USING (it converts the data again), UPDATE reading a column it
  writes (price = price / 100), INSERT ... SELECT, DELETE, TRUNCATE, renames, DO blocks, and
  anything else, including every statement without IF [NOT] EXISTS that fails when its object
  exists or is gone.

An existing object satisfies CREATE ... IF NOT EXISTS even when its definition differs (or it is an
INVALID index): the deploy and the plan check that against the database, this module cannot.
Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from domain.sql.parse import StatementInfo, literal_value, names, walk

_ALWAYS = {"VariableSetStmt", "CommentStmt", "GrantStmt", "GrantRoleStmt", "AlterDefaultPrivilegesStmt",
           "AlterOwnerStmt", "TransactionStmt", "VacuumStmt", "ReindexStmt"}
_IF_NOT_EXISTS = {"CreateStmt", "CreateTableAsStmt", "IndexStmt", "CreateSeqStmt", "CreateSchemaStmt",
                  "CreateExtensionStmt"}
_OR_REPLACE = {"ViewStmt": "replace", "CreateFunctionStmt": "replace", "CreateTrigStmt": "replace"}
# ALTER TABLE subcommands whose second run finds the end state already there.
_SAME_END_STATE = {"AT_ColumnDefault", "AT_DropNotNull", "AT_SetNotNull", "AT_SetStatistics", "AT_SetStorage",
                   "AT_EnableRowSecurity", "AT_DisableRowSecurity", "AT_ForceRowSecurity", "AT_NoForceRowSecurity",
                   "AT_ChangeOwner", "AT_SetRelOptions", "AT_ResetRelOptions"}
_SLEEP_ONLY = {"pg_sleep"}


def not_repeatable(stmt: StatementInfo) -> str | None:
    """Why running `stmt` a second time may change the database again or fail; None if it is safe."""
    kind, node = stmt.kind, stmt.node()
    if kind in _ALWAYS:
        return None
    if kind in _IF_NOT_EXISTS:
        return None if node.get("if_not_exists") else "fails when its object already exists (no IF NOT EXISTS)"
    if kind in _OR_REPLACE:
        return None if node.get(_OR_REPLACE[kind]) else "fails when its object already exists (no OR REPLACE)"
    if kind in ("DropStmt", "DropdbStmt"):
        return None if node.get("missing_ok") else "fails when its object is already gone (no IF EXISTS)"
    if kind == "AlterEnumStmt":
        if node.get("newVal") and node.get("skipIfNewValExists"):
            return None
        return "fails when the enum value already exists (no IF NOT EXISTS)" if node.get("newVal") else "renames an enum value"
    if kind == "AlterTableStmt":
        return _alter_table(node)
    if kind == "InsertStmt":
        return _insert(node)
    if kind == "UpdateStmt":
        return _update(node)
    if kind == "DeleteStmt":
        return "DELETE removes rows again that were written since the first run"
    if kind == "TruncateStmt":
        return "TRUNCATE removes rows again that were written since the first run"
    if kind == "SelectStmt":
        calls = {names(body.get("funcname"))[-1].lower() for k, body in walk(node) if k == "FuncCall"}
        return None if calls <= _SLEEP_ONLY else f"SELECT calls {', '.join(sorted(calls - _SLEEP_ONLY))}(), which may change data"
    if kind == "RenameStmt":
        return "a rename fails once the old name is gone"
    if kind == "DoStmt":
        return "a DO block cannot be proven safe to repeat"
    return f"{kind.removesuffix('Stmt')} is not known to be safe to repeat"


def repeat_blockers(statements: list[StatementInfo]) -> list[str]:
    """One sentence per statement that is not safe to run twice (empty: the whole file is)."""
    out = []
    for s in statements:
        why = not_repeatable(s)
        if why:
            out.append(f"statement {s.index + 1} (line {s.line}): {why}")
    return out


def _alter_table(node: dict[str, Any]) -> str | None:
    if node.get("objtype") not in (None, "OBJECT_TABLE"):
        return "this ALTER is not known to be safe to repeat"
    for item in node.get("cmds", []):
        cmd = item.get("AlterTableCmd", {})
        sub = cmd.get("subtype")
        if sub in ("AT_AddColumn", "AT_DropColumn", "AT_DropConstraint"):
            if not cmd.get("missing_ok"):
                what = {"AT_AddColumn": "ADD COLUMN without IF NOT EXISTS fails when the column exists",
                        "AT_DropColumn": "DROP COLUMN without IF EXISTS fails when the column is gone",
                        "AT_DropConstraint": "DROP CONSTRAINT without IF EXISTS fails when it is gone"}
                return what[sub]
        elif sub == "AT_AlterColumnType":
            if cmd.get("def", {}).get("ColumnDef", {}).get("raw_default"):
                return (f"ALTER COLUMN {cmd.get('name')} TYPE ... USING converts the column's data again on a second "
                        "run")
        elif sub == "AT_AddConstraint":
            return "ADD CONSTRAINT fails when the constraint exists"
        elif sub not in _SAME_END_STATE:
            return f"ALTER TABLE {str(sub).removeprefix('AT_')} is not known to be safe to repeat"
    return None


def _insert(node: dict[str, Any]) -> str | None:
    select = node.get("selectStmt", {}).get("SelectStmt", {})
    if not select.get("valuesLists"):
        return "INSERT ... SELECT inserts whatever the query finds at the time it runs"
    conflict = node.get("onConflictClause")
    if not conflict:
        return "INSERT without ON CONFLICT duplicates its rows or fails a second time"
    columns = [t["ResTarget"]["name"] for t in node.get("cols", []) if "ResTarget" in t]
    rows = [v.get("List", {}).get("items", []) for v in select["valuesLists"]]
    literal = {c for i, c in enumerate(columns) if all(i < len(r) and literal_value(r[i])[0] for r in rows)}
    target = [e["IndexElem"].get("name") for e in conflict.get("infer", {}).get("indexElems", []) if "IndexElem" in e]
    if not target or not all(target):
        return "INSERT ... ON CONFLICT without conflict columns cannot be proven to find its own rows a second time"
    if not set(target) <= literal:
        return "INSERT ... ON CONFLICT whose key values are not literals may insert other rows a second time"
    if conflict.get("action") == "ONCONFLICT_NOTHING":
        return None
    sets = [t["ResTarget"].get("val", {}) for t in conflict.get("targetList", []) if "ResTarget" in t]
    if not conflict.get("whereClause") and all(literal_value(v)[0] or _excluded_column(v) in literal for v in sets):
        return None
    return "INSERT ... ON CONFLICT DO UPDATE computes its update from values that may differ a second time"


def _excluded_column(node: dict[str, Any]) -> str | None:
    fields = names(node.get("ColumnRef", {}).get("fields"))
    return fields[1] if len(fields) == 2 and fields[0] == "excluded" else None


def _columns_read(node: Any) -> set[str]:
    return {names(body.get("fields"))[-1] for k, body in walk(node) if k == "ColumnRef" and names(body.get("fields"))}


def _update(node: dict[str, Any]) -> str | None:
    targets = [t["ResTarget"] for t in node.get("targetList", []) if "ResTarget" in t]
    written = {t.get("name") for t in targets}
    if node.get("fromClause") or any(k == "SubLink" for k, _ in walk(node)):
        return "UPDATE reading other rows or tables may compute other values a second time"
    read = set()
    for t in targets:
        read |= _columns_read(t.get("val", {}))
    read |= _columns_read(node.get("whereClause", {}))
    if read & written:
        cols = ", ".join(sorted(read & written))
        return f"UPDATE reads the column(s) it writes ({cols}): a second run changes them again"
    calls = {names(body.get("funcname"))[-1].lower() for k, body in walk(node) if k == "FuncCall"}
    if calls:
        return f"UPDATE computes values with {', '.join(sorted(calls))}(), which may differ a second time"
    return None
