"""Run every benchmark in turn; each appends to benchmarks/RESULTS.md and writes its PNG.

    .venv/bin/python -m benchmarks            # default sizes (about 20 minutes on 2 cores)
    .venv/bin/python -m benchmarks --full     # + drain of 1M, scoped queries at 10M x 100
    .venv/bin/python -m benchmarks --only drain,scoped_query

The peers of the throughput benchmark are benchmark-only dependencies:
``pip install -r benchmarks/requirements.txt`` (``make bench`` does it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

DEFAULT = {
    "throughput": [],
    "drain": [],
    "scoped_query": [],
    "operator_scale": [],
    "autoscale": [],
    "rollout": [],
    "agent_e2e": [],
    "operator_idle": ["--count", "200", "--idle", "300", "--scale-down", "20"],
    "time_to_ready": ["--count", "100"],
}
FULL = {
    "throughput": [],
    "drain": ["--sizes", "1000,10000,100000,1000000"],
    "scoped_query": ["--tasks", "1000000,10000000", "--occurrences", "10,100"],
    "operator_scale": [],
    "autoscale": [],
    "rollout": [],
    "agent_e2e": ["--ks", "1,2,4,8"],
    "operator_idle": [],  # 1,000 AgentDeployments x 3, 10 minutes idle, 100 drained at once
    "time_to_ready": ["--count", "1000"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the full curves (much longer)")
    parser.add_argument("--only", default=",".join(DEFAULT), help="comma-separated subset")
    args = parser.parse_args()
    plan = FULL if args.full else DEFAULT
    chosen = [b for b in args.only.split(",") if b]
    unknown = set(chosen) - set(plan)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {list(plan)}")
    failed = []
    for name in chosen:
        cmd = [sys.executable, "-m", f"benchmarks.{name}", *plan[name]]
        print("$", " ".join(cmd[1:]), flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
