"""Greedy fix-up after the bisection: spend what the budgets have left on the best remaining moves.

Leftovers are tracked for the total (a scalar, inf without a total budget) and for every budgeted layer
(``groups``: a list of (customer -> group index, leftover per group), innermost first). A move is taken
only if it fits every leftover it draws on, so the result stays feasible.
"""

from __future__ import annotations

import numpy as np

from sellerlift.allocate.hull import _CHUNK

_FIX_ROUNDS = 32


def _lim(left, groups, sel=None):
    """What the tightest leftover allows each customer (``sel``: a subset of them; scalar with no groups)."""
    lim = left
    for idx, gl in groups:
        lim = np.minimum(lim, gl[idx if sel is None else idx[sel]])
    return lim


def _take(key, cost, groups, left):
    """Indices of the moves taken: in order of key (best first), the longest prefix that fits each group's
    leftover, layer by layer (innermost first), then the total leftover."""
    idx = np.arange(len(key))
    for g, gl in groups:
        gi = g[idx]
        o = np.lexsort((-key[idx], gi))
        gs, co = gi[o], cost[idx][o]
        cs = np.cumsum(co)
        start = np.maximum.accumulate(np.where(np.r_[True, gs[1:] != gs[:-1]], np.arange(len(o)), 0))
        idx = idx[o][cs - cs[start] + co[start] <= gl[gs]]
    idx = idx[np.argsort(-key[idx], kind="stable")]
    return idx[np.cumsum(cost[idx]) <= left]


def _spent(take, cost, groups, left):
    left -= cost[take].sum()
    out = [(g, gl - np.bincount(g[take], cost[take], minlength=len(gl))) for g, gl in groups]
    return left, out


def fixup(h, cnt, left, groups):
    """Greedy 1: buy next hull upgrades in slope order while they fit.

    Each round takes the prefix (in slope order) of candidates that fits; what
    does not fit is retried next round with what is left. Budgets only shrink,
    so the candidate customers are found once. -> (cnt, left, leftovers per layer)
    """
    nxt = h.start[:-1] + cnt
    ok = cnt < h.nseg
    lim = _lim(left, groups)
    ok[ok] &= h.cost[nxt[ok]] <= (lim if np.ndim(lim) == 0 else lim[ok])
    sub = np.flatnonzero(ok)
    first, nseg, n_sub = h.start[sub], h.nseg[sub], cnt[sub].copy()
    g_sub = [idx[sub] for idx, _ in groups]
    lefts = [gl for _, gl in groups]
    for _ in range(_FIX_ROUNDS if len(sub) else 0):
        live = np.flatnonzero(n_sub < nseg)
        pos = first[live] + n_sub[live]
        sl, co = h.slope[pos], h.cost[pos]
        g = [x[live] for x in g_sub]
        fit = co <= _lim(left, list(zip(g, lefts)))
        if not fit.any():
            break
        live, sl, co, g = live[fit], sl[fit], co[fit], [x[fit] for x in g]
        take = _take(sl, co, list(zip(g, lefts)), left)
        n_sub[live[take]] += 1
        left, spent = _spent(take, co, list(zip(g, lefts)), left)
        lefts = [gl for _, gl in spent]
    cnt = cnt.copy()
    cnt[sub] = n_sub
    return cnt, left, [(idx, gl) for (idx, _), gl in zip(groups, lefts)]


def fill(h, level, left, groups):
    """Greedy 2: with what is still left, move customers to any level (hull or
    not) that adds to the objective and fits, largest gain first. Matters for small
    budgets or small groups, where one upgrade is a big share of the budget.
    """
    n = len(level)
    rows = np.arange(n)
    lim = _lim(np.full(n, left), groups)
    pr0, sp0 = h.evaluate(level)
    sub = []
    for a in range(0, n, _CHUNK):  # customers with any fitting, paying move
        sl = slice(a, min(a + _CHUNK, n))
        pr, sp = h.values.rows(sl)
        ok = (pr > pr0[sl, None]) & (sp - sp0[sl, None] <= lim[sl, None])
        sub.append(rows[sl][ok.any(axis=1)])
    sub = np.concatenate(sub) if sub else np.zeros(0, dtype=np.intp)
    if not len(sub):
        return level
    pr, sp = h.values.rows(sub)
    lv = level[sub].copy()
    g = [idx[sub] for idx, _ in groups]
    lefts = [gl for _, gl in groups]
    r = np.arange(len(sub))
    for _ in range(_FIX_ROUNDS):
        extra = sp - sp[r, lv][:, None]
        fit = extra <= np.asarray(_lim(np.float64(left), list(zip(g, lefts))))[..., None]
        gain = np.where(fit, pr - pr[r, lv][:, None], 0.0)
        k = gain.argmax(axis=1)
        cand = np.flatnonzero(gain[r, k] > 0)
        if not len(cand):
            break
        co = extra[cand, k[cand]]
        gc = [x[cand] for x in g]
        take = _take(gain[cand, k[cand]], co, list(zip(gc, lefts)), left)
        lv[cand[take]] = k[cand[take]]
        left, spent = _spent(take, co, list(zip(gc, lefts)), left)
        lefts = [gl for _, gl in spent]
    level = level.copy()
    level[sub] = lv
    return level
