"""The dual bound: the LP relaxation's multipliers on the laminar family, and the Lagrangian dual value.

Where an inner group (a seller) binds, the LP spends exactly its budget at its threshold t_s, with one
segment fractional; the primal bisection (``thresholds``) sees only the whole segments below the kink, so
an outer layer (a tier, the total) can look slack there when in the LP it binds. ``lp_thresholds`` redoes
the outer layers counting every inner group whose threshold is above the outer multiplier at its budget:
with those, lam_total = mu, lam_T = max(tau_T - mu, 0), lam_s = max(t_s - max(mu, tau_T), 0) satisfy the
KKT conditions of the LP at the bisection's tolerance, and the dual value is the LP bound.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sellerlift.allocate.thresholds import Thresholds, _total, local_call


class LPBand:
    """One holder's share of the LP bisection (all customers, or one shard): a segment counts iff
    floor <= lam_g < slope; segments decided for the whole current bracket leave the working set, as in
    :class:`~sellerlift.allocate.thresholds.SegmentBand`."""

    def __init__(self, slope, cost, group, floor, g_n):
        self.s, self.c, self.g, self.f, self.g_n = slope, cost, group, floor, g_n
        self.fixed = np.zeros(g_n)

    def _at(self, lam):
        return lam[0] if self.g is None else lam[self.g]

    def top(self) -> float:
        return float(max(self.s.max(initial=0.0), self.f.max(initial=0.0)))

    def spend(self, lam):
        t = self._at(lam)
        w = (self.s > t) & (self.f <= t)
        part = (
            np.array([self.c.sum(where=w)]) if self.g is None else np.bincount(self.g[w], self.c[w], minlength=self.g_n)
        )
        return self.fixed + part

    def narrow(self, lo, hi, active):
        s, f = self.s, self.f
        lo_t, hi_t = self._at(lo), self._at(hi)
        sure = (f <= lo_t) & (s > hi_t)  # counted for every lam in (lo, hi]
        band = ~sure & (s > lo_t) & (f <= hi_t)
        if self.g is not None:
            band &= active[self.g]
        if band.sum() < 0.5 * len(band):
            self.fixed += (
                np.bincount(self.g[sure], self.c[sure], minlength=self.g_n)
                if self.g is not None
                else self.c[sure].sum()
            )
            self.s, self.c, self.f = s[band], self.c[band], f[band]
            self.g = None if self.g is None else self.g[band]


def bisect_lp_multipliers(call, budgets, repl, tol, max_iter):
    """Per group g, bracket the smallest multiplier whose LP spend is <= budgets[g], over the holders ``call``
    reaches (see :func:`~sellerlift.allocate.thresholds.bisect_multipliers`); ``repl(lam)`` [G] adds the
    budgets of the inner groups binding above lam_g (computed where the inner thresholds are: the driver)."""
    g_n = len(budgets)
    lo = np.zeros(g_n)
    top = max(call("top"), default=0.0)
    hi = np.where(_total(call("spend", lo)) + repl(lo) <= budgets, 0.0, top)
    active = hi > 0
    it = 0
    while active.any() and it < max_iter:
        it += 1
        mid = 0.5 * (lo + hi)
        feas = _total(call("spend", mid)) + repl(mid) <= budgets
        hi = np.where(active & feas, mid, hi)
        lo = np.where(active & ~feas, mid, lo)
        active &= hi - lo > tol * hi
        call("narrow", lo, hi, active)
    return lo, hi, it


def _bisect_lp(slope, cost, group, budgets, floor, repl, tol, max_iter):
    """Per group g, bracket the smallest multiplier whose LP spend is <= budgets[g]: a segment counts iff
    floor <= lam_g < slope; ``repl(lam)`` [G] adds the budgets of the inner groups binding above lam_g.
    Segments decided for the whole current bracket leave the working set, as in ``_bisect``."""
    return bisect_lp_multipliers(
        local_call(LPBand(slope, cost, group, floor, len(budgets))), budgets, repl, tol, max_iter
    )


def lp_thresholds(h, cons, th: Thresholds, tol, max_iter) -> Thresholds:
    """The LP's brackets: the innermost layer as in ``th``, the outer ones redone (see the module doc)."""
    layers = th.layers
    if not layers or (len(layers) == 1 and cons.budget is None):
        return replace(th, cheapest=True)
    inner = layers[0]
    t_in = th.hi[0]
    lo_all, hi_all, it = [th.lo[0]], [t_in], th.n_iter
    floor = t_in[inner.idx[h.cust]]
    b_in = inner.budgets
    if len(layers) == 2:
        outer = layers[1]

        def repl_tier(lam):  # sellers above their tier's multiplier count at their budget
            return np.bincount(inner.parent, b_in * (t_in > lam[inner.parent]), minlength=len(outer.ids))

        lo, hi, k = _bisect_lp(h.slope, h.cost, outer.idx[h.cust], outer.budgets, floor, repl_tier, tol, max_iter)
        lo_all.append(lo)
        hi_all.append(hi)
        it += k
        floor = np.maximum(floor, hi[outer.idx[h.cust]])
    mu_lo = mu_hi = 0.0
    if cons.budget is not None:
        tau = hi_all[1] if len(layers) == 2 else None

        def repl_total(lam):
            mu = lam[0]
            if tau is None:
                return np.array([b_in[t_in > mu].sum()])
            up = tau > mu  # whole tiers binding above mu, else their sellers binding above mu
            return np.array([outer.budgets[up].sum() + b_in[(t_in > mu) & ~up[inner.parent]].sum()])

        lo, hi, k = _bisect_lp(h.slope, h.cost, None, np.array([cons.budget]), floor, repl_total, tol, max_iter)
        mu_lo, mu_hi = float(lo[0]), float(hi[0])
        it += k
    return Thresholds(layers, lo_all, hi_all, mu_lo, mu_hi, it, cons.budget, cheapest=True)


def dual_bound(h, th: Thresholds, cons) -> float:
    """Lagrangian dual value at the brackets' two ends, the smaller: an upper bound on the optimum."""

    def value(end):
        cust_thr = th.customer(end)
        mu, lams = th.multipliers(end)
        seg_thr = cust_thr if np.ndim(cust_thr) == 0 else cust_thr[h.cust]
        pr, sp = h.evaluate(h.level(h.count(seg_thr)))
        val = float(np.sum(pr - cust_thr * sp))
        if cons.budget is not None:
            val += mu * cons.budget
        for layer, lam in zip(th.layers, lams):
            val += float(lam @ layer.budgets)
        return val

    return min(value("hi"), value("lo"))
