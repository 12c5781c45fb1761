"""Retention-aware decisions vs the next-week DIPN and the rules, in the closed loop, over several seeds and budgets.

    python benchmarks/bench_retention.py                      # 3 seeds x budgets 5 / 15 / 30 %, 50k customers
    python benchmarks/bench_retention.py --quick              # 1 seed, 4k customers, tiny training
    python benchmarks/bench_retention.py --train promotion.enduring.later_coupons=true --name retention_later_coupons

Per seed: ``train.py`` on a world of that seed (the default run: GRU, DIPN, the enduring response; tracked in
MLflow), then every policy run forward 90 days on that run's held-out customers at each budget
(``sellerlift.closed_loop.evaluate`` without the A/B, DiD and OPE studies). Reported per policy and budget:
the 90-day incremental profit per customer (mean over seeds, and the per-seed values with their intervals),
its share of the oracle's and of the observable ceiling's (the same 90-day allocation on predictions fit to
the truth), retention vs no offers, revenue, ROI, the spread of incentives; and the paired differences of
both retention-aware policies (``retention_aware``: the margin after the week; ``retention_aware_clv``:
retention valued at a kept customer's CLV) minus the next-week DIPN per seed, with 95 % intervals over
customers.
Writes benchmarks/results/retention.json (``--name``: another file, for a run with ``--train`` overrides).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import markdown_table, write_result

QUICK_TRAIN = [
    "data.source.n_customers=4000",
    "trainer.max_epochs=2",
    "promotion.dipn.trainer.max_epochs=2",
    "promotion.enduring.max_epochs=2",
    "promotion.enduring.ensemble=2",
    "ceiling.customers=8000",
    "baselines.models={}",
]
POLICIES = (
    "no_offers",
    "rule_top_value",
    "rule_rfm_at_risk",
    "random",
    "blanket_10",
    "next_week_dipn",
    "retention_aware",
    "retention_aware_clv",
    "observable_ceiling",
    "observable_ceiling_enduring",
    "oracle_direct",
    "oracle_enduring",
)


def train(seed: int, quick: bool, overrides: list[str]) -> Path:
    args = [
        sys.executable,
        str(REPO / "train.py"),
        f"seed={seed}",
        f"data.source.seed={seed}",
        "champion.enabled=false",
        "report.enabled=false",
        "tracking.register=false",
        "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar",
        "data.source.progress=false",
        *(QUICK_TRAIN if quick else []),
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = set((REPO / "bundles").glob("*/manifest.json"))
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"training seed {seed} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    new = sorted(set((REPO / "bundles").glob("*/manifest.json")) - before, key=lambda m: m.stat().st_mtime)
    if not new:
        raise SystemExit(f"training seed {seed} wrote no bundle:\n{proc.stdout[-2000:]}")
    return new[-1].parent


def main(argv=None) -> dict:
    from sellerlift.closed_loop.evaluate import Settings, run
    from sellerlift.closed_loop.outcomes import profit
    from sellerlift.evaluate import held_out_customers, sim_of_bundle

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.05, 0.15, 0.30])
    ap.add_argument("--bundles", nargs="+", help="evaluate these bundles instead of training one per seed")
    ap.add_argument("--train", nargs="+", default=[], help="Hydra overrides for the training runs (an ablation)")
    ap.add_argument("--name", default="retention", help="the results file's name (benchmarks/results/<name>.json)")
    args = ap.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    t0 = time.perf_counter()
    bundles = [Path(b) for b in args.bundles] if args.bundles else [train(s, args.quick, args.train) for s in seeds]
    rows, paired = [], []
    for seed, bundle in zip(seeds, bundles):
        sim = sim_of_bundle(bundle, REPO / "data")
        for b in args.budgets:
            s = Settings(
                budget_fraction=b,
                ab=False,
                did=False,
                ope=False,
                seed=seed,
                ceiling_customers=8000 if args.quick else 170_000,
                max_customers=2000 if args.quick else None,
            )
            r = run(sim, bundle, s, held_out_customers(sim), progress=lambda *_: None)
            t = r.table[r.table["horizon_days"] == 90].set_index("policy")
            has_ceiling = "observable_ceiling_enduring" in t.index
            ceil = t.loc["observable_ceiling_enduring", "incremental_profit"] if has_ceiling else np.nan
            for name in POLICIES:
                if name in t.index:
                    row = t.loc[name]
                    rows.append(
                        {
                            "seed": seed,
                            "budget": b,
                            "policy": name,
                            **{
                                k: float(row[k])
                                for k in (
                                    "incremental_profit",
                                    "incremental_profit_ci_low",
                                    "incremental_profit_ci_high",
                                    "retained_vs_no_offers",
                                    "revenue",
                                    "roi",
                                    "incentive_sd",
                                )
                            },
                            "share_of_oracle": float(row.get("share_of_oracle", np.nan)),
                            "share_of_ceiling": float(row["incremental_profit"] / ceil) if ceil > 0 else np.nan,
                        }
                    )
            for aware in ("retention_aware", "retention_aware_clv"):
                if {aware, "next_week_dipn"} - set(r.runs):
                    continue
                a, n = r.runs[aware].outcomes[90], r.runs["next_week_dipn"].outcomes[90]
                d = profit(a, s.margin) - profit(n, s.margin)
                dr = (a.retained.astype(float) - n.retained.astype(float))[a.alive_at_start]
                h = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
                hr = 1.96 * dr.std(ddof=1) / np.sqrt(len(dr))
                paired.append(
                    {
                        "policy": aware,
                        "seed": seed,
                        "budget": b,
                        "profit_diff": float(d.mean()),
                        "profit_diff_ci": [float(d.mean() - h), float(d.mean() + h)],
                        "retention_diff": float(dr.mean()),
                        "retention_diff_ci": [float(dr.mean() - hr), float(dr.mean() + hr)],
                    }
                )
            print(f"seed {seed} budget {b:.0%} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = []
    for (b, name), g in _groups(rows):
        summary.append(
            {
                "budget": b,
                "policy": name,
                "seeds": len(g),
                **{
                    k: float(np.mean([x[k] for x in g]))
                    for k in (
                        "incremental_profit",
                        "share_of_oracle",
                        "share_of_ceiling",
                        "retained_vs_no_offers",
                        "revenue",
                        "roi",
                        "incentive_sd",
                    )
                },
            }
        )
    payload = {
        "seeds": seeds,
        "budgets": args.budgets,
        "bundles": [str(b) for b in bundles],
        "train_overrides": args.train,
        "rows": rows,
        "summary": summary,
        "paired_minus_next_week": paired,
        "seconds": time.perf_counter() - t0,
    }
    write_result(args.name, payload, quick=args.quick)
    print(
        markdown_table(
            summary,
            [
                "budget",
                "policy",
                "incremental_profit",
                "share_of_oracle",
                "share_of_ceiling",
                "retained_vs_no_offers",
                "roi",
            ],
        )
    )
    print(json.dumps(paired, indent=1))
    return payload


def _groups(rows):
    keys = sorted({(r["budget"], r["policy"]) for r in rows}, key=lambda k: (k[0], POLICIES.index(k[1])))
    return [(k, [r for r in rows if (r["budget"], r["policy"]) == k]) for k in keys]


if __name__ == "__main__":
    main()
