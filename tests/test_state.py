"""The state engine on hand-built ledgers: every state, the flags, the problems, and its speed."""

import time
import uuid
from datetime import datetime, timedelta, timezone

from domain.models import BundledMigration
from domain.prisma.checksum import sha256_hex
from domain.prisma.diagnosis import MigrationState, diagnose
from domain.prisma.folder import LocalMigration
from domain.prisma.ledger import LedgerRow, LedgerSnapshot

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
_clock = iter(range(10**9))


def local(name: str, sql: str | None = None) -> LocalMigration:
    return LocalMigration(name=name, sql=sql if sql is not None else f"-- {name}\nSELECT 1;\n")


def row(name: str, checksum: str, kind: str = "applied") -> LedgerRow:
    started = T0 + timedelta(seconds=next(_clock))
    return LedgerRow(
        id=str(uuid.uuid4()),
        checksum=checksum,
        migration_name=name,
        started_at=started,
        finished_at=started + timedelta(milliseconds=5) if kind in ("applied", "rolled_back_after_finish") else None,
        rolled_back_at=started + timedelta(seconds=1) if kind.startswith("rolled_back") else None,
        logs="boom" if kind in ("failed", "rolled_back") else None,
        applied_steps_count=1 if kind == "applied" else 0,
    )


def snap(*rows: LedgerRow, table: bool = True, others: tuple[str, ...] = ()) -> LedgerSnapshot:
    return LedgerSnapshot(table_exists=table, rows=list(rows), other_tables=list(others))


def states(diag) -> dict[str, str]:
    return {m.name: m.state.value for m in diag.migrations}


A, B, C = local("20240101000000_a"), local("20240102000000_b"), local("20240103000000_c")


def test_empty_database_has_everything_pending() -> None:
    d = diagnose([A, B], snap(table=False))
    assert states(d) == {A.name: "pending", B.name: "pending"}
    assert not d.needs_baseline and d.problems == [] and not d.needs_resolution and d.has_pending
    assert d.summary == {"applied": 0, "pending": 2, "failed": 0, "modified": 0, "missing_locally": 0}
    assert not any(m.out_of_order for m in d.migrations)


def test_tables_without_ledger_need_a_baseline() -> None:
    d = diagnose([B, A], snap(table=False, others=("customers", "users")))
    assert d.needs_baseline and d.needs_resolution
    assert "P3005" in d.problems[0] and "customers" in d.problems[0]
    assert f"resolve --applied {A.name}" in d.problems[0]  # the first migration in Prisma's order


def test_applied_and_up_to_date() -> None:
    d = diagnose([A, B], snap(row(A.name, A.checksum), row(B.name, B.checksum)))
    assert states(d) == {A.name: "applied", B.name: "applied"}
    assert d.problems == [] and not d.needs_resolution and not d.has_pending
    assert d.migrations[0].checksum_db == d.migrations[0].checksum_local == A.checksum


def test_edited_after_applying_is_modified() -> None:
    edited = local(A.name, A.sql + "ALTER TABLE x ADD COLUMN y int;\n")
    d = diagnose([edited], snap(row(A.name, A.checksum)))
    (m,) = d.migrations
    assert m.state == MigrationState.modified and m.checksum_db == A.checksum and m.checksum_local == edited.checksum
    assert d.needs_resolution and A.name in d.problems[0]


def test_line_endings_and_legacy_checksums_are_not_edits() -> None:
    crlf = local(A.name, A.sql.replace("\n", "\r\n"))
    legacy_sql = next(s for s in (f"SELECT {i};\n" for i in range(500)) if len(_unpadded(s)) < 64)
    legacy = local(B.name, legacy_sql)
    d = diagnose([crlf, legacy], snap(row(A.name, A.checksum), row(B.name, _unpadded(legacy_sql))))
    assert states(d) == {A.name: "applied", B.name: "applied"}


def _unpadded(sql: str) -> str:
    import hashlib

    return "".join(f"{b:x}" for b in hashlib.sha256(sql.encode()).digest())


def test_failed_row_is_failed_and_blocks() -> None:
    failed = row(B.name, B.checksum, "failed")
    d = diagnose([A, B], snap(row(A.name, A.checksum), failed))
    assert states(d) == {A.name: "applied", B.name: "failed"}
    assert d.migrations[1].attempts == [failed]
    assert d.needs_resolution and any("P3009" in p and B.name in p for p in d.problems)


def test_failed_wins_over_an_applied_row_of_the_same_name() -> None:
    d = diagnose([A], snap(row(A.name, A.checksum), row(A.name, A.checksum, "failed")))
    assert states(d) == {A.name: "failed"}
    assert any("finished row and an unfinished one" in p for p in d.problems)


def test_rolled_back_attempts_make_it_pending_again_and_stay_as_history() -> None:
    r1, r2 = row(B.name, "old", "rolled_back"), row(B.name, "old", "rolled_back")
    d = diagnose([A, B], snap(row(A.name, A.checksum), r1, r2))
    assert states(d) == {A.name: "applied", B.name: "pending"}
    assert d.migrations[1].attempts == [r1, r2] and not d.migrations[1].out_of_order
    assert not d.needs_resolution and d.has_pending


def test_fixed_and_reapplied_after_rollback_is_applied() -> None:
    # fail -> resolve --rolled-back -> fix the file -> deploy: the new row is the one that counts
    d = diagnose([B], snap(row(B.name, "checksum-of-the-broken-file", "rolled_back"), row(B.name, B.checksum)))
    assert states(d) == {B.name: "applied"} and len(d.migrations[0].attempts) == 2


def test_phantom_is_missing_locally_and_sorted_in() -> None:
    phantom = "20240102120000_hotfix"
    d = diagnose([A, C], snap(row(A.name, A.checksum), row(phantom, "abc"), row(C.name, C.checksum)))
    assert [m.name for m in d.migrations] == [A.name, phantom, C.name]
    assert states(d)[phantom] == "missing_locally" and d.migrations[1].checksum_local is None
    assert d.migrations[1].checksum_db == "abc"
    assert d.needs_resolution and any("phantom" in p and phantom in p for p in d.problems)


def test_phantom_in_failed_or_rolled_back_state() -> None:
    d = diagnose([], snap(row("x_failed", "c1", "failed"), row("y_gone", "c2", "rolled_back")))
    assert states(d) == {"x_failed": "missing_locally", "y_gone": "missing_locally"}
    assert any("recorded as failed" in p for p in d.problems)
    assert any("recorded as rolled back" in p for p in d.problems)


def test_out_of_order_pending_before_the_last_applied() -> None:
    # The incident's shape: a phantom applied later than a pending local migration.
    phantom = "20240102120000_hotfix"
    d = diagnose([A, B, C], snap(row(A.name, A.checksum), row(phantom, "abc")))
    by = {m.name: m for m in d.migrations}
    assert by[B.name].state == MigrationState.pending and by[B.name].out_of_order
    assert by[C.name].state == MigrationState.pending and not by[C.name].out_of_order
    assert any(B.name in p and "out of order" in p for p in d.problems)


def test_failed_later_migration_does_not_make_earlier_pending_out_of_order() -> None:
    d = diagnose([A, B, C], snap(row(A.name, A.checksum), row(C.name, C.checksum, "failed")))
    assert not any(m.out_of_order for m in d.migrations)


def test_duplicate_unfinished_rows_are_reported() -> None:
    r1, r2 = row(B.name, B.checksum, "failed"), row(B.name, B.checksum, "failed")
    d = diagnose([B], snap(r1, r2))
    assert states(d) == {B.name: "failed"}
    dup = [p for p in d.problems if "2 unfinished rows" in p]
    assert dup and r1.id in dup[0] and r2.id in dup[0]


def test_bundled_migrations_are_accepted() -> None:
    bundle = [BundledMigration(name=A.name, sql=A.sql, checksum=sha256_hex(A.sql.encode()))]
    d = diagnose(bundle, snap(row(A.name, A.checksum)))
    assert states(d) == {A.name: "applied"}
    crlf = BundledMigration(name=A.name, sql=A.sql.replace("\n", "\r\n"), checksum="whatever")
    assert states(diagnose([crlf], snap(row(A.name, A.checksum)))) == {A.name: "applied"}


def test_summary_counts_every_state() -> None:
    d = diagnose(
        [A, B, C, local("20240104000000_d")],
        snap(row(A.name, A.checksum), row(B.name, "other"), row(C.name, C.checksum, "failed"), row("zz", "q")),
    )
    assert d.summary == {"applied": 1, "pending": 1, "failed": 1, "modified": 1, "missing_locally": 1}


def test_ten_thousand_migrations_in_well_under_a_second() -> None:
    migs = [LocalMigration(name=f"2024{i:010d}_step_{i}", sql=f"SELECT {i};\n") for i in range(10_000)]
    rows = [row(m.name, m.checksum) for m in migs[:9_000]]
    rows += [row(f"2024{i:010d}_phantom", "c") for i in range(9_000, 9_010)]
    t0 = time.perf_counter()
    d = diagnose(migs, snap(*rows))
    elapsed = time.perf_counter() - t0
    assert d.summary["applied"] == 9_000 and d.summary["pending"] == 1_000 and d.summary["missing_locally"] == 10
    # pending 9000..9008 sort before the last phantom (9009_phantom < 9009_step_9009)
    assert sum(m.out_of_order for m in d.migrations) == 9
    assert elapsed < 0.8, f"diagnose took {elapsed:.2f}s"
