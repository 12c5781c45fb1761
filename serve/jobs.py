"""The work of one request, in an inference thread: body -> parse + validate -> runtime -> response bytes.

Each function is the single executor call of its endpoint (never run on the event
loop): it parses the raw body (:mod:`serve.parsing`), runs the :class:`Runtime`
(features, sequence scores and customer value, loyalty, segments, curves, the enduring
response, action segments) and the allocator, and encodes the response Structs of
:mod:`serve.schemas` (those of the served bundle: :func:`serve.response_types.types_for`) with
msgspec. A client error is a :class:`serve.errors.ClientError`.
"""

from __future__ import annotations

import time

import numpy as np

from sellerlift.runtime import Runtime, allocate_offers
from sellerlift.runtime.enduring import enduring_value
from serve import constraints, parsing
from serve.errors import ClientError, encode
from serve.metrics import Metrics
from serve.response_types import types_for
from serve.schemas import AllocateResponse, AllocationTotals, CustomerAllocation, ModelRef
from serve.timestamps import iso_each


def _ref(rt: Runtime) -> ModelRef:
    return ModelRef(rt.version, rt.run_id)


def _parse(body: bytes, kind: parsing.Kind, settings) -> parsing.Parsed:
    return parsing.parse(body, kind, settings.max_customers, settings.max_events_per_customer)


def _list(x) -> list:
    return np.asarray(x, dtype=np.float64).tolist()


def score(rt: Runtime, body: bytes, settings, metrics: Metrics) -> bytes:
    p = _parse(body, parsing.SCORE, settings)
    b, types = p.batch, types_for(rt)
    if b.n == 0:
        return encode(types.ScoreResponse(_ref(rt), []))
    t0 = time.perf_counter()
    feats = rt.features(b)
    out = rt.score(feats)
    seg = rt.assign_segments(feats)
    loyalty = rt.loyalty(out)
    action = rt.assign_action_segments(feats, out) if getattr(rt, "action_segments", None) is not None else None
    metrics.inferred("/v1/score", time.perf_counter() - t0, b.n)
    used = b.events_used()
    cols = {
        "customer_id": [c.customer_id for c in p.customers],
        "as_of": iso_each(b.as_of),
        **{name: _list(out[name]) for name in (*rt.outputs, *getattr(rt, "value_outputs", ()))},
        "segment": seg[1].tolist() if seg is not None else [None] * b.n,
        "segment_id": seg[0].tolist() if seg is not None else [None] * b.n,
        "n_events": used.tolist(),
        "cold_start": (used == 0).tolist(),
        "prior": out["prior"].tolist(),
    }
    if loyalty is not None:
        cols["loyalty"] = _list(loyalty)
    if action is not None:
        cols["action_segment"], cols["action_segment_id"] = action[1].tolist(), action[0].tolist()
    row = types.CustomerScore
    results = [row(*r) for r in zip(*(cols[f] for f in types.score_fields))]
    parsing.release(p.customers)
    return encode(types.ScoreResponse(_ref(rt), results))


def _curves(rt: Runtime, batch):
    feats = rt.features(batch)
    scores = rt.score(feats)
    return feats, scores, rt.curves(feats, scores)


def curves(rt: Runtime, body: bytes, settings, metrics: Metrics) -> bytes:
    p = _parse(body, parsing.SCORE, settings)
    levels, types = list(rt.levels), types_for(rt)
    if p.batch.n == 0:
        return encode(types.CurvesResponse(_ref(rt), levels, []))
    t0 = time.perf_counter()
    feats, scores, curve = _curves(rt, p.batch)
    end = rt.enduring_response(feats, scores) if getattr(rt, "enduring", None) is not None else None
    metrics.inferred("/v1/promotions/curves", time.perf_counter() - t0, p.batch.n)
    cols = [[c.customer_id for c in p.customers], curve.tolist(), (curve - curve[:, :1]).tolist()]
    if end is not None:
        cols += [end["retention"].tolist(), end["revenue"].tolist()]
    results = [types.CustomerCurve(*r) for r in zip(*cols)]
    parsing.release(p.customers)
    return encode(types.CurvesResponse(_ref(rt), levels, results))


def _empty_totals(head, sellers_given: bool, tiers_given: bool) -> AllocationTotals:
    return AllocationTotals(
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        "optimal",
        0,
        {} if sellers_given else None,
        {} if tiers_given else None,
        float(head.weight),
        None,
        0.0,
        0.0,
        0.0,
    )


def allocate(rt: Runtime, body: bytes, settings, metrics: Metrics) -> bytes:
    p = _parse(body, parsing.ALLOCATE, settings)
    head = p.head
    sellers, seller_budgets = constraints.allocation_inputs(head, p.customers)
    seller_tier, tier_budgets = constraints.tier_inputs(head, sellers)
    has_enduring = getattr(rt, "enduring", None) is not None
    if head.weight > 0 and not has_enduring:
        raise ClientError(
            422,
            [
                (
                    ("weight",),
                    f"weight {head.weight:g} needs the enduring model (enduring.onnx), "
                    "which this bundle does not have; expected 0 (the week's profit)",
                    "weight",
                )
            ],
        )
    if head.weight > 0 and head.enduring_value == "retention" and getattr(rt, "value", None) is None:
        raise ClientError(
            422,
            [
                (
                    ("enduring_value",),
                    "enduring_value 'retention' values retention with the sequence model's value head, which this "
                    "bundle does not have; expected 'margin'",
                    "enduring_value",
                )
            ],
        )
    levels = list(rt.levels)
    if p.batch.n == 0:
        return encode(
            AllocateResponse(
                _ref(rt), levels, _empty_totals(head, seller_budgets is not None, tier_budgets is not None), []
            )
        )
    value = np.array([c.value for c in p.customers], dtype=np.float64)
    margin = np.array([c.margin for c in p.customers], dtype=np.float64)
    t0 = time.perf_counter()
    feats, scores, curve = _curves(rt, p.batch)
    prob = curve.astype(np.float64)
    end_matrix = None
    if has_enduring:
        kept = rt.kept_value(scores, margin) if head.enduring_value == "retention" else None
        if head.enduring_value == "margin" or kept is not None:
            end_matrix = enduring_value(rt.enduring_response(feats, scores), margin, head.enduring_value, kept)
    segment, segment_caps = None, None
    if head.segment_max_discount is not None:
        action = rt.assign_action_segments(feats, scores, curve) if getattr(rt, "action_segments", None) else None
        seg = action if action is not None else rt.assign_segments(feats)
        names = (rt.action_segments.names if action is not None else rt.segments.names) if seg is not None else ()
        segment, segment_caps = constraints.segment_inputs(head, p.customers, None if seg is None else seg[1], names)
    try:
        offers = allocate_offers(
            prob,
            value,
            margin,
            levels,
            budget=head.budget,
            seller=sellers,
            seller_budgets=seller_budgets,
            enduring=end_matrix,
            weight=head.weight,
            seller_tier=seller_tier,
            tier_budgets=tier_budgets,
            max_discount=constraints.discount_caps(head, p.customers),
            segment=segment,
            segment_max_discount=segment_caps,
            spread_penalty=head.spread_penalty,
            max_incentive=head.max_incentive,
        )
    except ValueError as err:  # inputs are checked beforehand; this is the allocator's own word
        raise ClientError(
            422, [(("body",), f"infeasible or invalid allocation request: {err}", "allocation")]
        ) from None
    metrics.inferred("/v1/promotions/allocate", time.perf_counter() - t0, p.batch.n)
    a = offers.allocation
    direct = float(offers.profit.sum())
    bound = float(a.bound) if np.isfinite(a.bound) else a.profit
    totals = AllocationTotals(
        spend=a.spend,
        incremental_profit=direct,
        roi=direct / a.spend if a.spend > 0 else 0.0,
        upper_bound=bound,
        gap_to_upper_bound=a.gap,
        status="optimal" if a.status == "optimal" else "feasible",
        customers_with_discount=int((a.level_index > 0).sum()),
        seller_spend={str(k): float(v) for k, v in a.seller_spend.items()} if a.seller_spend else None,
        tier_spend={str(k): float(v) for k, v in a.tier_spend.items()} if a.tier_spend else None,
        weight=float(head.weight),
        enduring_value=float(offers.enduring.sum()) if offers.enduring is not None else None,
        objective=float(a.profit),
        spread_penalty_paid=float(a.penalty),
        spread=float(offers.spread),
    )
    lv, conv, spend, profit, obj = (
        x.tolist() for x in (offers.level_pct, offers.conversion, offers.spend, offers.profit, offers.objective)
    )
    end = offers.enduring.tolist() if offers.enduring is not None else [None] * len(lv)
    results = [
        CustomerAllocation(c.customer_id, c.seller_id, lv[i], conv[i], spend[i], profit[i], end[i], obj[i])
        for i, c in enumerate(p.customers)
    ]
    parsing.release(p.customers)
    return encode(AllocateResponse(_ref(rt), levels, totals, results))
