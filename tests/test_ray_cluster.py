"""The jobs on a real two-node Ray cluster on localhost (``ray start --head`` + ``ray start --address``, 1 CPU and a
temp dir each): scoring, allocation, simulation and the closed loop equal the single-process results; a killed
actor process is retried / rebuilt with the same output; a job that cannot finish fails clearly with nothing under
its final name; the score CLI logs its run to MLflow; Lightning multi-node training placed by Ray is one MLflow run.
A lost node (raylet SIGKILL) is in tests/test_ray_faults.py (its own cluster)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, TINY
from test_engine import (
    AS_OF,
    EXAMPLE,
    MAPPING,
    SMALL_SIM,
    allocation_cases,
    assert_same_allocation,
    files_of,
    with_dipn,
)

ray = pytest.importorskip("ray")

from sellerlift import score
from sellerlift.allocate import allocate_lagrangian
from sellerlift.allocate.shard import AllocShard
from sellerlift.allocate.sharded import solve_sharded, split_by_seller
from sellerlift.engine import JobFailed, get_engine, jobs, partial_outputs, staged_output
from sellerlift.engine.cluster import LocalCluster
from sellerlift.engine.scoring import score_file as score_on
from sellerlift.sim import SimulatorConfig, simulate

pytestmark = pytest.mark.slow


def short_tmp() -> Path:
    """Ray's socket paths live under the temp dir and must stay short (AF_UNIX: 107 bytes)."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="slr-"))


@contextlib.contextmanager
def two_node_cluster():
    """A started 2 x 1-CPU LocalCluster with its RAY_* variables set; afterwards the driver is disconnected,
    the variables restored and the nodes stopped."""
    c = LocalCluster(nodes=2, cpus=1, root=short_tmp() / "ray")
    c.start()
    saved = {k: os.environ.get(k) for k in c.env}
    os.environ.update(c.env)
    try:
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        c.stop()


@pytest.fixture(scope="module")
def cluster():
    with two_node_cluster() as c:
        yield c


@pytest.fixture
def engine(cluster):
    e = get_engine("ray", progress=False)
    assert not e.started and e.describe()["nodes"] == 2 and e.workers == 2
    yield e
    e.close()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    from test_score import BUILD_BUNDLE

    out = tmp_path_factory.mktemp("cluster") / "bundle"
    proc = subprocess.run(
        [sys.executable, "-c", BUILD_BUNDLE, str(out), str(EXAMPLE), str(MAPPING), AS_OF],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def sim_events(tmp_path_factory):
    """A simulated events directory (Parquet parts, partitioned by customer) of 4,000 customers."""
    cfg = SimulatorConfig(n_customers=4000, n_sellers=20, chunk_size=1000, truth_replications=0)
    out = tmp_path_factory.mktemp("simev") / "sim"
    simulate(cfg, out, progress=False)
    return out / "events", str(cfg.cutoff)


def single_process_scores(bundle_dir, events, out, **kw):
    rt = score.load_bundle(bundle_dir)
    score.score_file(rt, events, out, progress=False, **kw)
    return pd.read_parquet(out)


def test_scoring_on_two_nodes_equals_the_single_process_scorer(engine, bundle_dir, sim_events, tmp_path):
    events, cutoff = sim_events
    rt = score.load_bundle(bundle_dir)
    kw = {"as_of": cutoff, "partition_rows": 40_000, "chunk_customers": 300}
    ref = single_process_scores(bundle_dir, events, tmp_path / "ref.parquet", **kw)
    s = score_on(rt, events, tmp_path / "ray.parquet", engine=engine, progress=False, **kw)
    assert s["partitions"] >= 6 and s["nodes_used"] == 2 and s["customers"] == len(ref)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray.parquet"), ref, check_exact=True)

    ref2 = single_process_scores(bundle_dir, EXAMPLE, tmp_path / "ref2.parquet", as_of=AS_OF, mapping=str(MAPPING))
    score_on(rt, EXAMPLE, tmp_path / "ray2.parquet", engine=engine, as_of=AS_OF, mapping=str(MAPPING), progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray2.parquet"), ref2, check_exact=True)


def test_budgeted_scoring_on_two_nodes_equals_the_single_process_scorer(engine, bundle_dir, sim_events, tmp_path):
    """Scores on Ray Data actors, then the budget allocated across the partitions by shard actors (the driver
    bisecting the multiplier): every customer's discount is the single-process scorer's."""
    events, cutoff = sim_events
    rt = score.load_bundle(with_dipn(bundle_dir, tmp_path / "bundle_dipn"))
    kw = {"as_of": cutoff, "partition_rows": 40_000, "chunk_customers": 300, "budget": 2000.0, "progress": False}
    ref = tmp_path / "ref.parquet"
    a = score.score_file(rt, events, ref, **kw)
    s = score_on(rt, events, tmp_path / "ray.parquet", engine=engine, **kw)
    got = pd.read_parquet(tmp_path / "ray.parquet")
    assert (got["discount_pct"] > 0).sum() == a["treated"] == s["treated"] > 0
    assert s["allocation_shards"] == 2 and s["allocation_status"] in ("optimal", "ok")
    pd.testing.assert_frame_equal(got, pd.read_parquet(ref), check_exact=True)


def test_allocation_on_two_nodes_equals_the_single_process_solver(engine):
    inst, data, cases = allocation_cases(3, n=20_000)
    for name in ("total", "sellers+tiers+options"):
        kw, per = cases[name]
        ref = allocate_lagrangian(
            inst["p"], inst["value"], inst["margin"], inst["levels"], seller=inst["seller"], **kw, **per
        )
        res, got = jobs.allocate(
            engine, split_by_seller({**data, **per}, 2), inst["levels"], after=lambda r: r.gather(), **kw
        )
        assert_same_allocation(got, ref)
        assert res.info["rebuilds"] == 0


def test_simulation_and_closed_loop_on_two_nodes_are_bit_identical(engine, tmp_path):
    from sellerlift.closed_loop.evaluate import Settings
    from sellerlift.closed_loop.seeds import evaluate_seeds

    cfg = SimulatorConfig(**{**SMALL_SIM, "n_customers": 1200})
    simulate(cfg, tmp_path / "single", progress=False)
    jobs.simulate(cfg, tmp_path / "ray", engine)
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "single")

    settings = Settings(days=30, horizons=(30,), max_customers=400, ceiling_customers=0, did=False, ope=False)
    ref = evaluate_seeds(tmp_path / "single", None, settings, [0, 1, 2])
    got = evaluate_seeds(tmp_path / "single", None, settings, [0, 1, 2], engine=engine)
    assert json.dumps(got, sort_keys=True) == json.dumps(ref, sort_keys=True)


def _staging_of(final: Path) -> Path | None:
    found = partial_outputs(final)
    return found[0] if found else None


def test_killed_scoring_actor_is_retried_with_the_same_output(cluster, engine, bundle_dir, sim_events, tmp_path):
    """SIGKILL of a Ray Data actor process while partitions are being scored: Ray restarts it and retries its
    partition; the output equals an uninterrupted run's."""
    events, cutoff = sim_events
    rt = score.load_bundle(bundle_dir)
    kw = {"as_of": cutoff, "partition_rows": 25_000, "chunk_customers": 200}
    ref = single_process_scores(bundle_dir, events, tmp_path / "ref.parquet", **kw)
    out = tmp_path / "ray.parquet"
    killed = []

    def killer():
        t0 = time.time()
        while time.time() - t0 < 120 and not killed:
            stage = _staging_of(out)
            if stage is not None and any(stage.glob("part-*.parquet")):
                pids = cluster.pids(name="PartitionScorer")
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
            time.sleep(0.05)

    th = threading.Thread(target=killer)
    th.start()
    s = score_on(rt, events, out, engine=engine, progress=False, **kw)
    th.join()
    assert killed, "no scoring actor was killed mid-job"
    assert s["partitions"] >= 10
    pd.testing.assert_frame_equal(pd.read_parquet(out), ref, check_exact=True)


def test_killed_allocation_shard_is_rebuilt_with_the_same_allocation(engine):
    """SIGKILL of a shard actor's process between bisection rounds: a new actor replays the shard's calls and the
    allocation is the uninterrupted one."""
    inst, data, cases = allocation_cases(4, n=20_000)
    kw, per = cases["sellers+tiers+options"]
    ref = allocate_lagrangian(
        inst["p"], inst["value"], inst["margin"], inst["levels"], seller=inst["seller"], **kw, **per
    )
    group = engine.shards(AllocShard, split_by_seller({**data, **per}, 2))
    pid = ray.get(group.actors[1].__ray_call__.remote(lambda self: os.getpid()))
    calls = [0]

    def call(method, *args):
        calls[0] += 1
        if calls[0] == 25:  # mid-bisection
            os.kill(pid, signal.SIGKILL)
        return group.call(method, *args)

    try:
        res = solve_sharded(call, group.call_each, inst["levels"], **kw)
        assert group.rebuilds == 1
        assert_same_allocation(res.gather(), ref)
    finally:
        group.close()


def test_a_job_that_cannot_finish_fails_clearly_and_writes_nothing(engine, bundle_dir, tmp_path, capsys):
    final = tmp_path / "out"

    def crash(i):  # the worker process dies on every attempt of unit 1
        if i == 1:
            os._exit(1)
        return i

    with pytest.raises(JobFailed, match=r"crashy: unit 1 \(1\) failed after 1 retries: .*Worker"), staged_output(final):
        engine.map(crash, range(3), desc="crashy", retries=1)
    assert not final.exists() and not partial_outputs(final)

    bad = tmp_path / "bad.csv"  # a bad timestamp on the file's row 5: the error names it, nothing is written
    text = EXAMPLE.read_text().splitlines()
    row = text[5].split(",")
    row[2] = "not a date"
    bad.write_text("\n".join(text[:5] + [",".join(row)] + text[6:]) + "\n")
    out = tmp_path / "scores.parquet"
    rc = score.main(
        [
            "--bundle",
            str(bundle_dir),
            "--events",
            str(bad),
            "--mapping",
            str(MAPPING),
            "--as-of",
            AS_OF,
            "--out",
            str(out),
            "--engine",
            "ray",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "row 5" in err and "Event Time" in err, err
    assert not out.exists() and not partial_outputs(out)


def test_score_cli_on_the_cluster_logs_timings_and_rows_to_mlflow(engine, bundle_dir, tmp_path, capsys, monkeypatch):
    """The CLI as a user types it (paths relative to the working directory, which the workers do not share)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "scores.parquet"
    monkeypatch.chdir(REPO)
    rc = score.main(
        [
            "--bundle",
            str(bundle_dir),
            "--events",
            "examples/seller_events.csv",
            "--mapping",
            "examples/seller_events.mapping.yaml",
            "--as-of",
            AS_OF,
            "--out",
            str(out),
            "--engine",
            "ray",
            "--no-progress",
            "--track",
            "--tracking-uri",
            uri,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sellerlift-jobs")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    r = runs[0].data
    assert r.params["engine"] == "ray" and r.params["job"] == "score"
    assert r.metrics["rows/customers"] == 240 and r.metrics["nodes"] == 2
    assert {"time/partition_s", "time/score_s"} <= set(r.metrics)


def test_lightning_multi_node_training_placed_by_ray_is_one_mlflow_run(cluster, engine, tmp_path):
    """Two train.py processes, one per Ray node, joined by Lightning's multi-node launch (MASTER_ADDR, NODE_RANK,
    trainer.num_nodes=2, gloo): rank 0 alone tracks and writes the bundle."""
    from mlflow.tracking import MlflowClient

    from sellerlift.engine.train import launch_ray
    from sellerlift.runtime import verify_bundle

    tiny = [o for o in TINY if not o.startswith("trainer=")]
    overrides = [
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2",
        *tiny,
        "extras=[sellerlift.stages.segments.fit_segments_stage]",
        f"paths.root_dir={tmp_path}",
    ]
    per_node = {i: [f"paths.data_dir={tmp_path}/data-node{i}"] for i in range(2)}  # no race on one data cache
    out = launch_ray(overrides, 2, cwd=REPO, per_node=per_node, timeout=1500)
    assert [r["returncode"] for r in out] == [0, 0], out[0]["stderr"][-3000:] + out[1]["stderr"][-3000:]
    assert len({r["node_id"] for r in out}) == 2
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1
    assert runs[0].data.params["trainer.num_nodes"] == "2" and runs[0].info.status == "FINISHED"
    bundles = list((tmp_path / "bundles").iterdir())
    assert [b.name for b in bundles] == [runs[0].info.run_id]
    assert verify_bundle(bundles[0])["run_id"] == runs[0].info.run_id
