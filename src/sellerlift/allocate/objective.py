"""The objective of every (customer, level): profit and spend, computed per chunk of customers.

``CurveValues`` derives the direct profit and the spend from conversion curves, order values and margins;
``MatrixValues`` takes them as [n, K] matrices. ``Objective`` wraps either:

    objective[i, k] = direct[i, k] + weight * enduring[i, k] - spread_penalty * spend[i, k] ** 2

and gives -inf to the levels a cap forbids (above the customer's max level, or an expected incentive above
its max_incentive), so neither the hull nor the fix-up can pick them. With no option set it returns its
base's arrays untouched (today's numbers, bit for bit).
"""

from __future__ import annotations

import numpy as np

from sellerlift.allocate.problem import _at_levels, _check_budget, _chunk_profit_spend


class CurveValues:
    """Profit and spend of every level from conversion curves, order values and margins (computed per chunk)."""

    def __init__(self, p, value, margin, d):
        self.p, self.value, self.margin, self.d = p, value, margin, d
        self.shape = p.shape

    def rows(self, idx):
        m = self.margin[idx] if self.margin.ndim else self.margin
        return _chunk_profit_spend(self.p[idx], self.value[idx], m, self.d)

    def at(self, level):
        return _at_levels(self.p, self.value, self.margin, self.d, level)


class MatrixValues:
    """Profit and spend of every level given directly, [n, K] each (level 0: both 0)."""

    def __init__(self, profit, spend, d):
        self.profit, self.spend, self.d = profit, spend, d
        self.shape = profit.shape

    def rows(self, idx):
        return self.profit[idx], self.spend[idx]

    def at(self, level):
        r = np.arange(len(level))
        return self.profit[r, level], self.spend[r, level]


def check_objective(n, k, enduring=None, weight=0.0, spread_penalty=0.0):
    """-> (enduring [n, K] or None, weight, spread_penalty), checked."""
    weight = _check_budget(weight, "weight")
    spread_penalty = _check_budget(spread_penalty, "spread_penalty")
    if enduring is None:
        if weight > 0:
            raise ValueError("enduring: required when weight > 0 (the [n, K] enduring value of each level)")
        return None, weight, spread_penalty
    e = np.asarray(enduring)
    if e.shape != (n, k) or not np.issubdtype(e.dtype, np.number):
        raise ValueError(f"enduring: expected a numeric array of shape ({n}, {k}) like p, got {e.shape}")
    if e.dtype.kind != "f":
        e = e.astype(np.float64)
    if n and not np.isfinite(e).all():  # one pass at 10M; float32 input stays float32
        raise ValueError("enduring: expected finite values (no NaN or inf)")
    if n and e[:, 0].any():
        raise ValueError("enduring: level 0 (no offer) must have enduring value 0 (use increments over no offer)")
    return e, weight, spread_penalty


class Objective:
    """``base`` (CurveValues / MatrixValues) with the enduring term, the spread penalty and the caps.

    ``rows``/``at`` return (objective, spend) like the base; ``parts`` splits the objective at chosen levels.
    """

    def __init__(self, base, enduring=None, weight=0.0, spread_penalty=0.0, max_level=None, max_incentive=None):
        self.base, self.d, self.shape = base, base.d, base.shape
        self.enduring, self.weight, self.penalty = enduring, weight, spread_penalty
        self.max_level, self.max_incentive = max_level, max_incentive
        self.plain = (weight == 0 or enduring is None) and spread_penalty == 0
        self.capped = max_level is not None or max_incentive is not None

    def _objective(self, pr, sp, e):
        if self.weight != 0 and e is not None:
            pr = pr + self.weight * e
        if self.penalty != 0:
            pr = pr - self.penalty * (sp * sp)
        return pr

    def rows(self, idx):
        pr, sp = self.base.rows(idx)
        if self.plain and not self.capped:
            return pr, sp
        e = None if self.enduring is None or self.weight == 0 else self.enduring[idx].astype(np.float64)
        obj = self._objective(pr, sp, e)
        if self.capped:
            allowed = np.ones(sp.shape, dtype=bool)
            if self.max_level is not None:
                allowed &= np.arange(sp.shape[1]) <= self.max_level[idx][:, None]
            if self.max_incentive is not None:
                cap = self.max_incentive if self.max_incentive.ndim == 0 else self.max_incentive[idx][:, None]
                allowed &= sp <= cap
            obj = np.where(allowed, obj, -np.inf)
        return obj, sp

    def _enduring_at(self, level):
        if self.enduring is None:
            return None
        return self.enduring[np.arange(len(level)), level].astype(np.float64)

    def at(self, level):
        pr, sp = self.base.at(level)
        if self.plain:
            return pr, sp
        return self._objective(pr, sp, None if self.weight == 0 else self._enduring_at(level)), sp

    def parts(self, level):
        """Per customer at ``level``: (objective, spend, direct, enduring or None, penalty or None)."""
        pr, sp = self.base.at(level)
        e = self._enduring_at(level)
        obj = pr if self.plain else self._objective(pr, sp, None if self.weight == 0 else e)
        pen = None if self.penalty == 0 else self.penalty * (sp * sp)
        return obj, sp, pr, e, pen

    def matrices(self):
        """All of it as [n, K] matrices, for the exact LP on small instances:
        (objective with -inf where forbidden, spend, direct, enduring or zeros)."""
        obj, sp = self.rows(slice(None))
        pr, _ = self.base.rows(slice(None))
        e = np.zeros_like(pr) if self.enduring is None else np.asarray(self.enduring, dtype=np.float64)
        return obj, sp, pr, e
