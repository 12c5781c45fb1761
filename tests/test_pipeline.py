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
    versions = client.search_model_versions("name='sellerlift-sequence'")
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
