"""Reading a Prisma migrations folder (the migration directory), the way the Prisma 6 CLI does.

Contract (other modules rely on it):

    class LocalMigration(BaseModel): name: str; sql: str; raw: bytes (excluded from dumps);
        checksum: str; down_sql: str | None; verify_sql: str | None
    class MigrationFolderError(ValueError): .code ("P3019", "non_utf8", "unreadable"), str(e) one clear line
    class MigrationsFolder: root; problem: str | None (why it read as empty);
        migrations: list[LocalMigration]   # the readable ones, in Prisma's order
        unreadable: list[FolderEntry]      # directories Prisma lists but cannot read (P3015 on reaching them)
        entries: list[FolderEntry]         # every migration directory, in Prisma's order
    def read_folder(path: str | Path) -> MigrationsFolder
    def read_migrations_dir(path: str | Path) -> list[LocalMigration]   # read_folder(path).migrations

Semantics are Prisma's (REPORT.md §4.4; domain/prisma/folder_rules.py states each rule and
tests/test_prisma_folder_rules.py checks it against the real CLI): only sub-directories are
migrations, named after their directory and ordered with JavaScript's `localeCompare`
(domain/prisma/order.py); a missing or unlistable folder reads as empty (`problem` says why, for
the product to tell the user); a directory without a readable migration.sql is still a
migration, one that Prisma's deploy stops on (P3015) and its status lists as pending. Where
Prisma would carry on with something other than the file (a migration.sql that is not UTF-8 is
run with U+FFFD substitutions; a lock file for another provider is P3019 everywhere), reading
stops with one clear sentence: nothing should be deployed from a folder we could not read
faithfully.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, model_validator

from domain.prisma.checksum import sha256_hex
from domain.prisma.folder_rules import (
    LOCK_FILE,
    MIGRATION_FILE,
    FolderEntry,
    RawEntry,
    folder_entries,
    lock_file_error,
    lock_file_provider,
)
from domain.prisma.folder_scan import scan_folder

EXPECTED_PROVIDER = "postgresql"
DOWN_FILE = "down.sql"
VERIFY_FILE = "verify.sql"


class MigrationFolderError(ValueError):
    """The migrations folder cannot be used. `str(e)` is one line naming the offending path."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class LocalMigration(BaseModel):
    name: str
    # Decoded as UTF-8 with a BOM kept as U+FEFF, so `sql.encode()` gives back the file's bytes
    # (Prisma hashes and runs the file as is, BOM and CRLF included).
    sql: str
    checksum: str = ""
    down_sql: str | None = None
    verify_sql: str | None = None

    @model_validator(mode="after")
    def _default_checksum(self) -> LocalMigration:
        if not self.checksum:
            self.checksum = sha256_hex(self.raw)
        return self

    @property
    def raw(self) -> bytes:
        """The bytes of migration.sql, which the checksum is computed over. Not part of dumps."""
        return self.sql.encode("utf-8")


@dataclass
class MigrationsFolder:
    root: Path
    problem: str | None = None
    migrations: list[LocalMigration] = field(default_factory=list)
    unreadable: list[FolderEntry] = field(default_factory=list)
    entries: list[FolderEntry] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]


def _not_utf8(path: Path, data: bytes) -> MigrationFolderError:
    try:
        data.decode("utf-8")
        offset = 0  # pragma: no cover - only called for undecodable bytes
    except UnicodeDecodeError as exc:
        offset = exc.start
    return MigrationFolderError(
        "non_utf8",
        f"{path} is not valid UTF-8 (byte 0x{data[offset]:02x} at offset {offset}); save it as UTF-8 before deploying",
    )


def _optional_text(path: str) -> str | None:
    """down.sql / verify.sql: the product's own files, absent more often than not."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as exc:
        raise MigrationFolderError("unreadable", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _not_utf8(Path(path), data) from None


def _check_lock_file(root: Path, lock_file: bytes | None) -> None:
    if lock_file_error(lock_file, EXPECTED_PROVIDER) is None:
        return
    found = lock_file_provider(lock_file.decode("utf-8", "replace"))
    raise MigrationFolderError(
        "P3019",
        f"P3019: {root / LOCK_FILE} names the provider `{found.strip()}`, not `{EXPECTED_PROVIDER}`: this migrations "
        "folder was made for another database, and Prisma refuses it too",
    )


def read_folder(path: str | Path) -> MigrationsFolder:
    """The migrations folder as Prisma reads it, or MigrationFolderError (P3019, non-UTF-8)."""
    listing = scan_folder(path)
    folder = MigrationsFolder(root=listing.root, problem=listing.problem())
    _check_lock_file(listing.root, listing.lock_file)
    raw_by_name: dict[str, RawEntry] = {r.name: r for r in listing.entries if r.is_directory}
    folder.entries = folder_entries(listing.entries)
    root = str(listing.root)
    for entry in folder.entries:
        if entry.reason == "not_utf8":
            raise _not_utf8(listing.root / entry.name / MIGRATION_FILE, raw_by_name[entry.name].migration_sql or b"")
        if entry.sql is None:
            folder.unreadable.append(entry)
            continue
        folder.migrations.append(LocalMigration(
            name=entry.name,
            sql=entry.sql,
            down_sql=_optional_text(os.path.join(root, entry.name, DOWN_FILE)),
            verify_sql=_optional_text(os.path.join(root, entry.name, VERIFY_FILE)),
        ))
    return folder


def read_migrations_dir(path: str | Path) -> list[LocalMigration]:
    """The readable migrations, in Prisma's order (directories without a readable migration.sql
    are left out: use read_folder where they matter)."""
    return read_folder(path).migrations
