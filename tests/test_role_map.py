"""Owners and grants judged by what the live database holds, not by the role name the shadow replay
is built with (domain/schema/roles.py), on real PostgreSQL with the real Prisma CLI.

Production as DBAs set it up: the application's database belongs to an owner role (`app_owner`,
no login); the migration login (`migrator`, a member of it) deployed the history with
`prisma migrate deploy`; then every object was handed to app_owner (`ALTER ... OWNER TO`). The
shadow replay, built by migrator, owns everything as migrator. The plan finds no drift, the
product's deploy (as migrator: its new tables are migrator's) verifies, and the next plan finds no
drift either; a GRANT made by hand, or an owner outside those roles, is still drift.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from cli.deploy import bundle_folder
from domain.drift import DriftVerdict
from domain.models import DeployRequest, Operation, Outcome
from tests.corpus import CORPUS, corpus_migrations, write_folder
from tests.helpers import final_status, make_settings, new_worker, plan_of, start
from tests.oracle import prisma

pytestmark = pytest.mark.oracle

HISTORY = "hoppscotch"
# Prisma deploys the migrations before this one; the product deploys it (new enums, tables, a
# function and triggers on the app_owner's tables) and the five after it.
FIRST_BY_PRODUCT = "20251016080714_mock_server"
SCHEMA_CHECK = "schema equals the migrations folder"


@dataclass
class Production:
    url: str  # as the migration login
    migrator: str
    app_owner: str
    admin: asyncpg.Connection  # superuser, in the database


def _as_login(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.netloc.rsplit('@', 1)[-1]}"))


async def _hand_over(conn: asyncpg.Connection, old: str, new: str, *, ledger: bool = True) -> int:
    """ALTER ... OWNER TO `new` for every table, view, type, routine and free sequence `old` owns
    (a table's own sequences and indexes follow it), as a DBA does."""
    statements = await conn.fetch(
        """
        SELECT format('ALTER TABLE %I.%I OWNER TO %I', n.nspname, c.relname, $2::text) FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relowner = $1::regrole AND c.relkind IN ('r', 'p', 'v', 'm')
           AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
           AND ($3::boolean OR c.relname <> '_prisma_migrations')
        UNION ALL
        SELECT format('ALTER TYPE %I.%I OWNER TO %I', n.nspname, t.typname, $2::text) FROM pg_type t
          JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE t.typowner = $1::regrole AND t.typtype IN ('e', 'd') AND n.nspname NOT LIKE 'pg\\_%'
        UNION ALL
        SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, $2::text) FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE p.proowner = $1::regrole AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
        """, old, new, ledger)
    for (sql,) in statements:
        await conn.execute(sql)
    return len(statements)


@pytest.fixture
async def production(pg_server, database_url: str, tmp_path: Path) -> AsyncIterator[Production]:
    tag = uuid.uuid4().hex[:8]
    app_owner, migrator, password = f"app_owner_{tag}", f"migrator_{tag}", f"pw-{tag}"
    database = urlsplit(database_url).path[1:]
    admin = await asyncpg.connect(database_url)
    await admin.execute(f"CREATE ROLE {app_owner} NOLOGIN")
    await admin.execute(f"CREATE ROLE {migrator} LOGIN PASSWORD '{password}' CREATEDB IN ROLE {app_owner}")
    await admin.execute(f'ALTER DATABASE "{database}" OWNER TO {app_owner}')
    url = _as_login(database_url, migrator, password)
    try:
        migrations = corpus_migrations(HISTORY)
        before = [m.name for m in migrations].index(FIRST_BY_PRODUCT)
        deployed = prisma(url, write_folder(tmp_path, migrations[:before]), "deploy")
        assert deployed.returncode == 0, deployed.stderr[-2000:]
        yield Production(url=url, migrator=migrator, app_owner=app_owner, admin=admin)
    finally:
        # The kept replay template and any shadow are the migration login's databases.
        for (name,) in await admin.fetch("SELECT datname FROM pg_database WHERE datdba = $1::regrole", migrator):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'ALTER DATABASE "{database}" OWNER TO CURRENT_USER')
        await admin.execute(f"DROP OWNED BY {migrator}, {app_owner} CASCADE")
        await admin.execute(f"DROP ROLE {migrator}")
        await admin.execute(f"DROP ROLE {app_owner}")
        await admin.close()


def folder_request() -> DeployRequest:
    bundle, parts = bundle_folder(CORPUS / HISTORY / "migrations")
    assert parts == []
    return DeployRequest(environment="prod", operation=Operation.full, requested_by="ci", bundle=bundle)


async def owner_of(conn: asyncpg.Connection, table: str) -> str:
    return await conn.fetchval("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass($1)", table)


async def test_objects_handed_to_the_owner_role_are_no_drift_and_the_deploy_verifies(
    production: Production, time_skipping_env
) -> None:
    p = production
    assert await _hand_over(p.admin, p.migrator, p.app_owner) > 15
    assert await owner_of(p.admin, "_prisma_migrations") == p.app_owner

    plan = await plan_of(make_settings("prod", p.url), folder_request())
    assert plan.drift.verdict == DriftVerdict.no_drift, plan.drift.summary
    assert (f"owners and grants compared with role {p.migrator} of the shadow replay standing for "
            f"{p.app_owner} or {p.migrator} in the live database") in plan.notes
    # Compared name for name (the setting says the shadow's role stands for itself), every object
    # differs in its owner: the map is what makes them equal.
    strict = await plan_of(make_settings("prod", p.url, role_map={p.migrator: p.migrator}),
                           folder_request())
    assert strict.drift.verdict == DriftVerdict.unexplained_drift
    assert strict.drift.count > 15
    assert all(d.attributes == ("owner", "grants") for d in strict.drift.differences)
    assert any(d.sentence.startswith(f'table public."User" differs in owner, grants: owner expected {p.migrator}, '
                                     f"live has {p.app_owner}") for d in strict.drift.differences)

    client = time_skipping_env.client
    async with new_worker(client, make_settings("prod", p.url)) as worker:
        final = await final_status(await start(client, worker, folder_request()))
    assert final.outcome == Outcome.succeeded, final.error
    assert len(final.applied) == 6 and final.plan.drift.verdict == DriftVerdict.no_drift
    check = next(c for c in final.verification if c.check == SCHEMA_CHECK)
    assert check.passed and not check.skipped, check.detail
    assert check.detail == "the live schema equals the replay of the 21 migration(s) of the folder"
    # What the database holds now: the history's tables are app_owner's, the run's migrator's.
    assert await owner_of(p.admin, '"User"') == p.app_owner
    assert await owner_of(p.admin, '"MockServer"') == p.migrator
    status = prisma(p.url, CORPUS / HISTORY / "migrations", "status")
    assert status.returncode == 0 and "Database schema is up to date!" in status.stdout, status.stdout + status.stderr

    # The next run is not told the previous run's own tables are drift.
    again = await plan_of(make_settings("prod", p.url), folder_request())
    assert again.drift.verdict == DriftVerdict.no_drift, again.drift.summary


async def test_a_grant_or_an_owner_made_by_hand_in_production_is_still_drift(production: Production) -> None:
    p = production
    await _hand_over(p.admin, p.migrator, p.app_owner)
    analyst = f"analyst_{uuid.uuid4().hex[:8]}"
    await p.admin.execute(f"CREATE ROLE {analyst}")
    try:
        await p.admin.execute(f'GRANT SELECT ON "User" TO {analyst}')
        await p.admin.execute(f'GRANT INSERT ON "Team" TO {p.migrator}')  # a mapped role, by hand
        await p.admin.execute(f'ALTER TABLE "Shortcode" OWNER TO {analyst}')
        plan = await plan_of(make_settings("prod", p.url), folder_request())
        assert plan.drift.verdict == DriftVerdict.unexplained_drift
        assert sorted(d.sentence for d in plan.drift.differences) == sorted([
            f'table public."User" differs in grants: privileges of {analyst} expected none, live has SELECT',
            f'table public."Team" differs in grants: privileges of {p.migrator} expected none, live has INSERT',
            f'table public."Shortcode" differs in owner, grants: owner expected {p.app_owner}, live has {analyst}; '
            f"privileges of {analyst} expected none, live has DELETE, INSERT, REFERENCES, SELECT, TRIGGER, "
            f"TRUNCATE, UPDATE; privileges of {p.app_owner} expected DELETE, INSERT, REFERENCES, SELECT, TRIGGER, "
            "TRUNCATE, UPDATE, live has none",
        ])
        assert plan.risk == "high"
    finally:
        await p.admin.execute(f"DROP OWNED BY {analyst}")
        await p.admin.execute(f"DROP ROLE {analyst}")


async def test_the_role_map_setting_names_the_owner_where_the_ledger_does_not(production: Production) -> None:
    """The DBA handed the application's objects to app_owner but left Prisma's ledger to the
    migration login: nothing live says app_owner owns the history, the setting does."""
    p = production
    await _hand_over(p.admin, p.migrator, p.app_owner, ledger=False)
    plan = await plan_of(make_settings("prod", p.url), folder_request())
    assert plan.drift.verdict == DriftVerdict.unexplained_drift
    assert f"owner expected {p.migrator}, live has {p.app_owner}" in plan.drift.summary
    mapped = await plan_of(make_settings("prod", p.url, role_map={p.migrator: [p.app_owner, p.migrator]}),
                           folder_request())
    assert mapped.drift.verdict == DriftVerdict.no_drift, mapped.drift.summary
