"""The tree keeps the shape the README's layout table promises: domain/ is pure, imports between the
product's modules have no cycle, modules stay small enough to read, and pyflakes finds nothing."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["domain", "activities", "workflows", "runtime", "cli", "devstack"]
TOP_LEVEL = ["worker.py", "starter.py"]
# Past this size a module must say in its docstring why it is one module ("Long module: <why>").
MAX_LINES = 400


def product_modules() -> dict[str, Path]:
    modules = {p.removesuffix(".py"): REPO / p for p in TOP_LEVEL}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def module_level_imports(path: Path) -> set[str]:
    """Modules imported when `path` is imported (function-level imports excluded)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        targets = [node]
        if isinstance(node, (ast.If, ast.With, ast.Try)):  # e.g. imports_passed_through(), TYPE_CHECKING
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            targets = list(ast.walk(node))
        for item in targets:
            if isinstance(item, ast.Import):
                found.update(alias.name for alias in item.names)
            elif isinstance(item, ast.ImportFrom) and item.module and not item.level:
                found.add(item.module)
                found.update(f"{item.module}.{alias.name}" for alias in item.names)
    return found


def test_domain_does_no_io_and_knows_nothing_of_temporal_or_the_database() -> None:
    forbidden = ("asyncpg", "temporalio", "activities", "workflows", "cli", "runtime", "devstack", "socket",
                 "subprocess", "httpx")
    offenders = []
    for name, path in product_modules().items():
        if name.split(".")[0] != "domain":
            continue
        for imported in module_level_imports(path) | {i for i in _all_imports(path)}:
            if imported.split(".")[0] in forbidden:
                offenders.append(f"{name} imports {imported}")
    assert offenders == []


def _all_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def test_no_import_cycle_between_product_modules() -> None:
    modules = product_modules()
    graph = {name: {i for i in module_level_imports(path) if i in modules and i != name} for name, path in modules.items()}
    # A package's __init__ imports nothing here, so edges to a package do not hide cycles.
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == []


def test_modules_stay_small_or_say_why() -> None:
    too_long = []
    for name, path in product_modules().items():
        lines = path.read_text().count("\n")
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and "long module:" not in doc.lower():
            too_long.append(f"{name}: {lines} lines")
    assert too_long == []


@pytest.mark.skipif(shutil.which("ruff", path=str(Path(sys.executable).parent)) is None, reason="ruff not installed")
def test_pyflakes_finds_nothing() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    proc = subprocess.run([ruff, "check", "--no-cache", "--select", "F", "--quiet", "."], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
