"""Static safety analysis of a migration's SQL: every statement classified with stable finding
codes (squawk / Atlas style) and a severity; the migration's risk is the worst severity found.
Pure: no I/O. Parsing is domain/sql/parse.py; derived rollbacks are domain/sql/rollback.py.

Long module: every rule is one `_on_<NodeType>` handler of one visitor, so a statement kind's rules are
found in one place.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

from domain.models import Finding
from domain.risk import RISK_OF_SEVERITY, Risk, Severity, max_risk
from domain.schema.refs import ObjectKind, ObjectRef
from domain.sql.parse import (
    DEFAULT_SCHEMA,
    SqlParseError,
    StatementInfo,
    literal_value,
    names,
    qualified,
    qualified_names,
    statements_with_nodes,
    walk,
)
from domain.sql.repeatable import repeat_blockers
from domain.sql.rollback import derive_rollback
from domain.sql.script import ExecutionMode, script_plan


class MigrationAnalysis(BaseModel):
    name: str
    statements: list[StatementInfo] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    risk: Risk = Risk.low
    # How the file runs as one script (domain/sql/script.py); in_transaction: in one transaction.
    execution: ExecutionMode = ExecutionMode.transaction
    in_transaction: bool = True
    # Safe to run twice, as the parser proves it (domain/sql/repeatable.py); why not, per statement.
    idempotent: bool = True
    repeat_blockers: list[str] = Field(default_factory=list)
    creates: list[ObjectRef] = Field(default_factory=list)  # what it creates (columns, indexes... of their table)
    derived_rollback: str | None = None
    rollback_blockers: list[str] = Field(default_factory=list)

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}



VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "gen_random_uuid",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "uuidv4",
        "uuidv7",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "txid_current",
        "setseed",
    }
)
SERIAL_TYPES = frozenset({"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"})


def _column_constraints(coldef: dict[str, Any]) -> list[dict[str, Any]]:
    return [c["Constraint"] for c in coldef.get("constraints", []) if "Constraint" in c]


def _starts_all_null(coldef: dict[str, Any]) -> bool:
    """True when ADD COLUMN leaves the new column NULL in every existing row: no DEFAULT (or
    DEFAULT NULL), not identity, generated or serial. A foreign key on such a column has nothing
    to validate. (A domain type's own DEFAULT is not visible here; such columns are rare.)"""
    typename = names(coldef.get("typeName", {}).get("names"))
    if (typename and typename[-1].lower() in SERIAL_TYPES) or coldef.get("identity"):
        return False
    for con in _column_constraints(coldef):
        if con.get("contype") in ("CONSTR_IDENTITY", "CONSTR_GENERATED"):
            return False
        if con.get("contype") == "CONSTR_DEFAULT" and literal_value(con.get("raw_expr", {})) != (True, None):
            return False
    return True


def _volatile_default(coldef: dict[str, Any]) -> str | None:
    """Why adding this column rewrites the table, or None."""
    typename = names(coldef.get("typeName", {}).get("names"))
    if typename and typename[-1].lower() in SERIAL_TYPES:
        return f"type {typename[-1]} fills every row from a sequence"
    if coldef.get("identity"):
        return "an identity column fills every row"
    for con in _column_constraints(coldef):
        if con.get("contype") == "CONSTR_IDENTITY":
            return "an identity column fills every row"
        if con.get("contype") == "CONSTR_GENERATED":
            return "a stored generated column is computed for every row"
        if con.get("contype") == "CONSTR_DEFAULT":
            for kind, body in walk(con.get("raw_expr", {})):
                if kind == "FuncCall":
                    fname = names(body.get("funcname"))[-1].lower()
                    if fname in VOLATILE_FUNCTIONS:
                        return f"default {fname}() is volatile"
    return None


# -- rules -----------------------------------------------------------------------------------


class _Analyzer:
    """Classifies statements one by one, remembering what this migration created so far."""

    def __init__(self, default_schema: str, server_version: int | None) -> None:
        self.schema = default_schema
        self.default_schema = default_schema
        self.server_version = server_version
        self.new_tables: set[str] = set()
        # Columns this migration added to existing tables that are still NULL in every row
        # (table -> column names). Any statement that may write rows forgets them.
        self.null_columns: dict[str, set[str]] = {}
        self.creates: list[ObjectRef] = []
        self.created_kinds: list[str] = []  # for the creates-only summary (an unnamed index, an enum value...)
        self.creating_only = True

    # Each handler returns findings as (code, severity, message) and may update the state.
    def analyze(self, info: StatementInfo, kind: str, node: dict[str, Any]) -> None:
        if kind not in _CANNOT_FILL_COLUMNS:
            self.null_columns.clear()
        handler = getattr(self, f"_on_{kind}", None)
        result = handler(node) if handler else self._other(kind, node)
        findings, creates = result
        self.created_kinds += [c if isinstance(c, str) else c.kind.value for c in creates]
        seeds_new_table = kind == "InsertStmt" and self._table(node.get("relation")) in self.new_tables
        if not creates and not seeds_new_table and kind not in ("VariableSetStmt", "CommentStmt"):
            self.creating_only = False
        self.creates.extend(c for c in creates if isinstance(c, ObjectRef))
        snippet = info.text if len(info.text) <= 200 else info.text[:197] + "..."
        for code, severity, message in findings:
            info.findings.append(
                Finding(code=code, severity=str(severity), message=message, line=info.line, statement=snippet)
            )

    def _table(self, rangevar: dict[str, Any] | None) -> str:
        return qualified(rangevar, self.schema)

    def _ref(self, kind: ObjectKind, rangevar: dict[str, Any] | None) -> ObjectRef:
        rangevar = rangevar or {}
        return ObjectRef.of(kind, rangevar.get("schemaname") or self.schema, rangevar.get("relname", "?"))

    def _named(self, kind: ObjectKind, items: list[dict[str, Any]] | None, args: str | None = None) -> ObjectRef:
        parts = names(items)
        schema, name = (parts[-2], parts[-1]) if len(parts) > 1 else (self.schema, parts[-1] if parts else "?")
        return ObjectRef.of(kind, schema, name, args=args)

    def _non_transactional(self, why: str) -> tuple[str, Severity, str]:
        return ("non-transactional", Severity.warning, f"{why} cannot run inside a transaction block; "
                "if it fails midway the migration is partially applied")

    def _on_VariableSetStmt(self, node):
        """SET search_path moves the unqualified names that follow to its first schema (Prisma's
        engine runs the whole file in one session, so it lasts to the end of the file or a RESET)."""
        if str(node.get("name", "")).lower() == "search_path":
            values = [a.get("A_Const", {}).get("sval", {}).get("sval") for a in node.get("args", [])]
            schemas = [v for v in values if v and v != "$user"]
            self.schema = schemas[0] if node.get("kind") == "VAR_SET_VALUE" and schemas else self.default_schema
        return [], []

    def _other(self, kind: str, node: dict[str, Any]):
        quiet = {"VariableSetStmt", "CommentStmt", "GrantStmt", "SelectStmt", "GrantRoleStmt",
                 "AlterDefaultPrivilegesStmt", "AlterOwnerStmt", "CreatePolicyStmt"}
        if kind in quiet:
            return [], []
        if kind in ("CreatedbStmt", "AlterSystemStmt"):
            return [self._non_transactional(kind.removesuffix("Stmt"))], []
        return [], []

    # creates ---------------------------------------------------------------------------------

    def _on_CreateStmt(self, node):
        table = self._table(node.get("relation"))
        self.new_tables.add(table)
        return [], [self._ref(ObjectKind.table, node.get("relation"))]

    def _on_CreateTableAsStmt(self, node):
        into = node.get("into", {})
        table = self._table(into.get("rel"))
        self.new_tables.add(table)
        kind = ObjectKind.materialized_view if node.get("objtype") == "OBJECT_MATVIEW" else ObjectKind.table
        return [], [self._ref(kind, into.get("rel"))]

    def _on_IndexStmt(self, node):
        table = self._table(node.get("relation"))
        findings = []
        if node.get("concurrent"):
            findings.append(self._non_transactional("CREATE INDEX CONCURRENTLY"))
        elif table not in self.new_tables:
            findings.append(("index-not-concurrent", Severity.warning,
                             f"CREATE INDEX on existing table {table} without CONCURRENTLY blocks writes "
                             "to it while the index builds"))
        parent = self._ref(ObjectKind.table, node.get("relation"))
        return findings, [parent.child(ObjectKind.index, node["idxname"]) if node.get("idxname") else "index"]

    def _on_CreateEnumStmt(self, node):
        return [], [self._named(ObjectKind.enum, node.get("typeName"))]

    def _on_CompositeTypeStmt(self, node):
        return [], [self._ref(ObjectKind.composite_type, node.get("typevar"))]

    def _on_CreateDomainStmt(self, node):
        return [], [self._named(ObjectKind.domain, node.get("domainname"))]

    def _on_CreateSeqStmt(self, node):
        return [], [self._ref(ObjectKind.sequence, node.get("sequence"))]

    def _on_ViewStmt(self, node):
        return [], [self._ref(ObjectKind.view, node.get("view"))]

    def _on_CreateSchemaStmt(self, node):
        return [], [ObjectRef.for_schema(node.get("schemaname") or "?")]

    def _on_CreateExtensionStmt(self, node):
        return [], [ObjectRef.for_extension(node.get("extname") or "?")]

    def _on_CreateFunctionStmt(self, node):
        kind = ObjectKind.procedure if node.get("is_procedure") else ObjectKind.function
        args = ", ".join(
            ".".join(names(p["FunctionParameter"].get("argType", {}).get("names"))[-1:])
            + ("[]" if p["FunctionParameter"].get("argType", {}).get("arrayBounds") else "")
            for p in node.get("parameters", [])
            if "FunctionParameter" in p and p["FunctionParameter"].get("mode") != "FUNC_PARAM_OUT"
        )
        return [], [self._named(kind, node.get("funcname"), args=args)]

    def _on_CreateTrigStmt(self, node):
        parent = self._ref(ObjectKind.table, node.get("relation"))
        return [], [parent.child(ObjectKind.trigger, node.get("trigname") or "?")]

    # alter table -----------------------------------------------------------------------------

    def _on_AlterTableStmt(self, node):
        if node.get("objtype") not in (None, "OBJECT_TABLE"):
            return [], []
        table = self._table(node.get("relation"))
        new = table in self.new_tables
        findings, creates = [], []
        for item in node.get("cmds", []):
            cmd = item.get("AlterTableCmd", {})
            sub = cmd.get("subtype")
            if sub == "AT_AddColumn":
                coldef = cmd.get("def", {}).get("ColumnDef", {})
                col = coldef.get("colname")
                creates.append(self._ref(ObjectKind.table, node.get("relation")).child(ObjectKind.column, col))
                if new:
                    continue
                if _starts_all_null(coldef):
                    self.null_columns.setdefault(table, set()).add(col)
                why = _volatile_default(coldef)
                if why:
                    findings.append(("add-column-volatile-default", Severity.warning,
                                     f"adding column {col} to {table} rewrites the whole table under an "
                                     f"exclusive lock: {why}"))
                for con in _column_constraints(coldef):  # inline REFERENCES / CHECK / UNIQUE
                    findings.extend(self._constraint(table, new, con, columns=[col])[0])
                cons = {c.get("contype") for c in _column_constraints(coldef)}
                if "CONSTR_NOTNULL" in cons and not cons & {"CONSTR_DEFAULT", "CONSTR_IDENTITY", "CONSTR_GENERATED"}:
                    findings.append(("add-column-required", Severity.warning,
                                     f"adding NOT NULL column {col} without a default to {table} fails "
                                     "as soon as the table has rows"))
            elif sub == "AT_DropColumn":
                findings.append(("drop-column", Severity.error,
                                 f"drops column {table}.{cmd.get('name')} and its data; the running app may still read it"))
            elif sub == "AT_AlterColumnType":
                self.null_columns.get(table, set()).discard(cmd.get("name"))  # USING may fill it
                if not new:
                    findings.append(("alter-column-type", Severity.warning,
                                     f"changing the type of {table}.{cmd.get('name')} usually rewrites the "
                                     "table under an ACCESS EXCLUSIVE lock"))
            elif sub == "AT_SetNotNull":
                if not new:
                    findings.append(("set-not-null", Severity.warning,
                                     f"SET NOT NULL on {table}.{cmd.get('name')} scans the whole table under "
                                     "an ACCESS EXCLUSIVE lock (add a validated CHECK (... IS NOT NULL) first)"))
            elif sub == "AT_AddConstraint":
                con = cmd.get("def", {}).get("Constraint", {})
                f, name = self._constraint(table, new, con)
                findings.extend(f)
                if name:
                    creates.append(self._ref(ObjectKind.table, node.get("relation")).child(ObjectKind.constraint, name))
            elif sub == "AT_DropConstraint":
                findings.append(("drop-constraint", Severity.warning,
                                 f"drops constraint {cmd.get('name')} on {table}: the data it guarded is no "
                                 "longer checked"))
            # Other subcommands (defaults, DROP NOT NULL, storage, RLS...) are metadata-only.
        return findings, creates

    def _constraint(self, table: str, new: bool, con: dict[str, Any], columns: list[str] | None = None):
        contype = con.get("contype")
        name = con.get("conname")
        findings = []
        if new:
            return findings, name
        validated = not con.get("skip_validation")
        fk_columns = columns or names(con.get("fk_attrs"))
        # A foreign key on columns this migration just added, still NULL in every row (what Prisma
        # writes for each new optional relation): no row can fail the check. PostgreSQL still scans
        # the table once to validate it, under the ACCESS EXCLUSIVE lock ADD COLUMN already holds;
        # that is worth knowing on a large table, not a warning on every such migration.
        fresh = bool(fk_columns) and set(fk_columns) <= self.null_columns.get(table, set())
        if contype == "CONSTR_FOREIGN" and validated and fresh:
            findings.append(("foreign-key-new-column", Severity.info,
                             f"foreign key {name or ''} on {table}.{', '.join(fk_columns)}, added in this migration "
                             "and NULL in every row, cannot fail; validating it still reads the whole table while "
                             "it is locked (on a large table: add it NOT VALID, VALIDATE CONSTRAINT later)"))
        elif contype == "CONSTR_FOREIGN" and validated:
            findings.append(("foreign-key", Severity.warning,
                             f"foreign key {name or ''} on existing table {table} is validated while both "
                             "tables are locked against writes; add it NOT VALID, then VALIDATE CONSTRAINT"))
        elif contype == "CONSTR_CHECK" and validated:
            findings.append(("constraint-not-valid", Severity.warning,
                             f"CHECK constraint {name or ''} on existing table {table} scans every row under an "
                             "ACCESS EXCLUSIVE lock; add it NOT VALID, then VALIDATE CONSTRAINT"))
        elif contype in ("CONSTR_UNIQUE", "CONSTR_PRIMARY", "CONSTR_EXCLUSION") and not con.get("indexname"):
            findings.append(("add-unique-constraint", Severity.warning,
                             f"{contype.removeprefix('CONSTR_').lower()} constraint on existing table {table} "
                             "builds an index under an ACCESS EXCLUSIVE lock; build it CONCURRENTLY and "
                             "attach it with USING INDEX"))
        return findings, name

    # destructive -----------------------------------------------------------------------------

    _DROP_CODES = {
        "OBJECT_TABLE": ("drop-table", Severity.error, "drops table {} and all its rows"),
        "OBJECT_TYPE": ("drop-type", Severity.error, "drops type {}; columns using it must go first"),
        "OBJECT_DOMAIN": ("drop-type", Severity.error, "drops domain {}"),
        "OBJECT_SCHEMA": ("drop-schema", Severity.error, "drops schema {} and everything in it when CASCADE"),
        "OBJECT_INDEX": ("drop-index", Severity.warning, "drops index {} under an ACCESS EXCLUSIVE lock on its table"),
        "OBJECT_MATVIEW": ("drop-table", Severity.error, "drops materialized view {} and its data"),
        "OBJECT_SEQUENCE": ("drop-object", Severity.warning, "drops sequence {} and its current value"),
    }

    def _on_DropStmt(self, node):
        remove = node.get("removeType", "")
        objects = []
        for obj in node.get("objects", []):
            if "List" in obj:
                objects.append(".".join(names(obj["List"].get("items"))))
            elif "TypeName" in obj:
                objects.append(".".join(names(obj["TypeName"].get("names"))))
            elif "String" in obj:
                objects.append(obj["String"]["sval"])
        label = ", ".join(objects) or "?"
        findings = []
        if node.get("concurrent"):
            findings.append(self._non_transactional("DROP INDEX CONCURRENTLY"))
        elif remove in self._DROP_CODES:
            code, severity, template = self._DROP_CODES[remove]
            findings.append((code, severity, template.format(label)))
        else:
            what = remove.removeprefix("OBJECT_").lower()
            findings.append(("drop-object", Severity.warning, f"drops {what} {label}"))
        if node.get("behavior") == "DROP_CASCADE":
            findings.append(("drop-cascade", Severity.error, f"CASCADE also drops everything that depends on {label}"))
        return findings, []

    def _on_DropdbStmt(self, node):
        return [("drop-database", Severity.error, f"drops database {node.get('dbname')}")], []

    def _on_TruncateStmt(self, node):
        tables = ", ".join(self._table(r.get("RangeVar")) for r in node.get("relations", []))
        return [("truncate", Severity.error, f"TRUNCATE deletes every row of {tables}")], []

    # data changes ----------------------------------------------------------------------------

    def _on_DeleteStmt(self, node):
        table = self._table(node.get("relation"))
        if not node.get("whereClause"):
            return [("delete-without-where", Severity.error, f"DELETE without WHERE removes every row of {table}")], []
        return [("delete-rows", Severity.warning, f"deletes rows from {table}; they cannot be restored by a rollback")], []

    def _on_UpdateStmt(self, node):
        table = self._table(node.get("relation"))
        if not node.get("whereClause"):
            return [("update-without-where", Severity.error, f"UPDATE without WHERE rewrites every row of {table}")], []
        return [("update-rows", Severity.warning, f"updates rows of {table}; the old values are not kept")], []

    def _on_InsertStmt(self, node):
        table = self._table(node.get("relation"))
        conflict = node.get("onConflictClause")
        if table in self.new_tables:
            return [("insert-new-table", Severity.info, f"inserts rows into {table}, created by this migration")], []
        if not node.get("selectStmt", {}).get("SelectStmt", {}).get("valuesLists"):
            return [("insert-select", Severity.warning,
                     f"inserts into {table} whatever its query finds when it runs: not safe to run again")], []
        if conflict and conflict.get("action") == "ONCONFLICT_NOTHING":
            return [("insert-idempotent", Severity.info,
                     f"inserts into {table} with ON CONFLICT DO NOTHING: safe to run again")], []
        if conflict:
            return [("insert-upsert", Severity.warning,
                     f"inserts into {table} and overwrites existing rows on conflict (ON CONFLICT DO UPDATE)")], []
        return [("insert-not-idempotent", Severity.warning,
                 f"inserts into {table} without ON CONFLICT: running it again duplicates rows or fails")], []

    # renames, enums, maintenance -------------------------------------------------------------

    def _on_RenameStmt(self, node):
        rtype = node.get("renameType")
        new_name = node.get("newname")
        if rtype == "OBJECT_TABLE":
            table = self._table(node.get("relation"))
            return [("rename-table", Severity.warning,
                     f"renames table {table} to {new_name}: the running app still uses the old name")], []
        if rtype == "OBJECT_COLUMN":
            table = self._table(node.get("relation"))
            return [("rename-column", Severity.warning,
                     f"renames column {table}.{node.get('subname')} to {new_name}: the running app still uses "
                     "the old name")], []
        return [("rename-object", Severity.info, f"renames a {str(rtype).removeprefix('OBJECT_').lower()} to {new_name}")], []

    def _on_AlterEnumStmt(self, node):
        typ = qualified_names(node.get("typeName"), self.schema)
        if node.get("oldVal"):
            return [("rename-enum-value", Severity.warning,
                     f"renames value {node['oldVal']!r} of {typ}: the running app still sends the old one")], []
        label = node.get("newVal")
        if self.server_version is not None and self.server_version < 12:
            findings = [self._non_transactional("ALTER TYPE ... ADD VALUE (PostgreSQL < 12)")]
        else:
            findings = [("enum-add-value", Severity.info,
                         f"adds value {label!r} to {typ}; it cannot be used before this transaction commits")]
        return findings, ["enum value"]

    def _on_VacuumStmt(self, node):
        if node.get("is_vacuumcmd"):
            return [self._non_transactional("VACUUM")], []
        return [], []

    def _on_ReindexStmt(self, node):
        params = {p.get("DefElem", {}).get("defname") for p in node.get("params", [])}
        if "concurrently" in params:
            return [self._non_transactional("REINDEX CONCURRENTLY")], []
        return [("reindex-lock", Severity.warning, "REINDEX blocks writes to the table while it runs")], []

    def _on_TransactionStmt(self, node):
        return [("transaction-control", Severity.warning,
                 f"the file manages its own transaction ({node.get('kind', '').removeprefix('TRANS_STMT_')})")], []

    def _on_DoStmt(self, node):
        return [("opaque-code", Severity.warning, "a DO block cannot be analysed statically; review it by hand")], []


# Statement kinds that cannot write a value into an existing row (DDL that adds, creates or
# comments). Anything else (UPDATE, INSERT, COPY, DO, CALL, SELECT f(), ...) may fill a column.
_CANNOT_FILL_COLUMNS = frozenset(
    {
        "AlterTableStmt", "CreateStmt", "IndexStmt", "CreateEnumStmt", "CompositeTypeStmt",
        "CreateDomainStmt", "CreateSeqStmt", "ViewStmt", "CreateSchemaStmt", "CreateExtensionStmt",
        "CommentStmt", "VariableSetStmt", "GrantStmt", "AlterEnumStmt", "RenameStmt", "DropStmt",
    }
)


def analyze_migration(
    name: str,
    sql: str,
    *,
    default_schema: str = DEFAULT_SCHEMA,
    server_version: int | None = None,
) -> MigrationAnalysis:
    """Classify every statement of one migration; raises SqlParseError (one sentence, with the line).

    `server_version` (major, e.g. 16) only matters for rules that differ by version; None means a
    supported modern server (>= 12).
    """
    pairs = statements_with_nodes(sql, name)
    analyzer = _Analyzer(default_schema, server_version)
    for info, node in pairs:
        analyzer.analyze(info, info.kind, node)
    statements = [info for info, _ in pairs]
    findings = [f for info in statements for f in info.findings]
    if statements and analyzer.creating_only and not any(f.severity != Severity.info for f in findings):
        counts = Counter(analyzer.created_kinds)
        summary = ", ".join(f"{n} {kind}" if n == 1 else f"{n} {kind}{'es' if kind.endswith('x') else 's'}"
                            for kind, n in counts.items())
        creates_only = Finding(code="creates-only", severity=Severity.info,
                               message=f"creates new objects only and changes no existing data: {summary}",
                               line=statements[0].line)
        findings.insert(0, creates_only)
    risk = max_risk(RISK_OF_SEVERITY[Severity(f.severity)] for f in findings)
    rollback_sql, blockers = derive_rollback(statements, default_schema)
    shape = script_plan(statements, sql, server_version)
    findings.extend(shape.failures)
    not_repeatable = repeat_blockers(statements)
    return MigrationAnalysis(
        name=name,
        statements=statements,
        findings=findings,
        risk=max_risk([risk, *(RISK_OF_SEVERITY[Severity.error] for _ in shape.failures)]),
        execution=shape.mode,
        in_transaction=shape.mode == ExecutionMode.transaction,
        idempotent=not not_repeatable,
        repeat_blockers=not_repeatable,
        creates=analyzer.creates,
        derived_rollback=rollback_sql,
        rollback_blockers=blockers,
    )


def parse_error_finding(exc: SqlParseError) -> Finding:
    """A parse error as a finding (lint and plans show it instead of crashing)."""
    return Finding(code="parse-error", severity=Severity.error, message=exc.reason, line=exc.line)
