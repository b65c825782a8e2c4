"""The bundle a run carries: each migration's SQL exactly as reviewed, and, for a history too large
for one Temporal payload, the parts it travels in (sent right after the start, checked by the
workflow, read back from the run's own history by the activities and the audit).

Models only; building, splitting and checking bundles is domain/bundle.py. Recorded verbatim in
workflow history (pydantic data converter): no database URL or password ever goes here.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

# Temporal refuses payloads over 2 MB by default; keep a margin for the envelope. A bundle up to
# this size travels inline in the request; a larger one in parts of about PART_BYTES each: half the
# limit. (Parts under the 512 KB at which Temporal starts logging warnings took twice as long to
# send and read back on a 10,000-migration history: bench/long_history.py.)
MAX_BUNDLE_BYTES = 1_500_000
PART_BYTES = 1_000_000


class BundledMigration(BaseModel):
    """One migration folder as reviewed: its SQL travels with the run so history shows what ran."""

    name: str
    sql: str
    checksum: str  # Prisma's: lowercase hex SHA-256 of migration.sql's bytes
    down_sql: str | None = None
    verify_sql: str | None = None


class UnreadableMigration(BaseModel):
    """A migration directory whose migration.sql Prisma cannot read: Prisma's deploy stops there
    with P3015, its status lists it as pending (domain/prisma/folder_rules.py)."""

    name: str
    reason: str  # missing | not_a_file | unreadable


class BundlePartDigest(BaseModel):
    """What the request says about one part, so the workflow can check it on arrival."""

    index: int
    count: int  # migrations in the part
    first: str  # the first and last migration names (Prisma's order)
    last: str
    size: int  # bytes of the part as JSON
    digest: str  # domain.bundle.part_digest of its migrations


class BundlePart(BaseModel):
    """One slice of a bundle in Prisma's order: the `bundle_part` update's payload."""

    index: int
    migrations: list[BundledMigration]


class MigrationBundle(BaseModel):
    # Every migration with its SQL, in Prisma's order; empty when the bundle travels in `parts`.
    migrations: list[BundledMigration]
    revision: str | None = None  # e.g. the git commit the folder was read from
    source: str | None = None  # a label for where it came from (folder path, CI run)
    unreadable: list[UnreadableMigration] = Field(default_factory=list)
    # Why the folder was read as empty (it does not exist, ...): Prisma says nothing, we do.
    folder_problem: str | None = None
    parts: list[BundlePartDigest] = Field(default_factory=list)

    @property
    def in_parts(self) -> bool:
        return bool(self.parts)

    @property
    def count(self) -> int:
        return sum(p.count for p in self.parts) if self.parts else len(self.migrations)

    @property
    def last_name(self) -> str | None:
        if self.parts:
            return self.parts[-1].last
        return self.migrations[-1].name if self.migrations else None
