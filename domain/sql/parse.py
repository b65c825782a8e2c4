"""Parsing SQL with PostgreSQL's own parser (pglast / libpg_query) into statements with their
lines, and small helpers to read libpg_query's JSON parse tree. Pure: no I/O.

We walk libpg_query's JSON parse tree rather than pglast's Python AST objects: building the
objects is ~10x slower and the benchmark target is 1,000 migration files in under a second.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pglast import parser as pg_parser
from pydantic import BaseModel, Field, PrivateAttr

from domain.models import Finding

DEFAULT_SCHEMA = "public"


class SqlParseError(ValueError):
    """Unparseable SQL; str() is one sentence naming the line."""

    def __init__(self, message: str, line: int, name: str | None = None) -> None:
        self.line = line
        self.reason = message
        prefix = f"{name}: " if name else ""
        super().__init__(f"{prefix}SQL does not parse at line {line}: {message}")


class StatementInfo(BaseModel):
    index: int
    line: int  # 1-based line where the statement starts (after leading comments)
    text: str
    kind: str  # libpg_query node type, e.g. CreateStmt
    # Byte offsets of `text` in the UTF-8 script (without the terminating semicolon).
    start: int = 0
    end: int = 0
    findings: list[Finding] = Field(default_factory=list)

    # The parse tree (libpg_query JSON) of this statement; not serialised. See node().
    _node: dict[str, Any] | None = PrivateAttr(default=None)

    def node(self) -> dict[str, Any]:
        """This statement's parse-tree body (re-parsed when the model came through serialisation)."""
        if self._node is None:
            stmts = json.loads(pg_parser.parse_sql_json(self.text))["stmts"]
            self._node = stmts[0]["stmt"][self.kind] if stmts else {}
        return self._node



# -- parsing ---------------------------------------------------------------------------------


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _parse(sql: str, name: str | None = None) -> tuple[bytes, list[dict[str, Any]]]:
    try:
        tree = json.loads(pg_parser.parse_sql_json(sql))
    except pg_parser.ParseError as exc:
        message = exc.args[0] if exc.args else str(exc)
        # ParseError's location is a 0-based character offset; None means "at end of input".
        pos = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else len(sql.rstrip())
        line = sql.count("\n", 0, pos) + 1
        raise SqlParseError(str(message), line, name) from None
    return sql.encode("utf-8"), tree.get("stmts", [])


def statements_with_nodes(sql: str, name: str | None = None) -> list[tuple[StatementInfo, dict[str, Any]]]:
    data, stmts = _parse(sql, name)
    out: list[tuple[StatementInfo, dict[str, Any]]] = []
    for i, raw in enumerate(stmts):
        start = raw.get("stmt_location", 0)
        length = raw.get("stmt_len") or (len(data) - start)
        chunk = data[start : start + length]
        # stmt_location may point at whitespace/comments that precede the statement.
        stripped = chunk.lstrip()
        offset = len(chunk) - len(stripped)
        if stripped.startswith((b"--", b"/*")):
            tokens = [t for t in pg_parser.scan(stripped.decode("utf-8")) if t.name not in ("SQL_COMMENT", "C_COMMENT")]
            if tokens:
                # scan() offsets are characters; convert back to bytes.
                offset += len(stripped.decode("utf-8")[: tokens[0].start].encode("utf-8"))
        text = data[start + offset : start + length].decode("utf-8").rstrip()
        (kind, body), = raw["stmt"].items()
        begin = start + offset
        info = StatementInfo(index=i, line=_line_of(data, begin), text=text, kind=kind, start=begin,
                             end=begin + len(text.encode("utf-8")))
        info._node = body
        out.append((info, body))
    return out


def has_statements(sql: str) -> bool:
    """False for an empty or comment-only script, which PostgreSQL answers with an empty-query
    response (asyncpg's execute() fails on it, and Prisma records such a migration as applied).
    SQL that does not parse counts as statements, so that the server reports its own error."""
    try:
        return bool(pg_parser.split(sql))
    except pg_parser.ParseError:
        return True


def split_statements(sql: str) -> list[StatementInfo]:
    """The statements of a script with their starting lines; raises SqlParseError."""
    return [info for info, _ in statements_with_nodes(sql)]


# -- parse-tree helpers (libpg_query JSON) ---------------------------------------------------


def qualified(rangevar: dict[str, Any] | None, default_schema: str = DEFAULT_SCHEMA) -> str:
    rangevar = rangevar or {}
    return f"{rangevar.get('schemaname') or default_schema}.{rangevar.get('relname', '?')}"


def names(items: list[dict[str, Any]] | None) -> list[str]:
    """['a', 'b'] from a list of String nodes."""
    return [item["String"]["sval"] for item in items or [] if "String" in item]


def qualified_names(items: list[dict[str, Any]] | None, default_schema: str = DEFAULT_SCHEMA) -> str:
    parts = names(items)
    if len(parts) == 1:
        parts = [default_schema, parts[0]]
    return ".".join(parts)


def walk(node: Any) -> Iterable[tuple[str, Any]]:
    """Every (type, body) pair below a JSON parse-tree node."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                if isinstance(value, (dict, list)):
                    if key[:1].isupper() and isinstance(value, dict):
                        yield key, value
                    stack.append(value)
        elif isinstance(current, list):
            stack.extend(current)


def literal_value(node: dict[str, Any]) -> tuple[bool, Any]:
    """(True, python value) when node is a constant (optionally cast), else (False, None)."""
    if "TypeCast" in node:
        return literal_value(node["TypeCast"].get("arg", {}))
    const = node.get("A_Const")
    if const is None:
        return False, None
    if const.get("isnull"):
        return True, None
    if "sval" in const:
        return True, const["sval"].get("sval", "")
    if "ival" in const:
        return True, const["ival"].get("ival", 0)
    if "fval" in const:
        text = const["fval"].get("fval", "0")
        try:
            return True, int(text)
        except ValueError:
            return True, float(text)
    if "boolval" in const:
        return True, bool(const["boolval"].get("boolval", False))
    if "bsval" in const:
        return False, None
    return False, None


