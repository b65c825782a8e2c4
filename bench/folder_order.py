"""Reading and ordering a large migrations folder (was a timed assertion in tests/test_folder.py).

Prisma's order is ICU collation (domain/prisma/order.py, node's localeCompare), not byte order; it
is exact and slower than a tuple key. Measured: 10,000 names sorted (digit prefixes, and names with
non-ASCII letters), and `read_folder` of a 10,000-directory folder. Target: each under 0.5 s.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.generate import write_folder
from bench.overhead import RESULTS, machine
from bench.report import print_table
from domain.prisma.folder import read_folder
from domain.prisma.order import prisma_sorted

N = 10_000
TARGET_S = 0.5


def _median(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> dict:
    rng = random.Random(1)
    plain = [f"2024{i:010d}_m{i % 7}" for i in range(N)]
    letters = "abcdefghijklmnopqrstuvwxyzßæøłđþœéüÅ_-"
    unicode_names = [f"2024{rng.randrange(10**10):010d}_" + "".join(rng.choice(letters) for _ in range(12)) for _ in range(N)]
    for names in (plain, unicode_names):
        rng.shuffle(names)
    folder = write_folder(Path(tempfile.mkdtemp(prefix="order-")) / "migrations", N)
    rows = [
        {"what": f"prisma_sorted, {N:,} names with digit prefixes", "seconds": _median(lambda: prisma_sorted(plain))},
        {"what": f"prisma_sorted, {N:,} names with non-ASCII letters", "seconds": _median(lambda: prisma_sorted(unicode_names))},
        {"what": f"read_folder, {N:,} directories", "seconds": _median(lambda: read_folder(folder))},
    ]
    for row in rows:
        row["seconds"] = round(row["seconds"], 3)
        row["target_met"] = row["seconds"] <= TARGET_S
    return {"benchmark": "folder_order", "machine": machine(), "target_s": TARGET_S, "rows": rows}


if __name__ == "__main__":
    RESULTS.mkdir(parents=True, exist_ok=True)
    res = main()
    (RESULTS / "folder_order.json").write_text(json.dumps(res, indent=2))
    print_table(f"reading and ordering a large folder (target: each <= {TARGET_S} s)", ["what", "seconds", "target_met"], res["rows"])
