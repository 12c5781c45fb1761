"""Baselines: NumPy metrics match torchmetrics, every baseline beats chance, MLflow child runs."""

import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from sellerlift import baselines as bl
from sellerlift import metrics
from sellerlift.models.metrics import binary_metrics
from sellerlift.pipeline import prepare
from sellerlift.stages.baselines import train_baselines
from sellerlift.stages.context import RunContext

SMALL_SIM = [
    "data.source.n_customers=2500",
    "data.source.n_sellers=5",
    "data.source.progress=false",
    "data.max_len=16",
    "baselines.models.random_forest.n_estimators=40",
]


def _torchmetrics(y, p, top_fraction=0.2):
    out = {}
    for name, metric in binary_metrics(top_fraction).items():
        metric.update(torch.as_tensor(p, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long))
        out[name] = float(metric.compute())
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_metrics_match_torchmetrics(seed):
    rng = np.random.default_rng(seed)
    n = [1000, 337, 5000][seed]
    latent = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * latent - 1))).astype(np.int64)
    p = (1 / (1 + np.exp(-latent - rng.normal(scale=0.7, size=n)))).astype(np.float32)
    p[:3] = [0.0, 1.0, 1 / 15]  # edges of the calibration bins
    ours, ref = metrics.binary_metrics(y, p), _torchmetrics(y, p)
    assert set(ours) == set(ref) == {"auroc", "ap", "ece", "precision_top20"}
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], abs=2e-6), k


def test_metrics_with_tied_scores_and_degenerate_labels():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 800)
    p = np.round(rng.random(800), 1).astype(np.float32)  # heavy ties, as from trees or BG/NBD
    ours, ref = metrics.binary_metrics(y, p), _torchmetrics(y, p)
    for k in ("auroc", "ap", "ece", "precision_top20"):  # one tie rule for training and test numbers
        assert ours[k] == pytest.approx(ref[k], abs=2e-6), k
    # Ties at the top-k threshold are shared: expected precision under random tie-breaking.
    assert metrics.precision_at_top([1, 0, 1, 0, 0], [0.9, 0.5, 0.5, 0.5, 0.1], 0.4) == pytest.approx(0.5 + 0.5 / 3)
    one_class = metrics.binary_metrics(np.ones(10), np.linspace(0, 1, 10))
    assert np.isnan(one_class["auroc"]) and one_class["precision_top20"] == 1.0


@pytest.fixture(scope="module")
def small_sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    cfg = compose_config(SMALL_SIM, root=root)
    tables = instantiate(cfg.data.source).load()
    return cfg, tables, prepare(tables, cfg)


def test_every_baseline_beats_random_on_the_same_split(small_sim):
    cfg, tables, prep = small_sim
    data = bl.baseline_data(prep, tables.events, tables.cutoff, cfg.data.horizons)
    assert (data.split == prep.split).all() and (data.targets == prep.targets).all()
    assert len(data.bgnbd) == len(prep.split) and np.isfinite(data.bgnbd.to_numpy()).all()
    assert set(cfg.baselines.models) == {"logreg", "random_forest", "lightgbm", "bgnbd"}
    for name, mcfg in cfg.baselines.models.items():
        res = bl.fit_and_evaluate(instantiate(mcfg), data)
        assert res.test_probs.shape == ((prep.split == 2).sum(), 2)
        assert ((res.test_probs >= 0) & (res.test_probs <= 1)).all()
        for head in ("intent", "churn"):
            assert res.metrics[f"test/{head}_auroc"] > 0.6, (name, head, res.metrics)
            assert 0 <= res.metrics[f"test/{head}_ece"] < 0.2, (name, head)


def test_baselines_stage_logs_child_runs(small_sim, tmp_path):
    from omegaconf import open_dict

    cfg, tables, prep = small_sim
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.baselines.predictions_dir = str(tmp_path / "preds")
    logger = instantiate(cfg.logger)
    ctx = RunContext(cfg, tmp_path, tables, prep, tmp_path / "bundle", logger, logger.run_id)
    # Stand-in for the sequence stage: its metric names, so the comparison has a sequence row.
    seq_names = {f"test/{h}_{m}" for h in ("intent", "churn") for m in ("auroc", "ap", "ece", "precision_top20")}
    ctx.metrics.update({k: 0.5 for k in seq_names})
    results = train_baselines(ctx)
    assert set(results) == {"logreg", "random_forest", "lightgbm", "bgnbd"}

    client = MlflowClient(cfg.logger.tracking_uri)
    runs = client.search_runs([logger.experiment_id], f"tags.mlflow.parentRunId = '{logger.run_id}'")
    # The churn/intent baselines and the customer-value baseline (BG/NBD + Gamma-Gamma), each its own run.
    assert {r.data.tags["model.name"] for r in runs} == set(results) | set(cfg.baselines.value_models)
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["model.kind"] == "baseline"
        assert r.data.tags["data.fingerprint"] == tables.fingerprint
        if r.data.tags.get("model.task") == "customer_value":
            assert {"test/value_rmse", "test/value_spearman"} <= set(r.data.metrics), r.data.metrics
            continue
        assert seq_names <= set(r.data.metrics), r.data.tags["model.name"]
        assert r.data.params["model.name"] == r.data.tags["model.name"]
        assert r.data.params["data.split_seed"] == str(cfg.data.split_seed)
    main = {a.path for a in client.list_artifacts(logger.run_id, "tables")}
    assert {"tables/model_comparison.md", "tables/calibration_bands.csv"} <= main
    assert "compare/churn_auroc_minus_best_baseline" in client.get_run(logger.run_id).data.metrics
    # Baseline metrics never enter the bundle's manifest metrics.
    assert set(ctx.metrics) == seq_names
    assert list((tmp_path / "preds").glob("*.parquet"))


def _compare_module():
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("compare_models", REPO / "benchmarks" / "compare_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paired_bootstrap_separates_a_better_model():
    import pandas as pd

    cm = _compare_module()
    rng = np.random.default_rng(0)
    n = 2000
    latent = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * latent))).astype(float)
    preds = pd.DataFrame(
        {
            "y_churn": y,
            "good__churn": latent + rng.normal(scale=0.3, size=n),
            "weak__churn": latent + rng.normal(scale=2.0, size=n),
        }
    )
    b = cm.paired_bootstrap(preds, "good", "weak", "churn", "auroc", n_boot=200)
    assert b["diff"] > 0 and b["ci95"][0] > 0 and b["p_a_not_better"] == 0.0
    same = cm.paired_bootstrap(preds, "good", "good", "churn", "auroc", n_boot=50)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0]


@pytest.mark.slow
def test_compare_models_quick(tmp_path):
    """The benchmark end to end on small data: JSON with every row, markdown with every table."""
    import json

    cm = _compare_module()
    out, doc = tmp_path / "cmp.json", tmp_path / "cmp.md"
    cm.main(
        [
            "--quick",
            "--root",
            str(tmp_path),
            "--out",
            str(out),
            "--doc",
            str(doc),
            "--bootstrap",
            "50",
            "--settings",
            "simulator",
            "cdnow@1997-10-01",
            "--variants",
            "gru",
            "gru+wide",
        ]
    )
    report = json.loads(out.read_text())
    for setting in ("simulator", "cdnow@1997-10-01"):
        s = report["settings"][setting]
        models = s["per_seed"][0]["models"]
        assert {"gru", "gru+wide", "logreg", "random_forest", "lightgbm", "bgnbd", "mean", "stack"} <= set(models)
        assert models["lightgbm"]["churn_auroc"] > 0.6
        lo, hi = models["gru"]["churn_auroc_ci"]
        assert lo <= models["gru"]["churn_auroc"] <= hi
        assert len(s["paired"]) == 2 * 2 * 4  # (intent, churn) x (AUROC, AP) x (2 variants + 2 ensembles)
    assert "ceiling" in report["settings"]["simulator"]["per_seed"][0]["models"]
    text = doc.read_text()
    assert "## Simulator" in text and "## CDNOW at 1997-10-01" in text and "ceiling (true probabilities)" in text
    assert "Levers at a glance" in text and "ensemble: stacked logistic" in text
