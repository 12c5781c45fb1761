"""Inputs of the promotion response model (DIPN), in pure NumPy/pandas (no torch).

The inference server calls :func:`dipn_inputs` on the output of
``features.build_features(events, cutoff, spec)`` (already standardised with the
bundle's feature spec) and, when the bundle says ``uses_sequence_outputs``, on the
outputs of ``sequence.onnx`` for the same customers. Training calls the same
function, on features computed *as of each offer's time* by
:func:`offer_time_features`, so the model sees at training time exactly what the
server will compute at scoring time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sellerlift.features import (
    AGGREGATES,
    FeatureSpec,
    SequenceFeatures,
    build_features_from_arrays,
    event_type_ids,
    to_micros,
)

# Sequence-model outputs DIPN may read (probabilities, one column each).
SEQUENCE_OUTPUTS = ("intent_7d", "churn_90d")


def input_names(uses_sequence_outputs: bool) -> list[str]:
    """Column names of :func:`dipn_inputs`, in order (written into the bundle manifest)."""
    names = [f"aggregate/{a}" for a in AGGREGATES]
    if uses_sequence_outputs:
        names += [f"sequence/{o}" for o in SEQUENCE_OUTPUTS]
    return names


def dipn_inputs(feats: SequenceFeatures, sequence_outputs: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """float32 [n, F]: the standardised aggregates, then (optionally) the sequence model's scores.

    ``feats`` must come from ``FeatureSpec.transform`` (build_features with a fitted
    spec). ``sequence_outputs`` maps ``intent_7d`` / ``churn_90d`` to [n] or [n, 1]
    probabilities from ``sequence.onnx``; they enter as centred logits.
    """
    agg = np.asarray(feats.aggregates, dtype=np.float32)
    if agg.ndim != 2 or agg.shape[1] != len(AGGREGATES):
        raise ValueError(f"feats.aggregates: expected [n, {len(AGGREGATES)}], got {agg.shape}")
    cols = [agg]
    if sequence_outputs is not None:
        for name in SEQUENCE_OUTPUTS:
            p = np.asarray(_head_output(sequence_outputs, name), dtype=np.float64).reshape(-1)
            if len(p) != len(agg):
                raise ValueError(f"sequence_outputs['{name}']: expected {len(agg)} rows, got {len(p)}")
            p = np.clip(p, 1e-4, 1 - 1e-4)
            cols.append((np.log(p / (1 - p)) / 4.0).astype(np.float32)[:, None])  # logit, roughly unit scale
    out = np.concatenate(cols, axis=1).astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _head_output(outputs: dict, name: str):
    """The output of ``name``'s head: ``intent_7d`` itself, else the one ``intent_<days>d`` of a model trained
    for other horizons (the DIPN input is the head's probability, whatever its horizon is called)."""
    if name in outputs:
        return outputs[name]
    head = name.split("_", 1)[0]
    found = [k for k in outputs if k.startswith(f"{head}_") and k.endswith("d") and k[len(head) + 1 : -1].isdigit()]
    if len(found) != 1:
        raise ValueError(
            f"sequence_outputs: expected one '{head}_<days>d' output (e.g. '{name}'); got {sorted(outputs)}"
        )
    return outputs[found[0]]


def offer_time_features(
    events: pd.DataFrame,
    customer_id: np.ndarray,
    offer_ts: np.ndarray,
    spec: FeatureSpec,
    chunk_rows: int = 4_000_000,
) -> SequenceFeatures:
    """Features of each (customer, offer time) pair as of that time, one row per offer.

    See :func:`iter_offer_time_features`; this concatenates its chunks.
    """
    parts = [f for _, f in iter_offer_time_features(events, customer_id, offer_ts, spec, chunk_rows=chunk_rows)]
    feats = SequenceFeatures.concat(parts)
    feats.customer_id = np.asarray(customer_id).copy()
    return feats


def iter_offer_time_features(
    events: pd.DataFrame,
    customer_id: np.ndarray,
    offer_ts: np.ndarray,
    spec: FeatureSpec,
    chunk_rows: int = 4_000_000,
    chunk_offers: int = 50_000,
):
    """Yield ``(slice of offers, SequenceFeatures)`` chunks, each row as of its offer's time.

    Vectorised: every offer's history (its customer's events strictly before the
    offer time) is shifted in time so all offers share one reference cutoff, and
    the offers become pseudo-customers of a single :func:`build_features_from_arrays` call
    (features depend on times only through differences to the cutoff and between
    events, so the shift is exact). Chunked to bound memory.
    """
    if not spec.fitted:
        raise ValueError("spec: expected a fitted FeatureSpec (the run's, fitted on training customers)")
    customer_id = np.asarray(customer_id)
    t_offer = to_micros(offer_ts)
    n = len(customer_id)
    # Events sorted by (customer, ts) with integer customer codes.
    codes_all, labels = pd.factorize(events["customer_id"].to_numpy(), sort=True)
    ts_all = to_micros(events["ts"].to_numpy())
    order = np.lexsort((ts_all, codes_all))
    codes, ts = codes_all[order], ts_all[order]
    etype = event_type_ids(events["event_type"])[order]
    amount = events["amount"].to_numpy(dtype=np.float64)[order]
    cust_start = np.searchsorted(codes, np.arange(len(labels)), side="left")
    offer_code = pd.Index(labels).get_indexer(customer_id)
    known = offer_code >= 0
    start = np.where(known, cust_start[np.maximum(offer_code, 0)], 0)
    # Events strictly before each offer: sort offers into the (customer, ts) order of the events,
    # offers first on ties; an offer's rank minus the offers ranked before it = events before it.
    kc, kt = offer_code[known], t_offer[known]
    all_code = np.concatenate([kc, codes])
    all_ts = np.concatenate([kt, ts])
    is_event = np.concatenate([np.zeros(len(kc), np.int8), np.ones(len(codes), np.int8)])
    rank = np.empty(len(all_code), dtype=np.int64)
    rank[np.lexsort((is_event, all_ts, all_code))] = np.arange(len(all_code))
    r_off = rank[: len(kc)]
    before = np.empty(len(kc), dtype=np.int64)  # offers ranked before each offer
    before[np.argsort(r_off, kind="stable")] = np.arange(len(kc))
    end = np.zeros(n, dtype=np.int64)
    end[known] = r_off - before
    end = np.where(known, end, start)
    count = end - start
    ref = int(t_offer.max()) + 1 if n else 0

    csum = np.concatenate([[0], np.cumsum(count)])
    a = 0
    while a < n or n == 0:
        # offers [a, b) with at most chunk_rows events / chunk_offers offers (at least one offer)
        b = max(a + 1, int(np.searchsorted(csum, csum[a] + chunk_rows, side="right")) - 1)
        b = min(b, n, a + chunk_offers)
        cnt = count[a:b]
        rows = np.repeat(start[a:b] - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt) + np.arange(cnt.sum())
        pseudo = np.repeat(np.arange(b - a, dtype=np.int64), cnt)
        shift = np.repeat(ref - t_offer[a:b], cnt)
        feats = build_features_from_arrays(
            pseudo, ts[rows] + shift, etype[rows], amount[rows], ref, spec, customers=np.arange(b - a, dtype=np.int64)
        )
        feats.customer_id = customer_id[a:b].copy()
        yield slice(a, b), feats
        a = b
        if n == 0:
            break


def order_value(feats: SequenceFeatures, fallback: float) -> np.ndarray:
    """Expected order value per customer for allocation: observed mean basket, else ``fallback``."""
    has, monetary = feats.raw_columns(["has_purchase", "monetary"]).T
    return np.where(has > 0, monetary, float(fallback))
