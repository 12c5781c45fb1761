"""The work of one request, in an inference thread: body -> parse + validate -> runtime -> response bytes.

Each function is the single executor call of its endpoint (never run on the event
loop): it parses the raw body (:mod:`serve.parsing`), runs the :class:`Runtime`
(features, sequence scores, segments, curves) and the allocator, and encodes the
response Structs of :mod:`serve.schemas` with msgspec. A client error is a
:class:`serve.errors.ClientError`.
"""

from __future__ import annotations

import time

import numpy as np

from sellerlift.runtime import Runtime
from serve import parsing
from serve.errors import ClientError, encode
from serve.metrics import Metrics
from serve.schemas import (
    AllocateResponse,
    AllocationTotals,
    CurvesResponse,
    CustomerAllocation,
    CustomerCurve,
    CustomerScore,
    ModelRef,
    ScoreResponse,
)
from serve.timestamps import iso_each


def _ref(rt: Runtime) -> ModelRef:
    return ModelRef(rt.version, rt.run_id)


def _parse(body: bytes, kind: parsing.Kind, settings) -> parsing.Parsed:
    return parsing.parse(body, kind, settings.max_customers, settings.max_events_per_customer)


def score(rt: Runtime, body: bytes, settings, metrics: Metrics) -> bytes:
    p = _parse(body, parsing.SCORE, settings)
    b = p.batch
    if b.n == 0:
        return encode(ScoreResponse(_ref(rt), []))
    t0 = time.perf_counter()
    feats = rt.features(b)
    out = rt.score(feats)
    seg = rt.assign_segments(feats)
    metrics.inferred("/v1/score", time.perf_counter() - t0, b.n)
    used = b.events_used().tolist()
    intent_name, churn_name = getattr(rt, "outputs", ("intent_7d", "churn_90d"))  # head order: intent, churn
    intent, churn, prior = out[intent_name].tolist(), out[churn_name].tolist(), out["prior"].tolist()
    seg_id, seg_name = (seg[0].tolist(), seg[1].tolist()) if seg is not None else ([None] * b.n,) * 2
    as_of = iso_each(b.as_of)
    results = [CustomerScore(c.customer_id, as_of[i], intent[i], churn[i], seg_name[i], seg_id[i], used[i],
                             used[i] == 0, prior[i]) for i, c in enumerate(p.customers)]
    parsing.release(p.customers)
    return encode(ScoreResponse(_ref(rt), results))


def _curves(rt: Runtime, batch) -> np.ndarray:
    feats = rt.features(batch)
    return rt.curves(feats, rt.score(feats))


def curves(rt: Runtime, body: bytes, settings, metrics: Metrics) -> bytes:
    p = _parse(body, parsing.SCORE, settings)
    levels = list(rt.levels)
    if p.batch.n == 0:
        return encode(CurvesResponse(_ref(rt), levels, []))
    t0 = time.perf_counter()
    curve = _curves(rt, p.batch)
    metrics.inferred("/v1/promotions/curves", time.perf_counter() - t0, p.batch.n)
    conv, up = curve.tolist(), (curve - curve[:, :1]).tolist()
    results = [CustomerCurve(c.customer_id, conv[i], up[i]) for i, c in enumerate(p.customers)]
    parsing.release(p.customers)
    return encode(CurvesResponse(_ref(rt), levels, results))


def allocate(rt: Runtime, body: bytes, settings, metrics: Metrics) -> bytes:
    from sellerlift.allocate import allocate_lagrangian, incremental_profit_and_spend

    p = _parse(body, parsing.ALLOCATE, settings)
    sellers, seller_budgets = parsing.allocation_inputs(p.head, p.customers)
    levels = list(rt.levels)
    if p.batch.n == 0:
        totals = AllocationTotals(0.0, 0.0, 0.0, 0.0, 0.0, "optimal", 0, {} if seller_budgets is not None else None)
        return encode(AllocateResponse(_ref(rt), levels, totals, []))
    value = np.array([c.value for c in p.customers], dtype=np.float64)
    margin = np.array([c.margin for c in p.customers], dtype=np.float64)
    t0 = time.perf_counter()
    prob = _curves(rt, p.batch).astype(np.float64)
    try:
        a = allocate_lagrangian(prob, value, margin, levels, budget=p.head.budget, seller=sellers,
                                seller_budgets=seller_budgets)
    except ValueError as err:  # inputs are checked beforehand; this is the allocator's own word
        raise ClientError(422, [(("body",), f"infeasible or invalid allocation request: {err}", "allocation")]) \
            from None
    profit, spend = incremental_profit_and_spend(prob, value, margin, levels)
    metrics.inferred("/v1/promotions/allocate", time.perf_counter() - t0, p.batch.n)
    rows = np.arange(len(value))
    conv, spend, profit = (x[rows, a.level_index].tolist() for x in (prob, spend, profit))
    bound = float(a.bound) if np.isfinite(a.bound) else a.profit
    totals = AllocationTotals(
        spend=a.spend, incremental_profit=a.profit, roi=a.roi, upper_bound=bound, gap_to_upper_bound=a.gap,
        status="optimal" if a.status == "optimal" else "feasible",
        customers_with_discount=int((a.level_index > 0).sum()),
        seller_spend={str(k): float(v) for k, v in a.seller_spend.items()} if a.seller_spend else None)
    lv = a.level_pct.tolist()
    results = [CustomerAllocation(c.customer_id, c.seller_id, lv[i], conv[i], spend[i], profit[i])
               for i, c in enumerate(p.customers)]
    parsing.release(p.customers)
    return encode(AllocateResponse(_ref(rt), levels, totals, results))
