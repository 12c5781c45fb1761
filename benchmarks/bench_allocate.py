"""Benchmark budgeted allocation: Lagrangian vs exact LP (HiGHS), and scale.

    python benchmarks/bench_allocate.py            # 10k/50k vs LP, 1M and 10M alone
    python benchmarks/bench_allocate.py --quick    # tiny sizes, seconds

Writes benchmarks/results/allocate.json. Instances come from
``random_instance`` (four archetypes); the budget is a fraction of the spend of
the unconstrained best allocation, so the budget binds.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info
from common import timed as _timed

from sellerlift.allocate import allocate_exact_lp, allocate_lagrangian, random_instance


def timed(fn, repeats):
    return _timed(fn, repeats, warmup=0)  # the LP at 50k takes tens of seconds: no untimed warm-up


def budget_for(inst, frac):
    # spend of the unconstrained optimum, from a Lagrangian call with no budget
    return frac * allocate_lagrangian(inst["p"], inst["value"], inst["margin"], inst["levels"]).spend


def vs_lp(n, frac, repeats, lp_repeats):
    inst = random_instance(n, seed=n)
    args = (inst["p"], inst["value"], inst["margin"], inst["levels"])
    budget = budget_for(inst, frac)
    lag, t_lag = timed(lambda: allocate_lagrangian(*args, budget), repeats)
    lp, t_lp = timed(lambda: allocate_exact_lp(*args, budget), lp_repeats)
    return {"n": n, "budget_frac": frac, "budget": budget, "lagrangian": t_lag, "lp_highs": t_lp,
            "time_ratio_lp_over_lagrangian": t_lp["median_s"] / t_lag["median_s"],
            "profit_lagrangian": lag.profit, "profit_lp": lp.profit,
            "gap_rel": (lp.profit - lag.profit) / lp.profit, "spend_over_budget": lag.spend / budget,
            "dual_bound_vs_lp_rel": (lag.bound - lp.profit) / lp.profit}


def scale(n, frac, repeats, sellers=False):
    inst = random_instance(n, seed=n, dtype=np.float32)  # float32 p: half the input memory
    args = (inst["p"], inst["value"], inst["margin"], inst["levels"])
    budget = budget_for(inst, frac)
    kw = {}
    if sellers:
        kw = {"seller": inst["seller"], "seller_budgets": {s: 1.5 * budget / 20 for s in range(20)}}
    a, t = timed(lambda: allocate_lagrangian(*args, budget, **kw), repeats)
    tracemalloc.start()  # separate run: tracing slows allocation a little
    allocate_lagrangian(*args, budget, **kw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    input_mb = sum(np.asarray(x).nbytes for x in (inst["p"], inst["value"], inst["margin"])) / 2**20
    return {"n": n, "per_seller": sellers, "budget_frac": frac, **t, "peak_traced_mb": peak / 2**20,
            "input_mb": input_mb, "gap_vs_dual_bound_rel": a.gap, "iterations": a.n_iter,
            "maxrss_mb_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--frac", type=float, default=0.3, help="budget as a fraction of unconstrained spend")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "allocate.json"))
    a = ap.parse_args()
    lp_sizes, big_sizes = ([1000, 3000], [20_000, 100_000]) if a.quick else ([10_000, 50_000], [1_000_000, 10_000_000])
    res = {"machine": machine_info(), "quick": a.quick, "vs_lp": [], "scale": []}
    for n in lp_sizes:
        r = vs_lp(n, a.frac, repeats=5, lp_repeats=3)
        res["vs_lp"].append(r)
        print(f"n={n:>9,}  lagrangian {r['lagrangian']['median_s']:.3f}s  LP {r['lp_highs']['median_s']:.3f}s"
              f"  ratio {r['time_ratio_lp_over_lagrangian']:.1f}x  gap {r['gap_rel']:.2e}", flush=True)
    for n in big_sizes:
        for sellers in (False, True):
            r = scale(n, a.frac, repeats=3, sellers=sellers)
            res["scale"].append(r)
            print(f"n={n:>9,}  sellers={sellers!s:5}  lagrangian {r['median_s']:.2f}s "
                  f"[{r['min_s']:.2f}-{r['max_s']:.2f}]  peak {r['peak_traced_mb']:.0f} MB "
                  f"(input {r['input_mb']:.0f} MB)  gap<= {r['gap_vs_dual_bound_rel']:.1e}", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
