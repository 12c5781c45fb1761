"""The Lagrangian allocation with the customers split into shards (whole sellers per shard): the same answer as
:func:`~sellerlift.allocate.allocate_lagrangian` on all of them, with only small vectors crossing between holders.

Each shard (:class:`AllocShard`) holds its customers' objective and concave hulls (``hull.Hull``) and never sends
them anywhere. A driver (:func:`solve_sharded`) runs the solver of ``lagrangian._solve`` step by step:

1. per-seller budgets are bisected inside each shard (a seller's customers all live in one shard), with the global
   starting bracket, so each seller's multiplier follows the single-process bisection;
2. tier budgets and the total budget are bisected on the driver (``thresholds.bisect_multipliers``), each round
   sending the multiplier(s) out and getting one spend per tier (or one number) back per shard;
3. the greedy fix-up and fill rounds (``fixup``): each shard applies its sellers' budgets locally and proposes
   its best next moves per tier, only as many as could fit in what is left (plus one that would not, so the
   driver sees where a shard's prefix ends); the driver merges them in the single-process order (key, then
   tier, seller, customer index for exact ties) and sends back which were taken;
4. the dual bound (``dual``): the LP's outer multipliers by the same round protocol, then per-shard sums.

``call(method, *args)`` runs a shard method on every shard and returns the answers in shard order;
``call_each(method, per_shard_args)`` gives each shard its own arguments. :func:`local_shards` makes both for shards
in this process; :mod:`sellerlift.engine` makes them for Ray actors. Rounding: sums over shards are added in shard
order, so totals can differ from the single-process ones in the last bits; levels are the same unless a budget test
falls within that rounding (an exact tie), and the profit agrees to ~1e-12 relative.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from sellerlift.allocate.constraints import Layer, _budgets, _check_tiers
from sellerlift.allocate.dual import LPBand, bisect_lp_multipliers
from sellerlift.allocate.fixup import _CHUNK, _FIX_ROUNDS, _lim
from sellerlift.allocate.hull import Hull
from sellerlift.allocate.lagrangian import build
from sellerlift.allocate.objective import CurveValues, MatrixValues
from sellerlift.allocate.problem import Allocation, _check_budget, _check_inputs, _check_values
from sellerlift.allocate.thresholds import _SAFETY, SegmentBand, Thresholds, bisect_multipliers, local_call

# --------------------------------------------------------------------------- the shard side


class AllocShard:
    """One shard's customers: inputs, objective, hull, and its side of every round of :func:`solve_sharded`.

    ``source``: a dict of arrays, or a zero-argument callable returning one (a loader, so a restarted worker
    can rebuild its shard from storage). Keys: ``index`` [m] int64 (the customers' rows in the whole problem;
    ascending), and either ``p`` [m, K] + ``value`` [m] + ``margin`` (scalar or [m]) or ``profit`` + ``spend``
    [m, K]; optional ``seller`` [m], ``enduring`` [m, K], ``segment`` [m], ``max_discount``, ``max_incentive``.
    """

    def __init__(self, source):
        data = source() if callable(source) else source
        self.data = dict(data)
        self.index = np.asarray(self.data["index"], dtype=np.int64)
        if len(self.index) > 1 and not (np.diff(self.index) > 0).all():
            raise ValueError("index: a shard's customer rows must be strictly increasing")
        self.n = len(self.index)

    # ---- set-up
    def describe(self) -> dict:
        seller = self.data.get("seller")
        seg = self.data.get("segment")
        self._sellers = None if seller is None else np.unique(np.asarray(seller))
        return {"n": self.n, "sellers": self._sellers, "segments": None if seg is None else np.unique(np.asarray(seg))}

    def setup(
        self,
        levels,
        budget,
        seller_ids,
        seller_budgets,
        seller_tier,
        tier_budgets,
        weight,
        spread_penalty,
        max_discount,
        segment_max_discount,
        max_incentive,
    ) -> dict:
        d = self.data
        if "p" in d:
            p, value, margin, dd = _check_inputs(d["p"], d["value"], d["margin"], levels)
            base = CurveValues(p, value, margin, dd)
        else:
            profit, spend, dd = _check_values(d["profit"], d["spend"], levels)
            base = MatrixValues(profit, spend, dd)
        seller = d.get("seller")
        mine = None
        if seller is not None:
            mine = self._sellers if getattr(self, "_sellers", None) is not None else np.unique(np.asarray(seller))
            if seller_budgets is not None:
                seller_budgets = {s: seller_budgets[s] for s in mine.tolist()}
        if segment_max_discount is not None and d.get("segment") is not None:
            have = set(np.unique(np.asarray(d["segment"])).tolist())
            segment_max_discount = {g: v for g, v in segment_max_discount.items() if g in have}
        self.obj, self.cons = build(
            base,
            levels,
            budget,
            seller,
            seller_budgets,
            d.get("enduring"),
            weight,
            seller_tier,
            tier_budgets,
            d.get("max_discount", max_discount),
            d.get("segment"),
            segment_max_discount,
            spread_penalty,
            d.get("max_incentive", max_incentive),
        )
        self.h = Hull(self.obj)
        self.layers = self.cons.layers
        self.names = [g.name for g in self.layers]
        self.seller_gidx = None if mine is None else np.searchsorted(np.asarray(seller_ids), mine)
        self.floor = None
        self.band = None
        tier = self.cons.tier
        return {
            "segments": len(self.h.slope),
            "top": float(self.h.slope.max(initial=0.0)),
            "plain": bool(self.obj.plain),
            "capped": bool(self.obj.capped),
            "tier_counts": None if tier is None else np.bincount(tier.idx, minlength=len(tier.ids)),
        }

    # ---- thresholds
    def _layer(self, name) -> Layer:
        return next(g for g in self.layers if g.name == name)

    def solve_sellers(self, top, tol, max_iter):
        """The seller layer's bisection over this shard's sellers (starting from the global ``top``)."""
        layer = self._layer("seller")
        seg_group = layer.idx[self.h.cust]
        band = SegmentBand(self.h.slope, self.h.cost, seg_group, None, len(layer.ids))
        band.top = lambda: top  # every seller starts from the bracket of the single-process solver (all segments)
        lo, hi, it = bisect_multipliers(local_call(band), layer.budgets * (1 - _SAFETY), tol, max_iter)
        self.seller_lo, self.seller_hi = lo, hi
        self.floor = hi[seg_group]
        return self.seller_gidx, lo, hi, it

    def band_new(self, layer_name, lp=False):
        """Start this shard's share of a bisection: ``layer_name`` "tier" or None (the total); ``lp``: the dual's."""
        h = self.h
        if layer_name is None:
            group, g_n = None, 1
        else:
            layer = self._layer(layer_name)
            group, g_n = layer.idx[h.cust], len(layer.ids)
        self.band = (LPBand if lp else SegmentBand)(h.slope, h.cost, group, self.floor, g_n)

    def band_call(self, method, *args):
        return getattr(self.band, method)(*args)

    def raise_floor(self, hi, layer_name):
        """After a layer's bisection: floor = max(floor, hi of each segment's group)."""
        g = self._layer(layer_name).idx[self.h.cust]
        self.floor = hi[g] if self.floor is None else np.maximum(self.floor, hi[g])

    def lp_floor(self, inner_hi):
        """The LP bisection's floor: each segment's inner-layer threshold (``inner_hi``: the tiers', if inner)."""
        inner = self.layers[0]
        t = self.seller_hi if inner.name == "seller" else inner_hi
        self.floor = t[inner.idx[self.h.cust]]

    def _thr(self, tier_t, mu, seller_t):
        """Each customer's threshold max(mu, tau_T, t_s) (``Thresholds.customer``)."""
        thr = np.float64(mu)
        for layer in self.layers:
            t = seller_t if layer.name == "seller" else tier_t
            thr = np.maximum(thr, t[layer.idx])
        return thr

    def _evaluate(self, thr):
        h = self.h
        cnt = h.count(thr if np.ndim(thr) == 0 else thr[h.cust])
        return cnt, h.evaluate(h.level(cnt))

    def choose(self, tier_hi, mu_hi):
        """The Lagrangian choice at the feasible ends; returns this shard's spend (total, per tier)."""
        self.cnt, (pr, sp) = self._evaluate(self._thr(tier_hi, mu_hi, getattr(self, "seller_hi", None)))
        out = {"spend": float(sp.sum())}
        shrink = 1 - _SAFETY
        self.seller_left = None
        for g in self.layers:
            per = np.bincount(g.idx, sp, minlength=len(g.ids))
            if g.name == "seller":
                self.seller_left = g.budgets * shrink - per
            else:
                out["tier_spend"] = per
        return out

    # ---- the greedy rounds: propose, the driver merges, apply
    def _groups(self, tier_left):
        return [(g.idx, self.seller_left if g.name == "seller" else tier_left) for g in self.layers]

    def fix_start(self, left, tier_left) -> int:
        h, cnt = self.h, self.cnt
        groups = self._groups(tier_left)
        nxt = h.start[:-1] + cnt
        ok = cnt < h.nseg
        lim = _lim(left, groups)
        ok[ok] &= h.cost[nxt[ok]] <= (lim if np.ndim(lim) == 0 else lim[ok])
        sub = np.flatnonzero(ok)
        self.fx = {
            "sub": sub,
            "first": h.start[sub],
            "nseg": h.nseg[sub],
            "n_sub": cnt[sub].copy(),
            "g_sub": [idx[sub] for idx, _ in groups],
        }
        return len(sub)

    def fix_round(self, left, tier_left):
        fx, h = self.fx, self.h
        n_sub, nseg = fx["n_sub"], fx["nseg"]
        live = np.flatnonzero(n_sub < nseg)
        pos = fx["first"][live] + n_sub[live]
        sl, co = h.slope[pos], h.cost[pos]
        g = [x[live] for x in fx["g_sub"]]
        lefts = [gl for _, gl in self._groups(tier_left)]
        fit = co <= _lim(left, list(zip(g, lefts)))
        live, sl, co, g = live[fit], sl[fit], co[fit], [x[fit] for x in g]
        self.pending = {"rows": fx["sub"][live], "apply": ("fix", live), "cost": co, "g": g}
        return self._propose(sl, co, g, left, tier_left)

    def fill_start(self, left, tier_left) -> int:
        h = self.h
        level = h.level(self.cnt)
        self.level = level
        n = len(level)
        rows = np.arange(n)
        groups = self._groups(tier_left)
        lim = _lim(np.full(n, left), groups)
        pr0, sp0 = h.evaluate(level)
        sub = []
        for a in range(0, n, _CHUNK):
            sl = slice(a, min(a + _CHUNK, n))
            pr, sp = h.values.rows(sl)
            ok = (pr > pr0[sl, None]) & (sp - sp0[sl, None] <= lim[sl, None])
            sub.append(rows[sl][ok.any(axis=1)])
        sub = np.concatenate(sub) if sub else np.zeros(0, dtype=np.intp)
        pr, sp = h.values.rows(sub) if len(sub) else (np.zeros((0, 1)), np.zeros((0, 1)))
        self.fl = {"sub": sub, "pr": pr, "sp": sp, "lv": level[sub].copy(), "g": [idx[sub] for idx, _ in groups]}
        return len(sub)

    def fill_round(self, left, tier_left):
        fl = self.fl
        pr, sp, lv, g = fl["pr"], fl["sp"], fl["lv"], fl["g"]
        if not len(lv):
            self.pending = None
            return None
        r = np.arange(len(lv))
        lefts = [gl for _, gl in self._groups(tier_left)]
        extra = sp - sp[r, lv][:, None]
        fit = extra <= np.asarray(_lim(np.float64(left), list(zip(g, lefts))))[..., None]
        gain = np.where(fit, pr - pr[r, lv][:, None], 0.0)
        k = gain.argmax(axis=1)
        cand = np.flatnonzero(gain[r, k] > 0)
        co = extra[cand, k[cand]]
        gc = [x[cand] for x in g]
        self.pending = {"rows": fl["sub"][cand], "apply": ("fill", cand, k[cand]), "cost": co, "g": gc}
        return self._propose(gain[cand, k[cand]], co, gc, left, tier_left)

    def _propose(self, key, cost, g, left, tier_left):
        """This shard's part of ``fixup._take``: the sellers' budgets here; for the tier and total budgets, the
        candidates in merge order, per tier only the prefix that could fit (through the first that cannot).

        Returns None (no candidate), ``("local", n)`` (every survivor taken: nothing to merge) or a dict of
        arrays for the driver. The candidates' order is kept in ``self.pending``.
        """
        if not len(key):
            self.pending = None
            return None
        idx = np.arange(len(key))
        names = self.names
        seller_g = np.zeros(len(key), dtype=np.int64)
        if names and names[0] == "seller":
            gs_all, gl = g[0], self.seller_left
            gi = gs_all[idx]
            o = np.lexsort((-key[idx], gi))
            gs, co = gi[o], cost[idx][o]
            cs = np.cumsum(co)
            start = np.maximum.accumulate(np.where(np.r_[True, gs[1:] != gs[:-1]], np.arange(len(o)), 0))
            idx = idx[o][cs - cs[start] + co[start] <= gl[gs]]
            seller_g = self.seller_gidx[gs_all]
        has_tier = "tier" in names
        tier = g[names.index("tier")] if has_tier else np.zeros(len(key), dtype=np.int64)
        pos = self.index[self.pending["rows"]]
        if not has_tier and not np.isfinite(left):  # no budget above the sellers': every survivor is taken
            idx = idx[np.argsort(-key[idx], kind="stable")]
            self.pending["take_local"] = idx
            return ("local", len(idx))
        o = np.lexsort((pos[idx], seller_g[idx], -key[idx], tier[idx]))
        idx = idx[o]
        t, c = tier[idx], cost[idx]
        bound = np.minimum(tier_left[t], left) if has_tier else np.full(len(idx), left)
        cs = np.cumsum(c)
        new = np.r_[True, t[1:] != t[:-1]]
        start = np.maximum.accumulate(np.where(new, np.arange(len(idx)), 0))
        before = cs - cs[start] + c[start] - c  # this tier's cost ahead of each candidate, in this shard
        keep = before <= bound * (1 + 1e-12)
        idx = idx[keep]
        self.pending["sent"] = idx
        return {"key": key[idx], "cost": cost[idx], "tier": tier[idx], "seller": seller_g[idx], "pos": pos[idx]}

    def apply(self, taken):
        """Take the driver's picks (positions in what this shard sent, in merge order); update the leftovers."""
        p = self.pending
        if p is None:
            return
        take = p["take_local"] if taken is None else p["sent"][np.asarray(taken, dtype=np.intp)]
        if not len(take):
            return
        kind = p["apply"]
        if kind[0] == "fix":
            self.fx["n_sub"][kind[1][take]] += 1
        else:
            self.fl["lv"][kind[1][take]] = kind[2][take]
        if self.seller_left is not None and self.names and self.names[0] == "seller":
            g = p["g"][0]
            self.seller_left = self.seller_left - np.bincount(g[take], p["cost"][take], minlength=len(self.seller_left))

    def fix_end(self):
        fx = self.fx
        cnt = self.cnt.copy()
        cnt[fx["sub"]] = fx["n_sub"]
        self.cnt = cnt

    def fill_end(self):
        level = self.level.copy()
        level[self.fl["sub"]] = self.fl["lv"]
        self.level = level

    # ---- the dual bound and the result
    def dual_part(self, tier_t, mu, seller_t):
        thr = self._thr(tier_t, mu, seller_t)
        _, (pr, sp) = self._evaluate(thr)
        return float(np.sum(pr - thr * sp))

    def result(self):
        pr, sp, direct, enduring, penalty = self.obj.parts(self.level)
        level = self.level
        offered = sp[level > 0]
        out = {
            "profit": float(pr.sum()),
            "spend": float(sp.sum()),
            "direct": float(direct.sum()),
            "enduring": 0.0 if enduring is None else float(enduring.sum()),
            "penalty": 0.0 if penalty is None else float(penalty.sum()),
            "offered": len(offered),
            "offered_sum": float(offered.sum()),
            "treated": int((level > 0).sum()),
            "has_enduring": enduring is not None,
        }
        for g in (self.cons.seller, self.cons.tier):
            if g is not None:
                out[f"{g.name}_spend"] = (g.ids, np.bincount(g.idx, sp, minlength=len(g.ids)))
        cons = self.cons
        if cons.max_level is not None and (level > cons.max_level).any():
            raise RuntimeError("infeasible allocation: a customer above its max_discount")
        if cons.max_incentive is not None and (sp > cons.max_incentive).any():
            raise RuntimeError("infeasible allocation: a customer above its max_incentive")
        self._sp = sp
        return out

    def spread_part(self, mean):
        x = self._sp[self.level > 0]
        return float(np.sum(np.abs(x - mean) ** 2))

    def peak_rss_mib(self) -> float:
        """This process's peak resident memory (what a shard costs its worker)."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def levels(self):
        """(index, level index, expected spend, objective) of this shard's customers."""
        pr, sp = self.obj.at(self.level)
        return self.index, self.level.astype(np.int64), sp, pr


# --------------------------------------------------------------------------- the driver side


@dataclass
class ShardedAllocation:
    """The totals of a sharded allocation; the levels stay on the shards (:meth:`gather` brings them here)."""

    spend: float
    profit: float
    roi: float
    multiplier: float | dict
    seller_spend: dict | None
    tier_spend: dict | None
    status: str
    bound: float
    n_iter: int
    direct: float
    enduring: float
    penalty: float
    spread: float
    n: int
    treated: int
    levels_pct: tuple
    rounds: int = 0  # driver <-> shards exchanges
    sent_floats: int = 0  # floats the shards sent the driver (all rounds)
    info: dict = field(default_factory=dict)
    _call: object = field(default=None, repr=False)

    @property
    def gap_to_bound(self) -> float:
        if not np.isfinite(self.bound) or self.bound <= 0:
            return 0.0
        return max(0.0, (self.bound - self.profit) / self.bound)

    def gather(self) -> Allocation:
        """Every customer's level, in the order of ``index`` (for tests and small problems)."""
        parts = self._call("levels")
        n = sum(len(p[0]) for p in parts)
        level = np.zeros(n, dtype=np.intp)
        idx = np.concatenate([p[0] for p in parts])
        order = np.argsort(idx)
        level[:] = np.concatenate([p[1] for p in parts])[order]
        d = np.asarray(self.levels_pct, dtype=np.float64)
        return Allocation(
            level_index=level,
            level_pct=d[level],
            spend=self.spend,
            profit=self.profit,
            roi=self.roi,
            multiplier=self.multiplier,
            seller_spend=self.seller_spend,
            status=self.status,
            bound=self.bound,
            n_iter=self.n_iter,
            tier_spend=self.tier_spend,
            direct=self.direct,
            enduring=self.enduring,
            penalty=self.penalty,
            spread=self.spread,
            info=dict(self.info, rounds=self.rounds),
        )


class _Counter:
    """Wraps ``call``/``call_each``: counts exchanges and the floats that come back."""

    def __init__(self, call, call_each):
        self._call, self._each = call, call_each
        self.rounds = 0
        self.floats = 0

    def _count(self, out):
        self.rounds += 1
        for o in out:
            self.floats += _size(o)
        return out

    def call(self, method, *args):
        return self._count(self._call(method, *args))

    def each(self, method, per_shard):
        return self._count(self._each(method, per_shard))


def _size(o) -> int:
    if o is None or isinstance(o, str):
        return 0
    if isinstance(o, np.ndarray):
        return int(o.size)
    if isinstance(o, dict):
        return sum(_size(v) for v in o.values())
    if isinstance(o, list | tuple):
        return sum(_size(v) for v in o)
    return 1


def local_shards(shards):
    """(call, call_each) over :class:`AllocShard` objects in this process."""

    def call(method, *args):
        return [getattr(s, method)(*args) for s in shards]

    def call_each(method, per_shard):
        return [getattr(s, method)(*a) for s, a in zip(shards, per_shard)]

    return call, call_each


def _global_layers(descs, seller_budgets, seller_tier, tier_budgets):
    """The sellers (each in one shard) and tiers of the whole problem, checked like the single-process solver."""
    have = [d["sellers"] for d in descs]
    if all(h is None for h in have):
        if seller_budgets is not None:
            raise ValueError("seller: required when seller_budgets is given")
        if seller_tier is not None:
            raise ValueError("seller: required when seller_tier is given (each customer's seller)")
        return None, None
    if any(h is None for h in have):
        raise ValueError("seller: give every shard its customers' sellers, or none")
    allv = np.sort(np.concatenate(have))
    ids = np.unique(allv)
    if len(ids) != len(allv):
        dup = np.unique(allv[1:][allv[1:] == allv[:-1]])
        raise ValueError(
            f"shards: seller(s) {dup[:5].tolist()} have customers in more than one shard "
            "(shard by seller: a seller's budget is solved where its customers are)"
        )
    b = None if seller_budgets is None else _budgets(ids, seller_budgets, "seller_budgets", "seller")
    sellers = Layer("seller", ids, np.arange(len(ids)), b)
    tiers = _check_tiers(sellers, seller_tier, tier_budgets)
    return sellers, tiers


def solve_sharded(
    call,
    call_each,
    levels,
    budget=None,
    seller_budgets=None,
    tol=1e-6,
    max_iter=100,
    *,
    weight=0.0,
    seller_tier=None,
    tier_budgets=None,
    max_discount=None,
    segment_max_discount=None,
    spread_penalty=0.0,
    max_incentive=None,
) -> ShardedAllocation:
    """:func:`~sellerlift.allocate.allocate_lagrangian` over shards (see the module doc).

    The per-customer inputs (curves or matrices, sellers, enduring value, segments, per-customer caps) are in the
    shards; the budgets, the seller -> tier map, the segment caps and the scalars are given here.
    """
    t0 = time.perf_counter()
    ex = _Counter(call, call_each)
    budget = _check_budget(budget)
    descs = ex.call("describe")
    sellers, tiers = _global_layers(descs, seller_budgets, seller_tier, tier_budgets)
    if segment_max_discount is not None:
        segs = [d["segments"] for d in descs if d["segments"] is not None]
        if not segs:
            raise ValueError("segment: required when segment_max_discount is given (each customer's segment)")
        known = set(np.unique(np.concatenate(segs)).tolist())
        for g in segment_max_discount:
            if g not in known:
                raise ValueError(f"segment_max_discount: unknown segment {g!r}: not in `segment`")
    seller_ids = None if sellers is None else sellers.ids
    setup = ex.call(
        "setup",
        list(levels),
        budget,
        seller_ids,
        seller_budgets,
        seller_tier,
        tier_budgets,
        weight,
        spread_penalty,
        max_discount,
        segment_max_discount,
        max_incentive,
    )
    t_setup = time.perf_counter() - t0
    rounds_before = ex.rounds
    shrink = 1 - _SAFETY
    layers = [g for g in (sellers, tiers) if g is not None and g.budgets is not None]
    names = [g.name for g in layers]
    if tiers is not None:  # which tiers have customers (the dual's split needs it)
        counts = sum(s["tier_counts"] for s in setup)
        tiers.idx = np.flatnonzero(counts > 0)
    top = max((s["top"] for s in setup), default=0.0)

    def bands():
        return lambda method, *args: ex.call("band_call", method, *args)

    # ---- thresholds (thresholds.solve_thresholds)
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
    th = Thresholds(layers, lo_all, hi_all, mu_lo, mu_hi, it, budget)
    tier_hi = hi_all[names.index("tier")] if "tier" in names else None

    # ---- the Lagrangian choice, the greedy fix-up and fill (fixup.fixup / fixup.fill)
    chosen = ex.call("choose", tier_hi, mu_hi)
    left = np.inf if budget is None else budget * shrink - _total_float([c["spend"] for c in chosen])
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

    # ---- the dual bound (dual.lp_thresholds, dual.dual_bound)
    legacy = all(s["plain"] and not s["capped"] for s in setup) and "tier" not in names
    th_dual = th if legacy else _lp_thresholds(ex, th, names, sellers, tiers, budget, tol, max_iter)
    seller_pos = names.index("seller") if "seller" in names else None

    def value(end):
        ts = th_dual.hi if end == "hi" else th_dual.lo
        mu = th_dual.mu_hi if end == "hi" else th_dual.mu_lo
        tier_t = ts[names.index("tier")] if "tier" in names else None
        per = [None if seller_pos is None else ts[seller_pos]]
        parts = ex.each("dual_part", [(tier_t, mu, _local(per[0], d, sellers)) for d in descs])
        val = _total_float(parts)
        mu_, lams = th_dual.multipliers(end)
        if budget is not None:
            val += mu_ * budget
        for layer, lam in zip(th_dual.layers, lams):
            val += float(lam @ layer.budgets)
        return val

    bound = min(value("hi"), value("lo"))
    res = ex.call("result")
    profit = _total_float([r["profit"] for r in res])
    spend = _total_float([r["spend"] for r in res])
    status = "optimal" if bound - profit <= 1e-9 * max(1.0, abs(bound)) else "ok"
    mu, lams = th_dual.multipliers("hi")
    if not layers:
        mult: float | dict = mu
    else:
        mult = {"total": mu} | {g.name: dict(zip(g.ids.tolist(), lam.tolist())) for g, lam in zip(layers, lams)}
    seller_spend = tier_spend = None
    if sellers is not None:
        seller_spend = {}
        for r in res:
            ids, per = r["seller_spend"]
            seller_spend.update(zip(ids.tolist(), per.tolist()))
        seller_spend = {k: seller_spend[k] for k in sellers.ids.tolist()}
    if tiers is not None:
        tier_spend = dict(zip(tiers.ids.tolist(), sum(r["tier_spend"][1] for r in res).tolist()))
    n_off = sum(r["offered"] for r in res)
    spread = 0.0
    if n_off:
        mean = _total_float([r["offered_sum"] for r in res]) / n_off
        spread = float(np.sqrt(_total_float(ex.call("spread_part", mean)) / n_off))
    # the parts are reported when the objective is not the direct profit alone (``lagrangian._solve``)
    parts = not all(s["plain"] for s in setup) or any(r["has_enduring"] for r in res)
    direct = _total_float([r["direct"] for r in res])
    out = ShardedAllocation(
        spend=spend,
        profit=profit,
        roi=profit / spend if spend > 0 else 0.0,
        multiplier=mult,
        seller_spend=seller_spend,
        tier_spend=tier_spend,
        status=status,
        bound=max(bound, profit),
        n_iter=th_dual.n_iter,
        direct=direct if parts else profit,
        enduring=_total_float([r["enduring"] for r in res]),
        penalty=_total_float([r["penalty"] for r in res]),
        spread=spread,
        n=sum(d["n"] for d in descs),
        treated=sum(r["treated"] for r in res),
        levels_pct=tuple(float(x) for x in levels),
        info={
            "weight": weight,
            "shards": len(descs),
            "setup_s": t_setup,
            "rounds_s": time.perf_counter() - t0 - t_setup,
            "solve_rounds": ex.rounds - rounds_before,
        },
    )
    _check_totals(out, budget, sellers, tiers)
    out.rounds, out.sent_floats = ex.rounds, ex.floats
    out._call = call
    return out


def _local(seller_t, desc, sellers):
    """The slice of a per-seller vector that a shard's sellers own (in its local seller order)."""
    if seller_t is None or sellers is None:
        return None
    return seller_t[np.searchsorted(sellers.ids, desc["sellers"])]


def _total_float(parts) -> float:
    out = 0.0
    for p in parts:
        out = out + p
    return float(out)


def _check_totals(a: ShardedAllocation, budget, sellers, tiers):
    def over(spend, cap):
        return spend > cap * (1 + 1e-12) + 1e-12

    if budget is not None and over(a.spend, budget):
        raise RuntimeError(f"infeasible allocation: spend {a.spend} > budget {budget}")
    for layer, spent in ((sellers, a.seller_spend), (tiers, a.tier_spend)):
        if layer is None or layer.budgets is None:
            continue
        per = np.array([spent[k] for k in layer.ids.tolist()])
        bad = np.flatnonzero(over(per, layer.budgets))
        if len(bad):
            raise RuntimeError(f"infeasible allocation: {layer.name} {layer.ids[bad[0]]!r} over budget")


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


def _lp_thresholds(ex, th, names, sellers, tiers, budget, tol, max_iter) -> Thresholds:
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


def split_by_seller(inst: dict, n_shards: int, seller_key: str = "seller") -> list[dict]:
    """Split a problem's per-customer arrays into ``n_shards`` shards of whole sellers (balanced by customers),
    each with its rows' ``index``; arrays of length n are split, everything else is copied (for tests/benchmarks)."""
    seller = np.asarray(inst[seller_key])
    n = len(seller)
    ids, inv, counts = np.unique(seller, return_inverse=True, return_counts=True)
    load = np.zeros(n_shards)
    owner = np.zeros(len(ids), dtype=np.int64)
    for g in np.argsort(-counts, kind="stable"):  # biggest sellers first, each to the lightest shard
        s = int(np.argmin(load))
        owner[g] = s
        load[s] += counts[g]
    of = owner[inv]
    out = []
    for s in range(n_shards):
        rows = np.flatnonzero(of == s)
        shard = {"index": rows}
        for k, v in inst.items():
            a = np.asarray(v) if isinstance(v, np.ndarray) else v
            shard[k] = a[rows] if isinstance(a, np.ndarray) and a.ndim >= 1 and len(a) == n else v
        out.append(shard)
    return out


__all__ = ["AllocShard", "ShardedAllocation", "local_shards", "solve_sharded", "split_by_seller"]
