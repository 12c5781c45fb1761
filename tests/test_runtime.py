"""The inference runtime: batching never changes a score, cold start gets a calibrated prior, bundles verify."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate

from sellerlift import export
from sellerlift.allocate import allocate_lagrangian, random_instance
from sellerlift.constants import SCORE_OUTPUTS
from sellerlift.features import AGGREGATES, EVENT_NUMERIC, FeatureSpec, build_features
from sellerlift.models.networks import GRUEncoder, SequenceNet
from sellerlift.pipeline import cold_start_prior, prepare
from sellerlift.runtime import BundleError, Runtime, SequenceModel, allocate_offers, session, write_bundle

SMALL_SIM = ["data.source.n_customers=6000", "data.source.n_sellers=5", "data.source.progress=false", "data.max_len=16"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    cfg = compose_config(SMALL_SIM, root=tmp_path_factory.mktemp("sim"))
    tables = instantiate(cfg.data.source).load()
    return tables, prepare(tables, cfg)


@pytest.fixture(scope="module")
def bundle(prepared, tmp_path_factory):
    """A real bundle of an untrained GRU (the runtime's arithmetic needs no training), with the run's prior."""
    tables, prep = prepared
    out = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    net = SequenceNet(GRUEncoder(d_model=16, hidden=16), d_model=16, head_hidden=16).eval()
    onnx_path = export.export_sequence_onnx(net, out / "sequence.onnx", len(EVENT_NUMERIC), len(AGGREGATES))
    write_bundle(out, {"sequence": onnx_path}, prep.spec, {}, extra={"cold_start": cold_start_prior(prep)})
    return out


def test_length_sorted_batches_equal_one_full_width_call(prepared, bundle):
    _, prep = prepared
    feats = prep.feats.take(np.arange(900))
    sess = session(bundle / "sequence.onnx")
    ref = sess.run(
        list(SCORE_OUTPUTS),
        {
            "event_type": feats.event_type,
            "numeric": feats.numeric,
            "length": feats.length,
            "aggregates": feats.aggregates,
        },
    )
    for batch in (1, 7, 256, 4096):
        got = SequenceModel(sess, batch=batch).predict(feats)
        for name, r in zip(SCORE_OUTPUTS, ref):
            np.testing.assert_allclose(got[name], r.reshape(-1), atol=1e-6, rtol=0, err_msg=f"batch={batch}")


def test_cold_start_prior_is_calibrated_on_held_out_newcomers(prepared):
    """The prior is the label rate of the newest training customers; held-out newcomers buy and churn at it."""
    _, prep = prepared
    prior = cold_start_prior(prep)
    tenure = prep.feats.raw_columns(["tenure_days"])[:, 0]
    held_out = (prep.split != 0) & (tenure <= prior["max_tenure_days"])
    assert held_out.sum() >= 100 and prior["customers"] >= 300
    for i, name in enumerate(SCORE_OUTPUTS):
        p, n1, n2 = prior[name], prior["customers"], int(held_out.sum())
        observed = prep.targets[held_out, i].mean()
        se = np.sqrt(max(p * (1 - p), 1e-4) * (1 / n1 + 1 / n2))
        assert abs(observed - p) <= 3.5 * se, (name, observed, p)
    overall = prep.targets[prep.split == 0].mean(axis=0)
    assert prior["intent_7d"] != pytest.approx(overall[0], abs=1e-6)  # newcomers are not the average customer


def test_cold_start_customers_get_the_prior_and_say_so(prepared, bundle):
    tables, prep = prepared
    rt = Runtime.load(bundle)
    ids = prep.feats.customer_id[:5]
    cold = np.array([10**12, 10**12 + 1])  # never seen: no events at all
    feats = rt.features_of(tables.events, tables.cutoff, customers=np.concatenate([ids, cold]))
    scores = rt.score(feats)
    assert scores["prior"].tolist() == [False] * 5 + [True, True]
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in SCORE_OUTPUTS:
        assert scores[name][-1] == np.float32(manifest["cold_start"][name])
    raw = rt.sequence.predict(feats)  # what the network itself says for an empty sequence: not used
    assert not np.allclose(raw["intent_7d"][-2:], scores["intent_7d"][-2:])


def test_runtime_refuses_tampered_or_inconsistent_bundles(bundle, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    spec = json.loads((bad / "feature_spec.json").read_text())
    spec["numeric_mean"] = []  # unfitted
    (bad / "feature_spec.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="sha256"):
        Runtime.load(bad)
    with pytest.raises(BundleError, match="no manifest.json"):
        Runtime.load(tmp_path / "nowhere")


def test_features_from_request_arrays_equal_features_from_the_events_table(prepared, bundle):
    tables, prep = prepared
    from sellerlift.runtime import EventBatch
    from sellerlift.schema import EVENT_TYPES

    rt = Runtime.load(bundle)
    ids = prep.feats.customer_id[:50]
    ev = tables.events[tables.events["customer_id"].isin(ids) & (tables.events["ts"] < tables.cutoff)]
    pos = pd.Index(ids).get_indexer(ev["customer_id"])
    batch = EventBatch(
        n=len(ids),
        cust=pos.astype(np.int64),
        ts=ev["ts"].to_numpy().astype("datetime64[us]"),
        type_code=np.array([EVENT_TYPES.index(t) for t in ev["event_type"].astype(str)], np.int8),
        amount=ev["amount"].to_numpy(np.float64),
        as_of=np.full(len(ids), np.datetime64(tables.cutoff, "us")),
    )
    a, b = rt.features(batch), build_features(ev, tables.cutoff, rt.spec, customers=ids)
    for field in ("event_type", "numeric", "length", "aggregates"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    np.testing.assert_array_equal(np.minimum(batch.events_used(), rt.spec.max_len), a.length)


def test_allocate_offers_is_the_lagrangian_with_per_customer_figures():
    inst = random_instance(3000, seed=4)
    levels = inst["levels"]
    offers = allocate_offers(inst["p"], inst["value"], inst["margin"], levels, budget=2000.0)
    ref = allocate_lagrangian(inst["p"], inst["value"], inst["margin"], levels, budget=2000.0)
    assert np.array_equal(offers.allocation.level_index, ref.level_index)
    assert offers.spend.sum() == pytest.approx(ref.spend) and offers.profit.sum() == pytest.approx(ref.profit)
    assert np.array_equal(offers.level_pct, np.asarray(levels, float)[ref.level_index])


def test_feature_spec_is_only_in_its_file(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "feature_spec" not in manifest and "inputs" not in manifest and "outputs" not in manifest
    assert FeatureSpec.from_json(json.loads((bundle / "feature_spec.json").read_text())).fitted
