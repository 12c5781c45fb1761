"""The Lagrangian allocation with the customers split into shards (whole sellers per shard): the same answer as
:func:`~sellerlift.allocate.allocate_lagrangian` on all of them, with only small vectors crossing between holders.

Each shard (:class:`~sellerlift.allocate.shard.AllocShard`) holds its customers' objective and concave hulls and
never sends them anywhere. A driver (:func:`solve_sharded`) runs the solver of ``lagrangian._solve`` step by step
(``sharded_rounds``): the sellers' bisection in each shard (a seller's customers all live in one shard), the tiers'
and the total's on the driver, the greedy fix-up and fill rounds (each shard proposes only as many moves as could
fit in what is left, plus one that would not, so the driver sees where a shard's prefix ends; the driver merges
them in the single-process order), then the dual bound by the same round protocol.

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
from sellerlift.allocate.problem import Allocation, _check_budget
from sellerlift.allocate.sharded_rounds import bisect_thresholds, dual_bound, fix_and_fill, lp_thresholds, total_float


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
    layers = [g for g in (sellers, tiers) if g is not None and g.budgets is not None]
    names = [g.name for g in layers]
    if tiers is not None:  # which tiers have customers (the dual's split needs it)
        counts = sum(s["tier_counts"] for s in setup)
        tiers.idx = np.flatnonzero(counts > 0)
    top = max((s["top"] for s in setup), default=0.0)
    th = bisect_thresholds(ex, layers, top, budget, tol, max_iter)
    fix_and_fill(ex, th, names, tiers, budget)
    # the dual bound (dual.lp_thresholds, dual.dual_bound)
    legacy = all(s["plain"] and not s["capped"] for s in setup) and "tier" not in names
    th_dual = th if legacy else lp_thresholds(ex, th, names, sellers, tiers, budget, tol, max_iter)
    bound = dual_bound(ex, th_dual, names, descs, sellers, budget)
    res = ex.call("result")
    profit = total_float([r["profit"] for r in res])
    spend = total_float([r["spend"] for r in res])
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
        mean = total_float([r["offered_sum"] for r in res]) / n_off
        spread = float(np.sqrt(total_float(ex.call("spread_part", mean)) / n_off))
    # the parts are reported when the objective is not the direct profit alone (``lagrangian._solve``)
    parts = not all(s["plain"] for s in setup) or any(r["has_enduring"] for r in res)
    direct = total_float([r["direct"] for r in res])
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
        enduring=total_float([r["enduring"] for r in res]),
        penalty=total_float([r["penalty"] for r in res]),
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


__all__ = ["ShardedAllocation", "local_shards", "solve_sharded", "split_by_seller"]
