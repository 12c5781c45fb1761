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

from sellerlift.allocate.thresholds import Thresholds


def _bisect_lp(slope, cost, group, budgets, floor, repl, tol, max_iter):
    """Per group g, bracket the smallest multiplier whose LP spend is <= budgets[g]: a segment counts iff
    floor <= lam_g < slope; ``repl(lam)`` [G] adds the budgets of the inner groups binding above lam_g.
    Segments decided for the whole current bracket leave the working set, as in ``_bisect``."""
    g_n = len(budgets)

    def at(lam, g):
        return lam[0] if g is None else lam[g]

    def spend(s, c, g, f, lam):
        t = at(lam, g)
        w = (s > t) & (f <= t)
        return np.array([c.sum(where=w)]) if g is None else np.bincount(g[w], c[w], minlength=g_n)

    lo = np.zeros(g_n)
    top = max(slope.max(initial=0.0), floor.max(initial=0.0))
    hi = np.where(spend(slope, cost, group, floor, lo) + repl(lo) <= budgets, 0.0, top)
    active = hi > 0
    s, c, g, f = slope, cost, group, floor
    fixed = np.zeros(g_n)
    it = 0
    while active.any() and it < max_iter:
        it += 1
        mid = 0.5 * (lo + hi)
        feas = fixed + spend(s, c, g, f, mid) + repl(mid) <= budgets
        hi = np.where(active & feas, mid, hi)
        lo = np.where(active & ~feas, mid, lo)
        active &= hi - lo > tol * hi
        lo_t, hi_t = at(lo, g), at(hi, g)
        sure = (f <= lo_t) & (s > hi_t)  # counted for every lam in (lo, hi]
        band = ~sure & (s > lo_t) & (f <= hi_t)
        if g is not None:
            band &= active[g]
        if band.sum() < 0.5 * len(band):
            fixed += np.bincount(g[sure], c[sure], minlength=g_n) if g is not None else c[sure].sum()
            s, c, f = s[band], c[band], f[band]
            g = None if g is None else g[band]
    return lo, hi, it


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
