"""Rolling cutoffs: earlier cutoffs add training rows and no label window reaches the evaluation period (item 4)."""

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config
from test_horizons import synthetic_events

from sellerlift.data.sources import Tables
from sellerlift.labels import make_labels, rolling_cutoffs
from sellerlift.pipeline import prepare

CUTOFF = pd.Timestamp("2025-07-01")


def _tables(events):
    return Tables("synthetic", events, CUTOFF, "synthetic-fp")


def _cfg(*extra):
    return compose_config(["data.max_len=16", "data.horizons.churn_days=30", *extra])


def test_earlier_cutoffs_never_let_a_label_window_pass_the_evaluation_cutoff():
    cuts = rolling_cutoffs(CUTOFF, {"intent_days": 7, "churn_days": 30}, 4, 14)
    assert cuts == [CUTOFF - pd.Timedelta(days=d) for d in (30, 44, 58)]
    assert all(c + pd.Timedelta(days=30) <= CUTOFF for c in cuts)
    assert rolling_cutoffs(CUTOFF, {"churn_days": 30}, 1, 14) == []
    with pytest.raises(ValueError, match="data.rolling.cutoffs=0: expected an integer >= 1"):
        rolling_cutoffs(CUTOFF, {"churn_days": 30}, 0, 14)
    with pytest.raises(ValueError, match="data.rolling.step_days=0"):
        rolling_cutoffs(CUTOFF, {"churn_days": 30}, 2, 0)


def test_rolling_adds_training_rows_of_training_customers_only():
    events = synthetic_events(400, days=300)
    one = prepare(_tables(events), _cfg())
    three = prepare(_tables(events), _cfg("data.rolling.cutoffs=3", "data.rolling.step_days=20"))
    assert one.extra is None
    # validation and test are the latest cutoff's customers, unchanged
    assert np.array_equal(one.feats.customer_id, three.feats.customer_id)
    assert np.array_equal(one.split, three.split) and np.array_equal(one.targets, three.targets)
    ex = three.extra
    assert len(ex.targets) > 0.5 * (one.split == 0).sum()  # many more training rows
    train_ids = set(one.feats.customer_id[one.split == 0])
    assert set(ex.feats.customer_id) <= train_ids  # no validation or test customer's history trains the model
    cuts = sorted(set(pd.to_datetime(ex.cutoff)))
    assert cuts == [CUTOFF - pd.Timedelta(days=50), CUTOFF - pd.Timedelta(days=30)]
    feats, targets, split = three.training_rows()
    assert (split == 0).sum() == (one.split == 0).sum() + len(ex.targets) and len(targets) == len(split)
    # the labels are those of each row's own cutoff
    c = pd.Timestamp(cuts[-1])
    rows = np.flatnonzero(pd.to_datetime(ex.cutoff) == c)
    ref = make_labels(events, c, ex.feats.customer_id[rows], 7, 30, check=False)
    np.testing.assert_array_equal(ex.targets[rows], ref[["intent", "churn"]].to_numpy(np.float32))
    # features of a row see only events before its own cutoff
    assert (ex.feats.raw_aggregates["tenure_days"].to_numpy() > 0).all()


def test_nothing_at_or_after_the_evaluation_cutoff_reaches_the_extra_rows():
    events = synthetic_events(300, days=300)
    cfg = _cfg("data.rolling.cutoffs=4", "data.rolling.step_days=10")
    base = prepare(_tables(events), cfg).extra
    future = events["ts"] >= CUTOFF
    changed = events.copy()  # rewrite the whole evaluation period: every purchase becomes a visit and vice versa
    flip = {"purchase": "visit", "visit": "purchase"}
    changed.loc[future, "event_type"] = changed.loc[future, "event_type"].map(flip).astype(events["event_type"].dtype)
    changed.loc[future, "amount"] = 999.0
    other = prepare(_tables(changed), cfg).extra
    np.testing.assert_array_equal(base.targets, other.targets)
    np.testing.assert_array_equal(base.feats.aggregates, other.feats.aggregates)
    np.testing.assert_array_equal(base.feats.numeric, other.feats.numeric)
