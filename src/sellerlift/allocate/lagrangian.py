"""The Lagrangian solver: concave hulls, bisection on the multipliers, greedy fix-up (see the package doc)."""

from __future__ import annotations

import numpy as np

from sellerlift.allocate.constraints import Constraints, check_constraints, check_feasible
from sellerlift.allocate.dual import dual_bound, lp_thresholds
from sellerlift.allocate.fixup import fill, fixup
from sellerlift.allocate.hull import Hull
from sellerlift.allocate.objective import CurveValues, MatrixValues, Objective, check_objective
from sellerlift.allocate.problem import Allocation, _check_inputs, _check_values, _finish
from sellerlift.allocate.thresholds import _SAFETY, solve_thresholds


def _solve(obj: Objective, cons: Constraints, tol, max_iter) -> Allocation:
    h = Hull(obj)
    shrink = 1 - _SAFETY
    th = solve_thresholds(h, cons, tol, max_iter)
    thr = th.customer("hi")
    cnt = h.count(thr if np.ndim(thr) == 0 else thr[h.cust])
    pr, sp = h.evaluate(h.level(cnt))
    left = np.inf if cons.budget is None else cons.budget * shrink - sp.sum()
    groups = [(g.idx, g.budgets * shrink - np.bincount(g.idx, sp, minlength=len(g.ids))) for g in cons.layers]
    cnt, left, groups = fixup(h, cnt, left, groups)
    level = fill(h, h.level(cnt), left, groups)
    # today's problems (no new option) keep today's bound, bit for bit; with a new option the bound is the LP's
    legacy = obj.plain and not obj.capped and not any(g.name == "tier" for g in cons.layers)
    th_dual = th if legacy else lp_thresholds(h, cons, th, tol, max_iter)
    bound = dual_bound(h, th_dual, cons)

    pr, sp, direct, enduring, penalty = obj.parts(level)
    profit = float(pr.sum())
    status = "optimal" if bound - profit <= 1e-9 * max(1.0, abs(bound)) else "ok"
    mu, lams = th_dual.multipliers("hi")
    if not cons.layers:
        mult: float | dict = mu
    else:
        mult = {"total": mu} | {g.name: dict(zip(g.ids.tolist(), lam.tolist())) for g, lam in zip(cons.layers, lams)}
    parts = (
        None
        if obj.plain and enduring is None
        else (
            float(direct.sum()),
            0.0 if enduring is None else float(enduring.sum()),
            0.0 if penalty is None else float(penalty.sum()),
        )
    )
    a = _finish(
        level,
        pr,
        sp,
        h.d,
        cons.seller,
        cons.tier,
        parts,
        multiplier=mult,
        status=status,
        bound=max(bound, profit),
        n_iter=th_dual.n_iter,
        info={"weight": obj.weight},
    )
    check_feasible(a, cons, sp)
    return a


def allocate_lagrangian(
    p,
    value,
    margin,
    levels,
    budget=None,
    seller=None,
    seller_budgets=None,
    tol=1e-6,
    max_iter=100,
    *,
    enduring=None,
    weight=0.0,
    seller_tier=None,
    tier_budgets=None,
    max_discount=None,
    segment=None,
    segment_max_discount=None,
    spread_penalty=0.0,
    max_incentive=None,
) -> Allocation:
    """Near-optimal allocation by Lagrangian relaxation (see the package docstring).

    p [n, K] conversion curves, value [n] order values, margin (scalar or [n]), levels (percents from 0).
    budget: total expected spend cap (None = no total cap). seller [n] + seller_budgets {seller: cap}:
    per-seller caps. seller_tier {seller: tier} + tier_budgets {tier: cap}: per-tier caps (every seller in
    ``seller`` needs a tier). enduring [n, K] (level 0: 0) and weight >= 0: the objective is
    direct profit + weight * enduring. max_discount (percent, scalar or [n]) and segment [n] +
    segment_max_discount {segment: percent}: the highest discount a customer may get. spread_penalty >= 0:
    subtract spread_penalty * spend_i ** 2 per customer. max_incentive (money, scalar or [n]): the most
    expected incentive per customer. tol: relative width at which the multiplier bisection stops.
    """
    p, value, margin, d = _check_inputs(p, value, margin, levels)
    base = CurveValues(p, value, margin, d)
    return _allocate(
        base,
        levels,
        budget,
        seller,
        seller_budgets,
        tol,
        max_iter,
        enduring,
        weight,
        seller_tier,
        tier_budgets,
        max_discount,
        segment,
        segment_max_discount,
        spread_penalty,
        max_incentive,
    )


def allocate_values(
    profit,
    spend,
    levels,
    budget=None,
    seller=None,
    seller_budgets=None,
    tol=1e-6,
    max_iter=100,
    *,
    enduring=None,
    weight=0.0,
    seller_tier=None,
    tier_budgets=None,
    max_discount=None,
    segment=None,
    segment_max_discount=None,
    spread_penalty=0.0,
    max_incentive=None,
) -> Allocation:
    """The same solver on any per-level objective: ``profit`` and ``spend`` [n, K], level 0 both 0.

    For objectives that are not one week's conversion curve, e.g. the 90-day (enduring) profit of
    each level, or direct profit plus a weight times enduring value. Same options as
    :func:`allocate_lagrangian` (``profit`` plays the part of the direct profit).
    """
    profit, spend, d = _check_values(profit, spend, levels)
    base = MatrixValues(profit, spend, d)
    return _allocate(
        base,
        levels,
        budget,
        seller,
        seller_budgets,
        tol,
        max_iter,
        enduring,
        weight,
        seller_tier,
        tier_budgets,
        max_discount,
        segment,
        segment_max_discount,
        spread_penalty,
        max_incentive,
    )


def build(
    base,
    levels,
    budget,
    seller,
    seller_budgets,
    enduring,
    weight,
    seller_tier,
    tier_budgets,
    max_discount,
    segment,
    segment_max_discount,
    spread_penalty,
    max_incentive,
):
    """Checked (Objective, Constraints) of one problem: shared by the Lagrangian and the exact LP/MILP."""
    n, k = base.shape
    cons = check_constraints(
        n,
        levels,
        budget,
        seller,
        seller_budgets,
        seller_tier,
        tier_budgets,
        max_discount,
        segment,
        segment_max_discount,
        max_incentive,
    )
    e, w, pen = check_objective(n, k, enduring, weight, spread_penalty)
    return Objective(base, e, w, pen, cons.max_level, cons.max_incentive), cons


def _allocate(base, levels, budget, seller, seller_budgets, tol, max_iter, *options):
    obj, cons = build(base, levels, budget, seller, seller_budgets, *options)
    return _solve(obj, cons, tol, max_iter)
