"""Post-deploy verification judged by the schema model, end to end (time-skipping server, real
PostgreSQL): the live schema against the replay of the whole folder, with the drift the approved
plan showed carried as accepted, and any other difference a failure that undoes the run.
"""

from __future__ import annotations

import asyncpg

from domain.models import Outcome
from tests.helpers import (
    approval,
    final_status,
    history_state,
    make_settings,
    migration,
    new_worker,
    request,
    start,
    wait_gate,
)

INIT = migration("20250101000000_init", 'CREATE TABLE "orders" ("id" INT PRIMARY KEY, "total" INT);\n'
                 'CREATE INDEX "orders_total_idx" ON "orders" ("total");')
# A later migration drops and renames what the first one made: verification must expect that.
RENAME = migration("20250102000000_rename", 'ALTER TABLE "orders" RENAME TO "purchases";\n'
                   'ALTER TABLE "purchases" RENAME COLUMN "total" TO "amount";\nDROP INDEX "orders_total_idx";',
                   down='CREATE INDEX "orders_total_idx" ON "purchases" ("amount");\n'
                   'ALTER TABLE "purchases" RENAME COLUMN "amount" TO "total";\nALTER TABLE "purchases" RENAME TO "orders";')
INDEX = migration("20250103000000_index", 'CREATE INDEX IF NOT EXISTS "purchases_id_idx" ON "purchases" ("id");',
                  down='DROP INDEX "purchases_id_idx";')


def checks_of(final):
    return {c.check: c for c in final.verification}


async def test_drift_the_approvers_saw_is_accepted_and_drops_and_renames_are_expected(time_skipping_env,
                                                                                     database_url: str) -> None:
    await history_state(database_url, applied=[INIT], by_hand='ALTER TABLE "orders" ADD COLUMN "nickname" TEXT')
    settings = make_settings("prod", database_url, gates=["deploy"], approvers=["alice", "bob"],
                             required_approvals={"low": 1, "medium": 1, "high": 2})
    client = time_skipping_env.client
    async with new_worker(client, settings) as worker:
        handle = await start(client, worker, request("prod", [INIT, RENAME, INDEX]))
        status = await wait_gate(handle, "deploy")
        plan = status.plan
        assert plan.drift.verdict == "unexplained_drift" and status.approvals_needed == 2
        assert "column public.orders.nickname exists only in the live database: text" in plan.drift.summary
        for who in ("alice", "bob"):
            await handle.signal("approve", approval("deploy", who, plan.fingerprint))
        final = await final_status(handle)
    assert final.outcome == Outcome.succeeded, final.error
    checks = checks_of(final)
    assert checks["schema equals the migrations folder"].passed
    assert checks["schema equals the migrations folder"].detail == (
        "the live schema equals the replay of the 3 migration(s) of the folder apart from the accepted drift")
    # The hand-made column went along with the rename: the difference the approvers saw, under the
    # table's new name.
    assert checks["drift accepted with the plan"].detail == (
        "1 difference(s) the approved plan showed, still as shown (1 under a relation renamed since): "
        "column public.purchases.nickname exists only in the live database: text")


async def test_a_difference_the_plan_did_not_show_fails_verification_and_the_run_is_undone(
    time_skipping_env, database_url: str, db: asyncpg.Connection
) -> None:
    """IF NOT EXISTS kept a hand-made index of another definition under the migration's name: the
    deploy 'succeeded', the schema is not what the folder says. Verification names it, compensation
    runs the migration's down.sql, which drops the hand-made index too, and says so: the schema is
    not as before the run."""
    init = migration("20250101000000_init", 'CREATE TABLE "purchases" ("id" INT PRIMARY KEY, "total" INT);')
    await history_state(database_url, applied=[init],
                        by_hand='CREATE INDEX "purchases_id_idx" ON "purchases" ("total")')
    client = time_skipping_env.client
    async with new_worker(client, make_settings("dev", database_url)) as worker:
        final = await final_status(await start(client, worker, request("dev", [init, INDEX])))
    failed = checks_of(final)["schema equals the migrations folder"]
    assert not failed.passed
    assert ("index public.purchases_id_idx on public.purchases differs: expected CREATE INDEX purchases_id_idx ON "
            "public.purchases USING btree (id), live has CREATE INDEX purchases_id_idx ON public.purchases USING "
            "btree (total)") in failed.detail
    assert final.error.startswith("verification failed: schema equals the migrations folder")
    assert [s.name for s in final.compensation] == [INDEX.name]
    assert final.outcome == Outcome.failed_needs_attention
    assert final.human_action.startswith("after undoing, the schema still differs from before the run: index "
                                         "public.purchases_id_idx on public.purchases is missing")
    applied = await db.fetch("SELECT migration_name FROM _prisma_migrations ORDER BY started_at")
    assert [r[0] for r in applied] == [init.name]  # the run's own row is gone, the ledger as before
