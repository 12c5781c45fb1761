"""Multi-process training (Lightning DDP on CPU, gloo, 2 processes): one MLflow run, one bundle."""

import subprocess
import sys

import pytest
from conftest import REPO, TINY
from mlflow.tracking import MlflowClient

from sellerlift.runtime import verify_bundle


@pytest.mark.slow
def test_ddp_cpu_two_processes_one_run(tmp_path):
    tiny = [o for o in TINY if not o.startswith("trainer=")]
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2",
        *tiny,
        "extras=[sellerlift.stages.segments.fit_segments_stage]",
        f"paths.root_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1, [r.info.run_id for r in runs]  # one run for the job, not one per process
    r = runs[0]
    assert r.info.status == "FINISHED" and r.data.params["trainer.devices"] == "2"
    assert "val/churn_auroc" in r.data.metrics and "test/churn_auroc" in r.data.metrics
    bundles = list((tmp_path / "bundles").iterdir())
    assert [b.name for b in bundles] == [r.info.run_id]  # only rank 0 wrote a bundle
    assert verify_bundle(bundles[0])["run_id"] == r.info.run_id
    assert len(client.search_model_versions("name='sellerlift-sequence-simulator'")) == 1
