import sys

import numpy as np
import pandas as pd
import pytest

from sellerlift.features import AGGREGATES, EVENT_NUMERIC, FeatureSpec, build_features
from sellerlift.labels import make_labels, split_customers
from sellerlift.schema import EVENT_TYPES

CUTOFF = pd.Timestamp("2025-02-01")


def events_for(counts: dict, start="2025-01-01"):
    rows = []
    for cid, n in counts.items():
        for i in range(n):
            rows.append(
                (
                    cid,
                    1,
                    pd.Timestamp(start) + pd.Timedelta(hours=5 * i + cid),
                    "purchase" if i % 3 == 2 else "visit",
                    10.0 * (i % 3 == 2),
                )
            )
    return pd.DataFrame(rows, columns=["customer_id", "seller_id", "ts", "event_type", "amount"])


def test_features_module_does_not_import_torch():
    code = "import sys, sellerlift.features, sellerlift.schema, sellerlift.labels; print('torch' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("n_events, max_len", [(0, 4), (1, 4), (4, 4), (9, 4)])
def test_padding_and_truncation(n_events, max_len):
    ev = events_for({1: n_events, 2: 2})
    feats = build_features(ev, CUTOFF, FeatureSpec(max_len=max_len), customers=np.array([1, 2]))
    row = 0
    assert feats.length[row] == min(n_events, max_len)
    assert feats.event_type.shape == (2, max_len)
    k = feats.length[row]
    assert (feats.event_type[row, k:] == 0).all() and (feats.numeric[row, k:] == 0).all()
    assert (feats.event_type[row, :k] > 0).all()
    if n_events:
        # the most recent events are kept, oldest first: ages decrease along the row
        ages = feats.numeric[row, :k, EVENT_NUMERIC.index("log_age_days")]
        assert np.all(np.diff(ages) <= 0)
        full = build_features(ev, CUTOFF, FeatureSpec(max_len=64), customers=np.array([1]))
        np.testing.assert_array_equal(feats.numeric[row, :k], full.numeric[0, n_events - k : n_events])
    else:
        assert (feats.aggregates[row] == 0).all()


def test_events_at_or_after_cutoff_are_ignored():
    ev = events_for({1: 3})
    late = pd.DataFrame(
        {
            "customer_id": [1, 1],
            "seller_id": [1, 1],
            "ts": [CUTOFF, CUTOFF + pd.Timedelta(days=3)],
            "event_type": ["purchase"] * 2,
            "amount": [99.0, 99.0],
        }
    )
    a = build_features(ev, CUTOFF)
    b = build_features(pd.concat([ev, late]), CUTOFF)
    np.testing.assert_array_equal(a.event_type, b.event_type)
    np.testing.assert_array_equal(a.aggregates, b.aggregates)


def test_unsorted_and_string_ids_give_same_features_as_sorted():
    ev = events_for({1: 5, 2: 3, 3: 7})
    a = build_features(ev, CUTOFF)
    shuffled = ev.sample(frac=1.0, random_state=0)
    b = build_features(shuffled, CUTOFF)
    np.testing.assert_array_equal(a.numeric, b.numeric)
    as_str = ev.assign(customer_id=ev["customer_id"].map({1: "kunde-ä", 2: "b2", 3: "c3"}))
    c = build_features(as_str, CUTOFF, customers=np.array(["kunde-ä", "b2", "c3"]))
    np.testing.assert_array_equal(a.numeric, c.numeric)
    assert list(c.customer_id) == ["kunde-ä", "b2", "c3"]


def test_rfm_aggregates_by_hand():
    ev = pd.DataFrame(
        {
            "customer_id": [5, 5, 5],
            "seller_id": 1,
            "ts": pd.to_datetime(["2025-01-01", "2025-01-11", "2025-01-21"]),
            "event_type": ["purchase", "visit", "purchase"],
            "amount": [10.0, 0.0, 30.0],
        }
    )
    rfm = build_features(ev, CUTOFF).raw_aggregates.iloc[0]
    assert rfm["recency_days"] == 11 and rfm["frequency"] == 2 and rfm["monetary"] == 20
    assert rfm["tenure_days"] == 31 and rfm["total_spend"] == 40 and rfm["count_visit"] == 1
    assert list(build_features(ev, CUTOFF).raw_aggregates.columns) == list(AGGREGATES)


def test_scaling_fitted_on_train_keeps_padding_zero_and_is_json_round_trip():
    ev = events_for({1: 5, 2: 1, 3: 9})
    spec = FeatureSpec(max_len=6)
    raw = build_features(ev, CUTOFF, spec)
    spec.fit(raw)
    scaled = spec.transform(raw)
    assert (scaled.numeric[~scaled.mask()] == 0).all()
    again = FeatureSpec.from_json(spec.to_json())
    np.testing.assert_array_equal(build_features(ev, CUTOFF, again).numeric, scaled.numeric)


def test_unknown_event_type_is_named():
    ev = events_for({1: 2}).astype({"event_type": object})
    ev.loc[0, "event_type"] = "teleport"
    with pytest.raises(ValueError, match="teleport"):
        build_features(ev, CUTOFF)


def test_labels_windows_and_horizon_check():
    ev = pd.DataFrame(
        {
            "customer_id": [1, 1, 2, 3],
            "seller_id": 1,
            "ts": [
                CUTOFF - pd.Timedelta(days=1),
                CUTOFF + pd.Timedelta(days=2),
                CUTOFF + pd.Timedelta(days=30),
                CUTOFF + pd.Timedelta(days=95),
            ],
            "event_type": ["purchase"] * 4,
            "amount": 1.0,
        }
    )
    lab = make_labels(ev, CUTOFF, np.array([1, 2, 3, 4]))
    assert lab["intent"].tolist() == [1, 0, 0, 0]
    assert lab["churn"].tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="horizon"):
        make_labels(ev, CUTOFF, np.array([1]), churn_days=200)


def test_split_is_disjoint_seeded_and_sized():
    ids = np.arange(1000)
    s = split_customers(ids, seed=3)
    assert np.bincount(s).tolist() == [700, 150, 150]
    np.testing.assert_array_equal(s, split_customers(ids, seed=3))
    assert not np.array_equal(s, split_customers(ids, seed=4))
    with pytest.raises(ValueError, match="fractions"):
        split_customers(ids, (0.5, 0.5, 0.5))


def test_event_vocabulary_is_the_contract():
    assert FeatureSpec().event_types == EVENT_TYPES


@pytest.mark.parametrize("customers", [None, np.arange(3), np.array([4, 0, 2, 9])])
def test_array_entry_point_equals_the_table_entry_point(customers):
    """The server's path (plain arrays, ids 0..n-1 looked up without a hash) gives the table path's numbers."""
    ev = events_for({0: 5, 1: 2, 2: 7, 4: 3, 6: 1}).sample(frac=1.0, random_state=0)  # unsorted on purpose
    spec = FeatureSpec(max_len=4)
    spec.fit(build_features(ev, CUTOFF, spec))
    from sellerlift.features import build_features_from_arrays, event_type_ids, to_micros

    a = build_features(ev, CUTOFF, spec, customers=customers)
    b = build_features_from_arrays(
        ev["customer_id"].to_numpy(),
        to_micros(ev["ts"].to_numpy()),
        event_type_ids(ev["event_type"]),
        ev["amount"].to_numpy(),
        int(to_micros(np.datetime64(CUTOFF, "us"))),
        spec,
        customers=customers,
    )
    for name in ("customer_id", "event_type", "numeric", "length", "aggregates", "raw"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    if customers is not None and len(customers) == 3:
        assert b.length.tolist() == [4, 2, 4]  # customers 4 and 6 are not requested and are dropped
    assert list(b.raw_aggregates.columns) == list(AGGREGATES)
    np.testing.assert_array_equal(b.raw_columns(["frequency"])[:, 0], b.raw_aggregates["frequency"].to_numpy())
