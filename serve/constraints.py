"""The allocation request's rules beyond the types: budgets, tiers, caps and segments, each error naming its field.

Run by :func:`serve.jobs.allocate` after :mod:`serve.parsing` (types, limits, timestamps) and before the
allocator: what the allocator would refuse (a budget for a seller not in the request, a seller without a
tier, a cap for an unknown segment) is a 422 here with the field, the value and what was expected.
"""

from __future__ import annotations

import numpy as np

from serve.errors import MAX_ERRORS_SHOWN, ClientError, show


def _fail(items: list) -> None:
    if items:
        raise ClientError(422, items[:MAX_ERRORS_SHOWN], len(items))


def allocation_inputs(head, custs: list) -> tuple[np.ndarray | None, dict | None]:
    """(seller of each customer, budget per seller) for the allocator, or a 422 naming what is missing."""
    tier_budgets = getattr(head, "tier_budgets", None)
    if head.budget is None and head.seller_budgets is None and tier_budgets is None:
        raise ClientError(
            422,
            [(("budget",), "give a total budget, per-seller budgets, per-tier budgets, or several of them", "missing")],
        )
    need = head.seller_budgets is not None or getattr(head, "seller_tiers", None) is not None
    if not need:
        return None, None
    why = "seller_budgets" if head.seller_budgets is not None else "seller_tiers"
    items = [
        (("customers", i, "seller_id"), f"required when {why} is given", "missing")
        for i, c in enumerate(custs)
        if c.seller_id is None
    ]
    items += [
        (("seller_budgets", k), f"expected a finite budget >= 0, got {show(v)}", "budget")
        for k, v in (head.seller_budgets or {}).items()
        if not (np.isfinite(v) and v >= 0)
    ]
    _fail(items)
    sellers = np.array([str(c.seller_id) for c in custs], dtype=object)
    if head.seller_budgets is None:
        return sellers, None
    known = set(sellers.tolist())
    items = [
        (("seller_budgets", k), f"no customer of seller {show(k)} in this request", "unknown_seller")
        for k in head.seller_budgets
        if k not in known
    ]
    items += [
        (
            ("seller_budgets",),
            f"no budget for seller {show(s)} (its customers: customers[{int(np.flatnonzero(sellers == s)[0])}], ...)",
            "missing_seller_budget",
        )
        for s in sorted(known)
        if s not in head.seller_budgets
    ]
    _fail(items)
    return sellers, {k: float(v) for k, v in head.seller_budgets.items()}


def tier_inputs(head, sellers: np.ndarray | None) -> tuple[dict | None, dict | None]:
    """(tier of each seller in the request, budget per tier) or (None, None); a 422 names what is wrong.

    Entries of ``seller_tiers`` for sellers not in the request are ignored (a client may send its whole table),
    and so are budgets of tiers none of the request's sellers is in; a budget for a tier that is in no entry of
    ``seller_tiers`` at all, a seller of the request without a tier, or a tier of the request without a budget
    (when tier budgets are given) is an error.
    """
    tiers_of, budgets = head.seller_tiers, head.tier_budgets
    if tiers_of is None:
        if budgets is not None:
            raise ClientError(
                422, [(("seller_tiers",), "required when tier_budgets is given (the tier of every seller)", "missing")]
            )
        return None, None
    known = sorted(set(sellers.tolist()))
    items = [
        (
            ("seller_tiers",),
            f"no tier for seller {show(s)} (its customers: customers[{int(np.flatnonzero(sellers == s)[0])}], ...)",
            "missing_seller_tier",
        )
        for s in known
        if s not in tiers_of
    ]
    _fail(items)
    used = {tiers_of[s] for s in known}
    if budgets is None:
        return {s: tiers_of[s] for s in known}, None
    named = set(tiers_of.values())
    items = [
        (("tier_budgets", k), f"expected a finite budget >= 0, got {show(v)}", "budget")
        for k, v in budgets.items()
        if not (np.isfinite(v) and v >= 0)
    ]
    items += [
        (
            ("tier_budgets", k),
            f"unknown tier {show(k)}: expected one of the tiers of seller_tiers "
            f"({', '.join(map(show, sorted(named)[:10]))})",
            "unknown_tier",
        )
        for k in budgets
        if k not in named
    ]
    items += [
        (("tier_budgets",), f"no budget for tier {show(t)} (of seller_tiers)", "missing_tier_budget")
        for t in sorted(used)
        if t not in budgets
    ]
    _fail(items)
    return {s: tiers_of[s] for s in known}, {t: float(budgets[t]) for t in used}


def discount_caps(head, custs: list) -> np.ndarray | None:
    """The highest discount (percent) of each customer from the request's and the customers' ``max_discount``
    (the lower one holds; inf = no cap), or None when neither is given."""
    per = [c.max_discount for c in custs]
    if head.max_discount is None and all(v is None for v in per):
        return None
    cap = np.array([np.inf if v is None else float(v) for v in per], dtype=np.float64)
    return cap if head.max_discount is None else np.minimum(cap, float(head.max_discount))


def segment_inputs(head, custs: list, bundle_segments, bundle_names) -> tuple[np.ndarray | None, dict | None]:
    """(segment of each customer, cap per segment) for ``segment_max_discount``, or (None, None).

    A customer's segment is its ``segment`` field, else the bundle's (``bundle_segments``: the action segment
    when the bundle has them, else the RFM segment). Caps of known segments (the request's, or any name of the
    bundle's, ``bundle_names``) that no customer of the request is in are ignored; an unknown name is an error.
    """
    caps = head.segment_max_discount
    if caps is None:
        return None, None
    seg = [
        c.segment if c.segment is not None else (None if bundle_segments is None else str(bundle_segments[i]))
        for i, c in enumerate(custs)
    ]
    items = [
        (
            ("customers", i, "segment"),
            "required when segment_max_discount is given (the bundle has no segments to default to)",
            "missing",
        )
        for i, s in enumerate(seg)
        if s is None
    ]
    _fail(items)
    present = set(seg)
    known = present | set(bundle_names or ())
    items = [
        (
            ("segment_max_discount", k),
            f"unknown segment {show(k)}: expected one of {', '.join(map(show, sorted(known)[:10]))}",
            "unknown_segment",
        )
        for k in caps
        if k not in known
    ]
    _fail(items)
    return np.asarray(seg, dtype=object), {k: float(v) for k, v in caps.items() if k in present}
