"""Reading a migrations folder from disk into the facts domain/prisma/folder_rules.py judges.

Contract:

    class FolderListing: root: Path, state: str, entries: list[RawEntry], lock_file: bytes | None
        state: "ok" | "missing" | "not_a_directory" | "unreadable"
        def problem(self) -> str | None        # one sentence when the folder itself was not read
    def scan_folder(path: str | Path) -> FolderListing

This is the only I/O around Prisma's folder rules and it decides nothing: it reports what is
there the way node's `fs` would see it. A folder that cannot be listed reads as empty, as it
does for Prisma; `state` lets the product say why it found nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from domain.prisma.folder_rules import LOCK_FILE, MIGRATION_FILE, RawEntry


@dataclass
class FolderListing:
    root: Path
    state: str
    entries: list[RawEntry] = field(default_factory=list)
    lock_file: bytes | None = None

    def problem(self) -> str | None:
        """Why the folder was read as empty, or None. Prisma says nothing in these cases."""
        if self.state == "ok":
            return None
        what = {
            "missing": "does not exist",
            "not_a_directory": "is not a directory",
            "unreadable": "cannot be read",
        }[self.state]
        return f"migrations directory {self.root} {what}; Prisma reads it as an empty folder"


def _read_file(path: str) -> tuple[bytes | None, str | None]:
    """Like node's readFile: follows symlinks; any failure is an error, never an exception.
    (Plain string paths: pathlib's overhead is most of the time on a 10,000-directory folder.)"""
    try:
        with open(path, "rb") as f:
            return f.read(), None
    except FileNotFoundError:
        return None, "missing"
    except IsADirectoryError:
        return None, "not_a_file"
    except OSError:
        return None, "unreadable"


def scan_folder(path: str | Path) -> FolderListing:
    root = Path(path)
    try:
        with os.scandir(root) as it:
            listed = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    except FileNotFoundError:
        return FolderListing(root, "missing")
    except NotADirectoryError:
        return FolderListing(root, "not_a_directory")
    except OSError:
        return FolderListing(root, "unreadable")
    entries = []
    for name, is_dir in listed:
        if not is_dir:
            entries.append(RawEntry(name, False))
            continue
        data, error = _read_file(os.path.join(root, name, MIGRATION_FILE))
        entries.append(RawEntry(name, True, data, error))
    lock, _ = _read_file(os.path.join(root, LOCK_FILE))
    return FolderListing(root, "ok", entries, lock)
