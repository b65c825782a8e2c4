"""Turning a migrations folder into the bundle a run carries: the exact SQL that is reviewed and run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from domain.models import (
    MAX_BUNDLE_BYTES,
    Blocker,
    BlockerCode,
    BundledMigration,
    MigrationBundle,
    UnreadableMigration,
)


class BundleTooLarge(ValueError):
    pass


BOM = "\ufeff"


def bundle_problems(migrations: Iterable[_Migration], runnable: Iterable[str] | None = None) -> list[Blocker]:
    """What makes a bundle unsafe to run, each a blocker of one sentence: a name listed twice (possible in a
    bundle built by hand: the run would mistake the second for the first), names that differ only
    in case (two folders on Linux, one on macOS/Windows checkouts), and a migration.sql starting
    with a byte order mark (PostgreSQL rejects it, Prisma would fail mid-deploy). `runnable`
    limits the BOM check to the migrations the run would execute (default: all)."""
    migrations = list(migrations)
    problems: list[Blocker] = []
    seen: set[str] = set()
    folded: dict[str, str] = {}
    for m in migrations:
        if m.name in seen:
            problems.append(Blocker(code=BlockerCode.duplicate_name, migration=m.name, message=(
                f"migration {m.name} appears more than once in the bundle; list each migration once")))
            continue
        seen.add(m.name)
        other = folded.setdefault(m.name.casefold(), m.name)
        if other != m.name:
            problems.append(Blocker(code=BlockerCode.case_duplicate_name, migration=m.name, message=(
                f"migrations {other} and {m.name} differ only in case: they are one folder on macOS and Windows "
                "checkouts and two on Linux, so the history would depend on the machine; rename one")))
    wanted = None if runnable is None else set(runnable)
    for m in migrations:
        if m.sql.startswith(BOM) and (wanted is None or m.name in wanted):
            problems.append(Blocker(code=BlockerCode.byte_order_mark, migration=m.name, message=(
                f"{m.name}/migration.sql starts with a UTF-8 byte order mark (BOM), which PostgreSQL rejects; "
                "save it as UTF-8 without BOM")))
    return problems


class _Migration(Protocol):
    name: str
    sql: str
    checksum: str
    down_sql: str | None
    verify_sql: str | None


class _Unreadable(Protocol):
    name: str
    reason: str | None


def build_bundle(migrations: Iterable[_Migration], *, revision: str | None, source: str | None,
                 unreadable: Iterable[_Unreadable] = (), folder_problem: str | None = None) -> MigrationBundle:
    """`unreadable`: directories without a readable migration.sql (domain.prisma.folder.read_folder),
    carried by name so the run sees the folder as Prisma does."""
    bundle = MigrationBundle(
        migrations=[
            BundledMigration(
                name=m.name, sql=m.sql, checksum=m.checksum, down_sql=m.down_sql, verify_sql=m.verify_sql
            )
            for m in migrations
        ],
        revision=revision,
        source=source,
        unreadable=[UnreadableMigration(name=u.name, reason=u.reason or "unreadable") for u in unreadable],
        folder_problem=folder_problem,
    )
    size = len(bundle.model_dump_json().encode())
    if size > MAX_BUNDLE_BYTES:
        biggest = sorted(bundle.migrations, key=lambda m: len(m.sql), reverse=True)[:3]
        raise BundleTooLarge(
            f"the migrations bundle is {size / 1_000_000:.1f} MB, over the {MAX_BUNDLE_BYTES / 1_000_000:.1f} MB "
            f"a Temporal payload allows; largest migrations: {', '.join(m.name for m in biggest)} "
            "(move bulk data loads out of migrations, or deploy a subset of the folder)"
        )
    return bundle
