"""Turning a migrations folder into the bundle a run carries: the exact SQL that is reviewed and run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from domain.models import MAX_BUNDLE_BYTES, BundledMigration, MigrationBundle


class BundleTooLarge(ValueError):
    pass


class _Migration(Protocol):
    name: str
    sql: str
    checksum: str
    down_sql: str | None
    verify_sql: str | None


def build_bundle(migrations: Iterable[_Migration], *, revision: str | None, source: str | None) -> MigrationBundle:
    bundle = MigrationBundle(
        migrations=[
            BundledMigration(
                name=m.name, sql=m.sql, checksum=m.checksum, down_sql=m.down_sql, verify_sql=m.verify_sql
            )
            for m in migrations
        ],
        revision=revision,
        source=source,
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
