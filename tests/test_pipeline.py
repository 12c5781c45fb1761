"""End to end on tiny data: simulator -> features -> model -> MLflow run -> ONNX bundle."""

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from sellerlift.pipeline import run
from sellerlift.runtime import session, verify_bundle


@pytest.mark.parametrize("model", ["gru", "transformer"])
def test_tiny_run_tracks_exports_and_registers(tiny_config, tmp_path, model):
    cfg = tiny_config(f"model={model}")
    result = run(cfg)

    # MLflow: a finished run with params, stable metric names, tags, plots and the bundle.
    client = MlflowClient(cfg.logger.tracking_uri)
    r = client.get_run(result.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["model.name"] == model
    for head in ("intent", "churn"):
        for m in ("auroc", "ap", "ece", "precision_top20"):
            assert np.isfinite(r.data.metrics[f"test/{head}_{m}"])
        assert f"ceiling/{head}_auroc" in r.data.metrics
    assert r.data.tags["data.fingerprint"].startswith("sim-")
    assert "git.commit" in r.data.tags
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/intent_roc_calibration.png", "plots/churn_roc_calibration.png"} <= artifacts
    assert (tmp_path / "mlruns" / "mlflow.db").exists()
    versions = client.search_model_versions("name='sellerlift-sequence-simulator'")  # one registry per data set
    assert versions and versions[0].run_id == result.run_id

    # Bundle: manifest with sha256, feature spec, metrics; ONNX loads and is in parity.
    manifest = verify_bundle(result.bundle_dir)
    assert "feature_spec" not in manifest and manifest["files"]["feature_spec"]["path"] == "feature_spec.json"
    assert json.loads((result.bundle_dir / "feature_spec.json").read_text())["max_len"] == 32  # the only copy
    assert manifest["metrics"] == pytest.approx(result.metrics)
    assert "segments" in manifest["files"]
    assert result.bundle_extra["onnx_parity_max_abs_diff"] <= 1e-5
    sess = session(result.bundle_dir / "sequence.onnx")
    assert [i.name for i in sess.get_inputs()] == ["event_type", "numeric", "length", "aggregates"]

    # Customer value: the head's outputs, its manifest section, CLV metrics next to BG/NBD + Gamma-Gamma.
    assert [o.name for o in sess.get_outputs()] == [
        "intent_7d",
        "churn_90d",
        "value_90d",
        "purchases_90d",
        "customer_embedding",
    ]
    assert manifest["value"]["outputs"] == ["value_90d", "purchases_90d"] and manifest["value"]["cold_start"]
    assert len(manifest["value"]["reference_quantiles"]) == 1001
    for target in ("value", "value_truth"):
        for m in ("rmse", "spearman", "top_decile_share", "mean_ratio"):
            assert np.isfinite(r.data.metrics[f"test/{target}_{m}"]), (target, m)
        lo, hi = r.data.metrics[f"test/{target}_spearman_ci_low"], r.data.metrics[f"test/{target}_spearman_ci_high"]
        assert lo <= r.data.metrics[f"test/{target}_spearman"] <= hi
        assert f"compare/{target}_spearman_minus_bgnbd_gg_ci_low" in r.data.metrics
    assert {"tables/clv_comparison.csv", "tables/clv_comparison.md"} <= {
        a.path for a in client.list_artifacts(result.run_id, "tables")
    }
    kids = client.search_runs([r.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    gg = [c for c in kids if c.data.tags.get("model.name") == "bgnbd_gg"]
    assert gg and np.isfinite(gg[0].data.metrics["test/value_truth_spearman"])
    assert gg[0].data.metrics["fitted/gamma_gamma_q"] > 0
    # DIPN registered per data set, with a signature and a description, like the sequence model
    dipn = client.search_model_versions("name='sellerlift-dipn-simulator'")
    assert dipn and "DIPN" in client.get_registered_model("sellerlift-dipn-simulator").description
    assert dipn[0].description

    # The default extras on the simulator: the observable ceiling next to the true one, the promotion engine,
    # the enduring response and the action segments, each in the bundle and the run.
    for head in ("intent", "churn"):
        assert 0.5 < r.data.metrics[f"obs_ceiling/{head}_auroc"] <= 1.0
        assert f"gap_closed/{head}_auroc" in r.data.metrics
    assert {"dipn", "enduring", "action_segments"} <= set(manifest["files"])
    assert manifest["enduring"]["monotone"] == {
        "conversion": True,
        "retention": False,
        "revenue": False,
        "later_revenue": False,
    }
    assert manifest["enduring"]["onnx_parity_max_abs_diff"] <= 1e-5
    assert manifest["enduring"]["later_coupons"] is False  # the default
    children = client.search_runs([r.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert {"dipn", "enduring"} <= {c.data.tags.get("model.kind") for c in children}


def test_crashed_run_is_marked_failed(tiny_config):
    cfg = tiny_config("model.module.lr=1e9", "trainer.max_epochs=1")
    # An absurd learning rate makes the loss non-finite; the run must say so and be FAILED.
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        cfg.trainer.limit_train_batches = 20
        run(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.logger.experiment_name).experiment_id])
    assert runs and runs[0].info.status == "FAILED"
    assert "error" in runs[0].data.tags


def test_tiny_run_other_horizons_rolling_intervals_guard_and_data_set_in_mlflow(tiny_config, tmp_path):
    """Issue 13: names follow the horizons, rolling adds rows, every test metric has an interval, a run too small
    to measure is flagged and never champion, and MLflow knows the data set (input, experiment kind, model docs)."""
    import mlflow

    cfg = tiny_config(
        "data.horizons.churn_days=30",
        "data.rolling.cutoffs=2",
        "data.rolling.step_days=30",
        "evaluation.bootstrap=200",
        "guards.min_positives=40",
        "promotion.enduring.later_coupons=true",
    )
    result = run(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    r = client.get_run(result.run_id)

    # item 2: the ONNX outputs, the manifest and the prior follow data.horizons
    sess = session(result.bundle_dir / "sequence.onnx")
    assert [o.name for o in sess.get_outputs()] == [
        "intent_7d",
        "churn_30d",
        "value_30d",
        "purchases_30d",
        "customer_embedding",
    ]
    manifest = verify_bundle(result.bundle_dir)
    assert manifest["horizons"] == {"intent_days": 7, "churn_days": 30}
    assert set(manifest["cold_start"]) >= {"intent_7d", "churn_30d"}
    assert manifest["enduring"]["later_coupons"] is True  # trained on the later coupons, exported with parity
    assert manifest["enduring"]["onnx_parity_max_abs_diff"] <= 1e-5
    assert r.data.tags["data.horizons"] == "intent_7d/churn_30d"
    assert not any(k.startswith("ceiling/") for k in r.data.metrics)  # the simulator's truth is for 90 days

    # item 3: positives per split, intervals on every test metric, the guard, the champion skipped
    counts = manifest["label_counts"]
    assert counts["val"]["intent"]["positives"] == r.data.metrics["data/val_intent_positives"]
    for head in ("intent", "churn"):
        for m in ("auroc", "ap", "ece", "precision_top20"):
            lo, v, hi = (r.data.metrics.get(f"test/{head}_{m}{s}") for s in ("_ci_low", "", "_ci_high"))
            assert lo is not None and hi is not None and lo <= hi, (head, m)
    assert "compare/churn_auroc_minus_best_baseline_ci_low" in r.data.metrics
    assert r.data.tags["compare.churn_auroc_best_baseline"] in {"logreg", "random_forest", "lightgbm", "bgnbd"}
    assert r.data.tags["guards.small_data"] == "true" and "guards.min_positives=40" in r.data.tags["guards.reason"]
    assert r.data.tags["champion.decision"] == "skipped" and "too small" in r.data.tags["champion.reason"]
    assert manifest["guards"]["small_data"] is True

    # item 4: the earlier cutoff's rows are in the training data (the printed count is in the dataset profile)
    ds = r.inputs.dataset_inputs
    assert len(ds) == 1
    profile = json.loads(ds[0].dataset.profile)
    assert profile["extra_training_rows"] > 0 and profile["customers_with_history"] == sum(
        c["intent"]["customers"] for c in counts.values()
    )

    # item 5: the data set as an MLflow dataset input, the experiment a model-training one, model docs
    d = ds[0].dataset
    assert d.name == "simulator" and d.digest == r.data.tags["data.fingerprint"][:36]
    assert profile["rows"] > 0 and profile["customers"] > 0
    assert profile["fingerprint"] == r.data.tags["data.fingerprint"]
    assert {t.key: t.value for t in ds[0].tags}["mlflow.data.context"] == "training"
    exp = client.get_experiment(r.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    children = client.search_runs(
        [r.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}' and tags.`model.kind` = 'baseline'"
    )
    assert children and all(c.inputs.dataset_inputs[0].dataset.name == "simulator" for c in children)
    assert all(
        "test/churn_auroc_ci_low" in c.data.metrics
        for c in children
        if c.data.tags.get("model.task") != "customer_value"
    )
    assert any(c.data.tags.get("model.task") == "customer_value" for c in children)  # BG/NBD + Gamma-Gamma
    name = "sellerlift-sequence-simulator"  # per data set
    rm = client.get_registered_model(name)
    assert "data set 'simulator'" in rm.description and "churn_30d" in rm.description
    (mv,) = client.search_model_versions(f"name='{name}'")
    assert mv.run_id == result.run_id and "too few labels" in mv.description
    sig = mlflow.models.get_model_info(mv.source).signature
    assert [s.name for s in sig.outputs.inputs] == [
        "intent_7d",
        "churn_30d",
        "value_30d",
        "purchases_30d",
        "customer_embedding",
    ]
    assert "value_30d = expected spend in the next 30 days" in rm.description
    assert [s.name for s in sig.inputs.inputs] == ["event_type", "numeric", "length", "aggregates"]
