"""The Lagrangian solver: concave hulls, bisection on the multipliers, greedy fix-up (see the package doc)."""

from __future__ import annotations

import numpy as np

from sellerlift.allocate.problem import (
    Allocation,
    _at_levels,
    _check_budget,
    _check_feasible,
    _check_inputs,
    _check_sellers,
    _chunk_profit_spend,
    _finish,
)

_CHUNK = 1 << 17  # customers per chunk when building hulls: bounds temporaries
_SAFETY = 1e-9  # relative budget margin against float rounding
_FIX_ROUNDS = 32


# ---------------------------------------------------------------- hulls
def _hull_chunk(pt, st):
    """Upper concave hull from level 0 by gift wrapping, for a chunk.

    pt, st: profit and spend, transposed [K, m] so that every step is a short
    loop over levels of 1-D vector ops (reductions over a length-K axis are
    slow in NumPy). Each step only works on customers whose hull goes on.
    Returns slope [m, K-1] (gain per unit spend; 0 = no segment), cost [m, K-1]
    (extra spend of each segment) and vert [m, K] (level after j segments).
    """
    k, m = pt.shape
    slope, cost = np.zeros((m, k - 1)), np.zeros((m, k - 1))
    vert = np.zeros((m, k), dtype=np.int8)
    idx = np.arange(m)
    s0, p0 = np.zeros(m), np.zeros(m)  # current vertex: level 0 is (0, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(k - 1):
            pa, sa = (pt, st) if j == 0 else (pt[:, idx], st[:, idx])
            best, nxt = np.zeros(len(idx)), np.zeros(len(idx), np.intp)
            # highest level first, strict ">": equal slopes keep the higher
            # level (a collinear extra vertex would be harmless anyway)
            for c in range(k - 1, 0, -1):
                ds = sa[c] - s0
                sl = (pa[c] - p0) / ds
                better = (ds > 0) & (sl > best)  # costs more and pays more
                best = np.where(better, sl, best)
                nxt = np.where(better, c, nxt)
            has = best > 0
            rows, r = idx[has], np.flatnonzero(has)
            nxt = nxt[has]
            ns, np_ = sa[nxt, r], pa[nxt, r]
            slope[rows, j], cost[rows, j], vert[rows, j + 1] = best[has], ns - s0[has], nxt
            idx, s0, p0 = rows, ns, np_
            if not len(idx):
                break
    for j in range(k - 1):  # past its hull's end a customer stays put
        vert[:, j + 1] = np.where(slope[:, j] > 0, vert[:, j + 1], vert[:, j])
    return slope, cost, vert


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


class _Hull:
    """All customers' hull segments as flat arrays, in customer then hull order.

    Customers have ~1-3 segments, so flat arrays are smaller and faster than
    dense [n, K-1] ones. Built in chunks to bound temporaries.
    """

    def __init__(self, values):
        n, k = values.shape
        self.values, self.d = values, values.d
        self.vert = np.zeros((n, k), dtype=np.int8)
        nseg = np.zeros(n, dtype=np.int64)
        parts = []
        for a in range(0, n, _CHUNK):
            sl = slice(a, min(a + _CHUNK, n))
            pr, sp = values.rows(sl)
            s, c, self.vert[sl] = _hull_chunk(pr.T.astype(np.float64), sp.T.astype(np.float64))
            has = s > 0
            nseg[sl] = has.sum(axis=1)
            parts.append((s[has], c[has]))
        self.slope = np.concatenate([q[0] for q in parts]) if parts else np.zeros(0)
        self.cost = np.concatenate([q[1] for q in parts]) if parts else np.zeros(0)
        self.nseg = nseg
        self.start = np.concatenate([[0], np.cumsum(nseg)])
        self.cust = np.repeat(np.arange(n, dtype=np.int32 if n < 2**31 else np.int64), nseg)

    def count(self, thr):
        """Segments taken per customer: those with slope > thr (per segment)."""
        return np.bincount(self.cust[self.slope > thr], minlength=len(self.nseg))

    def level(self, cnt):
        return self.vert[np.arange(len(cnt)), cnt].astype(np.intp)

    def evaluate(self, level):
        return self.values.at(level)


# ---------------------------------------------------------------- bisection
def _bisect(slope, cost, group, budgets, floor, tol, max_iter):
    """Per group g, bracket the smallest multiplier with spend_g <= budgets[g].

    A segment in group g is taken iff slope > max(lam_g, floor); group None
    means one group. Returns (lo, hi, iterations): hi is feasible, lo is not
    (or lo == hi == 0). Segments outside the current (lo, hi] band are decided,
    so they leave the working set and their spend moves to `fixed`.
    """
    g_n = len(budgets)

    def thr(lam, g, f):
        t = lam[0] if g is None else lam[g]
        return t if f is None else np.maximum(t, f)

    def spend(s, c, g, t):
        w = s > t
        return np.array([c.sum(where=w)]) if g is None else np.bincount(g[w], c[w], minlength=g_n)

    lo = np.zeros(g_n)
    hi = np.where(spend(slope, cost, group, thr(lo, group, floor)) <= budgets, 0.0, slope.max(initial=0.0))
    active = hi > 0
    s, c, g, f = slope, cost, group, floor
    if group is not None and not active.all():
        keep = active[group]
        s, c, g, f = s[keep], c[keep], g[keep], None if f is None else f[keep]
    fixed = np.zeros(g_n)
    it = 0
    while active.any() and it < max_iter:
        it += 1
        mid = 0.5 * (lo + hi)
        feas = fixed + spend(s, c, g, thr(mid, g, f)) <= budgets
        hi = np.where(active & feas, mid, hi)
        lo = np.where(active & ~feas, mid, lo)
        active &= hi - lo > tol * hi
        lo_t, hi_t = thr(lo, g, f), thr(hi, g, f)
        band = (s > lo_t) & (s <= hi_t)
        if g is not None:
            band &= active[g]
        if band.sum() < 0.5 * len(band):  # compact once the band has halved
            out = ~band & (s > hi_t)
            fixed += np.bincount(g[out], c[out], minlength=g_n) if g is not None else c[out].sum()
            s, c = s[band], c[band]
            g = None if g is None else g[band]
            f = None if f is None else f[band]
    return lo, hi, it


# ----------------------------------------------------------------- fix-up
def _take(key, cost, group, left, seller_left):
    """Indices of the moves taken: in order of key (best first), the longest
    prefix that fits each seller's leftover, then the total leftover."""
    idx = np.arange(len(key))
    if group is not None:
        o = np.lexsort((-key, group))
        gs, cs = group[o], np.cumsum(cost[o])
        start = np.maximum.accumulate(np.where(np.r_[True, gs[1:] != gs[:-1]], np.arange(len(o)), 0))
        idx = o[cs - cs[start] + cost[o][start] <= seller_left[gs]]
    idx = idx[np.argsort(-key[idx], kind="stable")]
    return idx[np.cumsum(cost[idx]) <= left]


def _spent(take, cost, group, left, seller_left):
    left -= cost[take].sum()
    if group is not None:
        seller_left = seller_left - np.bincount(group[take], cost[take], minlength=len(seller_left))
    return left, seller_left


def _fixup(h, cnt, left, seller_idx, seller_left):
    """Greedy 1: buy next hull upgrades in slope order while they fit.

    Each round takes the prefix (in slope order) of candidates that fits; what
    does not fit is retried next round with what is left. Budgets only shrink,
    so the candidate customers are found once.
    """
    nxt = h.start[:-1] + cnt
    ok = cnt < h.nseg
    lim = left if seller_left is None else np.minimum(left, seller_left[seller_idx])
    ok[ok] &= h.cost[nxt[ok]] <= (lim if np.ndim(lim) == 0 else lim[ok])
    sub = np.flatnonzero(ok)
    first, nseg, n_sub = h.start[sub], h.nseg[sub], cnt[sub].copy()
    g_sub = None if seller_left is None else seller_idx[sub]
    for _ in range(_FIX_ROUNDS if len(sub) else 0):
        live = np.flatnonzero(n_sub < nseg)
        pos = first[live] + n_sub[live]
        sl, co = h.slope[pos], h.cost[pos]
        g = None if g_sub is None else g_sub[live]
        fit = co <= (left if g is None else np.minimum(left, seller_left[g]))
        if not fit.any():
            break
        live, sl, co, g = live[fit], sl[fit], co[fit], None if g is None else g[fit]
        take = _take(sl, co, g, left, seller_left)
        n_sub[live[take]] += 1
        left, seller_left = _spent(take, co, g, left, seller_left)
    cnt = cnt.copy()
    cnt[sub] = n_sub
    return cnt, left, seller_left


def _fill(h, level, left, seller_idx, seller_left):
    """Greedy 2: with what is still left, move customers to any level (hull or
    not) that adds profit and fits, largest gain first. Matters for small
    budgets or small sellers, where one upgrade is a big share of the budget.
    """
    n = len(level)
    rows = np.arange(n)
    lim = np.full(n, left) if seller_left is None else np.minimum(left, seller_left[seller_idx])
    pr0, sp0 = h.evaluate(level)
    sub = []
    for a in range(0, n, _CHUNK):  # customers with any fitting, paying move
        sl = slice(a, min(a + _CHUNK, n))
        pr, sp = h.values.rows(sl)
        ok = (pr > pr0[sl, None]) & (sp - sp0[sl, None] <= lim[sl, None])
        sub.append(rows[sl][ok.any(axis=1)])
    sub = np.concatenate(sub)
    if not len(sub):
        return level
    pr, sp = h.values.rows(sub)
    lv = level[sub].copy()
    g = None if seller_left is None else seller_idx[sub]
    r = np.arange(len(sub))
    for _ in range(_FIX_ROUNDS):
        extra = sp - sp[r, lv][:, None]
        fit = extra <= (left if g is None else np.minimum(left, seller_left[g]))[..., None]
        gain = np.where(fit, pr - pr[r, lv][:, None], 0.0)
        k = gain.argmax(axis=1)
        cand = np.flatnonzero(gain[r, k] > 0)
        if not len(cand):
            break
        co = extra[cand, k[cand]]
        gc = None if g is None else g[cand]
        take = _take(gain[cand, k[cand]], co, gc, left, seller_left)
        lv[cand[take]] = k[cand[take]]
        left, seller_left = _spent(take, co, gc, left, seller_left)
    level = level.copy()
    level[sub] = lv
    return level


# ------------------------------------------------------------------ solver
def _dual(h, cust_thr, lam_total, budget, lam_seller, seller_budgets):
    """Lagrangian dual value: an upper bound on the optimum (= LP bound)."""
    seg_thr = cust_thr if np.ndim(cust_thr) == 0 else cust_thr[h.cust]
    pr, sp = h.evaluate(h.level(h.count(seg_thr)))
    val = float(np.sum(pr - cust_thr * sp))
    if budget is not None:
        val += lam_total * budget
    if seller_budgets is not None:
        val += float(lam_seller @ seller_budgets)
    return val


def _solve(h, budget, ids, seller_idx, seller_b, tol, max_iter) -> Allocation:
    shrink = 1 - _SAFETY
    t_lo = t_hi = None
    it1 = it2 = 0
    seg_group = None if seller_b is None else seller_idx[h.cust]
    if seller_b is not None:
        t_lo, t_hi, it1 = _bisect(h.slope, h.cost, seg_group, seller_b * shrink, None, tol, max_iter)
    mu_lo = mu_hi = 0.0
    if budget is not None:
        floor = None if seller_b is None else t_hi[seg_group]
        lo, hi, it2 = _bisect(h.slope, h.cost, None, np.array([budget * shrink]), floor, tol, max_iter)
        mu_lo, mu_hi = float(lo[0]), float(hi[0])

    def cust_thr(mu, t):  # customer of seller s uses max(mu, t_s)
        return np.float64(mu) if t is None else np.maximum(mu, t[seller_idx])

    thr = cust_thr(mu_hi, t_hi)
    cnt = h.count(thr if np.ndim(thr) == 0 else thr[h.cust])
    pr, sp = h.evaluate(h.level(cnt))
    left = np.inf if budget is None else budget * shrink - sp.sum()
    seller_left = None if seller_b is None else seller_b * shrink - np.bincount(seller_idx, sp, minlength=len(ids))
    cnt, left, seller_left = _fixup(h, cnt, left, seller_idx, seller_left)
    level = _fill(h, h.level(cnt), left, seller_idx, seller_left)
    pr, sp = h.evaluate(level)

    # dual bound at the feasible and the infeasible end of the bracket
    bound = min(
        _dual(h, cust_thr(mu, t), mu, budget, None if t is None else np.maximum(t - mu, 0), seller_b)
        for mu, t in ((mu_hi, t_hi), (mu_lo, t_lo))
    )
    profit = float(pr.sum())
    status = "optimal" if bound - profit <= 1e-9 * max(1.0, abs(bound)) else "ok"
    if seller_b is None:
        mult: float | dict = mu_hi
    else:
        mult = {"total": mu_hi, "seller": dict(zip(ids.tolist(), np.maximum(t_hi - mu_hi, 0).tolist()))}
    a = _finish(level, pr, sp, h.d, ids, seller_idx, multiplier=mult, status=status,
                bound=max(bound, profit), n_iter=it1 + it2)
    _check_feasible(a, budget, ids, seller_b)
    return a


def allocate_lagrangian(p, value, margin, levels, budget=None, seller=None, seller_budgets=None,
                        tol=1e-6, max_iter=100) -> Allocation:
    """Near-optimal allocation by Lagrangian relaxation (see module docstring).

    budget: total expected spend cap (None = no total cap). seller [n] +
    seller_budgets {seller: cap}: per-seller caps, with or without a total.
    tol: relative width at which the multiplier bisection stops.
    """
    p, value, margin, d = _check_inputs(p, value, margin, levels)
    budget = _check_budget(budget)
    ids, seller_idx, seller_b = _check_sellers(seller, seller_budgets, len(value))
    return _solve(_Hull(CurveValues(p, value, margin, d)), budget, ids, seller_idx, seller_b, tol, max_iter)


def allocate_values(profit, spend, levels, budget=None, seller=None, seller_budgets=None, tol=1e-6,
                    max_iter=100) -> Allocation:
    """The same solver on any per-level objective: ``profit`` and ``spend`` [n, K], level 0 both 0.

    For objectives that are not one week's conversion curve, e.g. the 90-day (enduring) profit of
    each level, or direct profit plus a weight times enduring value.
    """
    profit, spend, d = _check_values(profit, spend, levels)
    budget = _check_budget(budget)
    ids, seller_idx, seller_b = _check_sellers(seller, seller_budgets, len(profit))
    return _solve(_Hull(MatrixValues(profit, spend, d)), budget, ids, seller_idx, seller_b, tol, max_iter)


def _check_values(profit, spend, levels):
    profit = np.asarray(profit, dtype=np.float64)
    spend = np.asarray(spend, dtype=np.float64)
    if profit.ndim != 2 or spend.shape != profit.shape:
        raise ValueError(f"profit, spend: expected two [n, K] arrays of one shape, got {profit.shape}, {spend.shape}")
    d = np.asarray(levels, dtype=np.float64)
    if len(d) != profit.shape[1] or d[0] != 0 or np.any(np.diff(d) <= 0):
        raise ValueError(f"levels: expected {profit.shape[1]} increasing percents from 0, got {d.tolist()}")
    if not (np.isfinite(profit).all() and np.isfinite(spend).all()) or (spend < 0).any():
        raise ValueError("profit, spend: expected finite values and spend >= 0")
    if len(profit) and (np.abs(profit[:, 0]).max() > 0 or np.abs(spend[:, 0]).max() > 0):
        raise ValueError("profit, spend: level 0 (no offer) must have profit 0 and spend 0 (use increments)")
    return profit, spend, d / 100.0
