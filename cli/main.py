"""The starter CLI: one typer app and every command module registered on it.

Each module below declares its commands with `@app.command()`; importing it is what registers them,
so the list here is the CLI's table of contents.
"""

from __future__ import annotations

from cli import approvals, deploy, lint, rollout, runs, show, sign, status, watch  # noqa: F401 - each registers its commands
from cli.app import app
from cli.common import leave_process


def main() -> None:
    """Console script `prisma-deploy` (and `python starter.py`)."""
    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    leave_process(code)
