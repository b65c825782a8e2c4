"""The typer application every command module registers on."""

import typer

app = typer.Typer(
    name="starter.py",
    help="Deploy Prisma migrations to PostgreSQL through a durable, approved, audited Temporal workflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
