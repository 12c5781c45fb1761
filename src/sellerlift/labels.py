"""Labels from the future part of an events table, and whether there are enough of them (pure NumPy/pandas).

For a cutoff c and horizons of I and C days (``data.horizons``), a customer's windows are
[c, c + I) and [c, c + C): ``intent_<I>d`` = at least one purchase in the first,
``churn_<C>d`` = no purchase in the second.

Rolling cutoffs (:func:`rolling_cutoffs`) put earlier cutoffs at c - H, c - H - D, ...
(H the longest horizon, D ``step_days``): every earlier label window ends by c, so
stacking them as training rows never lets a label see past the evaluation cutoff.
:func:`label_counts` and :func:`small_splits` say how many positives each split has and
which are too few to measure.

:func:`value_labels` gives the customer-value head's targets from the same future window as churn:
``value_<C>d`` = the spend (sum of purchase amounts) in [c, c + C) and ``purchases_<C>d`` = the number of
days with a purchase in it (purchases on one day count once, as the customer-base literature and
:func:`sellerlift.bgnbd.rfm_summary_for_bgnbd` count them).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from sellerlift.constants import HEADS

SPLITS = ("train", "val", "test")


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

    return pd.DataFrame(
        {
            "customer_id": customers,
            "intent": bought_within(intent_days).astype(np.float32),
            "churn": (~bought_within(churn_days)).astype(np.float32),
        }
    )


def value_labels(
    events: pd.DataFrame, cutoff: pd.Timestamp | str, customers: np.ndarray, days: int = 90, check: bool = True
) -> np.ndarray:
    """float32 [n, 2]: spend and purchase days of ``customers`` (rows in that order) in [cutoff, cutoff + days)."""
    cutoff = pd.Timestamp(cutoff)
    if check:
        check_horizon(events, cutoff, days)
    ts = events["ts"].to_numpy()
    window = (
        (events["event_type"] == "purchase").to_numpy()
        & (ts >= np.datetime64(cutoff))
        & (ts < np.datetime64(cutoff + pd.Timedelta(days=days)))
    )
    pos = pd.Index(customers).get_indexer(events["customer_id"].to_numpy()[window])
    keep = pos >= 0
    pos = pos[keep]
    n = len(customers)
    amount = events["amount"].to_numpy(np.float64)[window][keep] if "amount" in events else np.zeros(len(pos))
    spend = np.bincount(pos, weights=np.nan_to_num(amount), minlength=n)
    day = ts[window][keep].astype("datetime64[D]").astype(np.int64)
    pairs = np.unique(np.stack([pos, day], axis=1), axis=0) if len(pos) else np.zeros((0, 2), np.int64)
    purchases = np.bincount(pairs[:, 0], minlength=n)
    return np.stack([spend, purchases], axis=1).astype(np.float32)


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
    split[order[n_train : n_train + n_val]] = 1
    split[order[n_train + n_val :]] = 2
    return split


# --------------------------------------------------------------------------- rolling cutoffs


def rolling_cutoffs(cutoff, horizons: Mapping, cutoffs: int, step_days: int) -> list[pd.Timestamp]:
    """The earlier cutoffs of a rolling scheme with ``cutoffs`` in all (the evaluation cutoff included), latest first.

    They lie at ``cutoff - H - k * step_days`` for k = 0 .. cutoffs - 2, H = the longest horizon: the label
    windows of every earlier cutoff end at or before ``cutoff`` (no leak into the evaluation period).
    """
    if not isinstance(cutoffs, int) or isinstance(cutoffs, bool) or cutoffs < 1:
        raise ValueError(f"data.rolling.cutoffs={cutoffs!r}: expected an integer >= 1 (1 = the evaluation cutoff only)")
    if not isinstance(step_days, int) or isinstance(step_days, bool) or step_days < 1:
        raise ValueError(f"data.rolling.step_days={step_days!r}: expected a whole number of days >= 1")
    longest = max(int(v) for v in dict(horizons).values())
    c = pd.Timestamp(cutoff)
    return [c - pd.Timedelta(days=longest + k * step_days) for k in range(cutoffs - 1)]


# --------------------------------------------------------------------------- enough labels to measure?


def label_counts(targets: np.ndarray, split: np.ndarray) -> dict[str, dict[str, dict[str, int]]]:
    """``{split: {head: {"customers", "positives", "negatives"}}}`` for train / val / test."""
    out = {}
    for code, name in enumerate(SPLITS):
        rows = split == code
        out[name] = {}
        for i, head in enumerate(HEADS):
            pos = int(targets[rows, i].sum())
            out[name][head] = {"customers": int(rows.sum()), "positives": pos, "negatives": int(rows.sum()) - pos}
    return out


def small_splits(counts: dict, min_positives: int) -> list[str]:
    """Every (split, head) whose rarer class has fewer than ``min_positives`` customers, in words."""
    out = []
    for name, heads in counts.items():
        for head, c in heads.items():
            rare, n = min((c["positives"], "positives"), (c["negatives"], "negatives"))
            if rare < min_positives:
                out.append(f"{name} {head}: {rare} {n} of {c['customers']} customers")
    return out


def format_counts(counts: dict) -> str:
    """``intent positives train 30 / val 2 / test 4; churn ...`` (one line for the console and the manifest)."""
    return "; ".join(
        f"{head} positives " + " / ".join(f"{s} {counts[s][head]['positives']:,}" for s in counts) for head in HEADS
    )


class SmallDataError(ValueError):
    """A split has too few positives (or negatives) to train or measure (``guards.on_small=refuse``)."""
