"""Sweeps: one MLflow parent run per Hydra/Optuna sweep, every trial's run nested under it.

The fast test sweeps 2 trials of a stub model stage (real Hydra multirun, Optuna sweeper, callback,
one process per trial, MLflow nesting, best-trial summary; no training). The slow test sweeps 2
trials of the real sequence model.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIGS, REPO, TINY, compose_config
from mlflow.tracking import MlflowClient


def fake_sequence_stage(ctx) -> None:
    """A model stage that trains nothing: metrics that grow with the learning rate (so the best is known)."""
    lr = float(ctx.cfg.model.module.lr)
    metrics = {
        "val/churn_auroc": 0.5 + lr,
        "test/churn_auroc": 0.5 + lr / 2,
        "val/intent_auroc": 0.6,
        "test/intent_auroc": 0.6,
    }
    ctx.metrics.update(metrics)
    ctx.log_metrics(metrics)


def _sweep(tmp_path, *overrides, timeout=900):
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "hparams_search=sequence_optuna",
        "hydra.sweeper.n_trials=2",
        *overrides,
        "tracking.register=false",
        f"paths.root_dir={tmp_path}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sweep: MLflow parent run" in proc.stdout and "2 trial(s) under parent run" in proc.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("sellerlift-simulator").experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep.kind") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and len(runs) == 3
    assert parent.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in children)
    names = [{k for k in c.data.metrics if k.startswith(("val/", "test/"))} for c in children]
    assert names[0] == names[1] and {"val/churn_auroc", "test/churn_auroc"} <= names[0]  # UI compare lines up
    best = max(children, key=lambda c: c.data.metrics["val/churn_auroc"])
    assert parent.data.metrics["best/val/churn_auroc"] == pytest.approx(best.data.metrics["val/churn_auroc"])
    assert parent.data.tags["sweep.best_run_id"] == best.info.run_id
    assert best.data.tags["sweep.best"] == "true"
    assert "search.model.module.lr" in parent.data.params
    assert {c.data.tags["sweep.trial"] for c in children} == {"0", "1"}
    assert all("model.module.lr=" in c.data.tags["sweep.overrides"] for c in children)
    # each trial used its own sampled learning rate
    assert len({c.data.params["model.module.lr"] for c in children}) == 2
    sweep_dir = parent.data.tags["sweep.dir"]
    assert Path(f"{sweep_dir}/mlflow_parent_run_id").read_text().strip() == parent.info.run_id
    return parent, children


def test_sweep_config_composes():
    cfg = compose_config(["hparams_search=sequence_optuna"], root=REPO)
    assert cfg.optimized_metric.startswith("val/")
    assert cfg.extras == ["sellerlift.stages.segments.fit_segments_stage"]
    assert (CONFIGS / "hparams_search" / "sequence_optuna.yaml").exists()


def test_two_trials_nest_under_one_parent(tmp_path):
    _sweep(
        tmp_path,
        "model.stage=test_sweep.fake_sequence_stage",
        "extras=[]",
        "report.enabled=false",
        "data.source.n_customers=300",
        "data.source.n_sellers=3",
        "data.source.progress=false",
    )


@pytest.mark.slow
def test_two_trained_trials_nest_under_one_parent(tmp_path):
    _, children = _sweep(tmp_path, *TINY, "data.source.n_customers=400", "extras=[]", "report.enabled=false")
    assert all("ceiling/churn_auroc" in c.data.metrics for c in children)
