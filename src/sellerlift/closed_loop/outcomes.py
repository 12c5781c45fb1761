"""The policy table: what every policy did to the same customers over 30 and 90 days, paired against no offers.

With common random numbers the per-customer difference between a policy's run and the
no-offer run is the policy's true effect on that customer; its mean over the population
comes with a normal 95 % interval over customers (the only noise left is which customers
the population happens to hold).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sellerlift.closed_loop.forward import Outcomes, PolicyRun

Z = 1.959963984540054


def _mean_ci(x: np.ndarray) -> tuple[float, float, float]:
    m = float(x.mean())
    h = Z * float(x.std(ddof=1)) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return m, m - h, m + h


def profit(o: Outcomes, margin: float) -> np.ndarray:
    """Per-customer profit: margin on gross sales minus the discounts given."""
    return margin * o.gross - o.cost


def policy_rows(
    runs: dict[str, PolicyRun],
    margin: float,
    baseline: str = "no_offers",
    oracle: str = "oracle_enduring",
    rule: str = "rule_top_value",
) -> pd.DataFrame:
    """One row per policy and horizon; money per customer of the population."""
    rows = []
    for name, run in runs.items():
        for h, o in run.outcomes.items():
            base = runs[baseline].outcomes[h]
            alive = o.alive_at_start
            inc = profit(o, margin) - profit(base, margin)
            est, lo, hi = _mean_ci(inc)
            offered = o.offers > 0
            rows.append(
                {
                    "policy": name,
                    "horizon_days": h,
                    "conversion": float(o.bought[alive].mean()),
                    "retained": float(o.retained[alive].mean()),
                    "retained_vs_no_offers": float(o.retained[alive].mean() - base.retained[alive].mean()),
                    "revenue": float(o.net.mean()),
                    "discount_cost": float(o.cost.mean()),
                    "profit": float(profit(o, margin).mean()),
                    "incremental_profit": est,
                    "incremental_profit_ci_low": lo,
                    "incremental_profit_ci_high": hi,
                    "roi": est / float(o.cost.mean()) if o.cost.mean() > 0 else 0.0,
                    "aov": float(o.net.sum() / max(o.purchases.sum(), 1.0)),
                    "active": float(o.active.mean()),
                    "offered_share": float(offered.mean()),
                    "incentive_sd": float(o.cost[offered].std(ddof=1)) if offered.sum() > 1 else 0.0,
                    **_loyalty(run, o, offered),
                }
            )
    table = pd.DataFrame(rows)
    for _, g in table.groupby("horizon_days"):
        ref = g.set_index("policy")
        idx = g.index
        if oracle in ref.index and ref.loc[oracle, "incremental_profit"] > 0:
            table.loc[idx, "share_of_oracle"] = g["incremental_profit"] / ref.loc[oracle, "incremental_profit"]
        if rule in ref.index and ref.loc[rule, "incentive_sd"] > 0:
            table.loc[idx, "spread_vs_rule"] = g["incentive_sd"] / ref.loc[rule, "incentive_sd"] - 1.0
    return table


def _loyalty(run: PolicyRun, o: Outcomes, offered: np.ndarray) -> dict[str, float]:
    """Mean loyalty at the cutoff and at the horizon; its change over everyone and over the customers the
    policy reached (offered at least once), as the published figure (0.41 -> 0.66) is reported."""
    if o.loyalty is None or run.loyalty_start is None:
        return {}
    change = o.loyalty - run.loyalty_start
    return {
        "loyalty_start": float(run.loyalty_start.mean()),
        "loyalty": float(o.loyalty.mean()),
        "loyalty_change": float(change.mean()),
        "loyalty_change_reached": float(change[offered].mean()) if offered.any() else float("nan"),
        "loyalty_start_reached": float(run.loyalty_start[offered].mean()) if offered.any() else float("nan"),
    }


def true_effects(runs: dict[str, PolicyRun], treat: str, control: str, margin: float) -> dict[int, dict]:
    """Per horizon: the true mean effect of ``treat`` over ``control`` on profit, conversion and retention."""
    out = {}
    for h in runs[treat].outcomes:
        a, b = runs[treat].outcomes[h], runs[control].outcomes[h]
        alive = a.alive_at_start
        out[h] = {
            "profit": _mean_ci(profit(a, margin) - profit(b, margin))[0],
            "conversion": float(a.bought[alive].mean() - b.bought[alive].mean()),
            "retained": float(a.retained[alive].mean() - b.retained[alive].mean()),
        }
    return out


def daily_series(runs: dict[str, PolicyRun]) -> pd.DataFrame:
    """Cumulative net revenue and active customers by day for every policy (for the plots)."""
    parts = []
    for name, run in runs.items():
        d = run.daily.copy()
        d["policy"] = name
        d["cumulative_net_revenue"] = d["net_revenue"].cumsum()
        parts.append(d)
    return pd.concat(parts, ignore_index=True)
