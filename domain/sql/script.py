"""How PostgreSQL runs a migration.sql that Prisma sends as ONE simple-query script, and how the
deploy activity runs it the same way while keeping its ledger row in the same transaction.

PostgreSQL's rules for a script of several statements in one simple query (protocol docs,
"Multiple Statements in a Simple Query"; xact.c), each checked on a real server by the tests:
- the statements run in one implicit transaction, ended only by a COMMIT or ROLLBACK in the text;
  a BEGIN turns the implicit block into an explicit one, so statements before it join it;
- a statement that refuses transaction blocks (CREATE INDEX CONCURRENTLY, VACUUM, ...) fails
  whenever the script holds any other statement, even right after a COMMIT in it;
- an enum value added by ALTER TYPE ... ADD VALUE cannot be used before its transaction commits;
- LOCK TABLE needs a transaction block: alone in a file it fails.

`script_plan` says which of three ways the file runs (ExecutionMode) and what in it will fail,
as findings with code `fails-in-prisma` that lint and the plan show before anything runs.
Pure: no I/O.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from domain.models import Finding
from domain.risk import Severity
from domain.sql.parse import StatementInfo, qualified_names, walk

FAILS_IN_PRISMA = "fails-in-prisma"

_ENDS = {"TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK", "TRANS_STMT_PREPARE", "TRANS_STMT_COMMIT_PREPARED",
         "TRANS_STMT_ROLLBACK_PREPARED"}
_BEGINS = {"TRANS_STMT_BEGIN", "TRANS_STMT_START"}
_SAVEPOINTS = {"TRANS_STMT_SAVEPOINT", "TRANS_STMT_RELEASE", "TRANS_STMT_ROLLBACK_TO"}


class ExecutionMode(StrEnum):
    # The file is one transaction (no transaction control, or BEGIN ... COMMIT around all of it): it
    # runs inside the deploy's own transaction together with its ledger row, exactly once.
    transaction = "transaction"
    # Its only statement refuses transaction blocks: sent alone, after Prisma's "started" row.
    alone = "alone"
    # Its own COMMITs split it into several transactions: sent as it is, after the "started" row;
    # a crash or an error can leave some of its transactions committed.
    script = "script"


class ScriptPlan(BaseModel):
    mode: ExecutionMode
    # For mode `transaction`: the text to run inside the deploy's transaction: the file with its
    # own BEGIN and final COMMIT blanked out (same length and lines, so error positions still match).
    body: str | None = None
    failures: list[Finding] = Field(default_factory=list)  # what PostgreSQL will refuse, before it runs

    @property
    def will_fail(self) -> bool:
        return bool(self.failures)


def refuses_transaction_block(kind: str, node: dict[str, Any], server_version: int | None = None) -> str | None:
    """The statement's name when PostgreSQL refuses to run it inside a transaction block."""
    if kind == "IndexStmt" and node.get("concurrent"):
        return "CREATE INDEX CONCURRENTLY"
    if kind == "DropStmt" and node.get("concurrent"):
        return "DROP INDEX CONCURRENTLY"
    if kind == "ReindexStmt":
        params = {p.get("DefElem", {}).get("defname") for p in node.get("params", [])}
        if "concurrently" in params:
            return "REINDEX CONCURRENTLY"
        if node.get("kind") in ("REINDEX_OBJECT_DATABASE", "REINDEX_OBJECT_SYSTEM"):
            return "REINDEX DATABASE"
    if kind == "VacuumStmt" and node.get("is_vacuumcmd"):
        return "VACUUM"
    if kind == "AlterTableStmt":
        for item in node.get("cmds", []):
            cmd = item.get("AlterTableCmd", {})
            if cmd.get("subtype") == "AT_DetachPartition" and cmd.get("def", {}).get("PartitionCmd", {}).get("concurrent"):
                return "DETACH PARTITION CONCURRENTLY"
    if kind == "ClusterStmt" and not node.get("relation"):
        return "CLUSTER"
    if kind == "AlterEnumStmt" and node.get("newVal") and server_version is not None and server_version < 12:
        return "ALTER TYPE ... ADD VALUE (PostgreSQL < 12)"
    names = {"CreatedbStmt": "CREATE DATABASE", "DropdbStmt": "DROP DATABASE", "AlterSystemStmt": "ALTER SYSTEM",
             "CreateTableSpaceStmt": "CREATE TABLESPACE", "DropTableSpaceStmt": "DROP TABLESPACE",
             "CreateSubscriptionStmt": "CREATE SUBSCRIPTION", "DropSubscriptionStmt": "DROP SUBSCRIPTION"}
    if kind in names:
        return names[kind]
    if kind == "DiscardStmt" and node.get("target") == "DISCARD_ALL":
        return "DISCARD ALL"
    return None


def script_plan(statements: list[StatementInfo], sql: str, server_version: int | None = None) -> ScriptPlan:
    """How `sql` (parsed into `statements`) runs as one script, and what in it will fail."""
    failures = _failures(statements, server_version)
    if len(statements) == 1 and refuses_transaction_block(statements[0].kind, statements[0].node(), server_version):
        return ScriptPlan(mode=ExecutionMode.alone, failures=failures)
    control = [s for s in statements if s.kind == "TransactionStmt"]
    kinds = [s.node().get("kind") for s in control]
    ends = [s for s, k in zip(control, kinds) if k in _ENDS]
    if not control:
        return ScriptPlan(mode=ExecutionMode.transaction, body=sql, failures=failures)
    wrapped = (
        len(ends) == 1 and ends[0] is statements[-1] and ends[0].node().get("kind") == "TRANS_STMT_COMMIT"
        and not ends[0].node().get("chain")
        and all(k in _BEGINS | _SAVEPOINTS for s, k in zip(control, kinds) if s is not ends[0])
        and any(k in _BEGINS for k in kinds)
        # BEGIN ISOLATION LEVEL ... : the file's own BEGIN must open the transaction, so it runs as is
        and not any(s.node().get("options") for s, k in zip(control, kinds) if k in _BEGINS)
    )
    if not wrapped:
        return ScriptPlan(mode=ExecutionMode.script, failures=failures)
    begins = [s for s, k in zip(control, kinds) if k in _BEGINS]
    return ScriptPlan(mode=ExecutionMode.transaction, body=_blank_out(sql, [*begins, ends[0]]), failures=failures)


def _blank_out(sql: str, statements: list[StatementInfo]) -> str:
    """`sql` with each statement's text replaced by spaces (newlines kept): same bytes, same lines."""
    data = bytearray(sql.encode("utf-8"))
    for s in statements:
        for i in range(s.start, s.end):
            if data[i] not in (0x0A, 0x0D):
                data[i] = 0x20
    return data.decode("utf-8")


def _failures(statements: list[StatementInfo], server_version: int | None) -> list[Finding]:
    out: list[Finding] = []
    several = len(statements) > 1
    added: dict[str, tuple[str, StatementInfo]] = {}  # new enum label -> (type, statement), this transaction
    for s in statements:
        node = s.node()
        if s.kind == "TransactionStmt" and node.get("kind") in _ENDS:
            added.clear()
            continue
        refused = refuses_transaction_block(s.kind, node, server_version)
        if refused and several:
            out.append(_finding(s, f"{refused} cannot run inside a transaction block, and Prisma sends the whole file "
                                   "as one script (one transaction): this migration fails every time and applies "
                                   "nothing; put the statement in a migration of its own"))
        if s.kind == "LockStmt" and not several:
            out.append(_finding(s, "LOCK TABLE alone in a file runs outside a transaction block, where PostgreSQL "
                                   "refuses it: this migration fails every time"))
        if s.kind == "AlterEnumStmt" and node.get("newVal"):
            added[node["newVal"]] = (qualified_names(node.get("typeName")), s)
            continue
        for label in _string_constants(node) & added.keys():
            typ, where = added[label]
            out.append(_finding(s, f"uses the value {label!r} that statement {where.index + 1} (line {where.line}) adds "
                                   f"to enum {typ} in the same transaction: PostgreSQL refuses it (unsafe use of new "
                                   "value, 55P04) and the migration applies nothing; add the value in an earlier "
                                   "migration (or COMMIT between the two, as its own migration)"))
    return out


def _string_constants(node: dict[str, Any]) -> set[str]:
    found = set()
    for kind, body in walk(node):
        if kind == "A_Const" and "sval" in body:
            found.add(body["sval"].get("sval", ""))
    return found


def _finding(s: StatementInfo, message: str) -> Finding:
    snippet = s.text if len(s.text) <= 200 else s.text[:197] + "..."
    return Finding(code=FAILS_IN_PRISMA, severity=Severity.error, message=message, line=s.line, statement=snippet)
