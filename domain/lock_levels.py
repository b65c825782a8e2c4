"""Which table-level lock each statement of a migration takes, on which relation. Pure: no I/O.

Lint uses it to say what a statement does to the application ("takes ACCESS EXCLUSIVE on
public.users (blocks reads and writes while it waits and runs)"), and the lock-polite executor
(activities/locks.py) uses it to know which relations to watch in `pg_locks` before it asks
for a lock, so it never joins a lock queue behind a long transaction.

The levels follow PostgreSQL 15's "Explicit Locking" chapter and `AlterTableGetLockLevel()`
in tablecmds.c (per ALTER TABLE subcommand; a statement takes the strongest of its
subcommands). tests/test_lock_levels.py checks them against a real server's `pg_locks`.

What a parse tree cannot show is marked instead of guessed: locks on tables found only in the
catalog (partitions an ALTER TABLE recurses into, the table a dropped foreign key references,
whatever DROP ... CASCADE reaches) and statements that run code (DO, CALL). The executor covers
those at run time with `pg_blocking_pids()`; the table of a named index it finds in pg_index.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pglast import parser as pg_parser

from domain.lock_modes import (  # noqa: F401 - re-exported: callers need only this module
    APPLICATION_MODES,
    CONFLICTS,
    IMPACT,
    LockMode,
    RelationLock,
    StatementLocks,
    blocks_application,
    conflicting_modes,
)

_A = LockMode


@dataclass
class _Collector:
    locks: list[RelationLock] = field(default_factory=list)
    multi_transaction: bool = False
    unknown: str = ""

    def add(self, rangevar: dict[str, Any] | None, mode: LockMode, reason: str, is_index: bool = False,
            table_mode: LockMode | None = None) -> None:
        if rangevar and rangevar.get("relname"):
            self.locks.append(RelationLock(rangevar.get("schemaname"), rangevar["relname"], mode, reason, is_index,
                                           table_mode))

    def add_names(self, parts: list[str], mode: LockMode, reason: str, is_index: bool = False,
                  table_mode: LockMode | None = None) -> None:
        if parts:
            self.locks.append(RelationLock(parts[-2] if len(parts) > 1 else None, parts[-1], mode, reason, is_index,
                                           table_mode))


# -- ALTER TABLE ------------------------------------------------------------------------------

_SUE_SUBCOMMANDS = {"AT_SetStatistics", "AT_ClusterOn", "AT_DropCluster", "AT_SetOptions", "AT_ResetOptions",
                    "AT_ValidateConstraint", "AT_AttachPartition", "AT_DetachPartitionFinalize"}
_SRE_SUBCOMMANDS = {"AT_EnableTrig", "AT_EnableAlwaysTrig", "AT_EnableReplicaTrig", "AT_EnableTrigAll",
                    "AT_EnableTrigUser", "AT_DisableTrig", "AT_DisableTrigAll", "AT_DisableTrigUser"}
# Storage parameters whose change needs only SHARE UPDATE EXCLUSIVE (reloptions.c lockmode fields);
# every other one (and any unknown one) takes ACCESS EXCLUSIVE.
_SUE_RELOPTIONS = {"fillfactor", "toast_tuple_target", "parallel_workers", "vacuum_index_cleanup", "vacuum_truncate",
                   "log_autovacuum_min_duration", "deduplicate_items", "fastupdate", "gin_pending_list_limit",
                   "pages_per_range", "autosummarize", "buffering", "user_catalog_table"}


def _reloption_mode(cmd: dict[str, Any]) -> LockMode:
    items = (cmd.get("def") or {}).get("List", {}).get("items", [])
    for item in items:
        elem = item.get("DefElem", {})
        name = elem.get("defname", "")
        namespace = elem.get("defnamespace")
        if namespace == "toast" and name.startswith(("autovacuum_", "vacuum_")):
            continue
        if name.startswith("autovacuum_") or name in _SUE_RELOPTIONS:
            continue
        return _A.ACCESS_EXCLUSIVE
    return _A.SHARE_UPDATE_EXCLUSIVE


def _foreign_keys(constraints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["Constraint"] for c in constraints if c.get("Constraint", {}).get("contype") == "CONSTR_FOREIGN"]


def _subcommand_mode(cmd: dict[str, Any], out: _Collector) -> LockMode:
    subtype = cmd.get("subtype", "")
    definition = cmd.get("def") or {}
    if subtype in _SUE_SUBCOMMANDS:
        if subtype == "AT_AttachPartition":  # the partition being attached: ACCESS EXCLUSIVE
            out.add(definition.get("PartitionCmd", {}).get("name"), _A.ACCESS_EXCLUSIVE, "ATTACH PARTITION")
        return _A.SHARE_UPDATE_EXCLUSIVE
    if subtype in _SRE_SUBCOMMANDS:
        return _A.SHARE_ROW_EXCLUSIVE
    if subtype in ("AT_SetRelOptions", "AT_ResetRelOptions"):
        return _reloption_mode(cmd)
    if subtype == "AT_DetachPartition":
        partition = definition.get("PartitionCmd", {})
        concurrent = bool(partition.get("concurrent"))
        mode = _A.SHARE_UPDATE_EXCLUSIVE if concurrent else _A.ACCESS_EXCLUSIVE
        out.multi_transaction |= concurrent
        out.add(partition.get("name"), mode, "DETACH PARTITION")
        return mode
    if subtype == "AT_AddConstraint":
        constraint = definition.get("Constraint", {})
        if constraint.get("contype") == "CONSTR_FOREIGN":
            # Triggers go on both tables, so both are locked as CREATE TRIGGER locks them.
            out.add(constraint.get("pktable"), _A.SHARE_ROW_EXCLUSIVE, "FOREIGN KEY (referenced table)")
            return _A.SHARE_ROW_EXCLUSIVE
        return _A.ACCESS_EXCLUSIVE
    if subtype == "AT_AddColumn":
        for fk in _foreign_keys(definition.get("ColumnDef", {}).get("constraints", [])):
            out.add(fk.get("pktable"), _A.SHARE_ROW_EXCLUSIVE, "REFERENCES (referenced table)")
    # Everything else (ADD/DROP COLUMN, ALTER TYPE, SET/DROP DEFAULT, SET/DROP NOT NULL, DROP
    # CONSTRAINT, OWNER, identity, RLS, inheritance, ...) and any subcommand we do not know.
    return _A.ACCESS_EXCLUSIVE


def _alter_table(node: dict[str, Any], out: _Collector) -> None:
    if node.get("objtype") == "OBJECT_TYPE":
        return  # ALTER TYPE on a composite type: no table lock
    mode = _A.SHARE_UPDATE_EXCLUSIVE
    subtypes = []
    for item in node.get("cmds", []):
        cmd = item.get("AlterTableCmd", {})
        subtypes.append(cmd.get("subtype", "?").removeprefix("AT_"))
        mode = max(mode, _subcommand_mode(cmd, out))
    is_index = node.get("objtype") == "OBJECT_INDEX"
    keyword = "ALTER INDEX" if is_index else "ALTER TABLE"
    out.add(node.get("relation"), mode, f"{keyword} {', '.join(subtypes)}", is_index=is_index)


# -- other statements -------------------------------------------------------------------------

_TABLE_LIKE = {"OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_FOREIGN_TABLE", "OBJECT_SEQUENCE"}


def _strings(items: list[dict[str, Any]] | None) -> list[str]:
    return [i["String"]["sval"] for i in items or [] if "String" in i]


def _object_names(obj: dict[str, Any]) -> list[str]:
    if "List" in obj:
        return _strings(obj["List"].get("items"))
    return _strings([obj]) if "String" in obj else []


def _rangevars(node: Any, skip: set[str]) -> Iterable[dict[str, Any]]:
    """Every RangeVar below `node`, except unqualified references to the CTE names in `skip`."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                if key == "RangeVar" and isinstance(value, dict):
                    if value.get("schemaname") or value.get("relname") not in skip:
                        yield value
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(current, list):
            stack.extend(current)


def _cte_names(node: Any) -> set[str]:
    names: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            if "CommonTableExpr" in current:
                names.add(current["CommonTableExpr"].get("ctename", ""))
            stack.extend(v for v in current.values() if isinstance(v, (dict, list)))
        elif isinstance(current, list):
            stack.extend(current)
    return names


def _reads(node: Any, out: _Collector, mode: LockMode = _A.ACCESS_SHARE, reason: str = "read") -> None:
    """Every table `node` reads (CTE names excepted) with `mode`."""
    for rv in _rangevars(node, _cte_names(node)):
        out.add(rv, mode, reason)


def _dml(kind: str, node: dict[str, Any], out: _Collector) -> None:
    target = node.get("relation")
    out.add(target, _A.ROW_EXCLUSIVE, kind.removesuffix("Stmt").upper())
    _reads({k: v for k, v in node.items() if k != "relation"}, out)


def _drop(node: dict[str, Any], out: _Collector) -> None:
    kind = node.get("removeType", "")
    if node.get("behavior") == "DROP_CASCADE":
        out.unknown = "DROP ... CASCADE also drops and locks objects found only in the catalog"
    for obj in node.get("objects", []):
        parts = _object_names(obj)
        if kind in _TABLE_LIKE:
            out.add_names(parts, _A.ACCESS_EXCLUSIVE, f"DROP {kind.removeprefix('OBJECT_')}")
        elif kind == "OBJECT_INDEX":
            concurrent = bool(node.get("concurrent"))
            out.multi_transaction |= concurrent
            mode = _A.SHARE_UPDATE_EXCLUSIVE if concurrent else _A.ACCESS_EXCLUSIVE
            out.add_names(parts, mode, "DROP INDEX" + (" CONCURRENTLY" if concurrent else ""), is_index=True,
                          table_mode=mode)
        elif kind in ("OBJECT_TRIGGER", "OBJECT_POLICY", "OBJECT_RULE"):  # [schema.]table.name
            out.add_names(parts[:-1], _A.ACCESS_EXCLUSIVE, f"DROP {kind.removeprefix('OBJECT_')}")


def _rename(node: dict[str, Any], out: _Collector) -> None:
    kind = node.get("renameType", "")
    if kind == "OBJECT_INDEX":  # since PostgreSQL 12
        out.add(node.get("relation"), _A.SHARE_UPDATE_EXCLUSIVE, "ALTER INDEX RENAME", is_index=True)
    elif node.get("relation"):
        out.add(node.get("relation"), _A.ACCESS_EXCLUSIVE, f"RENAME {kind.removeprefix('OBJECT_')}")


def _create_table(node: dict[str, Any], out: _Collector) -> None:
    # The new table itself is invisible to others until commit; the tables it points at are not.
    constraints = list(node.get("constraints", []))
    for elt in node.get("tableElts", []):
        constraints += elt.get("ColumnDef", {}).get("constraints", [])
        if "Constraint" in elt:  # a table constraint: FOREIGN KEY (...) REFERENCES ...
            constraints.append(elt)
        if "TableLikeClause" in elt:
            out.add(elt["TableLikeClause"].get("relation"), _A.ACCESS_SHARE, "CREATE TABLE ... LIKE")
    for fk in _foreign_keys(constraints):
        out.add(fk.get("pktable"), _A.SHARE_ROW_EXCLUSIVE, "REFERENCES (referenced table)")
    for item in node.get("inhRelations", []):
        if node.get("partbound"):
            out.add(item.get("RangeVar"), _A.ACCESS_EXCLUSIVE, "CREATE TABLE ... PARTITION OF")
        else:
            out.add(item.get("RangeVar"), _A.SHARE_UPDATE_EXCLUSIVE, "CREATE TABLE ... INHERITS")


def _reindex(node: dict[str, Any], out: _Collector) -> None:
    concurrent = any(p.get("DefElem", {}).get("defname") == "concurrently" for p in node.get("params", []))
    out.multi_transaction |= concurrent
    kind = node.get("kind", "")
    if kind == "REINDEX_OBJECT_INDEX":
        mode = _A.SHARE_UPDATE_EXCLUSIVE if concurrent else _A.ACCESS_EXCLUSIVE
        table = _A.SHARE_UPDATE_EXCLUSIVE if concurrent else _A.SHARE
        out.add(node.get("relation"), mode, "REINDEX INDEX", is_index=True, table_mode=table)
    elif kind == "REINDEX_OBJECT_TABLE":
        mode = _A.SHARE_UPDATE_EXCLUSIVE if concurrent else _A.SHARE
        out.add(node.get("relation"), mode, "REINDEX TABLE")
    else:
        out.unknown = "REINDEX SCHEMA/DATABASE/SYSTEM locks every table it reaches in turn"


def _vacuum(node: dict[str, Any], out: _Collector) -> None:
    full = any(o.get("DefElem", {}).get("defname") == "full" for o in node.get("options", []))
    what = "VACUUM" if node.get("is_vacuumcmd") else "ANALYZE"
    mode = _A.ACCESS_EXCLUSIVE if full else _A.SHARE_UPDATE_EXCLUSIVE
    rels = node.get("rels", [])
    if not rels:
        out.unknown = f"{what} without a table list processes every table in turn"
    for rel in rels:
        out.add(rel.get("VacuumRelation", {}).get("relation"), mode, what + (" FULL" if full else ""))


def _comment(node: dict[str, Any], out: _Collector) -> None:
    kind = node.get("objtype", "")
    parts = _object_names(node.get("object", {}))
    if kind == "OBJECT_COLUMN":
        parts = parts[:-1]
    if kind in _TABLE_LIKE | {"OBJECT_COLUMN", "OBJECT_INDEX"}:
        out.add_names(parts, _A.SHARE_UPDATE_EXCLUSIVE, "COMMENT ON", is_index=kind == "OBJECT_INDEX")


def _index(node: dict[str, Any], out: _Collector) -> None:
    concurrent = bool(node.get("concurrent"))
    out.multi_transaction |= concurrent
    mode = _A.SHARE_UPDATE_EXCLUSIVE if concurrent else _A.SHARE
    out.add(node.get("relation"), mode, "CREATE INDEX" + (" CONCURRENTLY" if concurrent else ""))


def _select(node: dict[str, Any], out: _Collector) -> None:
    if node.get("lockingClause"):
        _reads(node, out, mode=_A.ROW_SHARE, reason="SELECT ... FOR UPDATE/SHARE")
    else:
        _reads(node, out)


def _view(node: dict[str, Any], out: _Collector) -> None:
    if node.get("replace"):
        out.add(node.get("view"), _A.ACCESS_EXCLUSIVE, "CREATE OR REPLACE VIEW")
    _reads(node.get("query"), out)


def _each(node: dict[str, Any], out: _Collector, mode: LockMode, reason: str) -> None:
    for item in node.get("relations", []):
        out.add(item.get("RangeVar"), mode, reason)


def _set(node: dict[str, Any], out: _Collector) -> None:
    if node.get("name") == "lock_timeout" and node.get("kind") != "VAR_RESET":
        out.unknown = ("sets lock_timeout itself: later statements of the script wait for locks as long as it says, "
                       "not one short attempt at a time")


_HANDLERS = {
    "AlterTableStmt": _alter_table,
    "IndexStmt": _index,
    "DropStmt": _drop,
    "RenameStmt": _rename,
    "CreateStmt": _create_table,
    "ReindexStmt": _reindex,
    "VacuumStmt": _vacuum,
    "CommentStmt": _comment,
    "SelectStmt": _select,
    "ViewStmt": _view,
    "InsertStmt": lambda n, o: _dml("InsertStmt", n, o),
    "UpdateStmt": lambda n, o: _dml("UpdateStmt", n, o),
    "DeleteStmt": lambda n, o: _dml("DeleteStmt", n, o),
    "MergeStmt": lambda n, o: _dml("MergeStmt", n, o),
    "CreateTableAsStmt": lambda n, o: _reads(n.get("query"), o),
    "TruncateStmt": lambda n, o: _each(n, o, _A.ACCESS_EXCLUSIVE, "TRUNCATE"),
    "CreateTrigStmt": lambda n, o: o.add(n.get("relation"), _A.SHARE_ROW_EXCLUSIVE, "CREATE TRIGGER"),
    "CreatePolicyStmt": lambda n, o: o.add(n.get("table"), _A.ACCESS_EXCLUSIVE, "CREATE POLICY"),
    "AlterPolicyStmt": lambda n, o: o.add(n.get("table"), _A.ACCESS_EXCLUSIVE, "ALTER POLICY"),
    "RuleStmt": lambda n, o: o.add(n.get("relation"), _A.ACCESS_EXCLUSIVE, "CREATE RULE"),
    "ClusterStmt": lambda n, o: o.add(n.get("relation"), _A.ACCESS_EXCLUSIVE, "CLUSTER"),
    "AlterObjectSchemaStmt": lambda n, o: o.add(n.get("relation"), _A.ACCESS_EXCLUSIVE, "SET SCHEMA"),
    "CreateStatsStmt": lambda n, o: _each(n, o, _A.SHARE_UPDATE_EXCLUSIVE, "CREATE STATISTICS"),
    "RefreshMatViewStmt": lambda n, o: o.add(
        n.get("relation"), _A.EXCLUSIVE if n.get("concurrent") else _A.ACCESS_EXCLUSIVE, "REFRESH MATERIALIZED VIEW"),
    "LockStmt": lambda n, o: _each(n, o, LockMode(n.get("mode", 8)), "LOCK TABLE"),
    "VariableSetStmt": _set,
}
_RUNS_CODE = {"DoStmt": "DO runs code whose locks cannot be read from the SQL",
              "CallStmt": "CALL runs a procedure whose locks cannot be read from the SQL",
              "AlterDomainStmt": "ALTER DOMAIN checks every column of the domain, found only in the catalog"}


def statement_locks(kind: str, node: dict[str, Any], index: int = 0, line: int = 1) -> StatementLocks:
    """The locks one parsed statement (`{kind: node}` of pglast's JSON parse tree) takes."""
    out = _Collector()
    handler = _HANDLERS.get(kind)
    if handler is not None:
        handler(node, out)
    elif kind in _RUNS_CODE:
        out.unknown = _RUNS_CODE[kind]
    return StatementLocks(index, line, kind, tuple(out.locks), out.multi_transaction, out.unknown)


def script_locks(sql: str) -> list[StatementLocks]:
    """The locks of every statement of a migration script, in order (raises pglast's ParseError)."""
    data = sql.encode("utf-8")
    out: list[StatementLocks] = []
    for index, raw in enumerate(json.loads(pg_parser.parse_sql_json(sql)).get("stmts", [])):
        start = raw.get("stmt_location", 0)
        chunk = data[start : start + (raw.get("stmt_len") or len(data))]
        line = data.count(b"\n", 0, start) + chunk[: len(chunk) - len(chunk.lstrip())].count(b"\n") + 1
        ((kind, node),) = raw["stmt"].items()
        out.append(statement_locks(kind, node, index, line))
    return out


def strongest_locks(locks: Iterable[RelationLock]) -> list[RelationLock]:
    """One entry per relation: the strongest lock the statements take on it, first-seen order."""
    best: dict[tuple[str | None, str, bool], RelationLock] = {}
    for lock in locks:
        key = (lock.schema, lock.name, lock.is_index)
        if key not in best or lock.mode > best[key].mode:
            best[key] = lock
    return list(best.values())


def script_is_atomic(statements: Iterable[StatementLocks]) -> bool:
    """Whether a failure anywhere in the script leaves nothing behind when it is sent as one
    simple query: no BEGIN/COMMIT/SAVEPOINT of its own and no statement PostgreSQL runs in several
    transactions. Only such a script may be retried after a lock timeout."""
    return all(st.kind != "TransactionStmt" and not st.multi_transaction for st in statements)


def all_locks(statements: Iterable[StatementLocks]) -> list[RelationLock]:
    """Every lock of a script, for the executor's `locks` parameter."""
    return [lock for st in statements for lock in st.locks]
