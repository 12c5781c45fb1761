"""How sure are the numbers: positives per split, bootstrap intervals, a guard on tiny data (issue 13, item 3)."""

import numpy as np
import pytest
from conftest import compose_config

from sellerlift import bootstrap as B
from sellerlift import metrics as M
from sellerlift.labels import SmallDataError, format_counts, label_counts, small_splits
from sellerlift.pipeline import check_guards


def _data(n=600, rate=0.1, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(float)
    p = np.clip(np.round(rng.random(n) * 0.6 + 0.3 * y, 2), 0, 1)  # rounded: many ties
    return y, p


def test_vectorised_resample_metrics_equal_the_metrics_of_the_resampled_data():
    y, p = _data()
    W = B.bootstrap_weights(len(y), 25, np.random.default_rng(1))
    got = {
        "auroc": B.weighted_auroc(y, p, W),
        "ap": B.weighted_ap(y, p, W),
        "ece": B.weighted_ece(y, p, W),
        "precision_top20": B.weighted_precision_at_top(y, p, W, 0.2),
    }
    for b in range(len(W)):
        idx = np.repeat(np.arange(len(y)), W[b].astype(int))
        ref = M.binary_metrics(y[idx], p[idx])
        for k, v in got.items():
            assert v[b] == pytest.approx(ref[k], abs=1e-12), (b, k)
    assert W.sum(axis=1).tolist() == [len(y)] * len(W)


def test_intervals_cover_the_estimate_and_shrink_with_more_data():
    y, p = _data(400)
    ci = B.head_metric_intervals(np.stack([y, 1 - y], 1), np.stack([p, 1 - p], 1), "test/", n_boot=300)
    auc, ece = M.binary_metrics(y, p)["auroc"], M.binary_metrics(y, p)["ece"]
    assert ci["test/intent_auroc_ci_low"] < auc < ci["test/intent_auroc_ci_high"]
    assert ci["test/intent_ece_ci_low"] <= ece <= ci["test/intent_ece_ci_high"]  # bias-shifted: ECE* is biased up
    assert set(ci) >= {
        f"test/churn_{m}_ci_{s}" for m in ("auroc", "ap", "ece", "precision_top20") for s in ("low", "high")
    }
    y2, p2 = _data(8000, seed=3)
    ci2 = B.head_metric_intervals(np.stack([y2, y2], 1), np.stack([p2, p2], 1), "", n_boot=300)
    assert (ci2["intent_auroc_ci_high"] - ci2["intent_auroc_ci_low"]) < (
        ci["test/intent_auroc_ci_high"] - ci["test/intent_auroc_ci_low"]
    ) / 2


def test_paired_bootstrap_sees_a_real_gap_and_no_gap_between_equals():
    y, p = _data(3000, seed=5)
    rng = np.random.default_rng(0)
    worse = 0.5 * p + 0.5 * rng.random(len(p))
    d = B.paired_difference(y, p, worse, "auroc", n_boot=400)
    assert d["diff"] > 0 and d["ci_low"] > 0 and d["p_not_better"] < 0.01
    same = B.paired_difference(y, p, p, "auroc", n_boot=200)
    assert same["diff"] == 0 and same["ci_low"] == same["ci_high"] == 0
    ece = B.paired_difference(y, p, worse, "ece", n_boot=200)  # for ECE lower is better
    assert np.isfinite(ece["p_not_better"])


def test_two_positives_get_an_interval_as_wide_as_the_unit_interval():
    """The issue's clickstream: 2 intent positives in validation, 4 in test; AUROC 0.300 means nothing."""
    y = np.zeros(60)
    y[[3, 40, 41, 50]] = 1
    p = np.random.default_rng(2).random(60)
    ci = B.head_metric_intervals(np.stack([y, y], 1), np.stack([p, p], 1), "test/", n_boot=500)
    assert ci["test/intent_auroc_ci_high"] - ci["test/intent_auroc_ci_low"] > 0.5


def test_counts_per_split_and_the_guard():
    targets = np.array([[1, 0], [0, 1], [0, 1], [1, 1], [0, 1], [0, 0]], dtype=np.float32)
    split = np.array([0, 0, 1, 1, 2, 2])
    counts = label_counts(targets, split)
    assert counts["val"]["intent"] == {"customers": 2, "positives": 1, "negatives": 1}
    assert "intent positives train 1 / val 1 / test 0" in format_counts(counts)
    small = small_splits(counts, 1)
    assert "test intent: 0 positives of 2 customers" in small  # and churn's rarer class is the negatives
    assert small_splits(counts, 0) == []

    warn = compose_config(["guards.min_positives=1"])
    assert "test intent: 0 positives" in check_guards(warn, counts)
    refuse = compose_config(["guards.min_positives=1", "guards.on_small=refuse"])
    with pytest.raises(SmallDataError, match=r"guards.min_positives=1.*data.rolling.cutoffs.*guards.on_small=warn"):
        check_guards(refuse, counts)
    with pytest.raises(ValueError, match="guards.on_small='maybe': expected 'warn' or 'refuse'"):
        check_guards(compose_config(["guards.on_small=maybe"]), counts)
