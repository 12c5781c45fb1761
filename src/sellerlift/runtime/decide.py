"""Who gets which discount: the budgeted allocation on a bundle's curves (server and batch scorer alike)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sellerlift.allocate import (
    Allocation,
    allocate_lagrangian,
    allocate_rule_based,
    incentive_spread,
    profit_and_spend_at,
)


@dataclass(frozen=True)
class Offers:
    """The chosen level of every customer, with what it is expected to bring.

    The objective of a customer is ``direct + weight * enduring - spread_penalty * spend ** 2``
    (``objective``); ``profit`` and ``direct`` are the same array (the week's incremental profit).
    """

    allocation: Allocation  # totals, multipliers, bound, status
    level_pct: np.ndarray  # [n] discount in percent (0 = none)
    conversion: np.ndarray  # [n] P(purchase) at that level
    spend: np.ndarray  # [n] expected discount spend
    profit: np.ndarray  # [n] expected incremental profit over no discount (the direct part)
    enduring: np.ndarray | None = None  # [n] enduring value at that level (not weighted), if given
    objective: np.ndarray | None = None  # [n] what the allocation maximised, per customer
    spread_rule: float | None = None  # spread of the sellers' top-value rule at the same spend (compare_rule)

    @property
    def direct(self) -> np.ndarray:
        return self.profit

    @property
    def spread(self) -> float:
        """Std of the expected incentive among customers offered a discount (the fairness / spread figure)."""
        return incentive_spread(self.spend, self.level_pct)

    @property
    def spread_vs_rule(self) -> float | None:
        """spread / spread_rule - 1 (e.g. -0.22: 22 % lower than the rule), None without compare_rule."""
        if self.spread_rule is None or self.spread_rule <= 0:
            return None
        return self.spread / self.spread_rule - 1.0


def allocate_offers(
    curves: np.ndarray,
    value: np.ndarray,
    margin: np.ndarray | float,
    levels,
    budget=None,
    seller=None,
    seller_budgets=None,
    enduring=None,
    weight=0.0,
    *,
    seller_tier=None,
    tier_budgets=None,
    max_discount=None,
    segment=None,
    segment_max_discount=None,
    spread_penalty=0.0,
    max_incentive=None,
    compare_rule=False,
    rule_level_pct=10.0,
) -> Offers:
    """The Lagrangian allocation (:func:`sellerlift.allocate.allocate_lagrangian`) on the curves ``[n, K]``.

    enduring [n, K] + weight: the retention-aware objective; seller_tier + tier_budgets, max_discount,
    segment + segment_max_discount, spread_penalty, max_incentive: the constraints (see the allocator).
    compare_rule: also run the sellers' top-value rule (``rule_level_pct`` % to the highest order values)
    at the same spend and report its spread. Raises ValueError for an invalid request (the allocator names
    what is wrong).
    """
    p = np.asarray(curves, dtype=np.float64)
    levels = list(levels)
    a = allocate_lagrangian(
        p,
        value,
        margin,
        levels,
        budget=budget,
        seller=seller,
        seller_budgets=seller_budgets,
        enduring=enduring,
        weight=weight,
        seller_tier=seller_tier,
        tier_budgets=tier_budgets,
        max_discount=max_discount,
        segment=segment,
        segment_max_discount=segment_max_discount,
        spread_penalty=spread_penalty,
        max_incentive=max_incentive,
    )
    rows, k = np.arange(len(p)), a.level_index
    profit, spend = profit_and_spend_at(p, value, margin, levels, k)
    end = None if enduring is None else np.asarray(enduring)[rows, k].astype(np.float64)
    objective = profit if end is None or weight == 0 else profit + float(weight) * end
    if spread_penalty:
        objective = objective - float(spread_penalty) * (spend * spend)
    spread_rule = None
    if compare_rule:
        rule = allocate_rule_based(p, value, margin, levels, a.spend, rule="top_value", level_pct=rule_level_pct)
        spread_rule = rule.spread
    return Offers(a, np.asarray(levels, dtype=np.float64)[k], p[rows, k], spend, profit, end, objective, spread_rule)
