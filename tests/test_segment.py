"""RFM segmentation: k selection on known blobs, NumPy assignment == sklearn, JSON, names, summary."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans

from sellerlift.k_selection import KSelection, elbow_k, gap_k, plot_k_selection, select_k
from sellerlift.segment import (
    RFM_FEATURES,
    SegmentModel,
    fit_segments,
    name_segments,
    segment_summary,
)

CENTRES_LOG = np.array(
    [  # log1p-space centres of 5 RFM archetypes: recency, frequency, monetary, tenure
        [np.log1p(10), np.log1p(12), np.log1p(150), np.log1p(300)],  # high value
        [np.log1p(250), np.log1p(2), np.log1p(30), np.log1p(320)],  # lapsed
        [np.log1p(20), np.log1p(1), np.log1p(25), np.log1p(25)],  # new
        [np.log1p(40), np.log1p(6), np.log1p(8), np.log1p(200)],  # promotion-sensitive
        [np.log1p(120), np.log1p(1), np.log1p(90), np.log1p(150)],  # occasional
    ]
)


def blob_rfm(n_per=150, sd=0.08, seed=0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CENTRES_LOG)), n_per)
    L = CENTRES_LOG[labels] + rng.normal(0, sd, size=(len(labels), 4))
    rfm = pd.DataFrame(np.expm1(L), columns=RFM_FEATURES)
    rfm.index.name = "customer_id"
    return rfm, labels


@pytest.fixture(scope="module")
def blobs():
    return blob_rfm()


@pytest.fixture(scope="module")
def fitted(blobs):
    rfm, _ = blobs
    return fit_segments(rfm, ks=range(3, 9), rule="gap", seed=0, gap_refs=5)


def test_gap_and_silhouette_recover_true_k():
    rng = np.random.default_rng(1)
    centres = rng.uniform(-10, 10, size=(5, 4))
    X = np.vstack([c + rng.normal(0, 0.5, size=(120, 4)) for c in centres])
    sel = select_k(X, ks=range(3, 9), seed=0, gap_refs=5)
    assert isinstance(sel, KSelection)
    assert sel.k_silhouette == 5
    assert sel.k_gap == 5
    assert sel.k_elbow == 5
    assert len(sel.gap) == len(sel.gap_se) == len(sel.ks) == 6
    assert all(np.diff(sel.inertia) < 0)


def test_fit_segments_recovers_archetypes(blobs, fitted):
    rfm, truth = blobs
    model, sel = fitted
    assert sel.chosen == model.k == 5 and sel.rule == "gap"
    labels = model.assign(rfm)
    # Each true blob maps onto exactly one segment.
    assert pd.crosstab(truth, labels).gt(0).sum(axis=1).eq(1).all()
    names = dict(zip(truth, model.assign_names(rfm)))
    assert names[0] == "high value"
    assert names[1] == "lapsed"
    assert names[2] == "new / low engagement"
    assert names[3] == "promotion-sensitive"
    assert names[4] == "occasional"
    assert model.names[0] == "high value"  # segments ordered by value


def test_assign_equals_sklearn_predict(blobs, fitted):
    rfm, _ = blobs
    model, _ = fitted
    Xs = model.transform(rfm)
    km = KMeans(n_clusters=6, n_init=3, random_state=3).fit(Xs)
    m6 = SegmentModel(
        model.feature_names,
        model.scaler_mean,
        model.scaler_scale,
        km.cluster_centers_.tolist(),
        [f"s{i}" for i in range(6)],
        6,
    )
    rng = np.random.default_rng(0)
    new = rfm.sample(frac=1.0, random_state=0) * rng.uniform(0.5, 2.0, size=rfm.shape)  # unseen points too
    for data in (rfm, new):
        assert (m6.assign(data) == km.predict(m6.transform(data))).all()
    assert (m6.assign(rfm.to_numpy()) == m6.assign(rfm)).all()  # array input, same column order


def test_json_round_trip(blobs, fitted):
    rfm, _ = blobs
    model, _ = fitted
    back = SegmentModel.from_json(json.loads(json.dumps(model.to_json())))
    assert back == model
    assert (back.assign(rfm) == model.assign(rfm)).all()


def test_names_unique_and_deterministic(blobs, fitted):
    model, _ = fitted
    assert len(set(model.names)) == len(model.names) == model.k
    again, _ = fit_segments(blobs[0], ks=range(3, 9), rule="gap", seed=0, gap_refs=5)
    assert again.names == model.names and again.centroids == model.centroids
    # Many similar clusters: still unique names.
    many = name_segments(np.zeros((4, 4)), RFM_FEATURES)
    assert len(set(many)) == 4


def test_rules_and_fixed_k(blobs):
    rfm, _ = blobs
    m, sel = fit_segments(rfm, rule=4, seed=0)
    assert m.k == 4 and sel.chosen == 4 and sel.ks == [4]
    m, sel = fit_segments(rfm, ks=range(3, 7), rule="silhouette", seed=0, gap_refs=2)
    assert m.k == sel.k_silhouette
    with pytest.raises(ValueError, match="rule"):
        fit_segments(rfm, rule="best")


def test_summary_shares_sum_to_one(blobs, fitted):
    rfm, _ = blobs
    model, _ = fitted
    rng = np.random.default_rng(0)
    churn, intent = rng.random(len(rfm)) < 0.3, rng.random(len(rfm)) < 0.1
    s = segment_summary(rfm, model.assign_names(rfm), churn=churn, intent=intent)
    assert s["share"].sum() == pytest.approx(1.0)
    assert s["n"].sum() == len(rfm)
    assert {"segment", "mean_recency_days", "mean_frequency", "mean_monetary", "churn_rate", "intent_rate"} <= set(
        s.columns
    )
    assert s["churn_rate"].between(0, 1).all()
    assert segment_summary(rfm, model.assign(rfm))["churn_rate"].isna().all()


def test_too_few_rows_names_parameter():
    rfm, _ = blob_rfm(n_per=1)  # 5 rows < k = 10
    with pytest.raises(ValueError, match=r"ks goes up to k=10 .* only 5 row"):
        fit_segments(rfm, ks=range(3, 11))
    with pytest.raises(ValueError, match="ks"):
        select_k(np.zeros((2, 4)), ks=range(3, 5))


def test_bad_inputs():
    rfm, _ = blob_rfm(n_per=10)
    with pytest.raises(ValueError, match="missing column"):
        fit_segments(rfm.drop(columns="monetary"), rule=3)
    neg = rfm.copy()
    neg.iloc[0, 0] = -1.0
    with pytest.raises(ValueError, match="negative"):
        fit_segments(neg, rule=3)


def test_elbow_and_gap_rules():
    assert elbow_k([1, 2, 3, 4, 5, 6], [100, 40, 15, 12, 10, 9]) == 3
    # 1-SE rule: the first k whose gap is within one s.e. of the next one.
    assert gap_k([3, 4, 5, 6], [0.5, 0.9, 0.95, 0.96], [0.1, 0.1, 0.1, 0.1]) == 4
    assert gap_k([3, 4, 5], [0.1, 0.5, 0.9], [0.01, 0.01, 0.01]) == 5  # never satisfied: argmax


def test_plot_k_selection(tmp_path, fitted):
    _, sel = fitted
    out = plot_k_selection(sel, tmp_path / "plots" / "k.png")
    assert out.exists() and out.stat().st_size > 1000


def test_rfm_from_features():
    ev = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2],
            "ts": pd.to_datetime(["2024-01-01", "2024-01-05", "2024-02-10", "2024-01-03", "2024-01-20"]),
            "event_type": ["purchase", "purchase", "purchase", "visit", "view"],
            "amount": [10.0, 30.0, 99.0, 0.0, 0.0],
        }
    )
    from sellerlift.features import build_features

    rfm = build_features(ev, "2024-01-31").rfm()  # the RFM the segments see
    assert rfm.loc[1].tolist() == [26.0, 2, 20.0, 30.0]
    assert rfm.loc[2].tolist() == [28.0, 0, 0.0, 28.0]  # never bought: recency from first event


MONEY_WORDS = ("value", "spend", "promotion", "basket")


def test_without_order_values_segments_are_named_without_money_and_fit_without_monetary(blobs):
    rfm, _ = blobs
    no_money = rfm.assign(monetary=0.0)  # a clickstream without order values: monetary is 0 for everyone
    model, _ = fit_segments(no_money, ks=range(3, 7), rule="silhouette", seed=0)
    assert "monetary" not in model.feature_names  # a constant feature carries nothing
    assert not any(w in name for name in model.names for w in MONEY_WORDS), model.names
    assert len(set(model.names)) == model.k and not any("," in n for n in model.names)
    assert (model.assign(no_money) >= 0).all()  # assigns from the features it was fitted on
    # the old archetype for recent frequent customers, without its money claim
    assert "most active" in name_segments(
        np.array([[-2.0, 2.0, 0.0], [2.0, -2.0, 1.0]]), ["recency_days", "frequency", "tenure_days"]
    )


def test_segment_names_never_contain_commas(blobs):
    rfm, _ = blobs
    names = name_segments(np.random.default_rng(0).normal(0, 1, (10, 4)), RFM_FEATURES)
    assert not any("," in n for n in names), names
    model, _ = fit_segments(rfm, rule=8, seed=0)
    assert not any("," in n for n in model.names), model.names
