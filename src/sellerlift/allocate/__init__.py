"""Budgeted discount allocation: a multiple-choice knapsack (pure NumPy/SciPy).

Each of n customers gets exactly one of K discount levels (level 0 = none).
With conversion probability ``p[i, k]``, order value ``v_i``, margin ``m_i`` and
discount ``d_k = levels[k] / 100``:

    profit[i, k] = p[i, k] * v_i * (m_i - d_k) - p[i, 0] * v_i * m_i   (incremental)
    spend[i, k]  = p[i, k] * v_i * d_k                               (expected)

Maximise total profit s.t. total spend <= budget and, optionally, the spend of
each seller's customers <= that seller's budget. Level 0 has profit 0 and spend
0, so every budget >= 0 is feasible; a negative budget is a ValueError.

Solver (``allocate_lagrangian``)
--------------------------------
1. Per customer, keep only the upper concave hull of its (spend, profit)
   points: a chain of upgrade *segments* with decreasing gain per unit spend
   ("slope"). For a multiplier ``lam >= 0`` the Lagrangian choice
   ``argmax_k profit - lam * spend`` is then simply "take every segment with
   slope > lam"; exact ties go to the cheaper level.
2. Bisection on ``lam`` (one multiplier per seller if sellers have budgets;
   with a total budget too, then a global multiplier on top: a customer of
   seller s uses ``max(mu, t_s)``). Each step is a vectorised pass over the
   customers still in the undecided slope band, so later steps are cheap.
3. Greedy fix-up: leftover budget buys the best remaining next upgrades in
   slope order, each only if it still fits (total and seller budgets).

Guarantees: the result is always feasible (comparisons keep a 1e-9 relative
margin so float rounding cannot push spend over a budget), and its profit is
at least that of the Lagrangian solution. ``Allocation.bound`` is the
Lagrangian dual value, which equals the LP-relaxation optimum of the knapsack
(up to float32 rounding of the slopes), so ``bound - profit`` bounds the gap
to the true optimum. On realistic instances the gap is ~1e-6 relative.
"""

from __future__ import annotations

from sellerlift.allocate.lagrangian import allocate_lagrangian, allocate_values
from sellerlift.allocate.problem import DEFAULT_LEVELS, Allocation, incremental_profit_and_spend
from sellerlift.allocate.reference import allocate_exact_lp, allocate_rule_based, random_instance

__all__ = ["DEFAULT_LEVELS", "Allocation", "allocate_exact_lp", "allocate_lagrangian", "allocate_rule_based",
           "allocate_values", "incremental_profit_and_spend", "random_instance"]
