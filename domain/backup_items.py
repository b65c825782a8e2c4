"""What a backup before a destructive statement holds, and the catalog facts it is planned from.

Models only (they travel in the plan, see domain/backup.py for how they are decided and
activities/backup.py for how they are taken and restored).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

# The schema the worker keeps its own bookkeeping in, in each target database: backups, the row
# versions its migrations wrote, undo progress. Left out of the schema model like the ledger.
BOOKKEEPING_SCHEMA = "_migrator_backup"


class TableFacts(BaseModel):
    """An existing table, as preflight read it from the catalog."""

    schema_name: str
    name: str
    columns: list[str] = Field(default_factory=list)
    types: dict[str, str] = Field(default_factory=dict)  # column -> format_type()
    key: list[str] = Field(default_factory=list)  # primary key, else a unique index on NOT NULL columns
    bytes: int = 0  # pg_table_size
    rows: int = 0  # estimated (reltuples)
    widths: dict[str, int] = Field(default_factory=dict)  # column -> pg_stats.avg_width, when analysed


class BackupItem(BaseModel):
    """The data one destructive statement would destroy, saved in the same transaction first."""

    statement: int  # 1-based position of the statement in migration.sql
    line: int
    reason: str  # "DROP COLUMN public.customers.phone"
    schema_name: str
    table: str
    # rows: whole rows (DROP TABLE, TRUNCATE, DELETE), put back by INSERT;
    # columns: the key and these columns' old values (UPDATE, DROP COLUMN, ALTER COLUMN TYPE), put back by UPDATE.
    kind: Literal["rows", "columns"]
    columns: list[str]
    key: list[str] = Field(default_factory=list)
    where: str | None = None  # only the rows the statement's WHERE selects (None: every row)
    estimated_bytes: int = 0
    estimated_rows: int = 0


class MigrationBackups(BaseModel):
    """The backups one migration needs, and what could not be backed up (one sentence each)."""

    items: list[BackupItem] = Field(default_factory=list)
    impossible: list[str] = Field(default_factory=list)

    @property
    def estimated_bytes(self) -> int:
        return sum(i.estimated_bytes for i in self.items)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover
