"""cli.git_changes on git repositories built from each real corpus history: the folder sits in
a subdirectory whose path has spaces, is committed, then changed the ways a pull request does."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cli.git_changes import GitChangesError, migration_changes

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
HISTORIES = ["documenso", "formbricks", "rallly", "hoppscotch"]
NEW = "29990101000000_add two columns"
NEW_SQL = 'ALTER TABLE "Thing" ADD COLUMN "x" TEXT;\n'

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def repo_with_history(tmp_path: Path, history: str) -> tuple[Path, Path, str]:
    """(repository, migrations dir inside it, the commit holding the history)."""
    source = CORPUS / history / "migrations"
    if not source.is_dir():
        pytest.fail(f"the corpus is missing: {source}")
    repo = tmp_path / "my repo"
    mdir = repo / "packages" / "data base" / "prisma" / "migrations"
    shutil.copytree(source, mdir)
    (repo / "README.md").write_text("app\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "history")
    return repo, mdir, git(repo, "rev-parse", "HEAD")


def add_migration(mdir: Path, name: str = NEW) -> None:
    (mdir / name).mkdir()
    (mdir / name / "migration.sql").write_text(NEW_SQL)


def an_old_migration(mdir: Path) -> str:
    return sorted(p.name for p in mdir.iterdir() if (p / "migration.sql").is_file())[3]


@pytest.mark.parametrize("history", HISTORIES)
def test_one_new_migration_committed_on_a_branch(tmp_path: Path, history: str) -> None:
    repo, mdir, base = repo_with_history(tmp_path, history)
    assert migration_changes(mdir, "main").changed == frozenset()  # nothing changed yet
    git(repo, "checkout", "-q", "-b", "feature")
    add_migration(mdir)
    (repo / "README.md").write_text("app, changed\n")  # outside the folder: not a migration
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "add a migration")
    changes = migration_changes(mdir, "main")
    assert changes.changed == {NEW} and changes.removed == frozenset()
    assert migration_changes(mdir, base).changed == {NEW}
    assert migration_changes(mdir, "HEAD").changed == frozenset()


@pytest.mark.parametrize("history", HISTORIES)
def test_old_migration_modified_and_committed(tmp_path: Path, history: str) -> None:
    repo, mdir, _ = repo_with_history(tmp_path, history)
    old = an_old_migration(mdir)
    with (mdir / old / "migration.sql").open("a") as f:
        f.write("-- edited after the fact\n")
    git(repo, "commit", "-q", "-am", "edit an old migration")
    assert migration_changes(mdir, "HEAD~1").changed == {old}


def test_staged_only_untracked_only_and_unstaged(tmp_path: Path) -> None:
    repo, mdir, _ = repo_with_history(tmp_path, "documenso")
    add_migration(mdir)
    assert migration_changes(mdir, "HEAD").changed == {NEW}  # untracked
    git(repo, "add", "--", str(mdir / NEW))
    assert migration_changes(mdir, "HEAD").changed == {NEW}  # staged, not committed

    git(repo, "reset", "-q", "--hard")  # back to the committed history (drops the staged file)
    assert not (mdir / NEW).exists()
    assert migration_changes(mdir, "HEAD").changed == frozenset()
    old = an_old_migration(mdir)
    (mdir / old / "down.sql").write_text("SELECT 1;\n")  # a new file in an old migration
    assert migration_changes(mdir, "HEAD").changed == {old}
    (mdir / old / "down.sql").unlink()
    with (mdir / old / "migration.sql").open("a") as f:
        f.write("-- unstaged edit\n")
    assert migration_changes(mdir, "HEAD").changed == {old}


def test_ignored_files_and_files_beside_the_directories_do_not_count(tmp_path: Path) -> None:
    repo, mdir, _ = repo_with_history(tmp_path, "hoppscotch")
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore logs")
    old = an_old_migration(mdir)
    (mdir / old / "apply.log").write_text("noise\n")
    (mdir / "migration_lock.toml").write_text('provider = "postgresql"\n# touched\n')
    (mdir / "NOTES.md").write_text("notes\n")
    assert migration_changes(mdir, "HEAD").changed == frozenset()


def test_deleted_and_renamed_directories(tmp_path: Path) -> None:
    repo, mdir, _ = repo_with_history(tmp_path, "rallly")
    old = an_old_migration(mdir)
    git(repo, "mv", str(mdir / old), str(mdir / f"{old}_renamed"))
    changes = migration_changes(mdir, "HEAD")
    assert changes.changed == {f"{old}_renamed"} and changes.removed == {old}


def test_names_with_unusual_characters(tmp_path: Path) -> None:
    repo, mdir, _ = repo_with_history(tmp_path, "hoppscotch")
    names = ["29990101000000_tab\there", "29990101000001_ünïcode “quotes”", '29990101000002_back\\slash"quote']
    for name in names:
        add_migration(mdir, name)
    assert migration_changes(mdir, "HEAD").changed == set(names)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "odd names")
    assert migration_changes(mdir, "HEAD~1").changed == set(names)


def test_clear_errors(tmp_path: Path) -> None:
    repo, mdir, _ = repo_with_history(tmp_path, "hoppscotch")
    with pytest.raises(GitChangesError) as unknown:
        migration_changes(mdir, "origin/does-not-exist")
    message = str(unknown.value)
    assert "origin/does-not-exist" in message and "unknown" in message and "\n" not in message
    with pytest.raises(GitChangesError, match="not a git ref"):
        migration_changes(mdir, "--output=/tmp/x")

    outside = tmp_path / "outside" / "migrations"
    shutil.copytree(CORPUS / "hoppscotch" / "migrations", outside)
    env_ceiling = os.environ.get("GIT_CEILING_DIRECTORIES")
    os.environ["GIT_CEILING_DIRECTORIES"] = str(tmp_path)  # do not find a repository above tmp
    try:
        with pytest.raises(GitChangesError, match="not inside a git repository"):
            migration_changes(outside, "main")
    finally:
        if env_ceiling is None:
            os.environ.pop("GIT_CEILING_DIRECTORIES")
        else:
            os.environ["GIT_CEILING_DIRECTORIES"] = env_ceiling
    with pytest.raises(GitChangesError, match="does not exist"):
        migration_changes(tmp_path / "nowhere", "main")


@pytest.mark.parametrize("history", ["documenso", "formbricks"])
def test_added_is_what_the_base_does_not_have(tmp_path: Path, history: str) -> None:
    repo, mdir, base = repo_with_history(tmp_path, history)
    old = an_old_migration(mdir)
    with (mdir / old / "migration.sql").open("a") as f:
        f.write("-- edited\n")
    add_migration(mdir)
    changes = migration_changes(mdir, base)
    assert changes.changed == {old, NEW} and changes.added == {NEW}
    assert changes.at_base == {p.name for p in mdir.iterdir() if p.is_dir()} - {NEW}
