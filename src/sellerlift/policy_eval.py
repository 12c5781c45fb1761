"""Every discount policy at every budget, scored with the simulator's *true* curves (NumPy, no torch).

Only the simulator knows what a customer would have done at the discount they did not
get, so this is where the promotion engine is measured against the best possible:

* model policies (``dipn``, ``dipn_no_ipw``, ``mlp``, ``lightgbm``) plan a Lagrangian
  allocation with their own curves and the observed order values;
* ``oracle`` plans with the true curves and true order values;
* the rules sellers use (``rule_top_value``, ``rule_rfm_at_risk``, ``purchase_prob``,
  ``random``, ``blanket``) give one level down a ranked list until the budget is
  actually redeemed (true curves).

Every plan is then scored with the true curves: incremental profit, spend, ROI and
the share of the oracle's profit (:func:`evaluate_allocation`). Budgets are fractions
of the true expected spend of giving everyone the top level.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import pandas as pd

from sellerlift import allocate
from sellerlift.schema import DISCOUNT_LEVELS

LEVELS = np.asarray(DISCOUNT_LEVELS)
K = len(LEVELS)


class TrueWorld:
    """The held-out customers as the simulator knows them: true curves, true order values, the margin."""

    def __init__(self, p_true: np.ndarray, v_true: np.ndarray, margin: float):
        self.p, self.value, self.margin = p_true, v_true, float(margin)
        self._profit, self._spend = allocate.incremental_profit_and_spend(p_true, v_true, self.margin, DISCOUNT_LEVELS)

    def outcome(self, level: np.ndarray) -> tuple[float, float]:
        """True (incremental profit, spend) of giving each customer ``level`` (an index per customer)."""
        r = np.arange(len(level))
        return float(self._profit[r, level].sum()), float(self._spend[r, level].sum())

    @property
    def full_spend(self) -> float:
        """True expected spend of giving every customer the top level (what budgets are fractions of)."""
        return float(self._spend[:, -1].sum())


def rule_levels(world: TrueWorld, budget, ranking, level_pct, seed, eligible=None) -> np.ndarray:
    """A flat discount down a ranked list (random order when ``ranking`` is None); the budget is what is
    actually redeemed (true curves). Customers outside ``eligible`` get no discount."""
    n = len(world.value)
    rows = np.arange(n) if eligible is None else np.flatnonzero(eligible)
    level = np.zeros(n, dtype=np.int64)
    if not len(rows):
        return level
    kw = {"rule": "random", "seed": seed} if ranking is None else {"rule": "priority", "priority": ranking[rows]}
    a = allocate.allocate_rule_based(
        world.p[rows], world.value[rows], world.margin, DISCOUNT_LEVELS, budget, level_pct=level_pct, **kw
    )
    level[rows] = a.level_index
    return level


class AllocationEval(NamedTuple):
    table: pd.DataFrame  # policy x budget scenario: profit, spend, ROI, share of the oracle, ...
    metrics: dict[str, float]  # alloc/<scenario>/{profit,roi,share_of_oracle}/<policy>, the LP check
    budget_curve: pd.DataFrame  # profit and ROI of each policy at each of acfg.curve_fractions
    levels: pd.DataFrame  # share of each level per policy and archetype, at the medium budget


def evaluate_allocation(
    curves: dict[str, np.ndarray],
    p_true: np.ndarray,
    v_true: np.ndarray,
    v_hat: np.ndarray,
    raw: pd.DataFrame,
    archetype: np.ndarray,
    acfg,
    seed: int = 0,
) -> AllocationEval:
    """Every policy at every budget of ``acfg`` (``promotion.allocation``), scored with the true curves.

    ``curves``: each model's [n, K] curves; ``v_hat``: the order values the models plan with;
    ``raw``: the customers' raw aggregates (for the rules' rankings).
    """
    world = TrueWorld(p_true, v_true, float(acfg.margin))
    full_spend = world.full_spend
    rows, metrics, level_rows = [], {}, []
    for scen, frac in acfg.budgets.items():
        budget = None if frac is None else float(frac) * full_spend
        plans = _policies(world, curves, v_hat, raw, acfg, seed, budget)
        oracle_profit = world.outcome(plans["oracle"])[0]
        for name, level in plans.items():
            row = _score(world, name, level, budget, oracle_profit)
            rows.append({"budget": scen, "budget_frac": frac, **row})
            for k in ("profit", "roi", "share_of_oracle"):
                metrics[f"alloc/{scen}/{k}/{name}"] = row[k]
            if scen == "medium":
                level_rows += _level_shares(name, level, archetype)
    curve_rows = []
    for frac in acfg.curve_fractions:  # budget curves (multi-armed Qini): profit and ROI vs budget
        budget = float(frac) * full_spend
        for name, level in _policies(world, curves, v_hat, raw, acfg, seed, budget).items():
            profit, spend = world.outcome(level)
            curve_rows.append(
                {
                    "budget_frac": float(frac),
                    "policy": name,
                    "profit": profit,
                    "spend": spend,
                    "roi": profit / spend if spend > 0 else 0.0,
                }
            )
    if acfg.lp_check and "dipn" in curves and acfg.budgets.get("medium") is not None:
        metrics.update(lp_check(curves["dipn"], v_hat, world.margin, float(acfg.budgets.medium) * full_spend))
    metrics["alloc/full_spend"] = full_spend
    return AllocationEval(pd.DataFrame(rows), metrics, pd.DataFrame(curve_rows), pd.DataFrame(level_rows))


def _policies(world: TrueWorld, curves, v_hat, raw, acfg, seed, budget) -> dict[str, np.ndarray]:
    """Each policy's level index per customer at ``budget`` (None: unrestricted)."""
    margin, rule_level, rfm = world.margin, int(acfg.rule.level_pct), acfg.rfm_rule
    value_rank = raw["monetary"].to_numpy(dtype=np.float64)
    at_risk = (raw["has_purchase"].to_numpy() > 0) & (raw["recency_days"].to_numpy() >= float(rfm.min_recency_days))
    out = {
        name: allocate.allocate_lagrangian(p, v_hat, margin, DISCOUNT_LEVELS, budget).level_index
        for name, p in curves.items()
    }
    out["oracle"] = allocate.allocate_lagrangian(world.p, world.value, margin, DISCOUNT_LEVELS, budget).level_index
    out["rule_top_value"] = rule_levels(world, budget, value_rank, rule_level, seed)
    out["rule_rfm_at_risk"] = rule_levels(world, budget, value_rank, int(rfm.level_pct), seed, eligible=at_risk)
    if "dipn" in curves:
        out["purchase_prob"] = rule_levels(world, budget, curves["dipn"][:, 0], rule_level, seed)
    out["random"] = rule_levels(world, budget, None, rule_level, seed)
    out["blanket"] = _best_blanket(world, budget, seed)
    return out


def _best_blanket(world: TrueWorld, budget, seed) -> np.ndarray:
    """One level for all (random order until the budget): the best level in hindsight."""
    best = None
    for k in range(1, K):
        level = rule_levels(world, budget, None, int(LEVELS[k]), seed)
        profit = world.outcome(level)[0]
        if best is None or profit > best[0]:
            best = (profit, level)
    return best[1]


def _score(world: TrueWorld, name: str, level: np.ndarray, budget, oracle_profit: float) -> dict:
    profit, spend = world.outcome(level)
    return {
        "budget_amount": budget,
        "policy": name,
        "profit": profit,
        "spend": spend,
        "roi": profit / spend if spend > 0 else 0.0,
        "share_of_oracle": profit / oracle_profit if oracle_profit > 0 else float("nan"),
        "treated_frac": float(np.mean(level > 0)),
        "spend_over_budget": spend / budget if budget else float("nan"),
    }


def _level_shares(policy: str, level: np.ndarray, archetype: np.ndarray) -> list[dict]:
    rows = []
    for arch in np.unique(archetype):
        m = archetype == arch
        share = np.bincount(level[m], minlength=K) / max(m.sum(), 1)
        rows.append({"policy": policy, "archetype": arch, **{f"{d}%": c for d, c in zip(DISCOUNT_LEVELS, share)}})
    return rows


def lp_check(p: np.ndarray, value: np.ndarray, margin: float, budget: float) -> dict[str, float]:
    """The Lagrangian allocation against the exact LP (HiGHS) on the same curves: relative gap and times."""
    t0 = time.perf_counter()
    lag = allocate.allocate_lagrangian(p, value, margin, DISCOUNT_LEVELS, budget)
    t_lag = time.perf_counter() - t0
    t0 = time.perf_counter()
    lp = allocate.allocate_exact_lp(p, value, margin, DISCOUNT_LEVELS, budget)
    t_lp = time.perf_counter() - t0
    return {
        "alloc/lp_gap_rel": max(0.0, (lp.bound - lag.profit) / lp.bound) if lp.bound > 0 else 0.0,
        "alloc/lagrangian_s": t_lag,
        "alloc/lp_s": t_lp,
    }
