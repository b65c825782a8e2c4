"""Prisma's `_prisma_migrations` ledger: its exact DDL, its rows, and its advisory lock key.

Semantics follow the real Prisma 6.19.3 CLI (../shared/tools/prisma-oracle/REPORT.md §4.1–4.9).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

TABLE = "_prisma_migrations"

# The statement Prisma sends (create_migrations_table in the schema engine), unqualified so it
# lands in the connection's search_path like Prisma's.
CREATE_TABLE_DDL = """CREATE TABLE _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
);"""

EXPECTED_COLUMNS = (
    "id",
    "checksum",
    "finished_at",
    "migration_name",
    "logs",
    "rolled_back_at",
    "started_at",
    "applied_steps_count",
)

# `SELECT pg_advisory_lock(72707369)`: Prisma's session-level lock for deploy and resolve.
ADVISORY_LOCK_KEY = 72707369


class LedgerRow(BaseModel):
    id: str
    checksum: str
    finished_at: datetime | None
    migration_name: str
    logs: str | None
    rolled_back_at: datetime | None
    started_at: datetime
    applied_steps_count: int

    @property
    def is_failed(self) -> bool:
        """Prisma's definition (P3009): started, never finished, never rolled back."""
        return self.finished_at is None and self.rolled_back_at is None

    @property
    def is_applied(self) -> bool:
        return self.finished_at is not None and self.rolled_back_at is None

    @property
    def is_rolled_back(self) -> bool:
        return self.rolled_back_at is not None


class LedgerSnapshot(BaseModel):
    """What one read of the target database found."""

    table_exists: bool
    rows: list[LedgerRow]  # ordered by started_at, as Prisma reads them
    # Ordinary tables (relkind 'r') in the schema other than the ledger, as Prisma's P3005 check
    # reads them (domain/prisma/baseline.py decides which of them count).
    other_tables: list[str]
    schema_name: str = "public"
