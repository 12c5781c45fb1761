"""The registry alias @champion moves only when a run's validation metric beats the holder's."""

import contextlib

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from sellerlift import champion

MODEL = "sellerlift-sequence"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # One store for the module (creating an MLflow sqlite store takes seconds); one model name per test.
    root = tmp_path_factory.mktemp("mlflow")
    c = MlflowClient(f"sqlite:///{root}/mlflow.db")
    c.create_experiment("t", artifact_location=f"file://{root}/artifacts")
    return c


@pytest.fixture
def client(store, request):
    global MODEL
    MODEL = f"sellerlift-sequence-{request.node.name}"
    return store


def _registered_run(client, value, metric="val/churn_auroc", name=None):
    """A finished run with ``metric`` and a registered model version of it (no training needed)."""
    name = name or MODEL
    exp = client.get_experiment_by_name("t").experiment_id
    run = client.create_run(exp)
    if value is not None:
        client.log_metric(run.info.run_id, metric, value)
    with contextlib.suppress(Exception):  # already registered by an earlier call
        client.create_registered_model(name)
    client.create_model_version(name, f"{run.info.artifact_uri}/onnx_model", run.info.run_id)
    return run.info.run_id


def _cfg(**champ):
    return OmegaConf.create({"tracking": {"registered_model": MODEL},
                             "champion": {"alias": "champion", "metric": "val/churn_auroc", "direction": "maximize",
                                          "min_delta": 0.0, **champ}})


def _holder(client):
    return client.get_model_version_by_alias(MODEL, "champion")


def test_alias_moves_only_on_improvement(client, tmp_path):
    r1 = _registered_run(client, 0.70)
    d = champion.check_run(client, r1, _cfg(), bundle_dir=tmp_path / "b1")
    assert d.promoted and "first" in d.reason and _holder(client).run_id == r1

    r2 = _registered_run(client, 0.65)  # worse: stays with r1
    d = champion.check_run(client, r2, _cfg(), bundle_dir=tmp_path / "b2")
    assert d.decision == "kept" and _holder(client).run_id == r1
    assert "does not beat champion v1" in d.reason

    r3 = _registered_run(client, 0.70)  # a tie is not an improvement
    assert champion.check_run(client, r3, _cfg()).decision == "kept" and _holder(client).run_id == r1

    r4 = _registered_run(client, 0.75)  # better: the alias moves, the reason says from whom
    d = champion.check_run(client, r4, _cfg(), bundle_dir=tmp_path / "b4")
    assert d.promoted and d.previous_version == "1" and _holder(client).run_id == r4

    # why, on the run and on the model version; the bundle is findable from the alias
    tags = client.get_run(r2).data.tags
    assert tags["champion.decision"] == "kept" and "0.6500" in tags["champion.reason"]
    mv = _holder(client)
    assert mv.tags["champion.decision"] == "promoted" and mv.tags["champion.previous_version"] == "1"
    assert champion.champion_bundle_dir(client, MODEL) == (tmp_path / "b4").resolve()


def test_min_delta_and_minimize(client):
    r1 = _registered_run(client, 0.30, metric="val/churn_ece")
    cfg = _cfg(metric="val/churn_ece", direction="minimize", min_delta=0.01)
    assert champion.check_run(client, r1, cfg).promoted
    r2 = _registered_run(client, 0.295, metric="val/churn_ece")  # lower, but not by more than min_delta
    assert champion.check_run(client, r2, cfg).decision == "kept"
    r3 = _registered_run(client, 0.25, metric="val/churn_ece")
    assert champion.check_run(client, r3, cfg).promoted and _holder(client).run_id == r3


def test_run_without_metric_or_version(client):
    r1 = _registered_run(client, 0.7)
    champion.check_run(client, r1, _cfg())
    r2 = _registered_run(client, None)  # no validation metric: never promoted
    d = champion.check_run(client, r2, _cfg())
    assert d.decision == "kept" and "no finite" in d.reason and _holder(client).run_id == r1
    exp = client.get_experiment_by_name("t").experiment_id
    r3 = client.create_run(exp).info.run_id  # nothing registered (tracking.register=false)
    assert champion.check_run(client, r3, _cfg()) is None
    assert client.get_run(r3).data.tags["champion.decision"] == "skipped"


def test_manual_promote_and_cli(client, tmp_path, capsys):
    r1 = _registered_run(client, 0.8)
    champion.check_run(client, r1, _cfg(), bundle_dir=tmp_path / "b1")
    _registered_run(client, 0.6)
    uri = client.tracking_uri
    assert champion.main(["promote", "--model", MODEL, "--version", "2", "--reason", "rollback test",
                          "--tracking-uri", uri]) == 0
    assert str(_holder(client).version) == "2"
    assert _holder(client).tags["champion.reason"] == "manual: rollback test"
    assert champion.main(["show", "--model", MODEL, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "version 2" in out and "manual: rollback test" in out
    assert champion.is_better(0.8, None) and not champion.is_better(float("nan"), 0.1)
    with pytest.raises(ValueError, match="direction"):
        champion.is_better(1.0, 0.5, "up")
