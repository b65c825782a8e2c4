"""`make bench`: every benchmark in turn; each prints a table and writes JSON to bench/results/."""

import runpy
import sys

BENCHMARKS = ["bench.bench_analysis", "bench.status_speed", "bench.overhead"]

if __name__ == "__main__":
    only = sys.argv[1:] or BENCHMARKS
    for name in only:
        print(f"\n### {name}", flush=True)
        runpy.run_module(name, run_name="__main__")
