"""Put a database into the production state of the incident (../shared/reference/incident-migration-resolution-plan.md).

    python -m devstack.incident reproduce --database-url postgresql://...

Afterwards, against examples/incident/prisma/migrations:
- 20241210000000_init is applied (its SQL really ran; Prisma's row);
- 20251113220938_add_customer_slug is recorded as applied but has no folder (the phantom: someone
  ran it by hand; it changed nothing, as the slug column and its index came with init);
- 20241226000000_add_leads_questionnaire_models is pending, and out of order (the phantom is later);
- 20260115000000_add_landing_sections failed: Prisma's failed row with its logs. It really ran
  and really failed (a lock held by another session made it time out), inside its transaction, so
  none of its rows exist.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import asyncpg
import typer

from activities.db import DatabaseUnavailable, connect
from activities.ledger import MigrationLedger
from domain.prisma.checksum import sha256_hex
from domain.prisma.errors import migration_failed_logs
from domain.prisma.folder import MigrationFolderError, read_migrations_dir

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "examples" / "incident" / "prisma" / "migrations"

INIT = "20241210000000_init"
LEADS = "20241226000000_add_leads_questionnaire_models"
LANDING = "20260115000000_add_landing_sections"
PHANTOM = "20251113220938_add_customer_slug"
# What the hand-run migration presumably contained; only its checksum is in the ledger.
PHANTOM_SQL = '-- AlterTable\nALTER TABLE "customers" ADD COLUMN IF NOT EXISTS "slug" TEXT;\n'


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


class IncidentError(RuntimeError):
    pass


async def reproduce_incident(dsn: str, migrations_dir: Path = MIGRATIONS_DIR) -> None:
    """Bring an empty database to the incident's production state (refuses a non-empty one)."""
    by_name = {m.name: m for m in read_migrations_dir(migrations_dir)}
    init, landing = by_name[INIT], by_name[LANDING]
    conn = await connect(dsn)
    try:
        ledger = MigrationLedger(conn)
        snapshot = await ledger.read()
        if snapshot.table_exists or snapshot.other_tables:
            raise IncidentError(
                f"the database already has tables ({', '.join(snapshot.other_tables[:5]) or '_prisma_migrations'}); "
                "reproduce the incident in an empty database"
            )
        await ledger.ensure_table()

        async with conn.transaction():  # as `prisma migrate deploy` applied it in December 2024
            await conn.execute(init.sql)
            await ledger.insert_applied(INIT, init.checksum, _at("2024-12-10 09:14:03.120"), _at("2024-12-10 09:14:03.482"))

        # Applied by hand on production, never committed: the column was already there.
        await conn.execute(PHANTOM_SQL)
        await ledger.insert_applied(
            PHANTOM, sha256_hex(PHANTOM_SQL.encode()), _at("2025-11-13 22:09:38.511"), _at("2025-11-13 22:09:38.530")
        )

        row_id = await ledger.insert_started(LANDING, landing.checksum, _at("2026-01-15 08:02:11.907"))
        logs = await _fail_landing_migration(dsn, conn, landing.sql)
        await ledger.record_failure(row_id, logs)
    finally:
        await conn.close()


async def _fail_landing_migration(dsn: str, conn: asyncpg.Connection, sql: str) -> str:
    """Run the landing migration while another session locks its table: it times out and rolls back."""
    blocker = await connect(dsn)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute('LOCK TABLE "landing_page_content" IN ACCESS EXCLUSIVE MODE')
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '200ms'")
                await conn.execute(sql)
        except asyncpg.LockNotAvailableError as exc:
            error = exc
        else:
            raise IncidentError("the landing migration unexpectedly succeeded")
        finally:
            await tx.rollback()
    finally:
        await blocker.close()
    return migration_failed_logs(LANDING, error.sqlstate, str(error))


cli = typer.Typer(add_completion=False, no_args_is_help=True, help="Reproduce the incident in a database.")


@cli.command()
def reproduce(
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="An empty database. Default: $DATABASE_URL.", show_default=False)
    ] = None,
) -> None:
    """Bring an empty database to the incident's production state."""
    dsn = database_url or os.environ.get("DATABASE_URL")
    if not dsn:
        typer.echo("error: pass --database-url or set DATABASE_URL", err=True)
        raise typer.Exit(3)
    try:
        asyncio.run(reproduce_incident(dsn))
    except (DatabaseUnavailable, IncidentError, MigrationFolderError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from None
    typer.echo(
        f"Reproduced the incident: {INIT} applied, phantom {PHANTOM} applied with no folder, {LEADS} pending, "
        f"{LANDING} failed.\nSee it with: python starter.py status --migrations-dir {MIGRATIONS_DIR}"
    )


@cli.callback()
def _main() -> None:
    pass


if __name__ == "__main__":
    cli()
