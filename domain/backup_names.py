"""Which table of the database before the run a name means at each point of the run. Pure.

The backup planner (domain/backup.py) reads the facts of live tables by the names they have
before the run. A run may rename a live table (ALTER TABLE ... RENAME TO, ... SET SCHEMA, ALTER
SCHEMA ... RENAME TO) or its columns (RENAME COLUMN) and destroy its data later under the new
name, in the same migration or in a later one of the same run: that table still holds the
application's rows, so the facts of the original table must follow it to its new name. And a
table the run created holds nothing to lose, whatever the run renames it to later, even to the
name a live table had before it was renamed away.

`RunNames.follow(statement, schema)` applies each statement of the run in order; between
migrations `begin_migration()` remembers the names at that migration's start, which are the
names its backups are taken and put back under (before its script, and after its rollback).
It remembers them copy-on-write: a table's start is kept when a statement of the migration first
renames it or changes its columns, so a run of thousands of migrations over thousands of tables
stays linear (copying every table at each start made a 5,000-migration plan take 20 s).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from domain.sql.parse import StatementInfo, names, qualified

_ids = itertools.count(1)


@dataclass
class LiveTable:
    """A table of the database before the run (`origin`: its schema.name then), or one the run
    created (`origin` None), with the column names the run changed on it."""

    origin: str | None
    # name now -> name before the run (None: added by the run); only names the run changed.
    columns: dict[str, str | None] = field(default_factory=dict)
    vacated: set[str] = field(default_factory=set)  # names no column has now (dropped or renamed away)
    ident: int = field(default_factory=lambda: next(_ids))

    def before(self, column: str) -> str | None:
        """The name before the run of the column called `column` now (None: the run added it)."""
        if column in self.columns:
            return self.columns[column]
        return None if column in self.vacated else column

    def now(self, column: str) -> str | None:
        """The name now of the column called `column` before the run (None: dropped by the run)."""
        for name, before in self.columns.items():
            if before == column:
                return name
        return None if column in self.vacated or column in self.columns else column

    def copy(self) -> LiveTable:
        return LiveTable(self.origin, dict(self.columns), set(self.vacated), self.ident)


class RunNames:
    def __init__(self) -> None:
        self._tables: dict[str, LiveTable] = {}  # schema.name now -> the table it means
        self._names: dict[int, str] = {}  # per table of _tables: its name now
        self._vacated: set[str] = set()  # schema.name no table has now (dropped or renamed away)
        self._schemas: dict[str, str | None] = {}  # schema now -> its name before the run (None: created)
        self._types: dict[str, str | None] = {}  # schema.type now -> its name before the run (None: created)
        # Per table changed (or first met) in the current migration: its name and columns at the
        # migration's start. A table not in it is as it was then.
        self._start: dict[int, tuple[str, LiveTable]] = {}
        self._start_schemas: dict[str, str | None] = {}

    # -- lookups ---------------------------------------------------------------------------

    def table(self, name: str) -> LiveTable | None:
        """The table `schema.name` means now; None when no table has that name now."""
        if name not in self._tables:
            if name in self._vacated:
                return None
            # First mention: the table has its name from before the run, unless its schema was renamed.
            schema, _, rel = name.partition(".")
            before = self.schema_before(schema)
            t = LiveTable(origin=f"{before}.{rel}" if before is not None else None)
            self._place(name, t)
            if before is not None:
                self._start[t.ident] = (f"{self._schema_at_start(before)}.{rel}", t.copy())
        return self._tables[name]

    def live(self, name: str) -> LiveTable | None:
        """The table `name` means now, if it is one the database had before the run."""
        t = self.table(name)
        return t if t is not None and t.origin is not None else None

    def schema_before(self, schema: str) -> str | None:
        return self._schemas.get(schema, schema)

    def type_before(self, name: str) -> str | None:
        if name in self._types:
            return self._types[name]
        schema, _, typ = name.partition(".")
        before = self.schema_before(schema)
        return f"{before}.{typ}" if before is not None else None

    def at_start(self, t: LiveTable) -> tuple[str, LiveTable]:
        """Its name and columns when the current migration started."""
        found = self._start.get(t.ident)
        return found if found is not None else (self._names[t.ident], t.copy())

    def begin_migration(self) -> None:
        self._start = {}  # every table is as it is now (see _remember)
        self._start_schemas = dict(self._schemas)

    def _remember(self, t: LiveTable) -> None:
        """Before the current migration first renames `t` or changes its columns: keep its start."""
        if t.ident not in self._start and t.ident in self._names:
            self._start[t.ident] = (self._names[t.ident], t.copy())

    def _place(self, name: str, t: LiveTable) -> None:
        self._unplace(name)
        self._tables[name] = t
        self._names[t.ident] = name

    def _unplace(self, name: str) -> LiveTable | None:
        t = self._tables.pop(name, None)
        if t is not None and self._names.get(t.ident) == name:
            del self._names[t.ident]
        return t

    def _schema_at_start(self, before: str) -> str:
        for now, was in self._start_schemas.items():
            if was == before:
                return now
        return before

    # -- following the run -----------------------------------------------------------------

    def follow(self, s: StatementInfo, schema: str) -> None:
        node = s.node()
        kind = s.kind
        if kind in ("CreateStmt", "CreateTableAsStmt", "SelectStmt"):
            rel = node.get("relation") or (node.get("into") or node.get("intoClause") or {}).get("rel")
            if rel is not None:
                name = qualified(rel, schema)
                if not node.get("if_not_exists") or name in self._vacated:
                    self._move(None, name, LiveTable(origin=None))
        elif kind == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
            for obj in node.get("objects", []):
                parts = names(obj.get("List", {}).get("items"))
                self._move(".".join(parts) if len(parts) > 1 else f"{schema}.{parts[-1]}", None)
        elif kind == "RenameStmt":
            self._rename(node, schema)
        elif kind == "AlterObjectSchemaStmt" and node.get("objectType") == "OBJECT_TABLE":
            old = qualified(node.get("relation"), schema)
            self._move(old, f"{node['newschema']}.{old.partition('.')[2]}")
        elif kind == "AlterObjectSchemaStmt" and node.get("objectType") in ("OBJECT_TYPE", "OBJECT_DOMAIN"):
            old = _type_name(node.get("object"), schema)
            self._retype(old, f"{node['newschema']}.{old.partition('.')[2]}")
        elif kind == "CreateSchemaStmt" and node.get("schemaname") and not node.get("if_not_exists"):
            self._schemas[node["schemaname"]] = None
        elif kind == "AlterTableStmt" and node.get("objtype") in (None, "OBJECT_TABLE"):
            t = self.table(qualified(node.get("relation"), schema))
            if t is not None:
                self._remember(t)
            for item in node.get("cmds", []):
                cmd = item.get("AlterTableCmd", {})
                if t is not None and cmd.get("subtype") == "AT_AddColumn":
                    col = cmd.get("def", {}).get("ColumnDef", {}).get("colname")
                    if col and not (cmd.get("missing_ok") and t.before(col) is not None):
                        t.columns[col] = None
                        t.vacated.discard(col)
                elif t is not None and cmd.get("subtype") == "AT_DropColumn" and cmd.get("name"):
                    t.columns.pop(cmd["name"], None)
                    t.vacated.add(cmd["name"])

    def _rename(self, node: dict[str, Any], schema: str) -> None:
        rtype = node.get("renameType")
        if rtype == "OBJECT_TABLE":
            old = qualified(node.get("relation"), schema)
            self._move(old, f"{old.partition('.')[0]}.{node['newname']}")
        elif rtype == "OBJECT_COLUMN" and node.get("relationType") == "OBJECT_TABLE":
            t = self.table(qualified(node.get("relation"), schema))
            if t is not None:
                self._remember(t)
                before = t.before(node["subname"])
                t.columns.pop(node["subname"], None)
                t.vacated.add(node["subname"])
                t.columns[node["newname"]] = before
                t.vacated.discard(node["newname"])
        elif rtype == "OBJECT_SCHEMA":
            old, new = node["subname"], node["newname"]
            self._schemas[new] = self.schema_before(old)
            self._schemas[old] = None  # the old name means nothing now (a schema created later is new)
            for name in [n for n in (*self._tables, *self._vacated) if n.partition(".")[0] == old]:
                moved = f"{new}.{name.partition('.')[2]}"
                if name in self._tables:
                    self._remember(self._tables[name])
                    self._place(moved, self._unplace(name))  # type: ignore[arg-type]
                else:
                    self._vacated.discard(name)
                    self._vacated.add(moved)
        elif rtype in ("OBJECT_TYPE", "OBJECT_DOMAIN"):
            old = _type_name(node.get("object"), schema)
            self._retype(old, f"{old.partition('.')[0]}.{node['newname']}")

    def _move(self, old: str | None, new: str | None, table: LiveTable | None = None) -> None:
        if old is not None:
            table = self.table(old)
            if table is not None:
                self._remember(table)
            self._unplace(old)
            self._vacated.add(old)
        if new is not None:
            self._vacated.discard(new)
            if table is None:
                self._unplace(new)
                self._vacated.add(new)
            else:
                self._place(new, table)

    def _retype(self, old: str, new: str) -> None:
        self._types[new] = self.type_before(old)
        self._types[old] = None


def _type_name(obj: dict[str, Any] | None, schema: str) -> str:
    """schema.type of a RenameStmt's / AlterObjectSchemaStmt's object (a List of names, or a TypeName)."""
    obj = obj or {}
    parts = names(obj.get("List", {}).get("items")) or names(obj.get("TypeName", {}).get("names"))
    return ".".join(parts[-2:]) if len(parts) > 1 else f"{schema}.{parts[-1] if parts else '?'}"
