"""Prisma's own error texts, where the product must write or show exactly what Prisma does.

P3018 is what the native schema engine stores in `_prisma_migrations.logs` when a migration fails
(REPORT.md §3, "failing migration"): `prisma migrate status` and people reading the table see it.
"""

from __future__ import annotations


def migration_failed_logs(
    name: str,
    sqlstate: str | None,
    message: str,
    *,
    detail: str | None = None,
    hint: str | None = None,
    position: str | int | None = None,
) -> str:
    """The `logs` text of a failed migration (P3018), from the database error's fields."""
    text = f"ERROR: {message}"
    for label, value in (("DETAIL", detail), ("HINT", hint), ("POSITION", position)):
        if value:
            text += f"\n{label}: {value}"
    return (
        "A migration failed to apply. New migrations cannot be applied before the error is recovered from. "
        "Read more about how to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve\n\n"
        f"Migration name: {name}\n\nDatabase error code: {sqlstate or 'unknown'}\n\nDatabase error:\n{text}\n"
    )
