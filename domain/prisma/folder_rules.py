"""What Prisma makes of a migrations folder: which entries are migrations, which it cannot read,
where `deploy` and `status` stop, and the lock file. Pure: the listing comes from
domain/prisma/folder_scan.py (or any caller that gathers the same facts).

Contract:

    class RawEntry:     name, is_directory, migration_sql: bytes | None, read_error: str | None
    class FolderEntry:  name, sql: str | None, reason: str | None; .prisma_stops_here, .checksum_bytes
    READ_ERRORS = ("missing", "not_a_file", "unreadable")     # Prisma: P3015 on reaching it
    P3015_MESSAGE, P3017_TEMPLATE, P3019_TEMPLATE, NOT_MANAGED_MESSAGE: str
    def folder_entries(raw: Iterable[RawEntry]) -> list[FolderEntry]            # Prisma's order
    def deploy_stop(entries, applied_names) -> FolderEntry | None
    def unreadable_pending(entries, applied_names) -> list[FolderEntry]
    def status_stop(entries, names_with_rows) -> FolderEntry | None
    def resolve_applied_error(entries, name) -> str | None
    def status_not_managed(entries, table_exists) -> bool
    def lock_file_provider(content: str) -> str
    def lock_file_error(lock_file: bytes | None, provider: str = "postgresql") -> str | None

Prisma 6.19.3's rules, each observed with the real CLI (tests/test_prisma_folder_rules.py):

- The CLI (`sc()` in prisma/build/index.js) lists the folder with `readdir(withFileTypes)`; any
  error there (missing folder, a file, no permission) gives an empty list. Only real
  directories count (not files, not symlinks to directories); hidden ones such as `.hidden`
  count, and so does a directory named `migration_lock.toml`. Each directory's
  `migration.sql` is read as UTF-8 (invalid bytes become U+FFFD); when it cannot be read
  (absent, a directory, no permission) the migration carries an error instead of a script.
- `deploy` (schema-engine `apply_migrations.rs`): lock file check (P3019), advisory lock,
  `_prisma_migrations` created or P3005, P3009 on a failed row; then every directory without a
  non-rolled-back row of its name is applied in order, and the first one without a readable
  script stops the run with P3015, after the earlier ones were applied. A directory without a
  script that does have such a row is never read, so it does not stop anything.
- `status` (`diagnose_migration_history.rs`) reads the script of every directory that has a
  row of its name in any state (to compare checksums): if one of them has no script, status
  itself fails with P3015. Directories without a row are listed as pending, script or not.
- `resolve --applied NAME` (`mark_migration_applied.rs`) answers P3017 ("could not be found")
  for a directory without a readable script.
- With no migrations and no `_prisma_migrations`, `status` says the database is not managed by
  Prisma Migrate (exit 1); `deploy` still creates an empty `_prisma_migrations` (exit 0), or
  fails with P3005 if the schema is not empty (domain/prisma/baseline.py).
- Lock file (`migrations_directory.rs`, `read_provider_from_lock_file`): read as UTF-8 with
  replacement; absent or unreadable (e.g. a directory): no check. Otherwise the first line
  (Rust `str::lines`: split at "\\n", one trailing "\\r" removed) that starts with `provider`,
  with every leading `provider = ` and all surrounding `"` removed, must equal the datasource
  provider; no such line reads `<PROVIDER NOT FOUND>`. A mismatch is P3019 for status, deploy
  and resolve alike.

Where Prisma would run a script that is not valid UTF-8 (with U+FFFD substitutions), the entry
has reason "not_utf8": the product refuses it rather than run something other than the file.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from domain.prisma.order import prisma_sorted

MIGRATION_FILE = "migration.sql"
LOCK_FILE = "migration_lock.toml"

READ_ERRORS = ("missing", "not_a_file", "unreadable")

P3015_MESSAGE = (
    "Could not find the migration file at migration.sql. Please delete the directory or restore the migration file."
)
P3017_TEMPLATE = (
    "The migration {name} could not be found. Please make sure that the migration exists, and that you included "
    'the whole name of the directory. (example: "20201207184859_initial_migration")'
)
P3019_TEMPLATE = (
    "The datasource provider `{provider}` specified in your schema does not match the one specified in the "
    "migration_lock.toml, `{found}`. Please remove your current migration directory and start a new migration "
    "history with prisma migrate dev. Read more: https://pris.ly/d/migrate-provider-switch"
)
NOT_MANAGED_MESSAGE = "The current database is not managed by Prisma Migrate."
PROVIDER_NOT_FOUND = "<PROVIDER NOT FOUND>"


@dataclass(frozen=True)
class RawEntry:
    """One name in the migrations folder, as gathered from the file system.

    `is_directory` is what node's Dirent.isDirectory() says (a symlink is not a directory).
    For directories, `migration_sql` holds the bytes of <name>/migration.sql, or is None with
    `read_error` one of READ_ERRORS."""

    name: str
    is_directory: bool
    migration_sql: bytes | None = None
    read_error: str | None = None


@dataclass(frozen=True)
class FolderEntry:
    """One migration as Prisma sees it. `sql` is None when `reason` says why."""

    name: str
    sql: str | None
    reason: str | None = None  # None, one of READ_ERRORS, or "not_utf8"

    @property
    def prisma_stops_here(self) -> bool:
        """Prisma's deploy fails with P3015 on reaching this directory unapplied."""
        return self.reason in READ_ERRORS

    @property
    def checksum_bytes(self) -> bytes | None:
        """The bytes Prisma hashes and runs (the file as is, BOM and CRLF included)."""
        return None if self.sql is None else self.sql.encode("utf-8")

    def explain(self) -> str:
        """One sentence for a person, naming the directory."""
        if self.reason is None:
            return f"{self.name}: {MIGRATION_FILE} is readable"
        what = {
            "missing": f"has no {MIGRATION_FILE}",
            "not_a_file": f"has a {MIGRATION_FILE} that is not a file",
            "unreadable": f"has a {MIGRATION_FILE} that cannot be read",
            "not_utf8": f"has a {MIGRATION_FILE} that is not valid UTF-8",
        }[self.reason]
        return f"directory {self.name} {what}"


def folder_entries(raw: Iterable[RawEntry]) -> list[FolderEntry]:
    """The migrations Prisma finds, in the order it applies them. Files and symlinks are dropped."""
    by_name: dict[str, FolderEntry] = {}
    for r in raw:
        if not r.is_directory:
            continue
        if r.migration_sql is None:
            reason = r.read_error if r.read_error in READ_ERRORS else "unreadable"
            by_name[r.name] = FolderEntry(r.name, None, reason)
            continue
        try:
            by_name[r.name] = FolderEntry(r.name, r.migration_sql.decode("utf-8"))
        except UnicodeDecodeError:
            by_name[r.name] = FolderEntry(r.name, None, "not_utf8")
    return [by_name[n] for n in prisma_sorted(by_name)]


def deploy_stop(entries: Iterable[FolderEntry], applied_names: Collection[str]) -> FolderEntry | None:
    """The directory where `prisma migrate deploy` fails with P3015, or None.

    `applied_names`: names with a `_prisma_migrations` row that is not rolled back. Every
    pending migration before the returned entry is applied by that deploy first."""
    for entry in entries:
        if entry.name not in applied_names and entry.prisma_stops_here:
            return entry
    return None


def unreadable_pending(entries: Iterable[FolderEntry], applied_names: Collection[str]) -> list[FolderEntry]:
    """Every pending directory Prisma cannot read: the first stops the next deploy, each of the
    others a later one. What `status` should tell a person before they deploy."""
    return [e for e in entries if e.name not in applied_names and e.prisma_stops_here]


def status_stop(entries: Iterable[FolderEntry], names_with_rows: Collection[str]) -> FolderEntry | None:
    """The directory on which `prisma migrate status` itself fails with P3015, or None.

    `names_with_rows`: names with any `_prisma_migrations` row (applied, failed or rolled back)."""
    for entry in entries:
        if entry.name in names_with_rows and entry.prisma_stops_here:
            return entry
    return None


def resolve_applied_error(entries: Iterable[FolderEntry], name: str) -> str | None:
    """Prisma's P3017 text when `resolve --applied name` cannot find a readable migration."""
    for entry in entries:
        if entry.name == name:
            return None if entry.sql is not None or entry.reason == "not_utf8" else P3017_TEMPLATE.format(name=name)
    return P3017_TEMPLATE.format(name=name)


def status_not_managed(entries: Collection[FolderEntry], table_exists: bool) -> bool:
    """No migrations and no `_prisma_migrations`: Prisma's status says "not managed" and exits 1."""
    return not entries and not table_exists


def _rust_lines(text: str) -> list[str]:
    """Rust's `str::lines`: split at "\\n", drop one "\\r" before it, no empty last line. A
    "\\r" that ends the text without a "\\n" stays (a bare "\\r" is no line ending)."""
    pieces = text.split("\n")
    last = pieces.pop()
    lines = [p[:-1] if p.endswith("\r") else p for p in pieces]
    if last:
        lines.append(last)
    return lines


def lock_file_provider(content: str) -> str:
    """The provider the schema engine reads from migration_lock.toml's text."""
    for line in _rust_lines(content):
        if line.startswith("provider"):
            while line.startswith("provider = "):
                line = line[len("provider = ") :]
            return line.strip('"')
    return PROVIDER_NOT_FOUND


def lock_file_error(lock_file: bytes | None, provider: str = "postgresql") -> str | None:
    """Prisma's P3019 text, or None. `lock_file`: the file's bytes; None when it is absent or
    could not be read as a file (Prisma then checks nothing)."""
    if lock_file is None:
        return None
    found = lock_file_provider(lock_file.decode("utf-8", "replace"))
    if found == provider:
        return None
    return P3019_TEMPLATE.format(provider=provider, found=found)
