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
    return OmegaConf.create(
        {
            "tracking": {"registered_model": MODEL},
            "champion": {
                "alias": "champion",
                "metric": "val/churn_auroc",
                "direction": "maximize",
                "min_delta": 0.0,
                **champ,
            },
        }
    )


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
    assert (
        champion.main(
            ["promote", "--model", MODEL, "--version", "2", "--reason", "rollback test", "--tracking-uri", uri]
        )
        == 0
    )
    assert str(_holder(client).version) == "2"
    assert _holder(client).tags["champion.reason"] == "manual: rollback test"
    assert champion.main(["show", "--model", MODEL, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "version 2" in out and "manual: rollback test" in out
    assert champion.is_better(0.8, None) and not champion.is_better(float("nan"), 0.1)
    with pytest.raises(ValueError, match="direction"):
        champion.is_better(1.0, 0.5, "up")


# --------------------------------------------------------------------------- per data set (issue 13, item 1)


def _data_run(client, value, data, name, small=False):
    """A registered run on data set ``data`` (tag data.name, as the pipeline sets it)."""
    run_id = _registered_run(client, value, name=name)
    client.set_tag(run_id, "data.name", data)
    client.set_tag(run_id, "data.fingerprint", f"{data}-fp")
    if small:
        client.set_tag(run_id, "guards.small_data", "true")
        client.set_tag(run_id, "guards.reason", "val intent: 2 positives of 120 customers < guards.min_positives=20")
    return run_id


def test_a_model_of_one_data_set_never_becomes_the_champion_of_another(client, tmp_path):
    """Regression: `make train` (simulator) then `train.py data=myshop` registered into one model and the
    champion rule compared validation AUROC across different data; @champion then served the wrong model."""
    base = MODEL
    per_data = _cfg()
    per_data.tracking.registered_model = base
    sim_model, shop_model = champion.registry_name(per_data, "simulator"), champion.registry_name(per_data, "myshop")
    assert sim_model == f"{base}-simulator" and shop_model == f"{base}-myshop"

    sim = _data_run(client, 0.70, "simulator", sim_model)
    assert champion.check_run(client, sim, per_data, bundle_dir=tmp_path / "sim").promoted
    shop = _data_run(client, 0.90, "myshop", shop_model)  # registers into its own model: its own champion
    d = champion.check_run(client, shop, per_data, bundle_dir=tmp_path / "shop")
    assert d.promoted and d.model == shop_model and "first" in d.reason
    assert client.get_model_version_by_alias(sim_model, "champion").run_id == sim  # untouched
    assert champion.champion_bundle_dir(client, shop_model) == (tmp_path / "shop").resolve()
    assert set(champion.champions(client, base)) == {sim_model, shop_model}

    # Even when both register into one model (per_data_set=false, or an old store), no cross-data promotion.
    shared = _cfg()
    shared.tracking.per_data_set = False
    r1 = _data_run(client, 0.70, "simulator", MODEL)
    assert champion.check_run(client, r1, shared).promoted
    r2 = _data_run(client, 0.99, "myshop", MODEL)
    d = champion.check_run(client, r2, shared)
    assert d.decision == "skipped" and _holder(client).run_id == r1
    assert "'myshop'" in d.reason and "'simulator'" in d.reason and "not comparable" in d.reason
    assert client.get_run(r2).data.tags["champion.decision"] == "skipped"


def test_a_run_too_small_to_measure_is_skipped_with_the_reason(client):
    r1 = _data_run(client, 0.70, "shop", MODEL)
    assert champion.check_run(client, r1, _shared()).promoted
    r2 = _data_run(client, 0.95, "shop", MODEL, small=True)  # better on paper, but 2 positives in validation
    d = champion.check_run(client, r2, _shared())
    assert d.decision == "skipped" and _holder(client).run_id == r1
    tags = client.get_run(r2).data.tags
    assert tags["champion.decision"] == "skipped" and "too small to measure" in tags["champion.reason"]
    assert "2 positives" in tags["champion.reason"]
    r3 = _data_run(client, 0.75, "shop", MODEL)  # a measurable run is compared as usual
    assert champion.check_run(client, r3, _shared()).promoted


def test_show_lists_every_data_sets_champion(client, tmp_path, capsys):
    cfg = _cfg()
    for data, value in (("simulator", 0.7), ("cdnow", 0.8)):
        run = _data_run(client, value, data, champion.registry_name(cfg, data))
        champion.check_run(client, run, cfg, bundle_dir=tmp_path / data)
    uri = client.tracking_uri
    assert champion.main(["show", "--model", MODEL, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"{MODEL}-simulator@champion" in out and f"{MODEL}-cdnow@champion" in out and "data set cdnow" in out
    assert champion.main(["bundle", "--model", MODEL, "--data", "cdnow", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "cdnow").resolve())
    assert champion.main(["bundle", "--model", MODEL, "--data", "nope", "--tracking-uri", uri]) == 1
    assert f"{MODEL}-cdnow" in capsys.readouterr().err


def _shared():
    cfg = _cfg()
    cfg.tracking.per_data_set = False
    return cfg
