"""Preflight's drift proof: the plan approvers sign says whether the live schema matches the history."""

from __future__ import annotations

import asyncpg
from temporalio.testing import ActivityEnvironment

from devstack.incident import reproduce_incident
from domain.models import BlockerCode
from tests.helpers import StageActivities, incident_request, make_settings


async def _plan(database_url: str, **env):
    settings = make_settings("prod", database_url, **env)
    result = await ActivityEnvironment().run(StageActivities(settings).preflight, incident_request("prod"))
    return result.plan


async def _databases(database_url: str) -> set[str]:
    """The server's databases but the kept replay template (kept on purpose, one per server and
    history: activities/shadow_template.py): what a run must leave as it found it."""
    conn = await asyncpg.connect(database_url)
    try:
        return {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")
                if not r["datname"].startswith("migrator_template_")}
    finally:
        await conn.close()


async def test_incident_phantom_is_proven_to_change_nothing(database_url: str) -> None:
    await reproduce_incident(database_url)
    before = await _databases(database_url)
    plan = await _plan(database_url)
    assert plan.drift is not None
    assert plan.drift.verdict == "explained_by_phantom"
    assert plan.drift.phantoms == ["20251113220938_add_customer_slug"]
    assert plan.drift.differences == [] and plan.drift.replayed == 1
    assert plan.risk == "low"
    assert any(n.startswith("drift proof:") for n in plan.notes)
    assert plan.verify_schema  # the whole folder replays: verification will compare schemas
    assert await _databases(database_url) == before, "the shadow database must be dropped"


async def test_hand_made_column_is_unexplained_drift_and_raises_the_bar(database_url: str) -> None:
    await reproduce_incident(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute('ALTER TABLE "customers" ADD COLUMN "nickname" TEXT')
    finally:
        await conn.close()
    plan = await _plan(database_url, required_approvals={"low": 1, "medium": 1, "high": 2})
    assert plan.drift.verdict == "unexplained_drift"
    [diff] = plan.drift.differences
    assert diff.sentence == "column public.customers.nickname exists only in the live database: text"
    assert diff.sentence in plan.drift.summary
    assert plan.risk == "high" and plan.required_approvals == 2


async def test_drift_proof_can_be_turned_off(database_url: str) -> None:
    await reproduce_incident(database_url)
    plan = await _plan(database_url, drift_proof="never")
    assert plan.drift is None and not plan.verify_schema
    assert any("drift_proof: never" in n for n in plan.notes)


async def test_unparseable_verify_sql_blocks_the_plan_before_any_change(database_url: str) -> None:
    """A typo in verify.sql is caught at preflight, not after a deploy it would then roll back."""
    from tests.helpers import migration, request

    settings = make_settings("dev", database_url)
    req = request("dev", [migration("20250101000000_a", 'CREATE TABLE "a" ("id" INT);', verify="SELEC 1;")])
    result = await ActivityEnvironment().run(StageActivities(settings).preflight, req)
    assert [(b.code, b.migration) for b in result.plan.blockers] == [(BlockerCode.unparseable_verify_sql, "20250101000000_a")]
