"""A schema's catalog (tables, columns, indexes, constraints, enums) and a pure comparison of two.

The drift proof (activities/drift.py) reads one catalog from a shadow database where the local
history was replayed and one from the live database; `compare` names every object that differs
and `judge` turns that into a verdict. Pure: no I/O.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Column(BaseModel):
    type: str
    nullable: bool
    default: str | None = None


class Table(BaseModel):
    columns: dict[str, Column] = Field(default_factory=dict)


class Catalog(BaseModel):
    schema_name: str = "public"
    tables: dict[str, Table] = Field(default_factory=dict)
    indexes: dict[str, str] = Field(default_factory=dict)  # index name -> definition (+ " INVALID")
    constraints: dict[str, str] = Field(default_factory=dict)  # "table.constraint" -> definition
    enums: dict[str, list[str]] = Field(default_factory=dict)  # type name -> labels in order


class Change(StrEnum):
    missing = "missing"  # in the replayed history, not in the live database
    extra = "extra"  # in the live database only
    changed = "changed"


class Difference(BaseModel):
    kind: str  # table | column | index | constraint | enum
    name: str  # e.g. "customers.nickname"
    change: Change
    expected: str | None = None  # what the replayed history has
    live: str | None = None

    @property
    def sentence(self) -> str:
        if self.change == Change.extra:
            return f"{self.kind} {self.name} exists in the live database but not in the local history ({self.live})"
        if self.change == Change.missing:
            return f"{self.kind} {self.name} is created by the local history but missing from the live database"
        return f"{self.kind} {self.name} differs: local history has {self.expected}, live has {self.live}"


def _column_text(col: Column) -> str:
    text = col.type + ("" if col.nullable else " NOT NULL")
    return text + (f" DEFAULT {col.default}" if col.default is not None else "")


def _diff_maps(kind: str, expected: dict[str, str], live: dict[str, str]) -> list[Difference]:
    out = []
    for name in sorted(expected.keys() | live.keys()):
        e, l = expected.get(name), live.get(name)
        if e == l:
            continue
        change = Change.extra if e is None else Change.missing if l is None else Change.changed
        out.append(Difference(kind=kind, name=name, change=change, expected=e, live=l))
    return out


def compare(expected: Catalog, live: Catalog) -> list[Difference]:
    """Every object that differs between the replayed history (`expected`) and the live database."""
    diffs = _diff_maps(
        "table", {t: "table" for t in expected.tables}, {t: "table" for t in live.tables}
    )
    for table in sorted(expected.tables.keys() & live.tables.keys()):
        diffs += _diff_maps(
            "column",
            {f"{table}.{c}": _column_text(col) for c, col in expected.tables[table].columns.items()},
            {f"{table}.{c}": _column_text(col) for c, col in live.tables[table].columns.items()},
        )
    diffs += _diff_maps("index", expected.indexes, live.indexes)
    diffs += _diff_maps("constraint", expected.constraints, live.constraints)
    diffs += _diff_maps(
        "enum",
        {n: ", ".join(labels) for n, labels in expected.enums.items()},
        {n: ", ".join(labels) for n, labels in live.enums.items()},
    )
    return diffs


class DriftVerdict(StrEnum):
    no_drift = "no_drift"
    explained_by_phantom = "explained_by_phantom"
    unexplained_drift = "unexplained_drift"
    replay_failed = "replay_failed"  # the local history does not replay cleanly: no proof either way
    unavailable = "unavailable"  # no shadow database could be created (e.g. no CREATEDB privilege)


class DriftReport(BaseModel):
    verdict: DriftVerdict
    summary: str
    differences: list[Difference] = Field(default_factory=list)
    phantoms: list[str] = Field(default_factory=list)
    replayed: list[str] = Field(default_factory=list)
    shadow_database: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict in (DriftVerdict.no_drift, DriftVerdict.explained_by_phantom)


def judge(differences: list[Difference], phantoms: list[str], replayed: list[str], shadow: str | None = None) -> DriftReport:
    """The verdict on a comparison. Phantoms explain nothing beyond "they changed nothing"."""
    common = dict(differences=differences, phantoms=phantoms, replayed=replayed, shadow_database=shadow)
    if differences:
        names = "; ".join(d.sentence for d in differences)
        hint = (
            f" The phantom migration(s) {', '.join(phantoms)} may be the cause, but their SQL is not in the "
            "repository, so nothing proves it."
            if phantoms
            else ""
        )
        return DriftReport(
            verdict=DriftVerdict.unexplained_drift,
            summary=f"unexplained drift: {len(differences)} difference(s) between the live database and the "
            f"replayed local history: {names}.{hint}",
            **common,
        )
    if phantoms:
        return DriftReport(
            verdict=DriftVerdict.explained_by_phantom,
            summary=f"explained by phantom: no unexplained drift. The live schema equals the replay of the "
            f"{len(replayed)} applied local migration(s), so the phantom migration(s) {', '.join(phantoms)} "
            "changed nothing the local history does not already create.",
            **common,
        )
    return DriftReport(
        verdict=DriftVerdict.no_drift,
        summary=f"no drift: the live schema equals the replay of the {len(replayed)} applied local migration(s).",
        **common,
    )
