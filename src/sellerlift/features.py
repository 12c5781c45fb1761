"""Events -> model inputs, in pure NumPy (no torch).

Training (:func:`build_features`, on the events table) and the inference server
(:func:`build_features_from_arrays`, on the request's arrays: the same code
without a DataFrame) share this module and :meth:`FeatureSpec.transform`, so the
same events give the same numbers in both places. Per customer we produce

* the most recent ``max_len`` events before the cutoff, oldest first and padded
  on the right (``event_type`` 0 is padding, real types are 1..7), with per-event
  numeric features: log amount, log gap to the previous event, log age at the
  cutoff (real time, not position);
* aggregates over the whole history (RFM, tenure, recent-window counts), which
  the sequence model also reads and the RFM segmentation uses.

Everything is vectorised over rows: one pass of sorts and cumulative sums.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from sellerlift.schema import EVENT_TYPES

US_PER_DAY = 86_400e6  # timestamps are handled as int64 microseconds
EVENT_NUMERIC = ("log_amount", "log_gap_days", "log_age_days")
PURCHASE = EVENT_TYPES.index("purchase") + 1  # type ids start at 1; 0 is padding


def _aggregate_names() -> tuple[str, ...]:
    names = [
        "recency_days",
        "frequency",
        "monetary",
        "total_spend",
        "tenure_days",
        "days_since_last_event",
        "has_purchase",
        "purchases_30d",
        "purchases_90d",
        "spend_90d",
        "events_7d",
        "events_30d",
        "events_90d",
    ]
    names += [f"count_{t}" for t in EVENT_TYPES]
    return tuple(names)


AGGREGATES = _aggregate_names()
# Aggregates that are counts or money (all but the flag): log1p before standardising.
_LOG_MASK = np.array([n != "has_purchase" for n in AGGREGATES])


@dataclass
class FeatureSpec:
    """Everything needed to turn raw events into model inputs; stored in the bundle."""

    max_len: int = 128
    event_types: tuple[str, ...] = EVENT_TYPES
    event_numeric: tuple[str, ...] = EVENT_NUMERIC
    aggregates: tuple[str, ...] = AGGREGATES
    numeric_mean: list[float] = field(default_factory=list)
    numeric_std: list[float] = field(default_factory=list)
    aggregate_mean: list[float] = field(default_factory=list)
    aggregate_std: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if int(self.max_len) < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len}")
        self.event_types = tuple(self.event_types)
        self.event_numeric = tuple(self.event_numeric)
        self.aggregates = tuple(self.aggregates)

    @property
    def fitted(self) -> bool:
        return bool(self.numeric_mean)

    def fit(self, feats: SequenceFeatures, rows: np.ndarray | None = None) -> FeatureSpec:
        """Learn standardisation from (a subset of) customers, e.g. the training split."""
        rows = np.arange(len(feats.length)) if rows is None else rows
        mask = feats.mask()[rows]
        num = feats.numeric[rows][mask]
        agg = feats.aggregates[rows]
        self.numeric_mean = num.mean(axis=0).tolist() if len(num) else [0.0] * len(self.event_numeric)
        self.numeric_std = np.maximum(num.std(axis=0), 1e-6).tolist() if len(num) else [1.0] * len(self.event_numeric)
        self.aggregate_mean = agg.mean(axis=0).tolist()
        self.aggregate_std = np.maximum(agg.std(axis=0), 1e-6).tolist()
        return self

    def transform(self, feats: SequenceFeatures) -> SequenceFeatures:
        """Standardise numeric features; padding stays exactly 0."""
        if not self.fitted:
            raise RuntimeError("FeatureSpec.transform called before fit(); load a fitted spec from the bundle")
        mask = feats.mask()[..., None]
        num = (feats.numeric - np.float32(self.numeric_mean)) / np.float32(self.numeric_std)
        num = np.where(mask, num, np.float32(0)).astype(np.float32)
        agg = ((feats.aggregates - np.float32(self.aggregate_mean)) / np.float32(self.aggregate_std)).astype(np.float32)
        return SequenceFeatures(feats.customer_id, feats.event_type, num, feats.length, agg, feats.raw)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict | str) -> FeatureSpec:
        return cls(**(json.loads(d) if isinstance(d, str) else d))


@dataclass
class SequenceFeatures:
    customer_id: np.ndarray  # [n]
    event_type: np.ndarray  # [n, L] int64, 0 = padding
    numeric: np.ndarray  # [n, L, F] float32
    length: np.ndarray  # [n] int64, number of real events (0..L)
    aggregates: np.ndarray  # [n, A] float32, log-scaled (model input)
    raw: np.ndarray  # [n, A] float64 aggregates in natural units (days, counts, money), columns AGGREGATES

    def mask(self) -> np.ndarray:
        return np.arange(self.event_type.shape[1])[None, :] < self.length[:, None]

    def take(self, rows: np.ndarray) -> SequenceFeatures:
        return SequenceFeatures(
            self.customer_id[rows],
            self.event_type[rows],
            self.numeric[rows],
            self.length[rows],
            self.aggregates[rows],
            self.raw[rows],
        )

    @classmethod
    def concat(cls, parts: list[SequenceFeatures]) -> SequenceFeatures:
        if len(parts) == 1:
            return parts[0]
        return cls(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("customer_id", "event_type", "numeric", "length", "aggregates", "raw")
            )
        )

    def raw_columns(self, names) -> np.ndarray:
        """Raw aggregates by name, [n, len(names)] float64 (no DataFrame: the server calls this per request)."""
        return self.raw[:, [AGGREGATES.index(n) for n in names]]

    @property
    def raw_aggregates(self) -> pd.DataFrame:
        """The raw aggregates as a DataFrame, one column per name in AGGREGATES."""
        return pd.DataFrame(self.raw, columns=list(AGGREGATES))

    def rfm(self) -> pd.DataFrame:
        """Recency, frequency, monetary, tenure in natural units (for segmentation)."""
        cols = ["recency_days", "frequency", "monetary", "tenure_days"]
        return pd.DataFrame(self.raw_columns(cols), columns=cols, index=pd.Index(self.customer_id, name="customer_id"))


def to_micros(ts) -> np.ndarray:
    """Timestamps (datetime64 of any unit, or anything NumPy parses) as int64 microseconds."""
    return np.asarray(ts, dtype="datetime64[us]").astype(np.int64)


def event_type_ids(col: pd.Series) -> np.ndarray:
    """The ``event_type`` column as ids 1..7 (0 is padding); unknown names raise, naming them."""
    if isinstance(col.dtype, pd.CategoricalDtype) and tuple(col.cat.categories) == EVENT_TYPES:
        codes = col.cat.codes.to_numpy()
    else:
        codes = pd.Categorical(col.astype(object), categories=list(EVENT_TYPES)).codes
    if (codes < 0).any():
        bad = sorted(set(map(str, col.to_numpy()[codes < 0][:50])))[:5]
        raise ValueError(f"event_type: unknown value(s) {bad}; expected one of {list(EVENT_TYPES)}")
    return codes.astype(np.int64) + 1


def build_features(
    events: pd.DataFrame,
    cutoff: pd.Timestamp | str,
    spec: FeatureSpec | None = None,
    customers: np.ndarray | None = None,
) -> SequenceFeatures:
    """Features of every customer as of ``cutoff`` (events at or after it are ignored).

    ``events`` is the contract's table (customer_id, ts, event_type, amount).
    ``customers`` fixes the output rows and their order (customers without events
    get an empty sequence: cold start); by default every customer with at least
    one event before the cutoff, in sorted id order.
    """
    cutoff = pd.Timestamp(cutoff)
    if cutoff.tzinfo is not None:  # the contract's timestamps are naive UTC
        cutoff = cutoff.tz_convert("UTC").tz_localize(None)
    return build_features_from_arrays(
        events["customer_id"].to_numpy(),
        to_micros(events["ts"].to_numpy()),
        event_type_ids(events["event_type"]),
        events["amount"].to_numpy(dtype=np.float64),
        int(to_micros(np.datetime64(cutoff, "us"))),
        spec,
        customers,
    )


def build_features_from_arrays(
    customer_id: np.ndarray,
    ts_us: np.ndarray,
    type_id: np.ndarray,
    amount: np.ndarray,
    cutoff_us: int,
    spec: FeatureSpec | None = None,
    customers: np.ndarray | None = None,
) -> SequenceFeatures:
    """:func:`build_features` on plain arrays, one entry per event.

    ``ts_us`` are int64 microseconds since the epoch (naive UTC), ``type_id`` is
    1 + the index in ``EVENT_TYPES``. The server and the offer-time features call
    this directly: no DataFrame is built, which is most of the cost of a small request.
    Already sorted input (by customer, then time, integer ids) skips the sort.
    """
    spec = spec or FeatureSpec()
    L = int(spec.max_len)
    customer_id, ts_us, type_id, amount = map(np.asarray, (customer_id, ts_us, type_id, amount))
    keep = ts_us < cutoff_us
    cid, ts, etype = customer_id[keep], ts_us[keep], type_id[keep].astype(np.int64, copy=False)
    amount = amount[keep].astype(np.float64, copy=False)

    # Work on integer customer codes; sort by (customer, ts) unless already sorted.
    if not (np.issubdtype(cid.dtype, np.integer) and _is_sorted(cid, ts)):
        codes, labels = pd.factorize(cid, sort=True)
        order = np.lexsort((ts, codes))
        cid = np.asarray(labels)[codes[order]]
        ts, etype, amount = ts[order], etype[order], amount[order]

    uniq, starts, counts = _groups(cid)
    if customers is None:
        out_ids = uniq
        slot = np.arange(len(uniq))
    else:
        out_ids = np.asarray(customers)
        pos = _positions(out_ids, uniq)
        present = pos >= 0
        slot = pos  # -1 for customers not requested; their rows are dropped below
        if not present.all():
            rows_keep = np.repeat(present, counts)
            cid, ts, etype, amount = cid[rows_keep], ts[rows_keep], etype[rows_keep], amount[rows_keep]
            uniq, starts, counts = _groups(cid)
            slot = pos[present]
    n = len(out_ids)
    group_of_row = np.repeat(np.arange(len(uniq)), counts)
    row_in_group = np.arange(len(cid)) - np.repeat(starts, counts)

    # Per-event numeric features.
    gap = np.zeros(len(ts), dtype=np.float64)
    if len(ts) > 1:
        gap[1:] = (ts[1:] - ts[:-1]) / US_PER_DAY
        gap[starts] = 0.0  # first event of a customer has no predecessor
    age = (cutoff_us - ts) / US_PER_DAY
    numeric_rows = np.stack([np.log1p(amount), np.log1p(gap), np.log1p(age)], axis=1).astype(np.float32)

    # Keep the last L events of each customer, oldest first, padded on the right.
    kept = np.minimum(counts, L)
    from_end = np.repeat(counts, counts) - row_in_group - 1
    take = from_end < L
    col = (np.repeat(kept, counts) - 1 - from_end)[take]
    row = slot[group_of_row[take]]
    event_type = np.zeros((n, L), dtype=np.int64)
    numeric = np.zeros((n, L, len(EVENT_NUMERIC)), dtype=np.float32)
    event_type[row, col] = etype[take]
    numeric[row, col] = numeric_rows[take]
    length = np.zeros(n, dtype=np.int64)
    length[slot] = kept

    raw = _aggregates(n, slot, starts, counts, ts, etype, amount, cutoff_us)
    agg = np.where(_LOG_MASK, np.log1p(np.maximum(raw, 0.0)), raw)
    feats = SequenceFeatures(out_ids, event_type, numeric, length, agg.astype(np.float32), raw)
    return spec.transform(feats) if spec.fitted else feats


def _positions(out_ids: np.ndarray, uniq: np.ndarray) -> np.ndarray:
    """Row of each id of ``uniq`` in ``out_ids`` (-1 if absent); 0..n-1 ids (the server's) need no hash lookup."""
    n = len(out_ids)
    if (
        np.issubdtype(out_ids.dtype, np.integer)
        and np.issubdtype(uniq.dtype, np.integer)
        and (n == 0 or (out_ids[0] == 0 and out_ids[-1] == n - 1))
        and np.array_equal(out_ids, np.arange(n))
    ):
        return np.where((uniq >= 0) & (uniq < n), uniq, -1).astype(np.int64)
    return pd.Index(out_ids).get_indexer(uniq)


def _is_sorted(cid: np.ndarray, ts: np.ndarray) -> bool:
    if len(cid) < 2:
        return True
    if (cid[1:] < cid[:-1]).any():
        return False
    return bool(((ts[1:] >= ts[:-1]) | (cid[1:] != cid[:-1])).all())


def _groups(cid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(cid) == 0:
        return cid[:0], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    boundary = np.flatnonzero(cid[1:] != cid[:-1]) + 1
    starts = np.concatenate([[0], boundary]).astype(np.int64)
    counts = np.diff(np.concatenate([starts, [len(cid)]])).astype(np.int64)
    return cid[starts], starts, counts


def _segment_sum(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum of ``values`` within each group (groups are contiguous runs)."""
    if len(values) == 0:
        return np.zeros(len(starts))
    cums = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return cums[starts + counts] - cums[starts]


def _aggregates(n, slot, starts, counts, ts, etype, amount, cutoff_us) -> np.ndarray:
    """[n, len(AGGREGATES)] float64 in natural units; customers without events stay 0."""
    days_before = (cutoff_us - ts) / US_PER_DAY
    is_purchase = etype == PURCHASE
    out = np.zeros((n, len(AGGREGATES)))
    if len(starts):
        last = starts + counts - 1
        purchases = _segment_sum(is_purchase.astype(np.float64), starts, counts)
        spend = _segment_sum(np.where(is_purchase, amount, 0.0), starts, counts)
        # Latest purchase time per customer: max over purchase rows (-inf where none).
        purchase_age = np.where(is_purchase, days_before, np.inf)
        last_purchase_age = np.minimum.reduceat(purchase_age, starts)
        tenure = days_before[starts]
        has = purchases > 0
        vals = {
            "recency_days": np.where(has, last_purchase_age, tenure),
            "frequency": purchases,
            "monetary": np.where(has, spend / np.maximum(purchases, 1), 0.0),
            "total_spend": spend,
            "tenure_days": tenure,
            "days_since_last_event": days_before[last],
            "has_purchase": has.astype(np.float64),
            "purchases_30d": _segment_sum((is_purchase & (days_before <= 30)).astype(np.float64), starts, counts),
            "purchases_90d": _segment_sum((is_purchase & (days_before <= 90)).astype(np.float64), starts, counts),
            "spend_90d": _segment_sum(np.where(is_purchase & (days_before <= 90), amount, 0.0), starts, counts),
            "events_7d": _segment_sum((days_before <= 7).astype(np.float64), starts, counts),
            "events_30d": _segment_sum((days_before <= 30).astype(np.float64), starts, counts),
            "events_90d": _segment_sum((days_before <= 90).astype(np.float64), starts, counts),
        }
        for k, t in enumerate(EVENT_TYPES, start=1):
            vals[f"count_{t}"] = _segment_sum((etype == k).astype(np.float64), starts, counts)
        out[slot] = np.stack([vals[name] for name in AGGREGATES], axis=1)
    return out
