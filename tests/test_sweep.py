"""A 2-trial Optuna sweep: one MLflow parent run, two nested trial runs with the same metric names."""

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from conftest import CONFIGS, REPO, TINY, compose_config


def test_sweep_config_composes():
    cfg = compose_config(["hparams_search=sequence_optuna"], root=REPO)
    assert cfg.optimized_metric.startswith("val/")
    assert cfg.extras == ["sellerlift.stages.segments.fit_segments_stage"]
    assert (CONFIGS / "hparams_search" / "sequence_optuna.yaml").exists()


def test_two_trials_nest_under_one_parent(tmp_path):
    cmd = [sys.executable, str(REPO / "train.py"), "hparams_search=sequence_optuna", "hydra.sweeper.n_trials=2",
           *TINY, "tracking.register=false", f"paths.root_dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sweep: MLflow parent run" in proc.stdout and "2 trial(s) under parent run" in proc.stdout

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("sellerlift-simulator")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep.kind") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and len(runs) == 3
    assert parent.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in children)
    metric_names = [set(k for k in c.data.metrics if k.startswith(("val/", "test/"))) for c in children]
    assert metric_names[0] == metric_names[1] and "val/churn_auroc" in metric_names[0]
    best = max(c.data.metrics["val/churn_auroc"] for c in children)
    assert parent.data.metrics["best/val/churn_auroc"] == pytest.approx(best)
    assert parent.data.tags["sweep.best_run_id"] in {c.info.run_id for c in children}
    assert "search.model.module.lr" in parent.data.params
    assert {c.data.tags["sweep.trial"] for c in children} == {"0", "1"}
    sweep_dir = parent.data.tags["sweep.dir"]
    assert open(f"{sweep_dir}/mlflow_parent_run_id").read().strip() == parent.info.run_id
