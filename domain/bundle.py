"""Turning a migrations folder into the bundle a run carries (the exact SQL that is reviewed and
run), and a bundle too large for one Temporal payload into parts.

Contract:

    def build_bundle(migrations, *, revision, source, unreadable=(), folder_problem=None) -> MigrationBundle
    def pack(bundle) -> tuple[MigrationBundle, list[BundlePart]]   # inline (no parts) or header + parts
    def part_digest(migrations) -> str
    def check_part(part, expected: BundlePartDigest) -> str | None  # why a part is refused, or None
    def assemble(expected: Sequence[BundlePartDigest], parts) -> list[BundledMigration]   # BundleIncomplete
    def bundle_problems(migrations, runnable=None) -> list[Blocker]

A bundle up to MAX_BUNDLE_BYTES travels inline in the request, as it always has. A larger one is
sent as a header in the request (revision, source, and per part: index, migration count, first
and last name, size, digest) and the parts themselves right after the start (the `bundle_part`
update). A part is accepted only if its digest matches the header's and every migration's SQL
hashes to its Prisma checksum, so what arrives is exactly what the starter read; the same check
runs wherever parts are read back from history (activities, the audit). Pure: hashlib only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from domain.bundle_models import PART_BYTES
from domain.models import (
    MAX_BUNDLE_BYTES,
    Blocker,
    BlockerCode,
    BundledMigration,
    BundlePart,
    BundlePartDigest,
    MigrationBundle,
    UnreadableMigration,
)


class BundleTooLarge(ValueError):
    """One migration is larger than a Temporal payload holds."""


class BundleIncomplete(ValueError):
    """The parts of a bundle are missing or do not match its header (one sentence)."""


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
    """Every migration inline (pack() decides how it travels). `unreadable`: directories without a
    readable migration.sql (domain.prisma.folder.read_folder), carried by name so the run sees the
    folder as Prisma does."""
    return MigrationBundle(
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


def _sha(text: str | None) -> str:
    return "-" if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def part_digest(migrations: Iterable[BundledMigration]) -> str:
    """A digest of what a part holds: each migration's name, checksum, down.sql and verify.sql.
    (Its SQL is bound by its checksum, checked separately.) Independent of JSON formatting, so a
    starter and a worker of different versions agree."""
    h = hashlib.sha256()
    for m in migrations:
        h.update(f"{m.name}\t{m.checksum}\t{_sha(m.down_sql)}\t{_sha(m.verify_sql)}\n".encode("utf-8"))
    return h.hexdigest()


def _size(m: BundledMigration) -> int:
    return len(m.model_dump_json().encode())


def pack(bundle: MigrationBundle, *, inline_limit: int = MAX_BUNDLE_BYTES, part_bytes: int = PART_BYTES
         ) -> tuple[MigrationBundle, list[BundlePart]]:
    """The bundle as it travels: inline when it fits one payload, else a header and its parts.
    Raises BundleTooLarge when a single migration does not fit a payload on its own. (The limits
    are parameters for tests that want parts of a small bundle.)"""
    if len(bundle.model_dump_json().encode()) <= inline_limit:
        return bundle, []
    too_big = [m for m in bundle.migrations if _size(m) > MAX_BUNDLE_BYTES - 10_000]
    if too_big:
        m = max(too_big, key=_size)
        raise BundleTooLarge(
            f"migration {m.name} is {_size(m) / 1_000_000:.1f} MB with its down.sql and verify.sql, more than one "
            f"Temporal payload holds ({MAX_BUNDLE_BYTES / 1_000_000:.1f} MB): move bulk data loads out of migrations"
        )
    groups: list[list[BundledMigration]] = [[]]
    size = 0
    for m in bundle.migrations:
        if groups[-1] and size + _size(m) > part_bytes:
            groups.append([])
            size = 0
        groups[-1].append(m)
        size += _size(m)
    parts = [BundlePart(index=i, migrations=g) for i, g in enumerate(groups)]
    header = bundle.model_copy(update={"migrations": [], "parts": [
        BundlePartDigest(index=p.index, count=len(p.migrations), first=p.migrations[0].name, last=p.migrations[-1].name,
                         size=len(p.model_dump_json().encode()), digest=part_digest(p.migrations))
        for p in parts]})
    return header, parts


def check_part(part: BundlePart, expected: BundlePartDigest) -> str | None:
    """Why `part` is not the one the request announced, or None."""
    where = f"bundle part {part.index}"
    if part.index != expected.index:
        return f"{where} arrived where part {expected.index} was expected"
    if len(part.migrations) != expected.count:
        return f"{where} holds {len(part.migrations)} migrations, the request announced {expected.count}"
    if part.migrations[0].name != expected.first or part.migrations[-1].name != expected.last:
        return (f"{where} runs from {part.migrations[0].name} to {part.migrations[-1].name}, the request announced "
                f"{expected.first} to {expected.last}")
    for m in part.migrations:
        if hashlib.sha256(m.sql.encode("utf-8")).hexdigest() != m.checksum:
            return f"{where}: the SQL of {m.name} does not match its checksum {m.checksum[:12]}…"
    if part_digest(part.migrations) != expected.digest:
        return f"{where} does not match the digest the request announced"
    return None


def assemble(expected: Sequence[BundlePartDigest], parts: Mapping[int, BundlePart] | Iterable[BundlePart]
             ) -> list[BundledMigration]:
    """Every migration of a bundle sent in parts, in order, each part checked against the header's
    `expected` digests (`bundle.parts`). Raises BundleIncomplete naming the first problem."""
    by_index = parts if isinstance(parts, Mapping) else {p.index: p for p in parts}
    out: list[BundledMigration] = []
    for digest in expected:
        part = by_index.get(digest.index)
        if part is None:
            raise BundleIncomplete(f"bundle part {digest.index} of {len(expected)} is missing")
        problem = check_part(part, digest)
        if problem:
            raise BundleIncomplete(problem)
        out.extend(part.migrations)
    return out
