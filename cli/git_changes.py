"""Which migration directories a change touches, for `starter.py lint DIR --base REF`.

Contract:

    class GitChangesError(Exception)          # str(e): one sentence for the user
    class MigrationChanges:  changed: frozenset[str], removed: frozenset[str], at_base: frozenset[str]
    def migration_changes(migrations_dir: str | Path, base_ref: str) -> MigrationChanges

A migration directory counts as changed when any file under it differs between the tree of
`base_ref` and the working tree: committed since REF, staged, modified but not staged, or not
tracked at all (ignored files excepted). That is the question a pull-request check asks ("what
does this change add or alter?"), so old findings in untouched migrations stay out of it.
`removed` are directories that differ but no longer exist in the working tree (deleted since
REF); they cannot be linted, but a caller may want to say so. `at_base` are the migration
directories in REF's tree: a changed one not among them was added by the change.

In CI, pass the merge base of the pull request (`git merge-base origin/main HEAD`), or the
base commit the CI system names: with the tip of a base branch that has moved on, migrations
merged there since would show up as `removed`.

The migrations directory may be anywhere inside the repository, and paths may contain spaces
or any byte: git is asked for NUL-separated names relative to the directory, and names are
decoded like os.listdir does (surrogate escapes), so they match the folder scan.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_GIT_TIMEOUT_S = 120


class GitChangesError(Exception):
    """`--base` cannot be answered; the message says why in one sentence."""


@dataclass(frozen=True)
class MigrationChanges:
    changed: frozenset[str]
    removed: frozenset[str]
    at_base: frozenset[str] = frozenset()

    @property
    def added(self) -> frozenset[str]:
        return self.changed - self.at_base


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    git = shutil.which("git")
    if git is None:
        raise GitChangesError("git is not installed, so --base cannot tell which migrations changed")
    # C locale: git's own messages are not shown to the user but must not vary. No optional
    # locks: `git diff` may otherwise rewrite the index while a developer's git runs.
    env = {**os.environ, "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
    try:
        return subprocess.run(
            [git, *args], cwd=cwd, env=env, capture_output=True, timeout=_GIT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise GitChangesError(f"git did not answer within {_GIT_TIMEOUT_S} s in {cwd}") from None


def _names(output: bytes) -> set[str]:
    """First path component of each NUL-separated path: the migration directory's name.
    Files directly in the migrations folder (migration_lock.toml, README.md) are no migration."""
    names = set()
    for raw in output.split(b"\0"):
        if b"/" in raw:
            names.add(os.fsdecode(raw.split(b"/", 1)[0]))
    return names


def migration_changes(migrations_dir: str | Path, base_ref: str) -> MigrationChanges:
    root = Path(migrations_dir)
    if not root.is_dir():
        raise GitChangesError(f"migrations directory {root} does not exist or is not a directory")
    top = _git(root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise GitChangesError(f"{root} is not inside a git repository, so --base cannot tell which migrations changed")
    if base_ref.startswith("-") or not base_ref.strip():
        raise GitChangesError(f"{base_ref!r} is not a git ref")
    commit = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{base_ref}^{{commit}}")
    if commit.returncode != 0:
        where = os.fsdecode(top.stdout.strip())
        raise GitChangesError(
            f"git ref {base_ref!r} is unknown in the repository at {where} "
            f"(in a shallow CI checkout, fetch it first: git fetch origin {base_ref})"
        )
    sha = commit.stdout.decode().strip()
    # Tracked paths: REF's tree against the working tree (commits since REF, staged and
    # unstaged edits, deletions). --relative limits to this directory and prints paths from it.
    tracked = _git(root, "diff", "--name-only", "-z", "--no-renames", "--no-ext-diff", "--relative", sha, "--", ".")
    if tracked.returncode != 0:
        raise GitChangesError(f"git diff against {base_ref!r} failed in {root}: {_first_line(tracked.stderr)}")
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", ".")
    if untracked.returncode != 0:
        raise GitChangesError(f"git ls-files failed in {root}: {_first_line(untracked.stderr)}")
    names = _names(tracked.stdout) | _names(untracked.stdout)
    present = frozenset(n for n in names if (root / n).is_dir())
    base_tree = _git(root, "ls-tree", "-d", "-z", "--name-only", sha, "--", "./")
    if base_tree.returncode != 0:
        raise GitChangesError(f"git ls-tree of {base_ref!r} failed in {root}: {_first_line(base_tree.stderr)}")
    at_base = frozenset(os.fsdecode(n) for n in base_tree.stdout.split(b"\0") if n)
    return MigrationChanges(changed=present, removed=frozenset(names - present), at_base=at_base)


def _first_line(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else "no message"
