"""Names follow the configured horizons: ONNX outputs, scorer columns, report text, manifest (issue 13, item 2)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from sellerlift import export
from sellerlift.constants import (
    head_description,
    horizons_of_outputs,
    score_outputs,
    sequence_outputs,
    truth_columns,
)
from sellerlift.features import AGGREGATES, EVENT_NUMERIC, FeatureSpec, build_features
from sellerlift.models.networks import GRUEncoder, SequenceNet
from sellerlift.runtime import BundleError, Runtime, write_bundle
from sellerlift.schema import EVENT_TYPES

CUTOFF = pd.Timestamp("2025-06-01")


def synthetic_events(n_customers: int = 300, days: int = 240, seed: int = 0) -> pd.DataFrame:
    """A contract events table: visits and purchases of ``n_customers`` over ``days`` days before 2025-09-01."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(1.0, 0.05, n_customers)  # purchases per day
    rows = []
    start = pd.Timestamp("2025-09-01") - pd.Timedelta(days=days)
    for c in range(n_customers):
        first = rng.integers(0, days // 2)
        n = rng.poisson(rate[c] * (days - first)) + 1
        t = np.sort(rng.uniform(first, days, n))
        kind = np.where(rng.random(n) < 0.5, "purchase", "visit")
        for ti, k in zip(t, kind):
            rows.append(
                (c, start + pd.Timedelta(days=float(ti)), k, float(rng.gamma(2, 20)) if k == "purchase" else 0.0)
            )
    ev = pd.DataFrame(rows, columns=["customer_id", "ts", "event_type", "amount"])
    ev["event_type"] = pd.Categorical(ev["event_type"], categories=list(EVENT_TYPES))
    ev["seller_id"] = 0
    return ev.sort_values(["customer_id", "ts"]).reset_index(drop=True)


def test_output_names_follow_the_horizons():
    assert score_outputs() == ("intent_7d", "churn_90d")  # the defaults: every older bundle's names
    h = {"intent_days": 3, "churn_days": 30}
    assert score_outputs(h) == ("intent_3d", "churn_30d")
    assert sequence_outputs(h) == ("intent_3d", "churn_30d", "customer_embedding")
    assert horizons_of_outputs(["intent_3d", "churn_30d"]) == h
    assert head_description("churn", h) == "no purchase in the next 30 days"
    assert head_description("intent", {"intent_days": 1}) == "buys in the next 1 day"
    assert truth_columns(h) == {"intent": "p_intent_3d", "churn": "p_churn_30d"}
    with pytest.raises(ValueError, match=r"expected 2 names \['intent_<days>d', 'churn_<days>d'\]"):
        horizons_of_outputs(["churn_90d", "intent_7d"])


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Two real bundles of one untrained GRU: exported for 7 / 30 days, and the old way (default names, no
    horizons in the manifest)."""
    root = tmp_path_factory.mktemp("horizons")
    events = synthetic_events()
    spec = FeatureSpec(max_len=16)
    feats = build_features(events, CUTOFF, spec)
    spec.fit(feats)
    torch.manual_seed(0)
    net = SequenceNet(GRUEncoder(d_model=8, hidden=8), d_model=8, head_hidden=8).eval()
    h = {"intent_days": 7, "churn_days": 30}
    out = {}
    for name, horizons in (("h30", h), ("old", None)):
        d = root / name
        names = score_outputs(horizons) if horizons else None
        onnx_path = export.export_sequence_onnx(
            net, d / "sequence.onnx", len(EVENT_NUMERIC), len(AGGREGATES), score_names=names
        )
        prior = dict(zip(score_outputs(horizons), (0.05, 0.8)))
        extra = {"data": "shop", "cold_start": prior, **({"horizons": horizons} if horizons else {})}
        write_bundle(d, {"sequence": onnx_path}, spec, {}, extra=extra)
        out[name] = d
    return events, out


def test_runtime_and_scorer_use_the_bundles_names_and_old_bundles_still_load(bundles):
    from sellerlift import score

    events, b = bundles
    rt = Runtime.load(b["h30"])
    assert rt.outputs == ("intent_7d", "churn_30d") and rt.horizons == {"intent_days": 7, "churn_days": 30}
    assert rt.describe()["outputs"] == ["intent_7d", "churn_30d"] and rt.describe()["horizons"]["churn_days"] == 30
    got = score.score_events(rt, events, CUTOFF)
    assert "churn_30d" in got.columns and "churn_90d" not in got.columns
    assert got["churn_30d"].between(0, 1).all()
    new = score.score_events(rt, events, CUTOFF, customers=np.array([10_000]))  # no history: the prior
    assert new["churn_30d"].iloc[0] == pytest.approx(0.8) and bool(new["prior"].iloc[0])

    old = Runtime.load(b["old"])  # exported before names followed the horizons: intent_7d / churn_90d
    assert old.outputs == ("intent_7d", "churn_90d") and old.horizons == {"intent_days": 7, "churn_days": 90}
    assert {"intent_7d", "churn_90d"} <= set(score.score_events(old, events, CUTOFF).columns)
    # the same weights, only the names differ
    np.testing.assert_allclose(got["churn_30d"], score.score_events(old, events, CUTOFF)["churn_90d"], atol=1e-6)


def test_a_manifest_whose_horizons_disagree_with_the_model_is_refused(bundles, tmp_path):
    import shutil

    _, b = bundles
    d = tmp_path / "bad"
    shutil.copytree(b["h30"], d)
    m = json.loads((d / "manifest.json").read_text())
    m["horizons"] = {"intent_days": 7, "churn_days": 90}
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"churn_30d.*horizons.*expected outputs \['intent_7d', 'churn_90d'\]"):
        Runtime.load(d)


def test_the_promotion_models_inputs_accept_any_horizon():
    from sellerlift.promotion_features import dipn_inputs

    feats = build_features(
        synthetic_events(20),
        CUTOFF,
        FeatureSpec(max_len=4).fit(build_features(synthetic_events(20), CUTOFF, FeatureSpec(max_len=4))),
    )
    n = len(feats.length)
    a = dipn_inputs(feats, {"intent_7d": np.full(n, 0.1), "churn_90d": np.full(n, 0.6)})
    b = dipn_inputs(feats, {"intent_7d": np.full(n, 0.1), "churn_30d": np.full(n, 0.6)})
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="expected one 'churn_<days>d' output"):
        dipn_inputs(feats, {"intent_7d": np.full(n, 0.1)})


def test_report_text_follows_the_horizons():
    from sellerlift.report import _metric_table, run_horizons

    h = run_horizons({"data.horizons.intent_days": "7", "data.horizons.churn_days": "30", "model.name": "gru"})
    assert h == {"intent_days": 7, "churn_days": 30}
    table = _metric_table({"test/churn_auroc": 0.8, "test/churn_auroc_ci_low": 0.7, "test/churn_auroc_ci_high": 0.9}, h)
    assert table["target"].iloc[0] == "churn (no purchase in the next 30 days)"
    assert table["test 95 % CI"].iloc[0] == "[0.700, 0.900]"
    assert run_horizons({}) == {"intent_days": 7, "churn_days": 90}  # runs from before horizons were params
