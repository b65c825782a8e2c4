"""`make bench`: every benchmark in turn, each in its own process; each prints a table and writes
JSON to bench/results/. `python -m bench bench.overhead` runs just one."""

import subprocess
import sys

BENCHMARKS = ["bench.bench_analysis", "bench.folder_order", "bench.status_speed", "bench.long_history", "bench.overhead",
              "bench.bench_rollout", "bench.bench_schema", "bench.bench_run_cost", "bench.app_impact"]

if __name__ == "__main__":
    failed = []
    for name in sys.argv[1:] or BENCHMARKS:
        print(f"\n### {name}", flush=True)
        if subprocess.run([sys.executable, "-m", name]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    sys.exit(1 if failed else 0)
