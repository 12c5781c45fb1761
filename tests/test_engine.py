"""The engine layer: the sharded allocation equals the single-process solver, jobs on the local engine equal the
single-process code, outputs are all-or-nothing, and one small real-Ray test (a local Ray started on demand with
no RAY_ADDRESS) for the fast suite. The two-node cluster tests are in tests/test_ray_cluster.py (slow)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from sellerlift import score
from sellerlift.allocate import allocate_lagrangian, random_instance, random_retention
from sellerlift.allocate.shard import AllocShard
from sellerlift.allocate.sharded import local_shards, solve_sharded, split_by_seller
from sellerlift.engine import LocalEngine, get_engine, jobs, partial_outputs, staged_output
from sellerlift.sim import SimulatorConfig, simulate

EXAMPLE = REPO / "examples" / "seller_events.csv"
MAPPING = REPO / "examples" / "seller_events.mapping.yaml"
AS_OF = "2025-12-31"
SMALL_SIM = dict(n_customers=900, n_sellers=6, chunk_size=300, truth_replications=0)


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def allocation_cases(seed: int, n: int = 6000):
    inst = random_instance(n, seed=seed, n_sellers=25)
    ret = random_retention(inst, seed)
    args = (inst["p"], inst["value"], inst["margin"], inst["levels"])
    full = allocate_lagrangian(*args).spend
    sb = {s: 0.02 * full * (1 + s % 3) for s in np.unique(inst["seller"])}
    tb = {t: 0.08 * full for t in set(ret["seller_tier"].values())}
    data = {"p": inst["p"], "value": inst["value"], "margin": inst["margin"], "seller": inst["seller"]}
    cases = {
        "total": ({"budget": 0.2 * full}, {}),
        "sellers": ({"budget": 0.3 * full, "seller_budgets": sb}, {}),
        "sellers+tiers+options": (
            {
                "budget": 0.25 * full,
                "seller_budgets": sb,
                "seller_tier": ret["seller_tier"],
                "tier_budgets": tb,
                "weight": 0.5,
                "max_discount": 25,
                "spread_penalty": 0.001,
                "segment_max_discount": {"buys anyway": 10},
                "max_incentive": 30.0,
            },
            {"enduring": ret["enduring"], "segment": ret["segment"]},
        ),
        "tiers only": ({"seller_tier": ret["seller_tier"], "tier_budgets": tb}, {}),
    }
    return inst, data, cases


def assert_same_allocation(got, ref):
    assert np.array_equal(got.level_index, ref.level_index)
    assert abs(got.profit - ref.profit) <= 1e-9 * abs(ref.profit)
    assert abs(got.spend - ref.spend) <= 1e-9 * max(abs(ref.spend), 1.0)
    assert abs(got.bound - ref.bound) <= 1e-9 * abs(ref.bound)
    assert got.status == ref.status and got.n_iter == ref.n_iter
    assert str(got.multiplier) == str(ref.multiplier)


@pytest.mark.parametrize("seed", [0, 1])
def test_sharded_allocation_equals_the_single_process_solver(seed):
    """Shards of whole sellers, the driver bisecting with only per-shard spends: the same levels, multipliers,
    bound and iterations as allocate_lagrangian, for 1, 3 and 8 shards and every kind of budget."""
    inst, data, cases = allocation_cases(seed)
    if seed == 1:  # exact ties: duplicated customers
        rep = np.random.default_rng(seed).integers(0, len(inst["value"]), len(inst["value"]))
        for k in ("p", "value", "margin"):
            inst[k] = data[k] = inst[k][rep]
    for name, (kw, per) in cases.items():
        ref = allocate_lagrangian(
            inst["p"], inst["value"], inst["margin"], inst["levels"], seller=inst["seller"], **kw, **per
        )
        for n_shards in (1, 3, 8):
            shards = [AllocShard(s) for s in split_by_seller({**data, **per}, n_shards)]
            res = solve_sharded(*local_shards(shards), inst["levels"], **kw)
            assert_same_allocation(res.gather(), ref)
            assert res.sent_floats < 50 * res.rounds * n_shards, name  # small messages: no per-customer arrays


def test_sharded_allocation_checks_its_inputs():
    inst, data, _ = allocation_cases(0, n=500)
    shards = split_by_seller(data, 2)
    shards[1]["seller"] = shards[1]["seller"].copy()
    shards[1]["seller"][0] = shards[0]["seller"][0]  # one seller in two shards
    with pytest.raises(ValueError, match="more than one shard"):
        solve_sharded(*local_shards([AllocShard(s) for s in shards]), inst["levels"], budget=10.0)
    shards = [AllocShard(s) for s in split_by_seller(data, 2)]
    with pytest.raises(ValueError, match="seller_budgets: unknown seller"):
        solve_sharded(*local_shards(shards), inst["levels"], seller_budgets={"nobody": 1.0})


def test_local_engine_simulation_is_the_single_process_output(tmp_path):
    cfg = SimulatorConfig(**SMALL_SIM)
    simulate(cfg, tmp_path / "single", progress=False)
    s = jobs.simulate(cfg, tmp_path / "engine", LocalEngine(progress=False))
    assert s["chunks"] == 3 and s["customers"] == 900
    assert files_of(tmp_path / "engine") == files_of(tmp_path / "single")


def test_a_failed_job_leaves_no_output_under_its_final_name(tmp_path):
    final = tmp_path / "out"

    def unit(i):
        (stage / f"part-{i}").write_text("x")
        if i == 2:
            raise OSError("disk full")
        return i

    with pytest.raises(OSError, match="disk full") as err, staged_output(final) as stage:
        LocalEngine(progress=False).map(unit, range(4), desc="write")
    assert "in write: unit 2 (2)" in err.value.__notes__
    assert not final.exists() and not partial_outputs(final)
    final.mkdir()
    (final / "old").write_text("old")
    with staged_output(final) as stage:  # a finished job replaces an older output as a whole
        (stage / "new").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new"]


ADD_DIPN = """
import hashlib, json, shutil, sys, warnings
from pathlib import Path
import torch
from sellerlift.promotion_features import input_names

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src, dst)
names = input_names(True)

class Net(torch.nn.Module):  # a monotone curve [B, 7] (tests/test_serve.py's tiny DIPN)
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(len(names), 7)

    def forward(self, features):
        z = self.lin(features)
        inc = torch.nn.functional.softplus(z[:, 1:])
        return torch.sigmoid(torch.cat([z[:, :1] - 1.0, inc * 0.3], dim=1).cumsum(dim=1))

torch.manual_seed(0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.onnx.export(Net().eval(), (torch.zeros(2, len(names)),), str(dst / "dipn.onnx"), input_names=["features"],
                      output_names=["curve"], dynamic_axes={"features": {0: "batch"}, "curve": {0: "batch"}},
                      dynamo=False)
m = json.loads((dst / "manifest.json").read_text())
m["files"]["dipn"] = {"path": "dipn.onnx", "sha256": hashlib.sha256((dst / "dipn.onnx").read_bytes()).hexdigest()}
m["dipn"] = {"inputs": names, "uses_sequence_outputs": True}
(dst / "manifest.json").write_text(json.dumps(m, indent=2))
"""


def with_dipn(bundle: Path, out: Path) -> Path:
    """``bundle`` plus a tiny monotone DIPN (curves, so ``--budget`` allocates)."""
    proc = subprocess.run(
        [sys.executable, "-c", ADD_DIPN, str(bundle), str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """A real bundle built like tests/test_score.py builds one (untrained GRU, fitted spec, segments)."""
    from test_score import BUILD_BUNDLE

    out = tmp_path_factory.mktemp("engine") / "bundle"
    proc = subprocess.run(
        [sys.executable, "-c", BUILD_BUNDLE, str(out), str(EXAMPLE), str(MAPPING), AS_OF],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_local_engine_scoring_is_the_single_process_output(bundle_dir, tmp_path):
    from sellerlift.engine.scoring import score_file as score_on

    rt = score.load_bundle(bundle_dir)
    for partition_rows in (2_000_000, 4000):  # one partition in memory / five spilled ones
        ref = tmp_path / f"ref-{partition_rows}.parquet"
        score.score_file(
            rt,
            EXAMPLE,
            ref,
            as_of=AS_OF,
            mapping=str(MAPPING),
            partition_rows=partition_rows,
            chunk_customers=16,
            progress=False,
        )
        out = tmp_path / f"local-{partition_rows}.parquet"
        s = score_on(
            rt,
            EXAMPLE,
            out,
            engine=LocalEngine(progress=False),
            as_of=AS_OF,
            mapping=str(MAPPING),
            partition_rows=partition_rows,
            chunk_customers=16,
            progress=False,
        )
        assert s["customers"] == 240
        pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(ref), check_exact=True)


def test_local_engine_budgeted_scoring_is_the_single_process_output(bundle_dir, tmp_path):
    """--budget: the sharded allocation over the score partitions gives every customer the single-process offer."""
    from sellerlift.engine.scoring import score_file as score_on

    rt = score.load_bundle(with_dipn(bundle_dir, tmp_path / "bundle_dipn"))
    kw = {
        "as_of": AS_OF,
        "mapping": str(MAPPING),
        "partition_rows": 4000,
        "chunk_customers": 16,
        "budget": 300.0,
        "progress": False,
    }
    ref = tmp_path / "ref.parquet"
    a = score.score_file(rt, EXAMPLE, ref, **kw)
    s = score_on(rt, EXAMPLE, tmp_path / "local.parquet", engine=LocalEngine(progress=False), **kw)
    got, want = pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(ref)
    assert "discount_pct" in got and (got["discount_pct"] > 0).any() and "_value" not in got
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert s["treated"] == a["treated"] and abs(s["incremental_profit"] - a["incremental_profit"]) <= 1e-9 * abs(
        a["incremental_profit"]
    )


def test_ray_local_cluster_by_default(bundle_dir, tmp_path, monkeypatch):
    """No RAY_ADDRESS: --engine ray starts a local Ray for the job (and stops it). Simulation, scoring (Ray Data
    actors), the sharded allocation (actors) and the closed loop per seed (tasks) equal the single-process results."""
    pytest.importorskip("ray")
    from sellerlift.closed_loop.evaluate import Settings
    from sellerlift.closed_loop.seeds import evaluate_seeds
    from sellerlift.engine.scoring import score_file as score_on

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = SimulatorConfig(**SMALL_SIM)
    simulate(cfg, tmp_path / "single", progress=False)
    rt = score.load_bundle(bundle_dir)
    ref = tmp_path / "ref.parquet"
    score.score_file(
        rt, EXAMPLE, ref, as_of=AS_OF, mapping=str(MAPPING), partition_rows=4000, chunk_customers=16, progress=False
    )
    inst, data, cases = allocation_cases(0, n=3000)
    kw, per = cases["sellers+tiers+options"]
    alloc_ref = allocate_lagrangian(
        inst["p"], inst["value"], inst["margin"], inst["levels"], seller=inst["seller"], **kw, **per
    )
    settings = Settings(days=30, horizons=(30,), max_customers=300, ceiling_customers=0, did=False, ope=False)
    seeds_ref = evaluate_seeds(tmp_path / "single", None, settings, [0, 1], engine=LocalEngine(progress=False))

    with get_engine("ray", num_cpus=2, progress=False) as engine:
        assert engine.started and engine.describe()["nodes"] == 1
        jobs.simulate(cfg, tmp_path / "ray-sim", engine)
        assert files_of(tmp_path / "ray-sim") == files_of(tmp_path / "single")

        out = tmp_path / "ray-scores.parquet"
        s = score_on(
            rt,
            EXAMPLE,
            out,
            engine=engine,
            as_of=AS_OF,
            mapping=str(MAPPING),
            partition_rows=4000,
            chunk_customers=16,
            progress=False,
        )
        assert s["partitions"] == 5 and sorted(p.name for p in out.iterdir())[0] == "part-00000.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(ref), check_exact=True)

        res, got = jobs.allocate(
            engine, split_by_seller({**data, **per}, 2), inst["levels"], after=lambda r: r.gather(), **kw
        )
        assert_same_allocation(got, alloc_ref)

        seeds = evaluate_seeds(tmp_path / "single", None, settings, [0, 1], engine=engine)
        assert json.dumps(seeds, sort_keys=True) == json.dumps(seeds_ref, sort_keys=True)
    import ray

    assert not ray.is_initialized()  # the local instance is stopped with the engine


@pytest.mark.slow
def test_lightning_multi_node_launch_of_two_processes_is_one_mlflow_run(tmp_path):
    """Lightning's own multi-node launch without Ray: two train.py processes with MASTER_ADDR / NODE_RANK and
    trainer.num_nodes=2 (gloo) train one model; only rank 0 creates the MLflow run and writes the bundle."""
    from conftest import TINY
    from mlflow.tracking import MlflowClient

    from sellerlift.engine.train import launch_local

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
    per_node = {i: [f"paths.data_dir={tmp_path}/data-node{i}"] for i in range(2)}
    out = launch_local(overrides, 2, cwd=REPO, per_node=per_node, timeout=1500)
    assert [r["returncode"] for r in out] == [0, 0], out[0]["stderr"][-3000:] + out[1]["stderr"][-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1 and runs[0].data.params["trainer.num_nodes"] == "2"
    assert [b.name for b in (tmp_path / "bundles").iterdir()] == [runs[0].info.run_id]
