"""CDNOW through the whole pipeline: `train.py data=cdnow`, other cutoffs, cutoffs that cannot work."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from cdnow_files import cdnow_source
from conftest import REPO, compose_config
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from sellerlift.data.cdnow import cdnow_path

try:
    cdnow_path()
    HAVE_CDNOW = True
except FileNotFoundError:
    HAVE_CDNOW = False
pytestmark = pytest.mark.skipif(not HAVE_CDNOW, reason="pip install --no-deps lifetimes==0.11.3")

# The 2,357-customer CDNOW sample keeps these runs small; the protocol is the same as for the master file.
TINY_CDNOW = [
    "data=cdnow",
    "data.source.which=sample",
    "trainer=debug",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "data.max_len=16",
    "data.datamodule.batch_size=64",
    "model.module.net.d_model=16",
    "model.module.net.head_hidden=16",
    "tracking.register=false",
    "baselines.models.random_forest.n_estimators=30",
    "baselines.plots=false",
    "report.enabled=false",
    # CDNOW has no promotions table: the promotion engine (an extra of its own) does not apply.
    "extras=[sellerlift.stages.segments.fit_segments_stage,sellerlift.stages.baselines.train_baselines]",
]
HEAD_METRICS = {f"test/{h}_{m}" for h in ("intent", "churn") for m in ("auroc", "ap", "ece", "precision_top20")}


def test_train_py_data_cdnow_end_to_end(tmp_path):
    from sellerlift.runtime import verify_bundle

    env = {**os.environ, "SELLERLIFT_ROOT": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *TINY_CDNOW],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("sellerlift-cdnow")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    main = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(main) == 1 and main[0].info.status == "FINISHED"
    m = main[0]
    assert m.data.tags["data.name"] == "cdnow" and m.data.tags["data.fingerprint"].startswith("cdnow-")
    assert m.data.tags["data.cutoff"].startswith("1997-10-01")
    assert set(m.data.metrics) >= HEAD_METRICS
    assert not any(k.startswith("ceiling/") for k in m.data.metrics)  # no truth on real data
    names = {"logreg", "random_forest", "lightgbm", "bgnbd", "bgnbd_gg"}  # bgnbd_gg: the customer-value baseline
    assert {c.data.tags["model.name"] for c in children} == names
    for c in children:
        assert c.data.tags["mlflow.parentRunId"] == m.info.run_id and c.data.tags["model.kind"] == "baseline"
        if c.data.tags.get("model.task") == "customer_value":
            assert {"test/value_rmse", "test/value_spearman"} <= set(c.data.metrics)
            continue
        assert set(c.data.metrics) >= HEAD_METRICS
        assert c.data.metrics["test/churn_auroc"] > 0.6
    manifest = verify_bundle(tmp_path / "bundles" / m.info.run_id)
    assert manifest["data"] == "cdnow" and {"sequence", "segments"} <= set(manifest["files"])
    assert set(manifest["metrics"]) >= HEAD_METRICS

    # The same mapping config drives the batch scorer: the CDNOW file scored as itself, integer ids kept.
    out = tmp_path / "scores.csv"
    bundle = tmp_path / "bundles" / m.info.run_id
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sellerlift.score",
            "--bundle",
            str(bundle),
            "--mapping",
            str(REPO / "configs" / "data" / "cdnow.yaml"),
            "--events",
            str(cdnow_path("master")),
            "--as-of",
            "1997-10-01",
            "--out",
            str(out),
            "--no-progress",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = pd.read_csv(out)
    assert len(scores) == 23_570 and scores["customer_id"].dtype == np.int64
    assert scores["n_events"].sum() == 49_086  # purchases before 1997-10-01 in the master file


@pytest.mark.parametrize("cutoff", ["1997-06-01", "1998-01-01"])
def test_every_component_works_for_other_cutoffs(cutoff, tmp_path):
    """Source, features, labels, split, segments and baselines at a cutoff other than the default."""
    from sellerlift.pipeline import prepare
    from sellerlift.stages.baselines import train_baselines
    from sellerlift.stages.context import RunContext
    from sellerlift.stages.segments import fit_segments_stage

    cfg = compose_config([*TINY_CDNOW, f"data.source.cutoff={cutoff}"], root=tmp_path)
    tables = instantiate(cfg.data.source).load()
    assert tables.cutoff == pd.Timestamp(cutoff) and tables.truth is None
    assert tables.fingerprint.endswith(cutoff.replace("-", ""))
    prep = prepare(tables, cfg)
    before = tables.events.loc[tables.events["ts"] < tables.cutoff, "customer_id"].unique()
    assert np.array_equal(np.sort(before), prep.feats.customer_id)
    assert (prep.feats.raw_aggregates["recency_days"] > 0).all()
    assert 0 < prep.targets[:, 0].mean() < 0.2 and 0.5 < prep.targets[:, 1].mean() < 1
    assert np.bincount(prep.split, minlength=3).min() > 0.1 * len(prep.split)

    ctx = RunContext(cfg, tmp_path, tables, prep, tmp_path)
    fit_segments_stage(ctx)
    assert (tmp_path / "segments.json").exists()
    results = train_baselines(ctx)
    for name, res in results.items():
        assert res.metrics["test/churn_auroc"] > 0.6, (cutoff, name)


def test_default_protocol_matches_the_literature():
    src = cdnow_source(which="sample", horizons={"intent_days": 7, "churn_days": 90})
    assert src.cutoff_for(None) == pd.Timestamp("1997-10-01")  # history through 1997-09-30
    t = src.load()
    assert t.name == "cdnow" and (t.events["seller_id"] == 0).all()
    assert t.fingerprint == src.fingerprint(t.cutoff) and t.fingerprint.startswith("cdnow-")
    assert t.fingerprint != cdnow_source(which="sample", cutoff="1998-01-01").fingerprint(pd.Timestamp("1998-01-01"))
    assert t.fingerprint != cdnow_source(which="master").fingerprint(t.cutoff)  # another file
    cov = t.coverage  # every CDNOW customer bought in 1997-Q1: nobody is left out at this cutoff
    assert cov.customers == cov.customers_before == 2_357 and cov.events_before + cov.events_after == 6_919


@pytest.mark.parametrize(
    "overrides, keys",
    [
        (["data.source.cutoff=1998-06-01"], ["data.source.cutoff=1998-06-01", "data.horizons.churn_days=90"]),
        (["data.horizons.churn_days=400"], ["data.source.cutoff=1997-10-01", "data.horizons.churn_days=400"]),
        (["data.source.cutoff=1996-06-01"], ["data.source.cutoff=1996-06-01", "choose a later cutoff"]),
    ],
)
def test_cutoffs_outside_the_data_fail_early_naming_the_key(overrides, keys, tmp_path):
    from sellerlift.pipeline import run

    cfg = compose_config([*TINY_CDNOW, *overrides], root=tmp_path)
    with pytest.raises(ValueError) as err:
        run(cfg)
    for key in keys:
        assert key in str(err.value)
    assert not (tmp_path / "mlruns").exists(), "fails before any run or model is created"
