"""One shard of the sharded allocation (:class:`AllocShard`): its customers' objective and concave hulls
(``hull.Hull``), which never leave it, and its side of every round of
:func:`~sellerlift.allocate.sharded.solve_sharded`: its sellers' bisection, its share of the driver's bisections,
its greedy proposals and the picks it applies, and its parts of the dual bound and the result.
"""

from __future__ import annotations

import numpy as np

from sellerlift.allocate.constraints import Layer
from sellerlift.allocate.dual import LPBand
from sellerlift.allocate.fixup import _CHUNK, _lim
from sellerlift.allocate.hull import Hull
from sellerlift.allocate.lagrangian import build
from sellerlift.allocate.objective import CurveValues, MatrixValues
from sellerlift.allocate.problem import _check_inputs, _check_values
from sellerlift.allocate.thresholds import _SAFETY, SegmentBand, bisect_multipliers, local_call


class AllocShard:
    """One shard's customers: inputs, objective, hull, and its side of every round of the driver's solve.

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
