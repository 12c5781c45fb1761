"""Labels from the future part of an events table (pure NumPy/pandas).

For a cutoff c and horizon H days, a customer's window is [c, c + H):
``intent_7d`` = at least one purchase in the 7-day window,
``churn_90d`` = no purchase in the 90-day window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def check_horizon(events: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int, source: str = "events") -> None:
    """Fail early when the data ends before the label window does."""
    end = pd.Timestamp(cutoff) + pd.Timedelta(days=horizon_days)
    last = pd.Timestamp(events["ts"].max())
    # Daily data: the last event falls on the window's last day, not at its end.
    if last < end - pd.Timedelta(days=1):
        raise ValueError(
            f"{source}: label horizon of {horizon_days} days after cutoff {cutoff.date()} needs events until "
            f"{end.date()}, but the data ends at {last}; choose an earlier cutoff or a shorter horizon"
        )


def make_labels(
    events: pd.DataFrame,
    cutoff: pd.Timestamp | str,
    customers: np.ndarray,
    intent_days: int = 7,
    churn_days: int = 90,
    check: bool = True,
) -> pd.DataFrame:
    """``intent`` and ``churn`` labels for ``customers`` (rows in that order)."""
    cutoff = pd.Timestamp(cutoff)
    if check:
        check_horizon(events, cutoff, max(intent_days, churn_days))
    ts = events["ts"].to_numpy()
    purchase = (events["event_type"] == "purchase").to_numpy()
    start = np.datetime64(cutoff)

    def bought_within(days: int) -> np.ndarray:
        window = purchase & (ts >= start) & (ts < np.datetime64(cutoff + pd.Timedelta(days=days)))
        buyers = pd.unique(events["customer_id"].to_numpy()[window])
        return pd.Index(customers).isin(buyers)

    return pd.DataFrame({
        "customer_id": customers,
        "intent": bought_within(intent_days).astype(np.float32),
        "churn": (~bought_within(churn_days)).astype(np.float32),
    })


def split_customers(customer_ids: np.ndarray, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> np.ndarray:
    """Customer-level split: 0 = train, 1 = val, 2 = test; seeded, no customer in two splits."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    n = len(customer_ids)
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    split = np.empty(n, dtype=np.int8)
    split[order[:n_train]] = 0
    split[order[n_train:n_train + n_val]] = 1
    split[order[n_train + n_val:]] = 2
    return split
