"""The measurements a seller would make, each next to the truth the simulator knows.

* :func:`ab_study`: customers randomised within sellers into the policy and a control; the A/B
  estimate with its intervals and p-value, the true effect from the counterfactual runs, and the
  customers a test would need to detect that effect.
* :func:`did_study`: half the sellers adopt a policy at month M of a 12-month run; the seller-level
  difference-in-differences and event study, and the true effect (the same sellers without it).
* :func:`ope_study`: a policy's value estimated from the logged campaigns before deploying it (IPW,
  SNIPW, DR with the model's curves as the outcome model; on the randomised slice and on all logged
  offers), next to its true value, and the multi-armed Qini (budget curve) from DR scores.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sellerlift.closed_loop import did, experiments, ope
from sellerlift.closed_loop.forward import Population, run_policy
from sellerlift.closed_loop.observe import Budget
from sellerlift.closed_loop.outcomes import profit, true_effects
from sellerlift.closed_loop.policies import ABTest, Rollout
from sellerlift.sim.config import LEVELS, N_LEVELS
from sellerlift.sim.history import read_parts

MONTH = 30  # days per month in the seller-level panel


def ab_study(
    pop: Population, treat, control, runs: dict, budget: Budget, days: int, margin: float, seed: int = 0
) -> dict:
    """Per horizon: the A/B estimate of ``treat`` vs ``control`` (profit per customer, conversion, retention)."""
    treated = experiments.assign_ab(pop.seller, 0.5, seed)
    run = run_policy(
        pop, ABTest(treat, control, pop.customer_id[treated]), days, budget, horizons=tuple(runs[treat.name].outcomes)
    )
    truth = true_effects(runs, treat.name, control.name, margin)
    strata = _strata(pop.seller, treated)
    out = {}
    for h, o in run.outcomes.items():
        y = profit(o, margin)
        res = experiments.ab_test(y, treated, strata=strata, seed=seed)
        alive = o.alive_at_start
        conv = experiments.ab_test(o.bought[alive].astype(float), treated[alive], n_boot=0)
        ret = experiments.ab_test(o.retained[alive].astype(float), treated[alive], n_boot=0)
        effect = truth[h]["profit"]
        needed = (
            experiments.sample_size(0.0, abs(effect), kind="mean", sd=float(y.std(ddof=1))) if effect != 0 else None
        )
        out[h] = {
            "metric": "profit per customer",
            "treat": treat.name,
            "control": control.name,
            "estimate": res.estimate,
            "ci_t": list(res.ci_t),
            "ci_bootstrap": list(res.ci_bootstrap),
            "p_value": res.p_value,
            "true_effect": effect,
            "n_treat": res.n_treat,
            "n_control": res.n_control,
            "covers_truth": bool(res.ci_t[0] <= effect <= res.ci_t[1]),
            "customers_per_arm_for_80pct_power": needed,
            "conversion": {
                "estimate": conv.estimate,
                "ci_t": list(conv.ci_t),
                "p_value": conv.p_value,
                "true_effect": truth[h]["conversion"],
            },
            "retained": {
                "estimate": ret.estimate,
                "ci_t": list(ret.ci_t),
                "p_value": ret.p_value,
                "true_effect": truth[h]["retained"],
            },
        }
    return out


def _strata(seller: np.ndarray, treated: np.ndarray, min_per_arm: int = 2) -> np.ndarray:
    """Sellers as strata; sellers with fewer than ``min_per_arm`` customers in an arm are pooled into one."""
    t = pd.crosstab(seller, treated)
    small = t.index[(t.min(axis=1) < min_per_arm)]
    return np.where(np.isin(seller, small), -1, seller)


def _monthly(seller_daily: pd.DataFrame) -> pd.DataFrame:
    d = seller_daily.assign(month=(seller_daily["day"] - 1) // MONTH)
    return d.groupby(["seller_id", "month"], as_index=False)["net_revenue"].sum()


def did_study(
    pop: Population, before, after, budget: Budget, months: int = 12, adopt_month: int = 6, seed: int = 0
) -> dict:
    """Half the sellers switch from ``before`` to ``after`` at ``adopt_month``; DiD and event study vs the truth."""
    sellers = np.unique(pop.seller)
    rng = np.random.default_rng([seed, 4242])
    adopters = rng.choice(sellers, size=len(sellers) // 2, replace=False)
    days = months * MONTH
    roll = run_policy(
        pop, Rollout(before, after, adopters, adopt_month * MONTH, pop.cfg.history_days), days, budget, horizons=(days,)
    )
    base = run_policy(pop, before, days, budget, horizons=(days,))
    panel = _monthly(roll.seller_daily)
    panel["treated"] = panel["seller_id"].isin(adopters).astype(int)
    panel["post"] = (panel["month"] >= adopt_month).astype(int)
    res = did.did(panel, unit="seller_id", period="month", y="net_revenue", treated="treated", post="post")
    es = did.event_study(panel, adopt_month, unit="seller_id", period="month", y="net_revenue", treated="treated")
    cf = _monthly(base.seller_daily).rename(columns={"net_revenue": "without"})
    both = panel.merge(cf, on=["seller_id", "month"], how="left").fillna({"without": 0.0})
    both["effect"] = both["net_revenue"] - both["without"]
    post = both[(both["treated"] == 1) & (both["post"] == 1)]
    true_by_rel = (
        both[both["treated"] == 1].assign(rel=lambda d: d["month"] - adopt_month).groupby("rel")["effect"].mean()
    )
    es["true_effect"] = es["rel_period"].map(true_by_rel).fillna(0.0)
    return {
        "estimate": res.estimate,
        "ci": list(res.ci),
        "p_value": res.p_value,
        "se": res.se,
        "true_effect": float(post["effect"].mean()),
        "n_sellers": res.n_units,
        "n_adopters": len(adopters),
        "months": months,
        "adopt_month": adopt_month,
        "before": before.name,
        "after": after.name,
        "covers_truth": bool(res.ci[0] <= post["effect"].mean() <= res.ci[1]),
        "pre_trend_p_value": es.attrs.get("pretrend_p_value"),
        "event_study": es,
        "panel": both,
    }


def logged_offers(pop: Population) -> pd.DataFrame:
    """The population's logged offers with the truth of each (the offer_truth table, kept apart)."""
    chunks = [ch.index for ch in pop.chunks]
    pr = read_parts(pop.path / "promotions", chunks)
    tr = read_parts(pop.path / "offer_truth", chunks)
    if not (np.array_equal(pr["customer_id"], tr["customer_id"]) and np.array_equal(pr["ts"], tr["ts"])):
        raise ValueError(f"{pop.path}: promotions and offer_truth are not aligned")
    both = pd.concat([pr, tr.drop(columns=["customer_id", "ts"])], axis=1)
    return both[both["customer_id"].isin(pop.customer_id)].reset_index(drop=True)


def ope_study(
    offers: pd.DataFrame,
    q: np.ndarray,
    target: np.ndarray,
    propensity_model: np.ndarray | None = None,
    n_boot: int = 500,
    seed: int = 0,
) -> dict:
    """IPW / SNIPW / DR estimates of the target policy's conversion rate on the logged offers, vs its true value.

    ``q`` [n, K]: the outcome model (predicted conversion at each level at offer time); ``target`` [n]: the level
    index the policy would have chosen; ``propensity_model`` [n]: a fitted logging propensity of the logged level
    (the simulator's exact logging propensity is used as well, as a reference).
    """
    y = offers["converted"].to_numpy().astype(np.float64)
    a = np.searchsorted(LEVELS, offers["discount_pct"].to_numpy())
    truth_all = offers[[f"p_conv_{d}" for d in LEVELS]].to_numpy()[np.arange(len(offers)), target]
    rct = offers["randomized"].to_numpy().astype(bool)
    slices = {"randomized": (rct, np.full(len(y), 1.0 / N_LEVELS))}
    slices["all_logged_true_propensity"] = (np.ones(len(y), bool), offers["propensity"].to_numpy())
    if propensity_model is not None:
        slices["all_logged_propensity_model"] = (np.ones(len(y), bool), np.asarray(propensity_model))
    out = {}
    for name, (rows, e) in slices.items():
        if rows.sum() < 50:
            continue
        res = ope.evaluate(y[rows], a[rows], e[rows], target[rows], q[rows], n_boot=n_boot, seed=seed)
        true_value = float(truth_all[rows].mean())
        out[name] = {
            "offers": int(rows.sum()),
            "true_value": true_value,
            **{
                est: {
                    "estimate": r.estimate,
                    "ci": list(r.ci),
                    "se": r.se,
                    "bias": r.estimate - true_value,
                    "covers_truth": bool(r.ci[0] <= true_value <= r.ci[1]),
                }
                for est, r in res.items()
            },
        }
    return out


def qini_study(
    offers: pd.DataFrame, q: np.ndarray, value: np.ndarray, budgets: np.ndarray, rows: np.ndarray, seed: int = 0
) -> pd.DataFrame:
    """The multi-armed Qini on the randomised slice: incremental conversions per offer vs spend per offer,
    choosing levels with the model's effects and costs, evaluated on DR scores (maq-style), with intervals."""
    y = offers["converted"].to_numpy().astype(np.float64)[rows]
    a = np.searchsorted(LEVELS, offers["discount_pct"].to_numpy())[rows]
    scores = ope.dr_scores(y, a, np.full(len(y), 1.0 / N_LEVELS), q[rows])
    cost = q[rows] * value[rows, None] * (LEVELS / 100.0)[None, :]
    return ope.budget_curve(
        scores - scores[:, :1], cost, budgets, reference_policy_effects=q[rows] - q[rows, :1], seed=seed
    )
