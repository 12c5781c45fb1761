"""Reference allocations: the exact LP / MILP (HiGHS), the sellers' flat-discount rule, synthetic instances."""

from __future__ import annotations

import numpy as np

from sellerlift.allocate.problem import (
    DEFAULT_LEVELS,
    Allocation,
    _at_levels,
    _check_budget,
    _check_inputs,
    _check_sellers,
    _chunk_profit_spend,
    _finish,
)


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
