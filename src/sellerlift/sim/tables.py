"""A world's day records -> the contract tables (events, promotions) with rising times inside sessions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sellerlift.schema import EVENT_TYPES
from sellerlift.sim.world import ADD_TO_CART, COUPON, PURCHASE, VIEW, VISIT, World

US_PER_DAY = 86_400 * 1_000_000
TABLE_STREAM = 7_777  # the random numbers that shape browsing sessions (never outcomes)


def _session_events(day_us, start_s, dur_s, n_views, add_to_cart, purchase):
    """Expand sessions to visit -> views -> [add_to_cart] -> [purchase] rows with rising times.

    Returns (session index, ts in microseconds, type code) per row.
    """
    n = len(day_us)
    steps = n_views + add_to_cart + purchase  # events after the visit
    step_us = (dur_s * 1e6 / np.maximum(steps, 1)).astype(np.int64)
    t0 = day_us + (start_s * 1e6).astype(np.int64)
    per_session = 1 + steps
    sess = np.repeat(np.arange(n), per_session)
    offsets = np.repeat(np.cumsum(per_session) - per_session, per_session)
    rank = np.arange(len(sess)) - offsets  # 0 = visit, 1..n_views = views, then cart, purchase
    ts = t0[sess] + rank * step_us[sess]
    code = np.full(len(sess), VIEW, dtype=np.int8)
    code[rank == 0] = VISIT
    cart_rank = n_views + 1
    code[(add_to_cart[sess] > 0) & (rank == cart_rank[sess])] = ADD_TO_CART
    code[(purchase[sess] > 0) & (rank == per_session[sess] - 1)] = PURCHASE
    return sess, ts, code


def build_events(
    w: World,
    start: pd.Timestamp,
    first_visits: bool = True,
    day_from: int | None = None,
    rows: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """The world's events as the contract table, sorted by customer and time.

    ``first_visits``: every customer's history opens with a browsing session on its start day
    (off for a forward run, whose customers started long ago). ``day_from``: only days >= it.
    ``rows``: only these customers (world rows).
    """
    c = w.c
    rng = rng or np.random.default_rng([*w.streams.key[:2], TABLE_STREAM])
    p = {
        k: w.purchases.get(k, dt)
        for k, dt in (
            ("cust", np.int64),
            ("day", np.int64),
            ("start_s", np.float64),
            ("dur_s", np.float64),
            ("n_views", np.int64),
            ("net", np.float64),
            ("qty", np.int64),
            ("redeem", bool),
        )
    }
    k = {
        key: w.counts.get(key, dt)
        for key, dt in (("cust", np.int64), ("day", np.int64), ("type", np.int8), ("count", np.int64))
    }
    if day_from is not None or rows is not None:
        keep_p, keep_k = np.ones(len(p["cust"]), bool), np.ones(len(k["cust"]), bool)
        if day_from is not None:
            keep_p &= p["day"] >= day_from
            keep_k &= k["day"] >= day_from
        if rows is not None:
            keep_p &= np.isin(p["cust"], rows)
            keep_k &= np.isin(k["cust"], rows)
        p = {key: v[keep_p] for key, v in p.items()}
        k = {key: v[keep_k] for key, v in k.items()}
    rows = np.repeat(np.arange(len(k["cust"])), k["count"])  # one row per visit / email / contact
    r_cust, r_day, r_type = k["cust"][rows], k["day"][rows], k["type"][rows]

    # Purchase sessions: visit -> views -> add_to_cart -> purchase (+ coupon_redeem at the same ts).
    n_p = len(p["cust"])
    sess, ts_p, code_p = _session_events(
        p["day"] * US_PER_DAY,
        p["start_s"],
        p["dur_s"],
        p["n_views"],
        np.ones(n_p, dtype=np.int64),
        np.ones(n_p, dtype=np.int64),
    )
    is_purchase = code_p == PURCHASE
    amount_p = np.where(is_purchase, p["net"][sess], 0.0)
    qty_p = np.where(is_purchase, p["qty"][sess], 0)
    cust_p = p["cust"][sess]
    red = np.flatnonzero(p["redeem"])
    red_ts = ts_p[is_purchase][red]  # one purchase row per session, in session order

    # Browsing sessions without a purchase; some put something in the cart. A history opens with one
    # on the customer's start day, before anything else that day (seconds < 60).
    v = r_type == VISIT
    n_first = len(c.ids) if first_visits else 0
    v_cust = np.concatenate([np.arange(n_first), r_cust[v]])
    v_day = np.concatenate([c.start_day[:n_first], r_day[v]])
    n_v = len(v_cust)
    start_s = np.concatenate([rng.uniform(1.0, 59.0, n_first), rng.uniform(60.0, 82_800.0, n_v - n_first)])
    v_sess, ts_v, code_v = _session_events(
        v_day * US_PER_DAY,
        start_s,
        rng.uniform(30.0, 900.0, n_v),
        1 + rng.poisson(0.5, n_v),
        (rng.random(n_v) < 0.12).astype(np.int64),
        np.zeros(n_v, dtype=np.int64),
    )

    # Single events (email opens, support contacts) at a random time of day.
    o = ~v
    o_cust, o_day, o_type = r_cust[o], r_day[o], r_type[o]
    ts_o = o_day * US_PER_DAY + (rng.uniform(60.0, 86_399.0, len(o_cust)) * 1e6).astype(np.int64)

    cust = np.concatenate([cust_p, p["cust"][red], v_cust[v_sess], o_cust])
    ts = np.concatenate([ts_p, red_ts, ts_v, ts_o])
    code = np.concatenate([code_p, np.full(len(red), COUPON, dtype=np.int8), code_v, o_type])
    amount = np.concatenate([amount_p, np.zeros(len(red) + len(ts_v) + len(ts_o))])
    qty = np.concatenate([qty_p, np.zeros(len(red) + len(ts_v) + len(ts_o), dtype=np.int64)])
    order = np.lexsort((code, ts, cust))  # ties (purchase, coupon_redeem) keep type order
    start_us = pd.Timestamp(start).value // 1000
    return pd.DataFrame(
        {
            "customer_id": c.ids[cust[order]],
            "seller_id": c.seller[cust[order]],
            "ts": (ts[order] + start_us).astype("datetime64[us]"),
            "event_type": pd.Categorical.from_codes(code[order], categories=list(EVENT_TYPES)),
            "amount": amount[order].astype(np.float64),
            "quantity": qty[order].astype(np.int64),
        }
    )


def build_promotions(w: World, start: pd.Timestamp) -> pd.DataFrame:
    o = w.offers
    cust, day = o.get("cust", np.int64), o.get("day", np.int64)
    order = np.lexsort((day, cust))
    ts = (pd.Timestamp(start).value // 1000 + day * US_PER_DAY).astype("datetime64[us]")
    return pd.DataFrame(
        {
            "customer_id": w.c.ids[cust[order]],
            "seller_id": w.c.seller[cust[order]],
            "ts": ts[order],
            "discount_pct": o.get("pct", np.int64)[order],
            "converted": o.get("converted", bool)[order],
            "revenue": o.get("revenue", np.float64)[order],
            "cost": o.get("cost", np.float64)[order],
            "randomized": o.get("randomized", bool)[order],
            "propensity": o.get("propensity", np.float64)[order],
        }
    )


def build_offer_truth(w: World, start: pd.Timestamp) -> pd.DataFrame:
    """Per logged offer (rows in the promotions table's order): the true window conversion at every level."""
    from sellerlift.sim.config import LEVELS

    o = w.offers
    cust, day = o.get("cust", np.int64), o.get("day", np.int64)
    order = np.lexsort((day, cust))
    curve = o.get("true_curve", np.float64).reshape(len(cust), -1)[order]
    out = pd.DataFrame(
        {
            "customer_id": w.c.ids[cust[order]],
            "ts": (pd.Timestamp(start).value // 1000 + day[order] * US_PER_DAY).astype("datetime64[us]"),
            "value": w.c.value[cust[order]],
        }
    )
    for j, d in enumerate(LEVELS):
        out[f"p_conv_{d}"] = curve[:, j]
    return out
