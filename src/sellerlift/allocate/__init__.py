"""Budgeted discount allocation: a multiple-choice knapsack (pure NumPy/SciPy).

Each of n customers gets exactly one of K discount levels (level 0 = none).
With conversion probability ``p[i, k]``, order value ``v_i``, margin ``m_i`` and
discount ``d_k = levels[k] / 100``:

    direct[i, k] = p[i, k] * v_i * (m_i - d_k) - p[i, 0] * v_i * m_i   (incremental)
    spend[i, k]  = p[i, k] * v_i * d_k                               (expected)

The objective of a level is ``direct + weight * enduring - spread_penalty * spend ** 2``: ``enduring``
[n, K] is the caller's value of each level beyond the week (the incremental 90-day margin, or the change
in 90-day retention valued at the customer's CLV; level 0 has 0) and the penalty discourages large
individual incentives (fairness / spread). By default (weight 0, no penalty) it is the direct profit.

Maximise the total objective s.t. total spend <= budget, the spend of each seller's customers <= that
seller's budget, and the spend of each seller tier's customers <= that tier's budget (sellers nest in
tiers, tiers in the total: a laminar family), with per-customer caps: a highest discount (percent, per
customer or by segment) and a most expected incentive in money. Level 0 has objective 0 and spend 0 and
no cap can forbid it, so every checked input is feasible; a negative budget or cap, a budget for an
unknown seller or tier, or a seller without a tier is a ValueError naming the argument.

Solver (``allocate_lagrangian``)
--------------------------------
1. Per customer, keep only the upper concave hull of its (spend, objective) points over the levels its
   caps allow (``hull``): a chain of upgrade *segments* with decreasing gain per unit spend ("slope").
   For a multiplier ``lam >= 0`` the Lagrangian choice ``argmax_k objective - lam * spend`` is then
   simply "take every segment with slope > lam"; exact ties go to the cheaper level.
2. Bisection on the multipliers, layer by layer, innermost first (``thresholds``): one per seller if
   sellers have budgets, one per tier on top with the sellers' as a floor, then a global one: a customer
   of seller s in tier T uses ``max(mu, tau_T, t_s)``. Each step is a vectorised pass over the segments
   still in the undecided slope band, so later steps are cheap.
3. Greedy fix-up (``fixup``): leftover budget buys the best remaining next upgrades in slope order, each
   only if it still fits (total, tier and seller budgets), then any paying move that fits.

Guarantees: the result is always feasible (comparisons keep a 1e-9 relative margin so float rounding
cannot push spend over a budget; caps hold exactly), checked before returning, and its objective is at
least that of the Lagrangian solution. ``Allocation.bound`` is the Lagrangian dual value, which equals the
LP-relaxation optimum of the knapsack (up to float rounding), so ``gap_to_bound`` is an upper bound on the
gap to the true (integer) optimum: on small instances the integer optimum itself sits below the LP bound
(``allocate_exact_lp(..., integer=True)`` gives it). On realistic instances the gap is ~1e-6 relative.
"""

from __future__ import annotations

from sellerlift.allocate.lagrangian import allocate_lagrangian, allocate_values
from sellerlift.allocate.problem import (
    DEFAULT_LEVELS,
    Allocation,
    incentive_spread,
    incremental_profit_and_spend,
    profit_and_spend_at,
)
from sellerlift.allocate.reference import allocate_exact_lp, allocate_rule_based, random_instance, random_retention

__all__ = [
    "DEFAULT_LEVELS",
    "Allocation",
    "allocate_exact_lp",
    "allocate_lagrangian",
    "allocate_rule_based",
    "allocate_values",
    "incentive_spread",
    "incremental_profit_and_spend",
    "profit_and_spend_at",
    "random_instance",
    "random_retention",
]
