"""What each logged offer led to over the following months, read off the events (pure NumPy/pandas).

For an offer sent at time ``t`` with a follow-up of ``H`` days (``t + H`` before the cutoff, so the
whole window is observed): ``net_H`` (net revenue of the customer's purchases in [t, t + H)),
``purchases_H``, ``retained_H`` (a purchase in [t + window, t + H): after the offer's own window, the
enduring part), and the offer's discount ``cost`` (the promotions table). ``gross_H = net_H + cost``:
revenue before the discount. Offers without a full follow-up are not labelled (the caller drops them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

US_PER_DAY = 86_400 * 1_000_000


def follow_up_mask(offers: pd.DataFrame, cutoff, horizon_days: int) -> np.ndarray:
    """Offers whose whole ``horizon_days`` follow-up lies before the cutoff."""
    end = offers["ts"].to_numpy() + np.timedelta64(horizon_days, "D")
    return end <= np.datetime64(pd.Timestamp(cutoff))


def offer_outcomes(
    events: pd.DataFrame,
    offers: pd.DataFrame,
    horizon_days: int = 90,
    window_days: int = 7,
    all_offers: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per offer (row-aligned with ``offers``): net_H, purchases_H, retained_H, gross_H, discounts_H, and gross_W:
    the revenue before discount within the offer's own window (``window_days``).

    ``all_offers``: every logged offer (default ``offers``): the later campaigns' discounts within an offer's
    follow-up are added back to turn net revenue into revenue before discount.

    Vectorised: purchases sorted by (customer, time); each offer's purchases are a contiguous range
    found by binary search on a (customer code, time) key; amounts come from cumulative sums.
    """
    p = events[events["event_type"] == "purchase"]
    codes, ids = pd.factorize(p["customer_id"].to_numpy(), sort=True)
    t = p["ts"].to_numpy().astype("datetime64[us]").astype(np.int64)
    order = np.lexsort((t, codes))
    codes, t, amount = codes[order], t[order], p["amount"].to_numpy(dtype=np.float64)[order]
    span = int(t.max() - t.min() + 1) if len(t) else 1
    base = int(t.min()) if len(t) else 0
    key = codes.astype(np.int64) * span + (t - base)
    csum = np.concatenate([[0.0], np.cumsum(amount)])

    oc = pd.Index(ids).get_indexer(offers["customer_id"].to_numpy())
    ot = offers["ts"].to_numpy().astype("datetime64[us]").astype(np.int64)
    known = oc >= 0

    def count_before(days: int) -> np.ndarray:
        """Purchases of the offer's customer strictly before t + days (within that customer's range)."""
        k = np.where(known, oc.astype(np.int64) * span + np.clip(ot + days * US_PER_DAY - base, 0, span), -1)
        return np.searchsorted(key, k, side="left")

    start, end, after_window = count_before(0), count_before(horizon_days), count_before(window_days)
    net = np.where(known, csum[end] - csum[start], 0.0)
    n = np.where(known, end - start, 0)
    retained = np.where(known, end > after_window, False)
    every = offers if all_offers is None else all_offers
    discounts = _discounts_within(offers, every, horizon_days)
    in_window = np.where(known, csum[after_window] - csum[start], 0.0) + _discounts_within(offers, every, window_days)
    return pd.DataFrame(
        {
            f"net_{horizon_days}d": net,
            f"purchases_{horizon_days}d": n,
            f"retained_{horizon_days}d": retained,
            f"gross_{horizon_days}d": net + discounts,
            f"discounts_{horizon_days}d": discounts,
            f"gross_{window_days}d": in_window,
        }
    )


def later_coupons(offers: pd.DataFrame, all_offers: pd.DataFrame, horizon_days: int = 90) -> np.ndarray:
    """[n, 2] the coupons (``discount_pct`` > 0) the customer was sent *after* each offer and within its follow-up
    (t, t + H): their number and their summed depth (``discount_pct`` / 30).

    The 90-day outcome of a logged offer includes what the later campaigns did: a customer who waits for the next
    coupon looks the same as one whose habit the first coupon built. A model of the enduring effect conditions on
    these and predicts with none (the effect of this offer alone, what the allocation weighs)."""
    pct = all_offers["discount_pct"].to_numpy(dtype=np.float64)
    coupon = (pct > 0).astype(np.float64)
    sent_after = np.timedelta64(1, "us")  # strictly after the offer itself
    count = _sum_within(offers, all_offers, coupon, horizon_days, sent_after)
    depth = _sum_within(offers, all_offers, pct / 30.0, horizon_days, sent_after)
    return np.column_stack([count, depth]).astype(np.float32)


def _discounts_within(offers: pd.DataFrame, every: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Discounts of the customer's offers (in ``every``) sent in [t, t + H) for each offer of ``offers``: this one
    and later campaigns': what turns net revenue back into revenue before discount."""
    if "cost" not in every:
        return np.zeros(len(offers))
    return _sum_within(offers, every, every["cost"].to_numpy(dtype=np.float64), horizon_days)


def _sum_within(
    offers: pd.DataFrame, every: pd.DataFrame, values: np.ndarray, horizon_days: int, skip=np.timedelta64(0, "us")
) -> np.ndarray:
    """Per offer of ``offers``: the sum of ``values`` over the same customer's rows of ``every`` sent in
    [t + skip, t + H)."""
    codes, ids = pd.factorize(every["customer_id"].to_numpy(), sort=True)
    t = every["ts"].to_numpy().astype("datetime64[us]").astype(np.int64)
    order = np.lexsort((t, codes))
    t0 = int(t.min())
    span = int(t.max() - t0 + 1) + horizon_days * US_PER_DAY
    key = codes.astype(np.int64)[order] * span + (t[order] - t0)
    csum = np.concatenate([[0.0], np.cumsum(np.asarray(values, dtype=np.float64)[order])])
    oc = pd.Index(ids).get_indexer(offers["customer_id"].to_numpy()).astype(np.int64)
    own = oc * span + (offers["ts"].to_numpy().astype("datetime64[us]").astype(np.int64) - t0)
    lo = np.searchsorted(key, own + int(skip.astype("timedelta64[us]").astype(np.int64)), side="left")
    hi = np.searchsorted(key, own + horizon_days * US_PER_DAY, side="left")
    return np.where(oc >= 0, csum[hi] - csum[lo], 0.0)
