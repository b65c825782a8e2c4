"""The plan (pure): actions per migration state and evidence, blockers, risk, fingerprint."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from domain.facts import EnvironmentPolicy, PreflightFacts, SchemaFacts, SchemaState
from domain.fingerprint import ledger_digest
from domain.models import Action, BlockerCode, DeployPlan, Operation, PlannedMigration, RunMarks, Stage
from domain.plan import build_plan, decide
from domain.prisma.diagnosis import diagnose
from domain.prisma.ledger import LedgerRow, LedgerSnapshot
from domain.schema import Column, EffectsVerdict, MigrationEffects, ObjectKind, ObjectRef, Schema, SchemaModel, Table
from domain.schema import compare, migration_effects
from domain.schema.replay import ReplayFailure, replay_sequence
from domain.sql.rules import analyze_migration
from domain.stages import run_stages
from tests.helpers import migration, request

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)

INIT = migration("20240101000000_init", 'CREATE TABLE "t" ("key" TEXT PRIMARY KEY, "v" INT);')
ADD = migration("20240102000000_add", 'CREATE TABLE "u" ("id" INT);', down='DROP TABLE "u";')
FILL = migration("20240103000000_fill", """INSERT INTO "t" ("key", "v") VALUES ('a', 1) ON CONFLICT ("key") DO NOTHING;""")
UPD = migration("20240104000000_upd", 'ALTER TABLE "t" ADD COLUMN "w" INT;\nUPDATE "t" SET "w" = 1;')


def row(name: str, checksum: str, *, finished: bool = True, rolled_back: bool = False, minutes: int = 0,
        row_id: str | None = None, logs: str | None = None) -> LedgerRow:
    at = T0 + timedelta(minutes=minutes)
    return LedgerRow(id=row_id or f"id-{name}-{minutes}", checksum=checksum, finished_at=at if finished else None,
                     migration_name=name, logs=logs if not finished else None,
                     rolled_back_at=at if rolled_back else None, started_at=at,
                     applied_steps_count=1 if finished else 0)


def snap(*rows: LedgerRow, table: bool = True, others: tuple[str, ...] = ()) -> LedgerSnapshot:
    return LedgerSnapshot(table_exists=table, rows=list(rows), other_tables=list(others))


def plan_for(migs, snapshot, *, evidence=None, operation=Operation.full, required=None):
    req = request("prod", list(migs), operation=operation)
    analyses = {m.name: analyze_migration(m.name, m.sql) for m in migs}
    return build_plan(req, diagnose(req.bundle.migrations, snapshot), analyses, evidence or {}, snapshot=snapshot,
                      required_approvals=required or {"low": 1, "medium": 1, "high": 2})


def actions(plan) -> dict[str, Action]:
    return {m.name: m.action for m in plan.migrations}


# Schema models built by hand: table t (key, v) before UPD, with its column w after it.
PUBLIC = Schema(ref=ObjectRef.for_schema("public"), owner="migrator")
T = ObjectRef.of(ObjectKind.table, "public", "t")


def model(*columns: tuple[str, str]) -> SchemaModel:
    return SchemaModel(schemas=(PUBLIC,), tables=(Table(ref=T, owner="migrator"),),
                       columns=tuple(Column(ref=T.child(ObjectKind.column, n), type=ty) for n, ty in columns))


BEFORE = model(("key", "text"), ("v", "integer"))
AFTER = model(("key", "text"), ("v", "integer"), ("w", "integer"))


def effects(live: SchemaModel) -> MigrationEffects:
    return migration_effects(BEFORE, AFTER, live)


def absent(name: str) -> MigrationEffects:
    return effects(BEFORE)


def test_incident_shape_pending_failed_and_phantom() -> None:
    phantom = row("20240102500000_phantom", "f" * 64, minutes=1)
    s = snap(row(INIT.name, INIT.checksum), phantom, row(FILL.name, FILL.checksum, finished=False, minutes=2, logs="boom"))
    plan = plan_for([INIT, ADD, FILL], s, evidence={FILL.name: absent(FILL.name)})
    assert actions(plan) == {
        INIT.name: Action.already_applied,
        phantom.migration_name: Action.leave_phantom,
        ADD.name: Action.apply,
        FILL.name: Action.reapply,
    }
    assert plan.blockers == []
    by = {m.name: m for m in plan.migrations}
    assert "out of order" in by[ADD.name].reason  # ADD sorts before the applied phantom
    assert by[ADD.name].rollback == "down.sql" and by[ADD.name].rollback_sql == ADD.down_sql
    assert by[FILL.name].rollback == "derived" and "DELETE" in by[FILL.name].rollback_sql
    assert by[FILL.name].evidence == ["none of its effects are in the database (1 object as before it)"]
    assert by[FILL.name].effects == EffectsVerdict.none
    assert any("phantom" in n for n in plan.notes)
    assert run_stages(plan) == [Stage.resolve, Stage.deploy, Stage.verify]


def test_failed_migration_decisions_follow_the_schema_evidence() -> None:
    failed = row(UPD.name, UPD.checksum, finished=False, logs="x")
    base = [row(INIT.name, INIT.checksum), failed]
    # not idempotent (ALTER without IF NOT EXISTS) and column w there with another type: a person decides
    other = effects(model(("key", "text"), ("v", "integer"), ("w", "text")))
    plan = plan_for([INIT, UPD], snap(*base), evidence={UPD.name: other})
    assert actions(plan)[UPD.name] == Action.needs_human
    assert [b.code for b in plan.blockers] == [BlockerCode.failed_needs_human]
    assert plan.blockers[0].migration == UPD.name
    assert "column public.t.w differs: expected integer, live has text" in plan.blockers[0].message
    assert not any("up to date" in note for note in plan.notes)  # blocked is not "nothing to do"
    # every effect present with the expected definition: resolve --applied, never re-run
    plan = plan_for([INIT, UPD], snap(*base), evidence={UPD.name: effects(AFTER)})
    assert actions(plan)[UPD.name] == Action.resolve_applied and plan.blockers == []
    assert run_stages(plan) == [Stage.resolve, Stage.verify]
    # nothing of it there (its transaction rolled back): re-run it
    plan = plan_for([INIT, UPD], snap(*base), evidence={UPD.name: effects(BEFORE)})
    assert actions(plan)[UPD.name] == Action.reapply and plan.blockers == []
    # no evidence at all: not safe
    plan = plan_for([INIT, UPD], snap(*base))
    assert actions(plan)[UPD.name] == Action.needs_human
    # a data-only migration: the schema cannot tell
    plan = plan_for([INIT, UPD], snap(*base), evidence={UPD.name: migration_effects(BEFORE, BEFORE, BEFORE)})
    assert actions(plan)[UPD.name] == Action.needs_human and "cannot show whether it ran" in plan.blockers[0].message


def test_idempotent_failed_migration_is_reapplied_even_with_some_effects_present() -> None:
    s = snap(row(INIT.name, INIT.checksum), row(FILL.name, FILL.checksum, finished=False, logs="x"))
    plan = plan_for([INIT, FILL], s, evidence={FILL.name: effects(AFTER)})
    assert actions(plan)[FILL.name] == Action.reapply


def test_blockers_modified_baseline_duplicates_and_migrate_over_failed() -> None:
    plan = plan_for([INIT], snap(row(INIT.name, "0" * 64)))
    assert actions(plan)[INIT.name] == Action.needs_human
    assert plan.blockers[0].code == BlockerCode.modified and "modified after it was applied" in plan.blockers[0].message

    plan = plan_for([INIT], snap(table=False, others=("users",)))
    assert plan.blockers[0].code == BlockerCode.needs_baseline and "P3005" in plan.blockers[0].message

    dup = snap(row(INIT.name, INIT.checksum), row(FILL.name, FILL.checksum, finished=False, minutes=1, logs="a"),
               row(FILL.name, FILL.checksum, finished=False, minutes=2, logs="b"))
    plan = plan_for([INIT, FILL], dup, evidence={FILL.name: absent(FILL.name)})
    assert any(b.code == BlockerCode.duplicate_unfinished_rows and "2 unfinished rows" in b.message for b in plan.blockers)

    failed = snap(row(INIT.name, INIT.checksum), row(FILL.name, FILL.checksum, finished=False, logs="x"))
    plan = plan_for([INIT, FILL], failed, evidence={FILL.name: absent(FILL.name)}, operation=Operation.migrate)
    assert any(b.code == BlockerCode.failed_blocks_migrate and "P3009" in b.message for b in plan.blockers)

    failed_phantom = snap(row(INIT.name, INIT.checksum), row("20230101000000_gone", "e" * 64, finished=False, logs="x"))
    plan = plan_for([INIT], failed_phantom)
    assert actions(plan)["20230101000000_gone"] == Action.needs_human and plan.blockers


def test_required_approvals_follow_the_risk_of_what_runs() -> None:
    drop = migration("20240105000000_drop", 'DROP TABLE "t";')
    plan = plan_for([INIT, drop], snap(row(INIT.name, INIT.checksum)))
    assert plan.risk == "high" and plan.required_approvals == 2
    # the same risky migration, already applied, does not raise the bar
    plan = plan_for([INIT, drop], snap(row(INIT.name, INIT.checksum), row(drop.name, drop.checksum, minutes=1)))
    assert plan.risk == "low" and plan.required_approvals == 1
    assert "nothing to resolve or apply" in " ".join(plan.notes)
    assert run_stages(plan) == [Stage.verify]


def test_fingerprint_changes_with_bundle_ledger_and_actions() -> None:
    s = snap(row(INIT.name, INIT.checksum))
    base = plan_for([INIT, ADD], s)
    assert base.fingerprint == plan_for([INIT, ADD], s).fingerprint and len(base.fingerprint) == 64
    edited = migration(ADD.name, ADD.sql + "\n-- reviewed", down=ADD.down_sql)
    assert plan_for([INIT, edited], s).fingerprint != base.fingerprint
    touched = snap(row(INIT.name, INIT.checksum), row("20230101000000_x", "a" * 64, minutes=5))
    assert plan_for([INIT, ADD], touched).fingerprint != base.fingerprint
    assert plan_for([INIT, ADD], s, operation=Operation.migrate).fingerprint != base.fingerprint


def test_ledger_digest_ignores_this_runs_rows_and_its_resolve_marks() -> None:
    failed = row(FILL.name, FILL.checksum, finished=False, logs="x")
    before = [row(INIT.name, INIT.checksum), failed]
    resolve_at = T0 + timedelta(hours=1)
    marks = RunMarks(deploy_ids={FILL.name: "ours"}, resolve_at=resolve_at)
    after = [before[0], failed.model_copy(update={"rolled_back_at": resolve_at}),
             row(FILL.name, FILL.checksum, minutes=70, row_id="ours")]
    assert ledger_digest(after, marks) == ledger_digest(before)
    someone_else = [before[0], failed.model_copy(update={"rolled_back_at": resolve_at + timedelta(seconds=1)})]
    assert ledger_digest(someone_else, marks) != ledger_digest(before)


@pytest.mark.parametrize("operation,stages", [
    (Operation.resolve, [Stage.resolve]),
    (Operation.verify, [Stage.verify]),
])
def test_operations_limit_the_stages(operation, stages) -> None:
    s = snap(row(INIT.name, INIT.checksum), row(FILL.name, FILL.checksum, finished=False, logs="x"))
    plan = plan_for([INIT, ADD, FILL], s, evidence={FILL.name: absent(FILL.name)}, operation=operation)
    assert run_stages(plan) == stages


def _big_plan(n: int, statement_bytes: int) -> DeployPlan:
    from domain.models import Finding, PlannedMigration

    def finding(sev: str) -> Finding:
        return Finding(code="x", severity=sev, message="m", line=1, statement="S" * statement_bytes)

    migrations = [
        PlannedMigration(name=f"m{i:05d}", action=Action.already_applied if i % 2 else Action.apply, reason="",
                         rollback="derived", rollback_sql="DROP TABLE t;", findings=[finding("info"), finding("warning")])
        for i in range(n)
    ]
    return DeployPlan(environment="prod", operation=Operation.full, migrations=migrations, fingerprint="f" * 64)


def test_a_plan_too_big_for_a_temporal_payload_is_trimmed_not_truncated() -> None:
    from domain.plan_budget import _plan_size, fit_to_budget

    plan = _big_plan(400, 3000)
    assert _plan_size(plan) > 2_000_000
    fitted = fit_to_budget(plan.model_copy(deep=True), budget=900_000)
    assert _plan_size(fitted) <= 900_000 and fitted.blockers == []
    assert [(m.name, m.action) for m in fitted.migrations] == [(m.name, m.action) for m in plan.migrations]
    # What will run keeps its rollback and its warnings; what is history loses its review detail.
    runs = [m for m in fitted.migrations if m.action == Action.apply]
    assert all(m.rollback_sql and [f.severity for f in m.findings] == ["warning"] for m in runs)
    assert all(not m.findings for m in fitted.migrations if m.action == Action.already_applied)
    assert fitted.fingerprint == plan.fingerprint and any("trimmed" in n for n in fitted.notes)
    # A plan that cannot fit even bare blocks the run before any change.
    bare = fit_to_budget(_big_plan(400, 10), budget=10_000)
    assert bare.blockers and bare.blockers[0].code == BlockerCode.plan_too_large and "too large" in bare.blockers[0].message
    assert "(200 migrations to apply)" in bare.blockers[0].message
    # ...and what it says still fits a payload, so the person who asked can read why.
    assert _plan_size(bare) <= 10_000 and 0 < len(bare.migrations) < 400
    assert any("of the plan's 400 migrations are listed" in n for n in bare.notes)


def test_a_long_history_with_a_few_pending_lists_only_those() -> None:
    from domain.plan_budget import _plan_size, fit_to_budget

    plan = _big_plan(1, 10)
    applied = [PlannedMigration(name=f"a{i:05d}", action=Action.already_applied, reason="applied", checksum="c" * 64)
               for i in range(10_000)]
    plan = plan.model_copy(update={"migrations": applied + plan.migrations})
    fitted = fit_to_budget(plan)
    assert [m.action for m in fitted.migrations] == [Action.apply] and fitted.unlisted_applied == 10_000
    assert _plan_size(fitted) < 10_000 and fitted.blockers == []


def test_a_run_whose_results_would_not_fit_is_refused_up_front() -> None:
    from domain.plan_budget import result_too_large

    assert result_too_large(_big_plan(50, 10)) is None
    huge = _big_plan(8000, 10)
    problem = result_too_large(huge)
    assert problem and problem.code == BlockerCode.result_too_large
    assert "smaller steps" in problem.message and "4000 migrations to apply" in problem.message


# -- where Prisma's deploy would stop; an empty folder; PostGIS ----------------------------------


def test_a_pending_directory_without_migration_sql_blocks_the_deploy_naming_where_prisma_stops() -> None:
    from domain.models import UnreadableMigration

    hole = UnreadableMigration(name="20240102500000_data_only", reason="missing")
    req = request("prod", [INIT, ADD, FILL])
    req.bundle.unreadable = [hole]
    s = snap(row(INIT.name, INIT.checksum))
    analyses = {m.name: analyze_migration(m.name, m.sql) for m in (INIT, ADD, FILL)}
    plan = build_plan(req, diagnose(req.bundle.migrations, s, req.bundle.unreadable), analyses, {}, snapshot=s,
                      required_approvals={"low": 1})
    assert actions(plan)[hole.name] == Action.needs_human
    (blocker,) = plan.blockers
    assert blocker.code == BlockerCode.missing_migration_file and blocker.migration == hole.name
    assert blocker.message.startswith(f"directory {hole.name} has no migration.sql: Prisma's deploy would apply the 1 "
                                      "pending migration(s) before it and stop with P3015 there; this run changes nothing")

    resolve_only = build_plan(req.model_copy(update={"operation": Operation.resolve}),
                              diagnose(req.bundle.migrations, s, req.bundle.unreadable), analyses, {}, snapshot=s,
                              required_approvals={"low": 1})
    assert resolve_only.blockers == []  # it deploys nothing, so nothing stops it

    recorded = snap(row(INIT.name, INIT.checksum), row(hole.name, "x" * 64, minutes=1))  # another tool recorded it
    plan = build_plan(req, diagnose(req.bundle.migrations, recorded, req.bundle.unreadable), analyses, {},
                      snapshot=recorded, required_approvals={"low": 1})
    assert plan.blockers == [] and actions(plan)[hole.name] == Action.already_applied


def test_an_extension_the_server_lacks_blocks_before_any_change() -> None:
    vector = migration("20240101500000_vector", 'CREATE EXTENSION IF NOT EXISTS "vector";\nCREATE TABLE "e" ("id" INT);')
    req = request("prod", [INIT, vector, ADD])
    s = snap(table=False)
    analyses = {m.name: analyze_migration(m.name, m.sql) for m in (INIT, vector, ADD)}
    plan = build_plan(req, diagnose(req.bundle.migrations, s), analyses, {}, snapshot=s, required_approvals={"low": 1},
                      available_extensions=["plpgsql", "pgcrypto"])
    (blocker,) = plan.blockers
    assert blocker.code == BlockerCode.extension_unavailable and blocker.migration == vector.name
    assert "creates extension vector, which this PostgreSQL server does not have" in blocker.message
    assert "apply the 1 pending migration(s) before it and fail there" in blocker.message
    ok = build_plan(req, diagnose(req.bundle.migrations, s), analyses, {}, snapshot=s, required_approvals={"low": 1},
                    available_extensions=["vector"])
    assert ok.blockers == []


def test_an_empty_folder_on_an_empty_database_still_creates_the_ledger() -> None:
    plan = plan_for([], snap(table=False))
    assert plan.blockers == [] and plan.creates_ledger
    assert run_stages(plan) == [Stage.deploy, Stage.verify]
    assert any("deploy creates it" in n for n in plan.notes)
    with_tables = plan_for([], snap(table=False, others=("customers",)))
    assert [b.code for b in with_tables.blockers] == [BlockerCode.needs_baseline] and not with_tables.creates_ledger
    assert not plan_for([], snap()).creates_ledger  # the ledger exists: nothing to do


def test_postgis_tables_alone_need_no_baseline_and_the_others_are_named() -> None:
    postgis = ("geography_columns", "geometry_columns", "raster_columns", "raster_overviews", "spatial_ref_sys")
    plan = plan_for([INIT], snap(table=False, others=postgis))
    assert plan.blockers == [] and actions(plan) == {INIT.name: Action.apply}
    d = diagnose([INIT], snap(table=False, others=(*postgis, "customers")))
    assert d.needs_baseline and d.blocking_tables == ["customers"]
    assert "The database has tables (customers) but no _prisma_migrations table" in d.problems[0]


PRICES = migration("20240105000000_prices",
                   'ALTER TABLE "t" ALTER COLUMN "v" TYPE numeric USING "v" / 100.0;\n'
                   'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "t_v_key" ON "t" ("v");')


def test_a_file_prisma_cannot_run_is_a_blocker_before_any_change() -> None:
    plan = plan_for([INIT, PRICES], snap(row(INIT.name, INIT.checksum)))
    (blocker,) = plan.blockers
    assert blocker.code == BlockerCode.fails_in_prisma and blocker.migration == PRICES.name
    assert "CREATE INDEX CONCURRENTLY cannot run inside a transaction block" in blocker.message
    assert "line 2" in blocker.message


def test_a_failed_conversion_with_unknown_effects_is_never_rerun() -> None:
    """The price incident's second run: the old executor had committed the ALTER before the index
    failed. Re-running would divide the prices again: the plan stops and says what to do."""
    fixed = migration(PRICES.name, 'ALTER TABLE "t" ALTER COLUMN "v" TYPE numeric USING "v" / 100.0;')
    s = snap(row(INIT.name, INIT.checksum), row(fixed.name, fixed.checksum, finished=False, logs="x"))
    plan = plan_for([INIT, fixed], s)  # no schema evidence (no shadow database)
    assert actions(plan)[fixed.name] == Action.needs_human
    (blocker,) = plan.blockers
    assert blocker.code == BlockerCode.failed_needs_human
    assert "converts the column's data again" in blocker.message and "could not be checked" in blocker.message
    assert "prisma migrate resolve --applied" in blocker.message and "--rolled-back" in blocker.message
    # The schema shows the conversion took effect (v is numeric, as after it): recorded as applied,
    # never run again; the prices were divided once.
    numeric = model(("key", "text"), ("v", "numeric"))
    plan = plan_for([INIT, fixed], s, evidence={fixed.name: migration_effects(BEFORE, numeric, numeric)})
    assert actions(plan)[fixed.name] == Action.resolve_applied and plan.blockers == []


# -- decide(): the schema facts reach the plan -------------------------------------------------

HOTFIX = "20240103500000_hotfix"  # a phantom: applied by hand, no folder
ADDW = migration("20240104000000_add_w", 'ALTER TABLE "t" ADD COLUMN "w" INT;')  # low risk, not idempotent


def decide_for(migs, snapshot, schema: SchemaFacts, *, operation=Operation.full, require_schema=False):
    req = request("prod", list(migs), operation=operation)
    facts = PreflightFacts(snapshot=snapshot, diagnosis=diagnose(req.bundle.migrations, snapshot),
                           analyses={m.name: analyze_migration(m.name, m.sql) for m in migs}, schema_facts=schema)
    policy = EnvironmentPolicy(required_approvals={"low": 1, "medium": 1, "high": 2}, require_schema=require_schema)
    plan, approvals = decide(req, facts, policy)
    return plan, approvals


def compared(migs, snapshot, live: SchemaModel, models: dict[str, SchemaModel], *,
             failure: ReplayFailure | None = None) -> SchemaFacts:
    """What activities/schema_facts.py would report: `models` are the expected models after each
    migration of the replay sequence (by name)."""
    req = request("prod", list(migs))
    sequence = replay_sequence(diagnose(req.bundle.migrations, snapshot), [m.name for m in migs])
    after = {0: model()} | {i + 1: models[n] for i, n in enumerate(sequence.names) if n in models}
    return SchemaFacts(
        state=SchemaState.compared, sequence=sequence, failure=failure,
        drift=compare(after[sequence.applied], live) if sequence.applied in after else None,
        effects={n: migration_effects(after[p - 1], after[p], live) for n, p in sequence.failed.items()
                 if p - 1 in after and p in after},
    )


def test_the_hotfix_case_is_explained_by_the_resolve_not_unexplained_drift() -> None:
    """A phantom hotfix did exactly what the failed migration does: the drift is its effects, and the
    plan records that migration as applied, so nothing is left unexplained and the risk stays."""
    s = snap(row(INIT.name, INIT.checksum), row(ADDW.name, ADDW.checksum, finished=False, minutes=1, logs="x"),
             row(HOTFIX, "h" * 64, minutes=2))
    schema = compared([INIT, ADDW], s, live=AFTER, models={INIT.name: BEFORE, ADDW.name: AFTER})
    assert [d.sentence for d in schema.drift] == ["column public.t.w exists only in the live database: integer"]
    plan, approvals = decide_for([INIT, ADDW], s, schema)
    assert actions(plan)[ADDW.name] == Action.resolve_applied
    assert plan.drift.verdict == "explained_by_resolve" and plan.drift.resolved_by == [ADDW.name]
    assert plan.drift.differences == [] and [d.ref.name for d in plan.drift.explained] == ["w"]
    assert plan.risk == "low" and approvals.required_approvals == 1
    assert plan.verify_schema and len(plan.drift.accepted) == 1


def test_a_phantom_change_nothing_accounts_for_is_unexplained_and_raises_the_bar() -> None:
    s = snap(row(INIT.name, INIT.checksum), row(HOTFIX, "h" * 64, minutes=1))
    schema = compared([INIT], s, live=AFTER, models={INIT.name: BEFORE})
    plan, approvals = decide_for([INIT], s, schema)
    assert plan.drift.verdict == "unexplained_drift" and plan.drift.count == 1
    assert "column public.t.w exists only in the live database" in plan.drift.summary
    assert HOTFIX in plan.drift.summary and plan.risk == "high" and approvals.required_approvals == 2
    # The same live schema as the history: the phantom changed nothing.
    plan, _ = decide_for([INIT], s, compared([INIT], s, live=BEFORE, models={INIT.name: BEFORE}))
    assert plan.drift.verdict == "explained_by_phantom" and plan.risk == "low"


def test_a_migration_to_run_that_fails_in_the_shadow_blocks_before_any_change() -> None:
    s = snap(row(INIT.name, INIT.checksum))
    failure = ReplayFailure(migration=ADD.name, position=2, total=2, sqlstate="0A000",
                            error='extension "vector" is not available')
    schema = compared([INIT, ADD], s, live=BEFORE, models={INIT.name: BEFORE}, failure=failure)
    plan, _ = decide_for([INIT, ADD], s, schema)
    assert [(b.code, b.migration) for b in plan.blockers] == [(BlockerCode.fails_in_shadow, ADD.name)]
    assert 'extension "vector" is not available' in plan.blockers[0].message and "P3018" in plan.blockers[0].message
    assert plan.drift.verdict == "no_drift"  # the applied history itself replays
    assert not plan.verify_schema and "stopped" in plan.verify_schema_skipped
    # A history that does not replay at an applied migration: no proof, no blocker, no schema verification.
    bad = ReplayFailure(migration=INIT.name, position=1, total=2, error="boom")
    plan, _ = decide_for([INIT, ADD], s, compared([INIT, ADD], s, live=BEFORE, models={}, failure=bad))
    assert plan.blockers == [] and plan.drift.verdict == "replay_failed" and not plan.verify_schema


def test_no_shadow_database_is_said_and_blocks_only_where_required() -> None:
    s = snap(row(INIT.name, INIT.checksum), row(UPD.name, UPD.checksum, finished=False, minutes=1, logs="x"))
    schema = SchemaFacts(state=SchemaState.unavailable, reason="cannot create the shadow database (needs CREATEDB)")
    plan, _ = decide_for([INIT, UPD], s, schema)
    assert plan.drift.verdict == "unavailable" and "CREATEDB" in plan.drift.summary
    assert actions(plan)[UPD.name] == Action.needs_human and "CREATEDB" in plan.blockers[0].message
    assert not plan.verify_schema and "CREATEDB" in plan.verify_schema_skipped
    plan, _ = decide_for([INIT], snap(row(INIT.name, INIT.checksum)), schema, require_schema=True)
    assert [b.code for b in plan.blockers] == [BlockerCode.schema_unavailable]
    plan, _ = decide_for([INIT], snap(row(INIT.name, INIT.checksum)), SchemaFacts(state=SchemaState.off))
    assert plan.drift is None and plan.blockers == [] and "drift_proof: never" in plan.verify_schema_skipped


def test_the_replay_sequence_is_the_applied_history_then_what_the_run_brings() -> None:
    """Applied migrations in the order the ledger applied them, the phantom left out (no SQL), then
    failed and pending ones in the plan's order."""
    s = snap(row(ADD.name, ADD.checksum), row(INIT.name, INIT.checksum, minutes=1), row(HOTFIX, "h" * 64, minutes=2),
             row(UPD.name, UPD.checksum, finished=False, minutes=3, logs="x"))
    sequence = replay_sequence(diagnose([INIT, ADD, FILL, UPD], s), [INIT.name, ADD.name, FILL.name, UPD.name])
    assert sequence.names == (ADD.name, INIT.name, FILL.name, UPD.name)
    assert sequence.applied == 2 and sequence.failed == {UPD.name: 4}
    assert sequence.prefixes() == [2, 3, 4]


def test_verification_accepts_each_difference_shown_once_and_follows_renames() -> None:
    from domain.drift import split_after_deploy
    from domain.schema.compare import Change, Difference

    def extra(table: str, column: str) -> Difference:
        ref = ObjectRef.of(ObjectKind.table, "public", table).child(ObjectKind.column, column)
        return Difference(ref=ref, change=Change.extra, live="text", sentence=f"{ref} extra")

    s = snap(row(INIT.name, INIT.checksum), row(HOTFIX, "h" * 64, minutes=1))
    plan, _ = decide_for([INIT], s, SchemaFacts(state=SchemaState.compared, drift=[extra("t", "nick")],
                                                sequence=replay_sequence(diagnose([INIT], s), [INIT.name])))
    after = split_after_deploy([extra("t", "nick"), extra("t2", "nick"), extra("t", "other")],
                               plan.drift.accepted, plan.drift.accepted_moved)
    assert [d.ref.parent.name for d in after.as_shown] == ["t"]
    assert [d.ref.parent.name for d in after.moved] == []  # the one shown is used up by the exact match
    assert [str(d.ref) for d in after.new] == ["column public.t2.nick", "column public.t.other"]
    renamed = split_after_deploy([extra("purchases", "nick")], plan.drift.accepted, plan.drift.accepted_moved)
    assert [str(d.ref) for d in renamed.moved] == ["column public.purchases.nick"] and renamed.new == []


def test_a_replay_failure_stops_the_run_only_where_the_shadow_is_the_live_schema() -> None:
    """An application's own table, made outside the folder, that a pending migration updates: the
    replay cannot run it, the live database can. That is drift, and a note, not a stop."""
    s = snap(row(INIT.name, INIT.checksum))
    failure = ReplayFailure(migration=ADD.name, position=2, total=2, sqlstate="42P01",
                            error='relation "shop.items" does not exist')
    drifted = compared([INIT, ADD], s, live=AFTER, models={INIT.name: BEFORE}, failure=failure)
    plan, _ = decide_for([INIT, ADD], s, drifted)
    assert plan.blockers == [] and plan.drift.verdict == "unexplained_drift"
    assert any('relation "shop.items" does not exist' in n and "may still succeed" in n for n in plan.notes)
    same = compared([INIT, ADD], s, live=BEFORE, models={INIT.name: BEFORE}, failure=failure)
    assert [b.code for b in decide_for([INIT, ADD], s, same)[0].blockers] == [BlockerCode.fails_in_shadow]
    data = failure.model_copy(update={"sqlstate": "23505", "error": "duplicate key value"})
    plan, _ = decide_for([INIT, ADD], s, compared([INIT, ADD], s, live=BEFORE, models={INIT.name: BEFORE}, failure=data))
    assert plan.blockers == [] and any("rows the history itself inserts" in n for n in plan.notes)
