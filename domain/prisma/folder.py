"""Reading a Prisma migrations folder (the migration directory), the way the Prisma 6 CLI does.

Contract (other modules rely on it):

    class LocalMigration(BaseModel): name: str; sql: str; raw: bytes (excluded from dumps);
        checksum: str; down_sql: str | None; verify_sql: str | None
    class MigrationFolderError(ValueError): .code (e.g. "P3015", "P3019", "not_found", "non_utf8"), str(e) one clear line
    def read_migrations_dir(path: str | Path) -> list[LocalMigration]   # in Prisma's order
    def prisma_order_key(name: str)                                     # localeCompare-like sort key

Semantics (REPORT.md §4.4): only sub-directories are migrations (files such as README.md or
migration_lock.toml are ignored, and so are symlinks, as node's Dirent.isDirectory() says), each
named after its directory, sorted with JavaScript's `localeCompare` (ICU root collation), not
byte order. Where Prisma would carry on quietly (an unreadable or non-UTF-8 file is replaced by
an error tag or U+FFFD there), we stop with one clear sentence instead: nothing should be
deployed from a folder we could not read faithfully.
"""

from __future__ import annotations

import os
import unicodedata
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, model_validator

from domain.prisma.checksum import sha256_hex

EXPECTED_PROVIDER = "postgresql"
LOCK_FILE = "migration_lock.toml"
MIGRATION_FILE = "migration.sql"
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


# -- ordering ---------------------------------------------------------------------------------

# ICU's root collation order of ASCII whitespace and punctuation (all sort before digits, which
# sort before letters). Control characters are ignorable there.
_SPECIALS = "\t\n\v\f\r _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$"
_SPECIAL_WEIGHT = {ch: i + 1 for i, ch in enumerate(_SPECIALS)}
_DIGIT_BASE = 100
_LETTER_BASE = 200
_OTHER_BASE = 1000
_COMMON = 5  # secondary weight of a base character; diacritics weigh more


@lru_cache(maxsize=65536)
def prisma_order_key(name: str) -> tuple:
    """A sort key that orders names like `a.localeCompare(b)` in node (ICU, default strength):
    first by base characters (punctuation < digits < letters, case-blind), then by accents, then
    lowercase before uppercase. The name itself breaks remaining ties deterministically."""
    primary: list[int] = []
    secondary: list[int] = []
    tertiary: list[int] = []
    for ch in unicodedata.normalize("NFD", name):
        if unicodedata.combining(ch):
            secondary.append(_COMMON + ord(ch))
            continue
        if ch in _SPECIAL_WEIGHT:
            p = _SPECIAL_WEIGHT[ch]
        elif "0" <= ch <= "9":
            p = _DIGIT_BASE + ord(ch) - ord("0")
        elif ch.isascii() and ch.isalpha():
            p = _LETTER_BASE + ord(ch.lower()) - ord("a")
        elif unicodedata.category(ch) == "Cc":
            continue
        else:
            p = _OTHER_BASE + ord(ch.lower())
        primary.append(p)
        secondary.append(_COMMON)
        tertiary.append(1 if ch.isupper() else 0)
    return (tuple(primary), tuple(secondary), tuple(tertiary), name)


# -- reading ----------------------------------------------------------------------------------


def _read_text(path: Path, what: str) -> str:
    try:
        data = path.read_bytes()
    except PermissionError:
        raise MigrationFolderError("unreadable", f"cannot read {what} {path}: permission denied") from None
    except OSError as exc:
        raise MigrationFolderError("unreadable", f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationFolderError(
            "non_utf8",
            f"{path} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8 before deploying",
        ) from None


def _optional_text(path: Path) -> str | None:
    return _read_text(path, "file") if path.is_file() else None


def lock_file_provider(content: str) -> str | None:
    """The engine's reading: the first line starting with `provider`, minus `provider = ` and quotes."""
    for line in content.splitlines():
        if line.startswith("provider"):
            value = line
            while value.startswith("provider = "):
                value = value[len("provider = ") :]
            return value.strip('"')
    return None


def check_lock_file(root: Path) -> None:
    lock = root / LOCK_FILE
    if not lock.is_file():
        return  # Prisma checks nothing when the lock file is absent
    provider = lock_file_provider(_read_text(lock, "lock file"))
    if provider != EXPECTED_PROVIDER:
        shown = provider if provider is not None else "<PROVIDER NOT FOUND>"
        raise MigrationFolderError(
            "P3019",
            f"P3019: the datasource provider `{EXPECTED_PROVIDER}` does not match the one in {lock}, `{shown}`; "
            "this migrations folder was made for another database",
        )


def read_migrations_dir(path: str | Path) -> list[LocalMigration]:
    root = Path(path)
    if not root.exists():
        raise MigrationFolderError("not_found", f"migrations directory {root} does not exist")
    if not root.is_dir():
        raise MigrationFolderError("not_a_directory", f"migrations directory {root} is not a directory")
    try:
        with os.scandir(root) as it:
            entries = [root / e.name for e in it if e.is_dir(follow_symlinks=False)]
    except PermissionError:
        raise MigrationFolderError("unreadable", f"cannot read migrations directory {root}: permission denied") from None
    except OSError as exc:
        raise MigrationFolderError("unreadable", f"cannot read migrations directory {root}: {exc.strerror}") from None
    check_lock_file(root)

    migrations: list[LocalMigration] = []
    for folder in sorted(entries, key=lambda e: prisma_order_key(e.name)):
        sql_path = folder / MIGRATION_FILE
        if not sql_path.exists():
            raise MigrationFolderError(
                "P3015",
                f"P3015: could not find the migration file at {sql_path}; "
                f"restore {MIGRATION_FILE} in {folder.name} or delete that directory",
            )
        migrations.append(
            LocalMigration(
                name=folder.name,
                sql=_read_text(sql_path, "migration file"),
                down_sql=_optional_text(folder / DOWN_FILE),
                verify_sql=_optional_text(folder / VERIFY_FILE),
            )
        )
    return migrations
