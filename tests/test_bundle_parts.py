"""Bundles too large for one Temporal payload (domain/bundle.py): split into parts that each fit,
announced by digest in the request, refused when anything differs from what was announced."""

from __future__ import annotations

import pytest

from domain.bundle import BundleIncomplete, BundleTooLarge, assemble, build_bundle, check_part, pack
from domain.bundle_models import MAX_BUNDLE_BYTES, PART_BYTES
from tests.helpers import migration

COMMENT = "-- " + "x" * 2000 + "\n"


def big_bundle(n: int = 1500):
    migs = [migration(f"2024{i:010d}_m{i}", f"{COMMENT}CREATE TABLE t{i} (id int);\n",
                      down=f"DROP TABLE t{i};\n" if i % 2 else None) for i in range(n)]
    return build_bundle(migs, revision="abc", source="tests"), migs


def test_a_small_bundle_travels_inline_as_before() -> None:
    bundle, migs = big_bundle(10)
    header, parts = pack(bundle)
    assert parts == [] and header is bundle and header.migrations == migs and not header.in_parts


def test_a_large_bundle_is_split_into_parts_that_each_fit_a_payload() -> None:
    bundle, migs = big_bundle()
    header, parts = pack(bundle)
    assert len(bundle.model_dump_json()) > MAX_BUNDLE_BYTES
    assert header.migrations == [] and header.in_parts and header.count == len(migs) == 1500
    assert len(header.model_dump_json()) < 10_000  # the request itself stays small
    assert all(len(p.model_dump_json().encode()) <= PART_BYTES + 10_000 for p in parts)
    assert [m.name for p in parts for m in p.migrations] == [m.name for m in migs]  # Prisma's order kept
    assert [d.size for d in header.parts] == [len(p.model_dump_json().encode()) for p in parts]
    assert assemble(header.parts, parts) == migs
    assert header.last_name == migs[-1].name and header.revision == "abc"


def test_a_part_that_differs_from_the_announcement_is_refused() -> None:
    header, parts = pack(big_bundle()[0])
    first, digest = parts[0], header.parts[0]
    assert check_part(first, digest) is None
    edited = first.model_copy(deep=True)
    edited.migrations[3].sql += "DROP TABLE users;\n"  # SQL no longer matches its checksum
    assert "does not match its checksum" in check_part(edited, digest)
    resummed = edited.model_copy(deep=True)
    resummed.migrations[3] = migration(edited.migrations[3].name, edited.migrations[3].sql)  # checksum recomputed
    assert check_part(resummed, digest) == "bundle part 0 does not match the digest the request announced"
    other_down = first.model_copy(deep=True)
    other_down.migrations[1].down_sql = "SELECT 1;"
    assert "digest" in check_part(other_down, digest)
    short = first.model_copy(update={"migrations": first.migrations[:-1]})
    assert "holds" in check_part(short, digest)
    assert "arrived where part 1" in check_part(first, header.parts[1])
    with pytest.raises(BundleIncomplete, match="bundle part 1 of"):
        assemble(header.parts, [parts[0], *parts[2:]])


def test_a_single_migration_too_large_for_a_payload_is_named() -> None:
    huge = migration("20240101000000_bulk_load", "INSERT INTO t VALUES ('" + "x" * (MAX_BUNDLE_BYTES + 1000) + "');\n")
    small = migration("20240102000000_ok", "SELECT 1;\n")
    with pytest.raises(BundleTooLarge, match="migration 20240101000000_bulk_load is 1.5 MB"):
        pack(build_bundle([huge, small], revision=None, source=None))
