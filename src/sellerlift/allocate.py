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

from dataclasses import dataclass, field

import numpy as np

DEFAULT_LEVELS = (0, 5, 10, 15, 20, 25, 30)
_CHUNK = 1 << 17  # customers per chunk when building hulls: bounds temporaries
_SAFETY = 1e-9  # relative budget margin against float rounding
_FIX_ROUNDS = 32


@dataclass
class Allocation:
    level_index: np.ndarray  # [n] int, index into levels
    level_pct: np.ndarray  # [n] discount in percent
    spend: float  # expected discount spend
    profit: float  # expected incremental profit
    roi: float  # profit / spend (0 if spend == 0)
    multiplier: float | dict  # lam, or {"total": mu, "seller": {s: lam_s}}
    seller_spend: dict | None  # seller -> spend, if sellers were given
    status: str  # "optimal", "ok" (feasible, see bound), "lp_relaxation", ...
    bound: float = float("nan")  # upper bound on the optimal profit (LP / dual)
    n_iter: int = 0  # bisection steps (Lagrangian only)
    info: dict = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """Relative gap to ``bound`` (0 when bound is unknown or 0)."""
        if not np.isfinite(self.bound) or self.bound <= 0:
            return 0.0
        return max(0.0, (self.bound - self.profit) / self.bound)


# ----------------------------------------------------------------- validation
def _check_inputs(p, value, margin, levels):
    p = np.asarray(p)
    if p.ndim != 2 or not np.issubdtype(p.dtype, np.number):
        raise ValueError(f"p: expected a numeric [n, K] array, got shape {p.shape}")
    if p.dtype.kind != "f":
        p = p.astype(np.float64)
    n, k = p.shape
    d = np.asarray(levels, dtype=np.float64)
    if d.ndim != 1 or len(d) != k:
        raise ValueError(f"levels: expected {k} levels (p has K={k} columns), got {d.shape}")
    if d[0] != 0 or np.any(np.diff(d) <= 0) or d[-1] >= 100 or not np.all(np.isfinite(d)):
        raise ValueError(f"levels: expected strictly increasing percents in [0, 100) starting at 0, got {d.tolist()}")
    if n and not (p.min() >= 0 and p.max() <= 1):  # NaN fails both
        raise ValueError("p: expected probabilities in [0, 1] with no NaN")
    value = np.asarray(value, dtype=np.float64)
    if value.shape != (n,):
        raise ValueError(f"value: expected shape ({n},) to match p, got {value.shape}")
    if n and not (value.min() >= 0 and np.isfinite(value.max())):
        raise ValueError("value: expected finite order values >= 0")
    margin = np.asarray(margin, dtype=np.float64)
    if margin.shape not in ((), (n,)):
        raise ValueError(f"margin: expected a scalar or shape ({n},), got {margin.shape}")
    if margin.size and not (margin.min() > 0 and margin.max() <= 1):
        raise ValueError("margin: expected profit margins in (0, 1]")
    return p, value, margin, d / 100.0


def _check_budget(budget, name="budget"):
    if budget is None:
        return None
    b = float(budget)
    if not (b >= 0 and np.isfinite(b)):
        raise ValueError(f"{name}: expected a finite number >= 0, got {budget!r}")
    return b


def _check_sellers(seller, seller_budgets, n):
    """-> (seller ids [G], index [n] into them, budgets [G] or None)."""
    if seller is None:
        if seller_budgets is not None:
            raise ValueError("seller: required when seller_budgets is given")
        return None, None, None
    seller = np.asarray(seller)
    if seller.shape != (n,):
        raise ValueError(f"seller: expected shape ({n},) to match p, got {seller.shape}")
    ids, idx = np.unique(seller, return_inverse=True)
    if seller_budgets is None:
        return ids, idx, None
    known = set(ids.tolist())
    unknown = [s for s in seller_budgets if s not in known]
    if unknown:
        raise ValueError(f"seller_budgets: unknown seller(s) {unknown[:5]} not in `seller`")
    missing = [s for s in ids.tolist() if s not in seller_budgets]
    if missing:
        raise ValueError(f"seller_budgets: no budget for seller(s) {missing[:5]}")
    b = np.array([_check_budget(seller_budgets[s], f"seller_budgets[{s!r}]") for s in ids.tolist()])
    return ids, idx, b


# ------------------------------------------------------- profit and spend
def _chunk_profit_spend(p, value, margin, d):
    p = p.astype(np.float64, copy=False)
    v = value[:, None]
    m = margin[:, None] if margin.ndim else margin
    profit = v * (p * (m - d) - p[:, :1] * m)  # exactly 0 at level 0
    return profit, v * p * d


def incremental_profit_and_spend(p, value, margin, levels):
    """Expected incremental profit and expected spend, each [n, K] float64."""
    p, value, margin, d = _check_inputs(p, value, margin, levels)
    return _chunk_profit_spend(p, value, margin, d)


def _at_levels(p, value, margin, d, level):
    """Per-customer profit and spend of the chosen levels (exact, float64)."""
    rows = np.arange(len(level))
    pk = p[rows, level].astype(np.float64)
    dk = d[level]
    profit = value * (pk * (margin - dk) - p[:, 0].astype(np.float64) * margin)
    return profit, value * pk * dk


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


class _Hull:
    """All customers' hull segments as flat arrays, in customer then hull order.

    Customers have ~1-3 segments, so flat arrays are smaller and faster than
    dense [n, K-1] ones. Built in chunks to bound temporaries.
    """

    def __init__(self, p, value, margin, d):
        n, k = p.shape
        self.p, self.value, self.margin, self.d = p, value, margin, d
        self.vert = np.zeros((n, k), dtype=np.int8)
        nseg = np.zeros(n, dtype=np.int64)
        parts = []
        for a in range(0, n, _CHUNK):
            sl = slice(a, min(a + _CHUNK, n))
            pt = p[sl].T.astype(np.float64)
            v, m = value[sl], margin[sl] if margin.ndim else margin
            dd = d[:, None]
            s, c, self.vert[sl] = _hull_chunk(v * (pt * (m - dd) - pt[0] * m), v * pt * dd)
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
        return _at_levels(self.p, self.value, self.margin, self.d, level)


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
        pr, sp = _chunk_profit_spend(h.p[sl], h.value[sl], h.margin[sl] if h.margin.ndim else h.margin, h.d)
        ok = (pr > pr0[sl, None]) & (sp - sp0[sl, None] <= lim[sl, None])
        sub.append(rows[sl][ok.any(axis=1)])
    sub = np.concatenate(sub)
    if not len(sub):
        return level
    m = h.margin[sub] if h.margin.ndim else h.margin
    pr, sp = _chunk_profit_spend(h.p[sub], h.value[sub], m, h.d)
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


def _finish(level, pr, sp, d, ids, seller_idx, **kw) -> Allocation:
    spend, profit = float(sp.sum()), float(pr.sum())
    seller_spend = None
    if ids is not None:
        per = np.bincount(seller_idx, sp, minlength=len(ids))
        seller_spend = dict(zip(ids.tolist(), per.tolist()))
    return Allocation(
        level_index=level, level_pct=d[level] * 100.0, spend=spend, profit=profit,
        roi=profit / spend if spend > 0 else 0.0, seller_spend=seller_spend, **kw,
    )


def _check_feasible(a: Allocation, budget, ids, seller_b):
    """Level 0 is free, so infeasibility means a bug: fail loudly."""
    if budget is not None and a.spend > budget * (1 + 1e-12) + 1e-12:
        raise RuntimeError(f"infeasible allocation: spend {a.spend} > budget {budget}")
    if seller_b is not None:
        for s, b in zip(ids.tolist(), seller_b):
            if a.seller_spend[s] > b * (1 + 1e-12) + 1e-12:
                raise RuntimeError(f"infeasible allocation: seller {s!r} over budget")


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
    return _solve(_Hull(p, value, margin, d), budget, ids, seller_idx, seller_b, tol, max_iter)


# ------------------------------------------------------------- exact (HiGHS)
def allocate_exact_lp(p, value, margin, levels, budget=None, seller=None, seller_budgets=None,
                      *, integer=False, time_limit=None) -> Allocation:
    """Reference solution with HiGHS on the full n*K formulation.

    integer=False: LP relaxation (linprog). profit/spend/bound are the LP's
    (fractional) values; level_index is each customer's largest x (at most one
    customer per budget row is fractional in a basic solution).
    integer=True: exact MILP (milp); meant for small n.
    """
    from scipy import sparse
    from scipy.optimize import Bounds, LinearConstraint, linprog, milp

    p, value, margin, d = _check_inputs(p, value, margin, levels)
    budget = _check_budget(budget)
    ids, seller_idx, seller_b = _check_sellers(seller, seller_budgets, len(value))
    pr, sp = _chunk_profit_spend(p, value, margin, d)
    n, k = pr.shape
    one = sparse.csr_array((np.ones(n * k), np.arange(n * k), np.arange(0, n * k + 1, k)), shape=(n, n * k))
    rows, caps = [], []
    if budget is not None:
        rows.append(sparse.csr_array(sp.reshape(1, -1)))
        caps.append([budget])
    if seller_b is not None:
        r = np.repeat(seller_idx, k)
        rows.append(sparse.csr_array((sp.ravel(), (r, np.arange(n * k))), shape=(len(ids), n * k)))
        caps.append(seller_b)
    a_ub = sparse.vstack(rows).tocsr() if rows else None
    b_ub = np.concatenate(caps) if caps else None
    opts = {} if time_limit is None else {"time_limit": time_limit}
    if integer:
        cons = [LinearConstraint(one, 1, 1)] + ([LinearConstraint(a_ub, -np.inf, b_ub)] if rows else [])
        res = milp(-pr.ravel(), constraints=cons, integrality=np.ones(n * k), bounds=Bounds(0, 1), options=opts)
        status = {0: "optimal", 1: "time_limit"}.get(res.status, f"highs_status_{res.status}")
    else:
        res = linprog(-pr.ravel(), A_ub=a_ub, b_ub=b_ub, A_eq=one, b_eq=np.ones(n), bounds=(0, 1),
                      method="highs", options=opts)
        status = "lp_relaxation" if res.status == 0 else f"highs_status_{res.status}"
    if res.x is None:
        raise RuntimeError(f"HiGHS returned no solution: {res.message}")
    x = res.x.reshape(n, k)
    level = x.argmax(axis=1)
    if integer:
        lp_pr, lp_sp = _at_levels(p, value, margin, d, level)
        bound = -getattr(res, "mip_dual_bound", res.fun)
    else:  # fractional values, per customer
        lp_pr, lp_sp = (x * pr).sum(axis=1), (x * sp).sum(axis=1)
        bound = -res.fun
    mult = float("nan")
    if not integer and budget is not None and seller_b is None:
        mult = float(-res.ineqlin.marginals[0])
    return _finish(level, lp_pr, lp_sp, d, ids, seller_idx, multiplier=mult, status=status, bound=bound)


# ------------------------------------------------------------ budget curve
def budget_curve(p, value, margin, levels, budgets, tol=1e-6) -> dict:
    """Profit, spend and ROI of the allocation at each budget (multi-armed Qini).

    Hulls are built once. The Lagrangian + greedy solution is not guaranteed
    monotone in the budget, so each point reports the best allocation found at
    any budget <= it (feasible there too): profit is non-decreasing.
    """
    p, value, margin, d = _check_inputs(p, value, margin, levels)
    budgets = np.asarray([_check_budget(b, "budgets") for b in np.atleast_1d(budgets)], dtype=np.float64)
    order = np.argsort(budgets, kind="stable")
    h = _Hull(p, value, margin, d)
    sols = [_solve(h, float(budgets[i]), None, None, None, tol, 100) for i in order]
    profit = np.array([a.profit for a in sols])
    spend = np.array([a.spend for a in sols])
    best = np.array([int(np.argmax(profit[: i + 1])) for i in range(len(sols))], dtype=np.intp)
    out = {"budget": budgets[order], "spend": spend[best], "profit": profit[best],
           "bound": np.array([a.bound for a in sols]),
           "n_treated": np.array([int((sols[b].level_index > 0).sum()) for b in best])}
    out["roi"] = np.divide(out["profit"], out["spend"], out=np.zeros(len(sols)), where=out["spend"] > 0)
    return out


# ------------------------------------------------------------- baseline
def allocate_rule_based(p, value, margin, levels, budget=None, *, rule="top_value", level_pct=10.0,
                        priority=None, seed=0) -> Allocation:
    """What sellers do today: one flat discount to a ranked list of customers.

    Customers are ranked by ``rule``: "top_value" (highest order value first;
    the usual "reward our best customers"), "priority" (highest ``priority``
    first, e.g. ``-days_since_last_purchase`` for most recent first) or
    "random". Going down the list each gets ``level_pct`` while the cumulative
    expected spend stays within ``budget`` (None: everyone gets it).
    """
    p, value, margin, d = _check_inputs(p, value, margin, levels)
    budget = _check_budget(budget)
    n = len(value)
    hit = np.flatnonzero(np.isclose(d * 100.0, level_pct))
    if not len(hit):
        raise ValueError(f"level_pct: expected one of the levels {(d * 100).tolist()}, got {level_pct}")
    if rule == "top_value":
        order = np.argsort(-value, kind="stable")
    elif rule == "priority":
        priority = np.asarray(priority, dtype=np.float64) if priority is not None else None
        if priority is None or priority.shape != (n,):
            raise ValueError(f"priority: expected shape ({n},) for rule='priority'")
        order = np.argsort(-priority, kind="stable")
    elif rule == "random":
        order = np.random.default_rng(seed).permutation(n)
    else:
        raise ValueError(f"rule: expected 'top_value', 'priority' or 'random', got {rule!r}")
    k = int(hit[0])
    m = margin[order] if margin.ndim else margin
    _, sp = _at_levels(p[order], value[order], m, d, np.full(n, k))
    n_take = n if budget is None else int(np.searchsorted(np.cumsum(sp), budget * (1 + 1e-12), side="right"))
    level = np.zeros(n, dtype=np.intp)
    level[order[:n_take]] = k
    pr, sp = _at_levels(p, value, margin, d, level)
    return _finish(level, pr, sp, d, None, None, multiplier=float("nan"), status="rule_based")


# ----------------------------------------------------- synthetic instances
def random_instance(n, seed=0, levels=DEFAULT_LEVELS, n_sellers=20, dtype=np.float64) -> dict:
    """A realistic random instance for tests and benchmarks.

    Four archetypes (shares and basket values from the RFM study in
    REFERENCES.md): new / low engagement need large discounts (convex
    response), high value buy anyway and respond ~linearly, intermittent in
    between, promotion-sensitive rarely buy without one. Curves are monotone.
    Sellers have heavy-tailed sizes.
    """
    rng = np.random.default_rng(seed)
    d = np.asarray(levels, dtype=np.float64) / 100.0
    arch = rng.choice(4, size=n, p=[0.41, 0.19, 0.23, 0.17])
    base = np.array([-3.4, -0.6, -2.0, -3.9])[arch] + rng.normal(0, 0.5, n)
    sens = np.array([9.0, 3.0, 6.0, 14.0])[arch] * rng.lognormal(0, 0.3, n)
    power = np.array([1.8, 1.0, 1.2, 1.0])[arch]
    logit = base[:, None] + sens[:, None] * d[None, :] ** power[:, None]
    p = (1.0 / (1.0 + np.exp(-logit))).astype(dtype)
    value = np.array([14.8, 126.4, 63.2, 28.9])[arch] * rng.lognormal(-0.125, 0.5, n)
    w = 1.0 / np.arange(1, n_sellers + 1) ** 1.1
    return {"p": p, "value": value, "margin": rng.uniform(0.3, 0.5, n), "levels": tuple(levels),
            "seller": rng.choice(n_sellers, size=n, p=w / w.sum())}
