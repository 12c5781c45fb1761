"""Multipliers on a laminar family of budgets, innermost first: the thresholds the allocation is built on.

Sellers nest in tiers, tiers in the total. Each layer gets one multiplier per group by bisection, with the
thresholds of the layers inside it as a floor: a segment of a customer of seller s in tier T is taken iff
its slope > max(mu, tau_T, t_s). Written as multipliers, lam_total = mu, lam_T = max(tau_T - mu, 0) and
lam_s = max(t_s - max(mu, tau_T), 0) sum to that threshold. An outer layer sees each inner group's spend
rounded down at its kink (whole segments), which is what the integer allocation will spend; the LP would
spend the inner budget exactly there, so the dual bound uses the LP's version of the outer layers
(``dual.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_SAFETY = 1e-9  # relative budget margin against float rounding


class SegmentBand:
    """One holder's share of a bisection (all customers, or one shard of them): its segments still undecided
    and the spend of the decided ones that are taken (``fixed``), per group.

    A segment in group g is taken iff slope > max(lam_g, floor); group None means one group. The driver
    (:func:`bisect_multipliers`) sums ``spend`` over the holders; with one holder this is the solver's own
    bisection, bit for bit.
    """

    def __init__(self, slope, cost, group, floor, g_n):
        self.s, self.c, self.g, self.f, self.g_n = slope, cost, group, floor, g_n
        self.fixed = np.zeros(g_n)

    def _thr(self, lam):
        t = lam[0] if self.g is None else lam[self.g]
        return t if self.f is None else np.maximum(t, self.f)

    def _spend(self, lam):
        w = self.s > self._thr(lam)
        return (
            np.array([self.c.sum(where=w)]) if self.g is None else np.bincount(self.g[w], self.c[w], minlength=self.g_n)
        )

    def top(self) -> float:
        return float(self.s.max(initial=0.0))

    def spend(self, lam):
        """[G] spend of this holder's taken segments at multipliers ``lam`` [G]."""
        return self.fixed + self._spend(lam)

    def keep(self, active):
        """Drop the segments of groups already decided at the start (their spend fits at lam = 0)."""
        if self.g is not None and not active.all():
            keep = active[self.g]
            self.s, self.c, self.g = self.s[keep], self.c[keep], self.g[keep]
            self.f = None if self.f is None else self.f[keep]

    def narrow(self, lo, hi, active):
        """Segments outside the (lo, hi] band are decided: once the band has halved, they leave the working set
        and the spend of the taken ones moves to ``fixed``."""
        lo_t, hi_t = self._thr(lo), self._thr(hi)
        s = self.s
        band = (s > lo_t) & (s <= hi_t)
        if self.g is not None:
            band &= active[self.g]
        if band.sum() < 0.5 * len(band):  # compact once the band has halved
            out = ~band & (s > hi_t)
            self.fixed += (
                np.bincount(self.g[out], self.c[out], minlength=self.g_n) if self.g is not None else self.c[out].sum()
            )
            self.s, self.c = s[band], self.c[band]
            self.g = None if self.g is None else self.g[band]
            self.f = None if self.f is None else self.f[band]


def bisect_multipliers(call, budgets, tol, max_iter):
    """Per group g, bracket the smallest multiplier with spend_g <= budgets[g], over the holders ``call`` reaches.

    ``call(method, *args)`` runs a :class:`SegmentBand` method on every holder and returns their answers
    (a list); only [G] spend vectors and one float per holder come back. Returns (lo, hi, iterations): hi is
    feasible, lo is not (or lo == hi == 0).
    """
    g_n = len(budgets)
    lo = np.zeros(g_n)
    tops = call("top")
    hi = np.where(_total(call("spend", lo)) <= budgets, 0.0, max(tops, default=0.0))
    active = hi > 0
    call("keep", active)
    it = 0
    while active.any() and it < max_iter:
        it += 1
        mid = 0.5 * (lo + hi)
        feas = _total(call("spend", mid)) <= budgets
        hi = np.where(active & feas, mid, hi)
        lo = np.where(active & ~feas, mid, lo)
        active &= hi - lo > tol * hi
        call("narrow", lo, hi, active)
    return lo, hi, it


def _total(parts):
    """The sum of the holders' [G] vectors, in holder order (one holder: its vector itself)."""
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def local_call(*holders):
    """``call`` over holders in this process (the single-process solver's is one holder)."""

    def call(method, *args):
        return [getattr(h, method)(*args) for h in holders]

    return call


def _bisect(slope, cost, group, budgets, floor, tol, max_iter):
    """Per group g, bracket the smallest multiplier with spend_g <= budgets[g] (one holder: every segment).

    A segment in group g is taken iff slope > max(lam_g, floor); group None means one group. Returns
    (lo, hi, iterations): hi is feasible, lo is not (or lo == hi == 0). Segments outside the current
    (lo, hi] band are decided, so they leave the working set and their spend moves to `fixed`.
    """
    return bisect_multipliers(local_call(SegmentBand(slope, cost, group, floor, len(budgets))), budgets, tol, max_iter)


@dataclass
class Thresholds:
    """The bisection's bracket for each budgeted layer (innermost first) and the total."""

    layers: list  # the Constraints' budgeted layers
    lo: list  # [G] per layer: the infeasible end (or 0)
    hi: list  # [G] per layer: the feasible end
    mu_lo: float
    mu_hi: float
    n_iter: int
    budget: float | None = None  # the total budget
    cheapest: bool = False  # split the thresholds into multipliers at the least cost (_cheapest_split)

    def customer(self, end="hi"):
        """Each customer's threshold max(mu, tau_T, t_s) at one end of the brackets (a scalar if no layers)."""
        thr = np.float64(self.mu_hi if end == "hi" else self.mu_lo)
        for layer, t in zip(self.layers, self.hi if end == "hi" else self.lo):
            thr = np.maximum(thr, t[layer.idx])
        return thr

    def multipliers(self, end="hi"):
        """(lam_total, [lam per layer, innermost first]) whose sums per customer are its threshold."""
        mu = self.mu_hi if end == "hi" else self.mu_lo
        ts = self.hi if end == "hi" else self.lo
        if self.cheapest:
            return _cheapest_split(self.layers, ts, mu, self.budget)
        lams = [None] * len(ts)
        outer = None  # [G] of the layer just outside, the threshold its groups already impose
        for j in range(len(ts) - 1, -1, -1):
            layer = self.layers[j]
            floor = mu if outer is None else outer[layer.parent]
            lams[j] = np.maximum(ts[j] - floor, 0)
            outer = np.maximum(floor, ts[j])
        return mu, lams


def _cheapest_split(layers, ts, mu, budget):
    """The multipliers with the smallest budget term whose sums are the customers' thresholds.

    Only each innermost group's threshold theta_g = max(mu, tau, t) enters the Lagrangian's per-customer
    part, so any split of theta_g over the nested groups (total, tier, seller), each part >= 0, is a valid
    dual; the cheapest one is found on the tree: a node takes the largest multiplier its subtree allows
    (the smallest theta below it, less what is above) iff its budget is below what its children would pay
    per unit (their effective budgets). At the LP's thresholds (``dual.lp_thresholds``) this is the natural
    split (KKT); elsewhere it is never worse. Written for <= 2 layers (sellers, tiers).
    """
    if not layers:
        return mu, []
    inner = layers[0]
    theta = ts[0] if len(layers) == 1 else np.maximum(ts[0], ts[1][inner.parent])
    theta = np.maximum(theta, mu)
    has = np.bincount(inner.idx, minlength=len(inner.ids)) > 0
    theta = np.where(has, theta, np.inf)  # a group with no customers constrains nothing
    eff = np.where(has, inner.budgets, 0.0)
    m = theta
    if len(layers) == 2:
        outer = layers[1]
        g1 = len(outer.ids)
        s1 = np.bincount(inner.parent, eff, minlength=g1)
        m1 = np.full(g1, np.inf)
        np.minimum.at(m1, inner.parent, theta)
        push1 = (outer.budgets < s1) & np.isfinite(m1)
        eff, m = np.minimum(outer.budgets, s1), m1
    big = float(m.min(initial=np.inf))
    mu = big if budget is not None and budget < eff.sum() and np.isfinite(big) else 0.0
    x = mu
    lams = []
    if len(layers) == 2:
        lam1 = np.where(push1, m1 - mu, 0.0)
        x = (mu + lam1)[inner.parent]
        lams = [lam1]
    lam0 = np.where(has, np.maximum(theta - x, 0.0), 0.0)
    return mu, [lam0, *lams]


def solve_thresholds(h, cons, tol, max_iter) -> Thresholds:
    shrink = 1 - _SAFETY
    floor = None
    lo_all, hi_all, it = [], [], 0
    for layer in cons.layers:
        seg_group = layer.idx[h.cust]
        lo, hi, k = _bisect(h.slope, h.cost, seg_group, layer.budgets * shrink, floor, tol, max_iter)
        floor = hi[seg_group] if floor is None else np.maximum(floor, hi[seg_group])
        lo_all.append(lo)
        hi_all.append(hi)
        it += k
    mu_lo = mu_hi = 0.0
    if cons.budget is not None:
        lo, hi, k = _bisect(h.slope, h.cost, None, np.array([cons.budget * shrink]), floor, tol, max_iter)
        mu_lo, mu_hi = float(lo[0]), float(hi[0])
        it += k
    return Thresholds(cons.layers, lo_all, hi_all, mu_lo, mu_hi, it, cons.budget)
