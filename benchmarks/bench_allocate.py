"""Benchmark budgeted allocation: Lagrangian vs exact LP / MILP (HiGHS), the new constraints, and scale.

    python benchmarks/bench_allocate.py            # 10k/50k vs LP, 200-3000 vs MILP, 1M and 10M alone
    python benchmarks/bench_allocate.py --quick    # tiny sizes, seconds
    python benchmarks/bench_allocate.py --parts scale   # rerun one part, keep the others in the JSON

Writes benchmarks/results/allocate.json. Instances come from ``random_instance`` (four archetypes) and
``random_retention`` (enduring value, seller tiers, segments); the budget is a fraction of the spend of
the unconstrained best allocation, so the budget binds. "all" = total budget + per-seller budgets +
per-tier budgets + enduring value (weight 0.5) + a 25 % cap for everyone and 5 % for "buys anyway" +
spread penalty 0.01 + at most 8 currency units of expected incentive per customer.

Gaps are named for what they compare: ``gap_vs_lp_bound`` (against the LP relaxation, an upper bound;
an optimal integer answer can show one), ``gap_vs_milp`` (against HiGHS' integer optimum, small n only),
``gap_to_bound`` (the Lagrangian's own dual bound, an upper bound on its gap).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info
from common import timed as _timed

from sellerlift.allocate import (
    allocate_exact_lp,
    allocate_lagrangian,
    allocate_rule_based,
    random_instance,
    random_retention,
)


def timed(fn, repeats):
    return _timed(fn, repeats, warmup=0)  # the LP at 50k takes tens of seconds: no untimed warm-up


def budget_for(inst, frac):
    # spend of the unconstrained optimum, from a Lagrangian call with no budget
    return frac * allocate_lagrangian(inst["p"], inst["value"], inst["margin"], inst["levels"]).spend


def instance(n, dtype=np.float64):
    inst = random_instance(n, seed=n, dtype=dtype)
    return inst, random_retention(inst, seed=n)


def options(inst, ext, budget, mode):
    """Keyword arguments of each mode (see the module doc)."""
    if mode == "total":
        return {}
    present = np.unique(inst["seller"]).tolist()  # small instances may miss a small seller
    sellers = {"seller": inst["seller"], "seller_budgets": {s: 1.5 * budget / 20 for s in present}}
    if mode == "sellers":
        return sellers
    return sellers | {
        "seller_tier": ext["seller_tier"],
        "tier_budgets": {"large": 0.4 * budget, "mid": 0.4 * budget, "small": 0.3 * budget},
        "enduring": ext["enduring"],
        "weight": 0.5,
        "max_discount": 25.0,
        "segment": ext["segment"],
        "segment_max_discount": {"buys anyway": 5.0},
        "spread_penalty": 0.01,
        "max_incentive": 8.0,
    }


def vs_lp(n, frac, repeats, lp_repeats, mode="total"):
    inst, ext = instance(n)
    args = (inst["p"], inst["value"], inst["margin"], inst["levels"])
    budget = budget_for(inst, frac)
    kw = options(inst, ext, budget, mode)
    lag, t_lag = timed(lambda: allocate_lagrangian(*args, budget, **kw), repeats)
    lp, t_lp = timed(lambda: allocate_exact_lp(*args, budget, **kw), lp_repeats)
    return {
        "n": n,
        "mode": mode,
        "budget_frac": frac,
        "budget": budget,
        "lagrangian": t_lag,
        "lp_highs": t_lp,
        "time_ratio_lp_over_lagrangian": t_lp["median_s"] / t_lag["median_s"],
        "objective_lagrangian": lag.profit,
        "lp_bound": lp.profit,
        "gap_vs_lp_bound_rel": (lp.profit - lag.profit) / lp.profit,
        "spend_over_budget": lag.spend / budget,
        "dual_bound_vs_lp_rel": (lag.bound - lp.profit) / lp.profit,
    }


def vs_milp(n, frac, time_limit):
    """Small instances, every option: the Lagrangian, HiGHS' integer optimum and the LP bound."""
    inst, ext = instance(n)
    args = (inst["p"], inst["value"], inst["margin"], inst["levels"])
    budget = budget_for(inst, frac)
    kw = options(inst, ext, budget, "all")
    lag, t_lag = timed(lambda: allocate_lagrangian(*args, budget, **kw), 3)
    lp, t_lp = timed(lambda: allocate_exact_lp(*args, budget, **kw), 1)
    milp, t_milp = timed(lambda: allocate_exact_lp(*args, budget, integer=True, time_limit=time_limit, **kw), 1)
    return {
        "n": n,
        "mode": "all",
        "budget_frac": frac,
        "lagrangian_s": t_lag["median_s"],
        "lp_s": t_lp["median_s"],
        "milp_s": t_milp["median_s"],
        "milp_status": milp.status,
        "objective_lagrangian": lag.profit,
        "milp_optimum": milp.profit,
        "lp_bound": lp.profit,
        "dual_bound": lag.bound,
        "gap_vs_milp_rel": (milp.profit - lag.profit) / milp.profit,
        "milp_gap_vs_lp_bound_rel": (lp.profit - milp.profit) / lp.profit,
        "gap_to_bound_rel": lag.gap_to_bound,
    }


def scale(n, frac, repeats, mode):
    inst, ext = instance(n, dtype=np.float32)  # float32 p and enduring: half the input memory
    args = (inst["p"], inst["value"], inst["margin"], inst["levels"])
    budget = budget_for(inst, frac)
    kw = options(inst, ext, budget, mode)
    a, t = timed(lambda: allocate_lagrangian(*args, budget, **kw), repeats)
    tracemalloc.start()  # separate run: tracing slows allocation a little
    allocate_lagrangian(*args, budget, **kw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    inputs = [inst["p"], inst["value"], inst["margin"]] + ([ext["enduring"]] if "enduring" in kw else [])
    input_mb = sum(np.asarray(x).nbytes for x in inputs) / 2**20
    return {
        "n": n,
        "mode": mode,
        "per_seller": mode != "total",
        "budget_frac": frac,
        **t,
        "peak_traced_mb": peak / 2**20,
        "input_mb": input_mb,
        "gap_to_bound_rel": a.gap_to_bound,
        "iterations": a.n_iter,
        "spread": a.spread,
        "maxrss_mb_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def objective_and_spread(n, fracs):
    """The retention weight's trade-off and the spread penalty's effect, with the sellers' top-value rule
    (10 % to the highest order values) at the same spend as the reference for the spread."""
    inst, ext = instance(n)
    args = (inst["p"], inst["value"], inst["margin"], inst["levels"])
    rows = []
    for frac in fracs:
        budget = budget_for(inst, frac)
        for weight, pen in ((0.0, 0.0), (0.5, 0.0), (1.0, 0.0), (0.0, 0.01), (0.0, 0.05), (0.5, 0.01)):
            t0 = time.perf_counter()
            a = allocate_lagrangian(*args, budget, enduring=ext["enduring"], weight=weight, spread_penalty=pen)
            took = time.perf_counter() - t0
            rule = allocate_rule_based(*args, a.spend, rule="top_value", level_pct=10)
            rows.append(
                {
                    "n": n,
                    "budget_frac": frac,
                    "weight": weight,
                    "spread_penalty": pen,
                    "seconds": took,
                    "direct": a.direct,
                    "enduring": a.enduring,
                    "spend": a.spend,
                    "offered_share": float((a.level_index > 0).mean()),
                    "spread": a.spread,
                    "spread_rule_top_value": rule.spread,
                    "spread_vs_rule": a.spread / rule.spread - 1,
                    "gap_to_bound_rel": a.gap_to_bound,
                }
            )
    return rows


PARTS = ("vs_lp", "vs_milp", "scale", "objective_spread")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--frac", type=float, default=0.3, help="budget as a fraction of unconstrained spend")
    ap.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="rerun only these parts; the others are kept from the existing --out file",
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "allocate.json"))
    a = ap.parse_args()
    if a.quick:
        lp_sizes, milp_sizes, big_sizes, spread_n = [1000, 3000], [100, 300], [20_000, 100_000], 20_000
    else:
        lp_sizes, milp_sizes, big_sizes, spread_n = (
            [10_000, 50_000],
            [200, 1000, 3000],
            [1_000_000, 10_000_000],
            1_000_000,
        )
    out = Path(a.out)
    res = json.loads(out.read_text()) if set(a.parts) != set(PARTS) and out.exists() else {}
    res |= {"machine": machine_info(), "quick": a.quick}
    load = res.setdefault("load_at_start", {})
    if "vs_lp" in a.parts:
        load["vs_lp"], res["vs_lp"] = os.getloadavg(), []
        for n in lp_sizes:
            for mode in ("total", "all"):
                r = vs_lp(n, a.frac, repeats=5, lp_repeats=3 if mode == "total" and n <= 10_000 else 1, mode=mode)
                res["vs_lp"].append(r)
                print(
                    f"n={n:>9,}  {mode:7}  lagrangian {r['lagrangian']['median_s']:.3f}s"
                    f"  LP {r['lp_highs']['median_s']:.3f}s  ratio {r['time_ratio_lp_over_lagrangian']:.1f}x"
                    f"  gap vs LP bound {r['gap_vs_lp_bound_rel']:.2e}",
                    flush=True,
                )
    if "vs_milp" in a.parts:
        load["vs_milp"], res["vs_milp"] = os.getloadavg(), []
        for n in milp_sizes:
            r = vs_milp(n, a.frac, time_limit=300)
            res["vs_milp"].append(r)
            print(
                f"n={n:>9,}  all      lagrangian {r['lagrangian_s']:.3f}s  MILP {r['milp_s']:.1f}s"
                f" ({r['milp_status']})  gap vs MILP {r['gap_vs_milp_rel']:.2e}"
                f"  MILP vs LP bound {r['milp_gap_vs_lp_bound_rel']:.2e}",
                flush=True,
            )
    if "scale" in a.parts:
        load["scale"], res["scale"] = os.getloadavg(), []
        for n in big_sizes:
            for mode in ("total", "sellers", "all"):
                r = scale(n, a.frac, repeats=3, mode=mode)
                r["load_at_start"] = os.getloadavg()[0]
                res["scale"].append(r)
                print(
                    f"n={n:>9,}  {mode:7}  lagrangian {r['median_s']:.2f}s [{r['min_s']:.2f}-{r['max_s']:.2f}]"
                    f"  peak {r['peak_traced_mb']:.0f} MB (input {r['input_mb']:.0f} MB)"
                    f"  gap<= {r['gap_to_bound_rel']:.1e}",
                    flush=True,
                )
    if "objective_spread" in a.parts:
        load["objective_spread"] = os.getloadavg()
        res["objective_spread"] = objective_and_spread(spread_n, (0.05, 0.3))
        for r in res["objective_spread"]:
            print(
                f"frac {r['budget_frac']:.2f} w {r['weight']:.1f} pen {r['spread_penalty']:.2f}: direct "
                f"{r['direct']:,.0f} enduring {r['enduring']:,.0f} spread {r['spread']:.3f} "
                f"(rule {r['spread_rule_top_value']:.3f}, {r['spread_vs_rule']:+.0%})",
                flush=True,
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
