"""How long a 90-day forward run takes, and how much memory, at 50k and 1M customers.

    python benchmarks/bench_closed_loop.py            # 50k and 1M customers (the 1M world is simulated first)
    python benchmarks/bench_closed_loop.py --quick    # 3k and 10k

Each size runs in a fresh process: the world (cached under data/sim, not timed), then three
policies for 90 days (no offers, the top-value rule, the direct oracle); wall time, customer-days
per second and the process's peak RSS. Writes benchmarks/results/closed_loop_perf.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import markdown_table, write_result

CHILD = """
import json, resource, sys, time
from sellerlift.closed_loop import policies as P
from sellerlift.closed_loop.forward import Population, run_policy
from sellerlift.closed_loop.observe import Budget
from sellerlift.sim import SimulatorConfig, simulate_cached
n, days, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
t0 = time.perf_counter()
sim = simulate_cached(SimulatorConfig(n_customers=n, seed=0, truth_replications=0), root, progress=False)
path = sim.path
del sim
t_sim = time.perf_counter() - t0
t0 = time.perf_counter()
pop = Population.load(path)
t_load = time.perf_counter() - t0
rows = []
for pol in (P.NoOffers(), P.top_value(10), P.Oracle("direct")):
    t0 = time.perf_counter()
    run_policy(pop, pol, days, Budget(0.15), horizons=(days,), record_events=False)
    wall = time.perf_counter() - t0
    rows.append({"customers": n, "policy": pol.name, "days": days, "wall_s": wall,
                 "customer_days_per_s": n * days / wall})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "load_s": t_load, "world_s": t_sim, "peak_rss_mib": peak}))
"""


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", type=int, nargs="+")
    ap.add_argument("--days", type=int, default=90)
    args = ap.parse_args(argv)
    sizes = args.sizes or ([3000, 10_000] if args.quick else [50_000, 1_000_000])
    rows, per_size = [], []
    for n in sizes:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(n), str(args.days), str(REPO / "data" / "sim")],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        for r in out["rows"]:
            rows.append({**r, "peak_rss_mib": out["peak_rss_mib"], "population_load_s": out["load_s"]})
        per_size.append({"customers": n, **{k: out[k] for k in ("load_s", "world_s", "peak_rss_mib")}})
        print(
            markdown_table(rows[-3:], ["customers", "policy", "wall_s", "customer_days_per_s", "peak_rss_mib"]),
            flush=True,
        )
    payload = {"rows": rows, "sizes": per_size, "days": args.days}
    write_result("closed_loop_perf", payload, quick=args.quick)
    return payload


if __name__ == "__main__":
    main()
