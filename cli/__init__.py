"""The starter CLI: one typer app, one module per concern. `starter.py` is its entry point."""
