"""Printing a benchmark's rows as a table (wide enough to read when piped into a log)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_table(title: str, columns: list[str], rows: list[dict]) -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[str(row.get(c)) for c in columns])
    Console(width=220).print(table)
