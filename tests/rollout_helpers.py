"""Real-database helpers for rollout tests: a fleet of throwaway databases on the test cluster, the
bundle they receive, worker settings naming them, and what each database holds afterwards."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import asyncpg

from activities.ledger import MigrationLedger, utcnow
from domain.models import BundledMigration, MigrationBundle, Operation
from domain.rollout_models import RolloutRequest
from runtime.fleets import FleetSettings
from runtime.settings import EnvironmentSettings, Settings
from tests.helpers import migration

EFFECTS = migration(
    "20250101000000_effects",
    "CREATE TABLE effects (id serial PRIMARY KEY, migration text NOT NULL);\n"
    "INSERT INTO effects (migration) VALUES ('effects');\n",
    down="DROP TABLE effects;\n",
)
ACCOUNTS = migration(
    "20250102000000_accounts",
    'CREATE TABLE "accounts" ("id" INT PRIMARY KEY, "name" TEXT NOT NULL);\n'
    "INSERT INTO effects (migration) VALUES ('accounts');\n",
    down='DROP TABLE "accounts";\nDELETE FROM effects WHERE migration = \'accounts\';\n',
    verify='SELECT count(*) = 1 AS ok FROM effects WHERE migration = \'accounts\';\n',
)
BUNDLE = [EFFECTS, ACCOUNTS]


def slow(seconds: float) -> list[BundledMigration]:
    """The bundle with a migration that takes `seconds` inside its transaction."""
    body = ACCOUNTS.sql + f"SELECT pg_sleep({seconds});\n"
    return [EFFECTS, migration(ACCOUNTS.name, body, down=ACCOUNTS.down_sql, verify=ACCOUNTS.verify_sql)]


def request(stages: list[str], migrations: list[BundledMigration] | None = None, **kwargs: Any) -> RolloutRequest:
    kwargs.setdefault("requested_by", "carol")
    return RolloutRequest(name=f"r{uuid.uuid4().hex[:8]}", stages=stages, operation=Operation.full,
                          bundle=MigrationBundle(migrations=migrations or BUNDLE, revision="test", source="tests"),
                          **kwargs)


async def create_fleet(pg_server: Any, n: int) -> tuple[str, list[str]]:
    """`n` fresh databases named <prefix>_NN; returns (prefix, database names, sorted)."""
    prefix = f"fl{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        names = [f"{prefix}_{i:02d}" for i in range(1, n + 1)]
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    return prefix, names


async def drop_fleet(pg_server: Any, names: list[str]) -> None:
    for name in names:
        await pg_server.drop_database(name)


def fleet_settings(pg_server: Any, prefix: str, *, environments: dict[str, EnvironmentSettings] | None = None,
                   **rules: Any) -> Settings:
    """A worker whose fleet `tenants` lists the databases named <prefix>_* on the test server."""
    rules.setdefault("gates", [])
    rules.setdefault("approval_proofs", ["ssh", "typed"])  # a rollout's approvals are not signed yet
    fleet = FleetSettings(
        discover={"server_url": pg_server.url("postgres"),
                  "query": f"SELECT datname FROM pg_database WHERE datname LIKE '{prefix}\\_%' ORDER BY datname"},
        rules=rules)
    return Settings(environments=environments or {}, fleets={"tenants": fleet},
                    advisory_lock_timeout=timedelta(seconds=5), _env_file=None)


async def apply_by_hand(url: str, migrations: list[BundledMigration]) -> None:
    """Apply migrations the way `prisma migrate deploy` leaves them (SQL and ledger row in one transaction)."""
    conn = await asyncpg.connect(url)
    try:
        ledger = MigrationLedger(conn)
        await ledger.ensure_table()
        for m in migrations:
            async with conn.transaction():
                started = utcnow()
                await conn.execute(m.sql)
                await ledger.insert_applied(m.name, m.checksum, started, utcnow())
    finally:
        await conn.close()


async def holdings(url: str) -> dict[str, Any]:
    """What a database holds: applied ledger rows per migration, effects rows per migration, tables."""
    conn = await asyncpg.connect(url)
    try:
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        applied: dict[str, int] = {}
        effects: dict[str, int] = {}
        if "_prisma_migrations" in tables:
            for r in await conn.fetch("SELECT migration_name, count(*) AS n FROM _prisma_migrations WHERE finished_at "
                                      "IS NOT NULL AND rolled_back_at IS NULL GROUP BY 1"):
                applied[r["migration_name"]] = r["n"]
        if "effects" in tables:
            for r in await conn.fetch("SELECT migration, count(*) AS n FROM effects GROUP BY 1"):
                effects[r["migration"]] = r["n"]
        return {"tables": tables, "applied": applied, "effects": effects}
    finally:
        await conn.close()


async def all_holdings(pg_server: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    found = await asyncio.gather(*(holdings(pg_server.url(n)) for n in names))
    return dict(zip(names, found))


DEPLOYED = {"applied": {EFFECTS.name: 1, ACCOUNTS.name: 1}, "effects": {"effects": 1, "accounts": 1}}


def deployed_once(holding: dict[str, Any]) -> bool:
    return holding["applied"] == DEPLOYED["applied"] and holding["effects"] == DEPLOYED["effects"]
