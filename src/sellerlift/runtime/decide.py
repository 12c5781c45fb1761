"""Who gets which discount: the budgeted allocation on a bundle's curves (server and batch scorer alike)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sellerlift.allocate import Allocation, allocate_lagrangian, incremental_profit_and_spend


@dataclass(frozen=True)
class Offers:
    """The chosen level of every customer, with what it is expected to bring."""

    allocation: Allocation  # totals, multipliers, bound, status
    level_pct: np.ndarray  # [n] discount in percent (0 = none)
    conversion: np.ndarray  # [n] P(purchase) at that level
    spend: np.ndarray  # [n] expected discount spend
    profit: np.ndarray  # [n] expected incremental profit over no discount


def allocate_offers(curves: np.ndarray, value: np.ndarray, margin: np.ndarray | float, levels, budget=None,
                    seller=None, seller_budgets=None) -> Offers:
    """The Lagrangian allocation (:func:`sellerlift.allocate.allocate_lagrangian`) on the curves ``[n, K]``.

    Raises ValueError for an invalid request (the allocator names what is wrong).
    """
    p = np.asarray(curves, dtype=np.float64)
    a = allocate_lagrangian(p, value, margin, list(levels), budget=budget, seller=seller,
                            seller_budgets=seller_budgets)
    profit, spend = incremental_profit_and_spend(p, value, margin, list(levels))
    rows, k = np.arange(len(p)), a.level_index
    return Offers(a, np.asarray(levels, dtype=np.float64)[k], p[rows, k], spend[rows, k], profit[rows, k])
