"""The torture suite's scoreboard: every case records its trials here; `make torture` prints the
table at the end of the pytest run (tests/torture/conftest.py) and writes
test-artifacts/torture-report.json. `python -m tests.torture.report` prints the last saved table.

Columns: trials, passed, failures, double-applied (a migration whose effects or applied ledger
rows were found more than once), lost (a migration the run reported applied, or should have
applied, whose effects or ledger row are missing).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPORT_FILE = REPO / "test-artifacts" / "torture-report.json"


@dataclass
class CaseStats:
    case: str
    trials: int = 0
    passed: int = 0
    double_applied: int = 0
    lost: int = 0
    failures: list[str] = field(default_factory=list)


_cases: dict[str, CaseStats] = {}


def record(case: str, *, ok: bool, failure: str | None = None, double_applied: int = 0, lost: int = 0) -> None:
    stats = _cases.setdefault(case, CaseStats(case))
    stats.trials += 1
    stats.passed += 1 if ok else 0
    stats.double_applied += double_applied
    stats.lost += lost
    if not ok:
        stats.failures.append((failure or "failed").splitlines()[0][:300])


class Trial:
    """`with Trial("case") as t:` records one trial: passed unless the block raised; the block may
    set t.double_applied / t.lost before asserting."""

    def __init__(self, case: str) -> None:
        self.case = case
        self.double_applied = 0
        self.lost = 0

    def __enter__(self) -> "Trial":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        failure = None if exc is None else f"{exc_type.__name__}: {exc}"
        record(self.case, ok=exc is None, failure=failure, double_applied=self.double_applied, lost=self.lost)
        return False


def collected() -> list[CaseStats]:
    return list(_cases.values())


def save(cases: list[CaseStats], path: Path = REPORT_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    totals = {k: sum(getattr(c, k) for c in cases) for k in ("trials", "passed", "double_applied", "lost")}
    path.write_text(json.dumps({"cases": [asdict(c) for c in cases], "totals": totals}, indent=2) + "\n")
    return path


def render(cases: list[CaseStats]) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(title="torture suite")
    for col in ("case", "trials", "passed", "failures", "double-applied", "lost"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for c in cases:
        table.add_row(c.case, str(c.trials), str(c.passed), str(c.trials - c.passed), str(c.double_applied), str(c.lost))
    table.add_row("TOTAL", *(str(sum(v)) for v in zip(*[(c.trials, c.passed, c.trials - c.passed, c.double_applied, c.lost)
                                                          for c in cases])) if cases else ("0",) * 5, style="bold")
    out = StringIO()
    Console(file=out, width=120, force_terminal=False).print(table)
    lines = [out.getvalue().rstrip()]
    for c in cases:
        for f in c.failures[:3]:
            lines.append(f"  {c.case}: {f}")
    return "\n".join(lines)


def main() -> int:
    if not REPORT_FILE.exists():
        print(f"no torture report yet ({REPORT_FILE}); run: make torture", file=sys.stderr)
        return 1
    data = json.loads(REPORT_FILE.read_text())
    print(render([CaseStats(**c) for c in data["cases"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
