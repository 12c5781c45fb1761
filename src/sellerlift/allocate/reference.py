"""Reference allocations: the exact LP / MILP (HiGHS), the sellers' flat-discount rule, synthetic instances."""

from __future__ import annotations

import numpy as np

from sellerlift.allocate.lagrangian import build
from sellerlift.allocate.objective import CurveValues
from sellerlift.allocate.problem import (
    DEFAULT_LEVELS,
    Allocation,
    _at_levels,
    _check_budget,
    _check_inputs,
    _finish,
)


# ------------------------------------------------------------- exact (HiGHS)
def allocate_exact_lp(
    p,
    value,
    margin,
    levels,
    budget=None,
    seller=None,
    seller_budgets=None,
    *,
    integer=False,
    time_limit=None,
    **options,
) -> Allocation:
    """Reference solution with HiGHS on the full n*K formulation, with every constraint of
    :func:`allocate_lagrangian` (``options``: enduring, weight, seller_tier, tier_budgets, max_discount,
    segment, segment_max_discount, spread_penalty, max_incentive; checked the same way).

    integer=False: LP relaxation (linprog). profit/spend/bound are the LP's
    (fractional) values; level_index is each customer's largest x (at most one
    customer per budget row is fractional in a basic solution).
    integer=True: exact MILP (milp); meant for small n. ``profit`` is the integer optimum (status
    "optimal") and ``bound`` HiGHS' MIP dual bound; the LP bound is above it by the integrality gap.
    Levels a cap forbids get x = 0.
    """
    from scipy import sparse
    from scipy.optimize import Bounds, LinearConstraint, linprog, milp

    p, value, margin, d = _check_inputs(p, value, margin, levels)
    obj, cons = build(
        CurveValues(p, value, margin, d),
        levels,
        budget,
        seller,
        seller_budgets,
        *(options.pop(k, v) for k, v in _OPTIONS.items()),
    )
    if options:
        raise TypeError(f"allocate_exact_lp: unexpected argument(s) {sorted(options)}")
    pr, sp, direct, enduring = obj.matrices()
    n, k = pr.shape
    allowed = np.isfinite(pr).ravel()
    c = np.where(allowed, pr.ravel(), 0.0)
    one = sparse.csr_array((np.ones(n * k), np.arange(n * k), np.arange(0, n * k + 1, k)), shape=(n, n * k))
    rows, caps = [], []
    if cons.budget is not None:
        rows.append(sparse.csr_array(sp.reshape(1, -1)))
        caps.append([cons.budget])
    for layer in cons.layers:
        r = np.repeat(layer.idx, k)
        rows.append(sparse.csr_array((sp.ravel(), (r, np.arange(n * k))), shape=(len(layer.ids), n * k)))
        caps.append(layer.budgets)
    a_ub = sparse.vstack(rows).tocsr() if rows else None
    b_ub = np.concatenate(caps) if caps else None
    ub = allowed.astype(np.float64)
    opts = {} if time_limit is None else {"time_limit": time_limit}
    if integer:
        lin = [LinearConstraint(one, 1, 1)] + ([LinearConstraint(a_ub, -np.inf, b_ub)] if rows else [])
        res = milp(-c, constraints=lin, integrality=np.ones(n * k), bounds=Bounds(0, ub), options=opts)
        status = {0: "optimal", 1: "time_limit"}.get(res.status, f"highs_status_{res.status}")
    else:
        res = linprog(
            -c,
            A_ub=a_ub,
            b_ub=b_ub,
            A_eq=one,
            b_eq=np.ones(n),
            bounds=np.c_[np.zeros(n * k), ub],
            method="highs",
            options=opts,
        )
        status = "lp_relaxation" if res.status == 0 else f"highs_status_{res.status}"
    if res.x is None:
        raise RuntimeError(f"HiGHS returned no solution: {res.message}")
    x = res.x.reshape(n, k)
    level = x.argmax(axis=1)
    if integer:
        lp_pr, lp_sp, dir_i, end_i, pen_i = obj.parts(level)
        bound = -getattr(res, "mip_dual_bound", res.fun)
        parts = (
            float(dir_i.sum()),
            0.0 if end_i is None else float(end_i.sum()),
            0.0 if pen_i is None else float(pen_i.sum()),
        )
    else:  # fractional values, per customer
        c2 = c.reshape(n, k)
        lp_pr, lp_sp = (x * c2).sum(axis=1), (x * sp).sum(axis=1)
        bound = -res.fun
        parts = (float((x * direct).sum()), float((x * enduring).sum()), float((x * (obj.penalty * sp * sp)).sum()))
    if obj.plain and obj.enduring is None:
        parts = None  # the objective is the direct profit
    mult = float("nan")
    if not integer and cons.budget is not None and not cons.layers:
        mult = float(-res.ineqlin.marginals[0])
    return _finish(level, lp_pr, lp_sp, d, cons.seller, cons.tier, parts, multiplier=mult, status=status, bound=bound)


_OPTIONS = {
    "enduring": None,
    "weight": 0.0,
    "seller_tier": None,
    "tier_budgets": None,
    "max_discount": None,
    "segment": None,
    "segment_max_discount": None,
    "spread_penalty": 0.0,
    "max_incentive": None,
}


# ------------------------------------------------------------- baseline
def allocate_rule_based(
    p, value, margin, levels, budget=None, *, rule="top_value", level_pct=10.0, priority=None, seed=0
) -> Allocation:
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
    return _finish(level, pr, sp, d, multiplier=float("nan"), status="rule_based")


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
    return {
        "p": p,
        "value": value,
        "margin": rng.uniform(0.3, 0.5, n),
        "levels": tuple(levels),
        "seller": rng.choice(n_sellers, size=n, p=w / w.sum()),
    }


def random_retention(inst, seed=0) -> dict:
    """Retention-side inputs for a :func:`random_instance`, for tests and benchmarks.

    enduring [n, K] (p's dtype): the 90-day margin beyond the week of each level over no offer; habit
    (lognormal) makes a conversion now bring later ones, and for ~30 % of customers a reference-price
    effect makes a discount cost later full-price purchases, so the value can fall with the level.
    seller_tier {seller: "large" | "mid" | "small"} by seller rank (sizes are heavy-tailed) and
    segment [n]: "buys anyway", "promotion-sensitive", "needs a large incentive" or "other", from the curves.
    """
    p = np.asarray(inst["p"], dtype=np.float64)
    n = len(p)
    rng = np.random.default_rng(seed)
    d = np.asarray(inst["levels"], dtype=np.float64) / 100.0
    habit = 1.5 * rng.lognormal(0.0, 0.5, n)
    refprice = (rng.random(n) < 0.3) * rng.uniform(0.0, 2.0, n)
    vm = inst["value"] * inst["margin"]
    later = 6.5 * p[:, :1]  # full-price purchases expected over the next 13 weeks
    enduring = vm[:, None] * (habit[:, None] * (p - p[:, :1]) - refprice[:, None] * d[None, :] * later)
    lift = p[:, -1] - p[:, 0]
    segment = np.select(
        [p[:, 0] > 0.3, lift > 0.3, lift > 0.1],
        ["buys anyway", "promotion-sensitive", "needs a large incentive"],
        "other",
    )
    sellers = range(int(np.max(inst["seller"], initial=0)) + 1)
    tier = {s: "large" if s < 2 else "mid" if s < 7 else "small" for s in sellers}
    return {"enduring": enduring.astype(inst["p"].dtype), "seller_tier": tier, "segment": segment}
