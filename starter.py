"""Entry point of the starter CLI: `python starter.py --help`."""

import importlib
import pkgutil

import cli
from cli.app import app

# Each module in cli/ registers its commands on `app` when imported.
for module in pkgutil.iter_modules(cli.__path__):
    if module.name != "app" and not module.name.startswith("_"):
        importlib.import_module(f"cli.{module.name}")

if __name__ == "__main__":
    app()
