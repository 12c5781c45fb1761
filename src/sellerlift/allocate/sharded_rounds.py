"""The driver's side of the sharded rounds (:func:`~sellerlift.allocate.sharded.solve_sharded`): each function runs
one stage of ``lagrangian._solve`` over the shards through ``ex`` (``ex.call(method, *args)`` runs a shard method on
every shard, ``ex.each(method, per_shard_args)`` gives each its own), with only small vectors crossing.

- :func:`bisect_thresholds`: per-seller budgets bisected inside each shard with the global starting bracket, tier
  budgets and the total budget on the driver (``thresholds.bisect_multipliers``), each round sending the
  multiplier(s) out and getting one spend per tier (or one number) back per shard;
- :func:`fix_and_fill`: the greedy fix-up and fill rounds (``fixup``): the shards propose their best next moves per
  tier, the driver merges them in the single-process order (key, then tier, seller, customer index for exact
  ties) and sends back which were taken;
- :func:`lp_thresholds` and :func:`dual_bound`: the LP's outer multipliers by the same round protocol, then the
  dual value from per-shard sums.

Sums over shards are added in shard order (:func:`total_float`).
"""

from __future__ import annotations

import numpy as np

from sellerlift.allocate.dual import bisect_lp_multipliers
from sellerlift.allocate.fixup import _FIX_ROUNDS
from sellerlift.allocate.thresholds import _SAFETY, Thresholds, bisect_multipliers


def bisect_thresholds(ex, layers, top, budget, tol, max_iter) -> Thresholds:
    """``thresholds.solve_thresholds`` over the shards; ``top``: the global starting bracket (all segments)."""
    shrink = 1 - _SAFETY

    def bands():
        return lambda method, *args: ex.call("band_call", method, *args)

    lo_all, hi_all, it = [], [], 0
    for layer in layers:
        if layer.name == "seller":
            parts = ex.call("solve_sellers", top, tol, max_iter)
            lo, hi = np.zeros(len(layer.ids)), np.zeros(len(layer.ids))
            k = 0
            for gidx, l_, h_, i_ in parts:
                if gidx is not None:
                    lo[gidx], hi[gidx] = l_, h_
                k = max(k, i_)
        else:
            ex.call("band_new", "tier")
            lo, hi, k = bisect_multipliers(bands(), layer.budgets * shrink, tol, max_iter)
            ex.call("raise_floor", hi, "tier")
        lo_all.append(lo)
        hi_all.append(hi)
        it += k
    mu_lo = mu_hi = 0.0
    if budget is not None:
        ex.call("band_new", None)
        lo, hi, k = bisect_multipliers(bands(), np.array([budget * shrink]), tol, max_iter)
        mu_lo, mu_hi = float(lo[0]), float(hi[0])
        it += k
    return Thresholds(layers, lo_all, hi_all, mu_lo, mu_hi, it, budget)


def fix_and_fill(ex, th, names, tiers, budget):
    """The Lagrangian choice at the feasible ends, then the greedy fix-up and fill (``fixup.fixup`` /
    ``fixup.fill``): each round the shards propose, :func:`_merge` picks, the shards apply the picks."""
    shrink = 1 - _SAFETY
    tier_hi = th.hi[names.index("tier")] if "tier" in names else None
    chosen = ex.call("choose", tier_hi, th.mu_hi)
    left = np.inf if budget is None else budget * shrink - total_float([c["spend"] for c in chosen])
    tier_left = None
    if "tier" in names:
        tier_left = tiers.budgets * shrink - sum(c["tier_spend"] for c in chosen)

    def rounds(start, step, end):
        nonlocal left, tier_left
        n_sub = sum(ex.call(start, left, tier_left))
        for _ in range(_FIX_ROUNDS if n_sub else 0):
            props = ex.call(step, left, tier_left)
            if all(p is None for p in props):
                break
            taken, spent, tier_spent = _merge(props, names, left, tier_left, len(tiers.ids) if tiers else 0)
            ex.each("apply", [(t,) for t in taken])
            if spent is not None:
                left = left - spent
            if tier_spent is not None:
                tier_left = tier_left - tier_spent
        ex.call(end)

    rounds("fix_start", "fix_round", "fix_end")
    rounds("fill_start", "fill_round", "fill_end")


def dual_bound(ex, th_dual, names, descs, sellers, budget) -> float:
    """The Lagrangian dual value, the lower of its two ends (``dual.dual_bound``) from per-shard sums."""
    seller_pos = names.index("seller") if "seller" in names else None

    def value(end):
        ts = th_dual.hi if end == "hi" else th_dual.lo
        mu = th_dual.mu_hi if end == "hi" else th_dual.mu_lo
        tier_t = ts[names.index("tier")] if "tier" in names else None
        per = [None if seller_pos is None else ts[seller_pos]]
        parts = ex.each("dual_part", [(tier_t, mu, _local(per[0], d, sellers)) for d in descs])
        val = total_float(parts)
        mu_, lams = th_dual.multipliers(end)
        if budget is not None:
            val += mu_ * budget
        for layer, lam in zip(th_dual.layers, lams):
            val += float(lam @ layer.budgets)
        return val

    return min(value("hi"), value("lo"))


def _local(seller_t, desc, sellers):
    """The slice of a per-seller vector that a shard's sellers own (in its local seller order)."""
    if seller_t is None or sellers is None:
        return None
    return seller_t[np.searchsorted(sellers.ids, desc["sellers"])]


def total_float(parts) -> float:
    """The parts added one by one in shard order (so a run's totals do not depend on how a sum is vectorised)."""
    out = 0.0
    for p in parts:
        out = out + p
    return float(out)


def _merge(props, names, left, tier_left, n_tiers):
    """The tier and total stages of ``fixup._take`` over every shard's proposals, in the single-process order.

    Returns (per shard: positions taken in what it sent, in merge order, or None for a shard that took its own),
    the total cost taken (None if nothing is merged) and the cost taken per tier (None without tier budgets).
    """
    taken = [None if (p is not None and isinstance(p, tuple)) else np.zeros(0, dtype=np.intp) for p in props]
    dicts = [(i, p) for i, p in enumerate(props) if isinstance(p, dict) and len(p["key"])]
    if not dicts:
        return taken, None, None
    key = np.concatenate([p["key"] for _, p in dicts])
    cost = np.concatenate([p["cost"] for _, p in dicts])
    tier = np.concatenate([p["tier"] for _, p in dicts])
    seller = np.concatenate([p["seller"] for _, p in dicts])
    pos = np.concatenate([p["pos"] for _, p in dicts])
    shard = np.concatenate([np.full(len(p["key"]), i) for i, p in dicts])
    local = np.concatenate([np.arange(len(p["key"])) for _, p in dicts])
    idx = np.arange(len(key))
    if "tier" in names:
        o = np.lexsort((pos, seller, -key, tier))
        gs, co = tier[o], cost[o]
        cs = np.cumsum(co)
        start = np.maximum.accumulate(np.where(np.r_[True, gs[1:] != gs[:-1]], np.arange(len(o)), 0))
        idx = o[cs - cs[start] + co[start] <= tier_left[gs]]
        idx = idx[np.lexsort((pos[idx], seller[idx], tier[idx], -key[idx]))]
    else:
        idx = idx[np.lexsort((pos, seller, -key))]
    take = idx[np.cumsum(cost[idx]) <= left]
    for i, _ in dicts:
        taken[i] = local[take[shard[take] == i]]
    spent = cost[take].sum()
    tier_spent = np.bincount(tier[take], cost[take], minlength=n_tiers) if "tier" in names else None
    return taken, spent, tier_spent


def lp_thresholds(ex, th, names, sellers, tiers, budget, tol, max_iter) -> Thresholds:
    """``dual.lp_thresholds`` over the shards: the outer layers' LP multipliers with the driver's inner ones."""
    from dataclasses import replace

    layers = th.layers
    if not layers or (len(layers) == 1 and budget is None):
        return replace(th, cheapest=True)
    inner = layers[0]
    t_in = th.hi[0]
    lo_all, hi_all, it = [th.lo[0]], [t_in], th.n_iter
    ex.call("lp_floor", t_in if inner.name == "tier" else None)
    b_in = inner.budgets
    outer = layers[1] if len(layers) == 2 else None
    if outer is not None:

        def repl_tier(lam):
            return np.bincount(inner.parent, b_in * (t_in > lam[inner.parent]), minlength=len(outer.ids))

        ex.call("band_new", "tier", True)
        lo, hi, k = bisect_lp_multipliers(
            lambda m, *a: ex.call("band_call", m, *a), outer.budgets, repl_tier, tol, max_iter
        )
        lo_all.append(lo)
        hi_all.append(hi)
        it += k
        ex.call("raise_floor", hi, "tier")
    mu_lo = mu_hi = 0.0
    if budget is not None:
        tau = hi_all[1] if outer is not None else None

        def repl_total(lam):
            mu = lam[0]
            if tau is None:
                return np.array([b_in[t_in > mu].sum()])
            up = tau > mu
            return np.array([outer.budgets[up].sum() + b_in[(t_in > mu) & ~up[inner.parent]].sum()])

        ex.call("band_new", None, True)
        lo, hi, k = bisect_lp_multipliers(
            lambda m, *a: ex.call("band_call", m, *a), np.array([budget]), repl_total, tol, max_iter
        )
        mu_lo, mu_hi = float(lo[0]), float(hi[0])
        it += k
    return Thresholds(layers, lo_all, hi_all, mu_lo, mu_hi, it, budget, cheapest=True)
