"""Evidence for resolving a failed migration: which of its statements' effects exist in the database.

Prisma's atomicity depends on its version (a failed file may be partly applied), so the resolve
decision looks at the database, statement by statement: created objects present? inserted keys
present? dropped objects gone? Read-only. The workflow decides: all absent (or an idempotent
migration) -> resolve --rolled-back and re-apply; all present -> candidate for --applied; anything
else -> a human.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from domain.evidence import Evidence, StatementEvidence, summarise
from domain.sql.parse import DEFAULT_SCHEMA, StatementInfo, names
from domain.sql.rollback import InsertKey, insert_key_of, insert_keys, select_keys_sql
from domain.sql.rules import MigrationAnalysis

# Statements that leave nothing behind to look for.
_NO_EFFECT = {"VariableSetStmt", "TransactionStmt", "SelectStmt", "ExplainStmt", "VacuumStmt", "CheckPointStmt"}


class _Probe:
    def __init__(self, conn: asyncpg.Connection, schema: str) -> None:
        self.conn = conn
        self.schema = schema

    def _rel(self, rangevar: dict[str, Any] | None) -> tuple[str, str]:
        rangevar = rangevar or {}
        return rangevar.get("schemaname") or self.schema, rangevar.get("relname", "")

    def _qualified_list(self, items: list[dict[str, Any]] | None) -> tuple[str, str]:
        parts = names(items)
        return (parts[0], parts[-1]) if len(parts) > 1 else (self.schema, parts[-1])

    async def relation(self, schema: str, name: str, kinds: str) -> dict | None:
        row = await self.conn.fetchrow(
            "SELECT c.relkind::text AS kind, x.indisvalid AS valid FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_index x ON x.indexrelid = c.oid "
            "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind::text = ANY($3::text[])",
            schema, name, list(kinds),
        )
        return dict(row) if row else None

    async def type_labels(self, schema: str, name: str) -> list[str] | None:
        row = await self.conn.fetchrow(
            "SELECT t.oid, array(SELECT enumlabel::text FROM pg_enum WHERE enumtypid = t.oid ORDER BY enumsortorder) AS labels "
            "FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $1 AND t.typname = $2",
            schema, name,
        )
        return None if row is None else list(row["labels"])

    async def column(self, schema: str, table: str, column: str) -> bool:
        return bool(await self.conn.fetchval(
            "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped",
            schema, table, column,
        ))

    async def constraint(self, schema: str, table: str, name: str) -> bool:
        return bool(await self.conn.fetchval(
            "SELECT count(*) FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND k.conname = $3",
            schema, table, name,
        ))

    async def keys(self, key: InsertKey) -> tuple[int, int]:
        """(rows of `key` present, rows expected)."""
        try:
            found = await self.conn.fetch(select_keys_sql(key))
        except asyncpg.UndefinedTableError:
            return 0, len(key.values)
        return len({tuple(r) for r in found}), len(key.values)

    # -- per statement ---------------------------------------------------------------------------

    async def check(self, stmt: StatementInfo) -> tuple[str, bool | None, str]:
        kind, node = stmt.kind, stmt.node()
        simple = {
            "CreateStmt": ("table", "rp", node.get("relation")),
            "CreateSeqStmt": ("sequence", "S", node.get("sequence")),
            "ViewStmt": ("view", "v", node.get("view")),
            "CreateTableAsStmt": ("table", "rpm", node.get("into", {}).get("rel")),
        }
        if kind in simple:
            what, kinds, rangevar = simple[kind]
            schema, name = self._rel(rangevar)
            found = await self.relation(schema, name, kinds)
            return f"{what} {schema}.{name} exists", found is not None, ""
        if kind == "IndexStmt":
            if not node.get("idxname"):
                return "an unnamed index exists", None, "the index has no name to look for"
            schema = self._rel(node.get("relation"))[0]
            found = await self.relation(schema, node["idxname"], "iI")
            if found and found["valid"] is False:
                return (f"index {schema}.{node['idxname']} exists", None,
                        "it exists but is INVALID (an interrupted CONCURRENTLY build): drop it before re-running")
            return f"index {schema}.{node['idxname']} exists", found is not None, ""
        if kind in ("CreateEnumStmt", "CreateDomainStmt", "CompositeTypeStmt"):
            if kind == "CompositeTypeStmt":
                schema, name = self._rel(node.get("typevar"))
            else:
                schema, name = self._qualified_list(node.get("typeName" if kind == "CreateEnumStmt" else "domainname"))
            labels = await self.type_labels(schema, name)
            if labels is None:
                return f"type {schema}.{name} exists", False, ""
            if kind == "CreateEnumStmt":
                wanted = [v["String"]["sval"] for v in node.get("vals", []) if "String" in v]
                if labels != wanted:
                    return f"type {schema}.{name} exists", None, f"it exists with other labels: {', '.join(labels)}"
            return f"type {schema}.{name} exists", True, ""
        if kind == "AlterEnumStmt" and node.get("newVal"):
            schema, name = self._qualified_list(node.get("typeName"))
            labels = await self.type_labels(schema, name) or []
            return f"enum {schema}.{name} has value {node['newVal']!r}", node["newVal"] in labels, ""
        if kind == "CreateSchemaStmt":
            found = await self.conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", node.get("schemaname"))
            return f"schema {node.get('schemaname')} exists", bool(found), ""
        if kind == "CreateExtensionStmt":
            found = await self.conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = $1", node.get("extname"))
            return f"extension {node.get('extname')} exists", bool(found), ""
        if kind == "AlterTableStmt" and node.get("objtype") in (None, "OBJECT_TABLE"):
            return await self._alter_table(node)
        if kind == "InsertStmt":
            key = insert_key_of(node, self.schema)
            if isinstance(key, str):
                return "its rows exist", None, key
            present, total = await self.keys(key)
            effect = f"{total} row(s) of {key.table} keyed by {', '.join(key.key_columns)} exist"
            if 0 < present < total:
                return effect, None, f"only {present} of {total} rows exist"
            return effect, present == total, ""
        if kind == "DropStmt" and node.get("removeType") in ("OBJECT_TABLE", "OBJECT_INDEX", "OBJECT_SEQUENCE", "OBJECT_VIEW"):
            kinds = {"OBJECT_TABLE": "rp", "OBJECT_INDEX": "iI", "OBJECT_SEQUENCE": "S", "OBJECT_VIEW": "v"}[node["removeType"]]
            gone = []
            for obj in node.get("objects", []):
                schema, name = self._qualified_list(obj.get("List", {}).get("items"))
                gone.append(await self.relation(schema, name, kinds) is None)
            what = node["removeType"].removeprefix("OBJECT_").lower()
            return f"the dropped {what}(s) are gone", all(gone) if all(gone) or not any(gone) else None, ""
        return f"effect of {kind.removesuffix('Stmt')}", None, "this kind of statement cannot be checked"

    async def _alter_table(self, node: dict[str, Any]) -> tuple[str, bool | None, str]:
        schema, table = self._rel(node.get("relation"))
        effects, results = [], []
        for item in node.get("cmds", []):
            cmd = item.get("AlterTableCmd", {})
            sub = cmd.get("subtype")
            if sub == "AT_AddColumn":
                col = cmd.get("def", {}).get("ColumnDef", {}).get("colname")
                effects.append(f"column {schema}.{table}.{col} exists")
                results.append(await self.column(schema, table, col))
            elif sub == "AT_DropColumn":
                effects.append(f"column {schema}.{table}.{cmd.get('name')} is gone")
                results.append(not await self.column(schema, table, cmd.get("name")))
            elif sub == "AT_AddConstraint" and cmd.get("def", {}).get("Constraint", {}).get("conname"):
                name = cmd["def"]["Constraint"]["conname"]
                effects.append(f"constraint {name} on {schema}.{table} exists")
                results.append(await self.constraint(schema, table, name))
            elif sub == "AT_DropConstraint":
                effects.append(f"constraint {cmd.get('name')} on {schema}.{table} is gone")
                results.append(not await self.constraint(schema, table, cmd.get("name")))
            else:
                effects.append(f"ALTER TABLE {schema}.{table} {str(sub).removeprefix('AT_')} took effect")
                results.append(None)
        effect = "; ".join(effects)
        if results and all(r is True for r in results):
            return effect, True, ""
        if results and all(r is False for r in results):
            return effect, False, ""
        return effect, None, "only some of its changes are visible, or they cannot be checked"


async def failed_migration_evidence(
    conn: asyncpg.Connection, analysis: MigrationAnalysis, schema: str = DEFAULT_SCHEMA
) -> Evidence:
    """Per statement of a (failed) migration: are its effects in the database? Read-only."""
    probe = _Probe(conn, schema)
    evidence = Evidence(migration=analysis.name)
    for stmt in analysis.statements:
        if stmt.kind in _NO_EFFECT:
            continue
        effect, present, detail = await probe.check(stmt)
        evidence.statements.append(
            StatementEvidence(index=stmt.index, line=stmt.line, effect=effect, present=present, detail=detail)
        )
    checks = [s.present for s in evidence.statements]
    evidence.all_absent = bool(checks) and all(p is False for p in checks)
    evidence.all_present = bool(checks) and all(p is True for p in checks)
    evidence.summary = summarise(evidence)
    return evidence


async def existing_insert_keys(conn: asyncpg.Connection, sql: str, schema: str = DEFAULT_SCHEMA) -> list[str]:
    """Before deploy: inserted keys that already exist (a derived DELETE would remove them).

    Empty means the derived rollback's DELETEs touch only rows this migration adds.
    """
    found = []
    probe = _Probe(conn, schema)
    for key in insert_keys(sql, schema):
        present, _ = await probe.keys(key)
        if present:
            found.append(f"{present} of the rows {key.table} would receive already exist (keyed by {', '.join(key.key_columns)})")
    return found
