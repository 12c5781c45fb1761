"""The scale-out jobs on an engine: the simulator per chunk, the sharded allocation, and a job's MLflow run.

Every job gives the single-process answer: the simulator's parts are the bytes ``sim.simulate`` writes (each
chunk is a pure function of the config and its index), the allocation is ``allocate_lagrangian``'s (see
:mod:`sellerlift.allocate.sharded`). Outputs appear under their final name only when the job finished.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from sellerlift.allocate.shard import AllocShard
from sellerlift.allocate.sharded import ShardedAllocation, solve_sharded
from sellerlift.engine.base import Engine, JobFailed, LocalEngine, staged_output
from sellerlift.sim.config import SimulatorConfig
from sellerlift.sim.history import write_chunk, write_meta


def simulate(cfg: SimulatorConfig, out_dir: str | Path, engine: Engine | None = None) -> dict:
    """``sim.simulate(cfg, out_dir)`` with one task per chunk on ``engine``; the same files, byte for byte.

    The chunks are written into a staging directory that replaces ``out_dir`` when every chunk is done: a job
    that fails (a chunk failing every retry) leaves ``out_dir`` as it was. Returns a summary with timings.
    """
    engine = engine or LocalEngine()
    out_dir = Path(out_dir).absolute()
    t0 = time.perf_counter()
    with staged_output(out_dir) as stage:
        rows = engine.map(partial(write_chunk, cfg, stage), range(cfg.n_chunks), desc="simulate")
        write_meta(cfg, stage)
    wall = time.perf_counter() - t0
    return {
        "job": "simulate",
        "out": str(out_dir),
        "chunks": cfg.n_chunks,
        "customers": int(sum(rows)),
        "timings": {"simulate_s": wall},
        **engine.describe(),
    }


def allocate(engine: Engine, sources, levels, *, shard_cls=AllocShard, after=None, **options):
    """The sharded Lagrangian allocation with one shard per source (each a dict of arrays or a loader; whole
    sellers per shard) on ``engine``. ``after(result)`` runs while the shards are alive (gather the levels,
    write them where the shards are). Returns (:class:`~sellerlift.allocate.sharded.ShardedAllocation`, what
    ``after`` returned)."""
    t0 = time.perf_counter()
    group = engine.shards(shard_cls, list(sources), desc="allocate")
    try:
        res: ShardedAllocation = solve_sharded(group.call, group.call_each, levels, **options)
        res.info["solve_s"] = time.perf_counter() - t0
        res.info["rebuilds"] = getattr(group, "rebuilds", 0)
        extra = after(res) if after is not None else None
    finally:
        group.close()
    return res, extra


def log_job(summary: dict, tracking_uri: str | None = None, experiment: str = "sellerlift-jobs") -> str | None:
    """One MLflow run for a job: its engine, nodes and sizes as params, per-stage timings and rows as metrics.

    Returns the run id (None when MLflow is not installed: the scorer's extra does not need it)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        return None
    from sellerlift.champion import default_tracking_uri
    from sellerlift.tracking import log_metrics, log_params

    client = MlflowClient(tracking_uri or default_tracking_uri())
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(
        exp_id,
        run_name=f"{summary.get('job', 'job')}-{summary.get('engine', '?')}",
        tags={"sellerlift.job": str(summary.get("job")), "sellerlift.engine": str(summary.get("engine"))},
    )
    params = {k: str(v) for k, v in summary.items() if not isinstance(v, dict | list) and not _number(v)}
    metrics = {k: float(v) for k, v in summary.items() if _number(v)}
    metrics.update({f"time/{k}": float(v) for k, v in (summary.get("timings") or {}).items()})
    metrics.update({f"rows/{k}": float(v) for k, v in (summary.get("rows") or {}).items()})
    log_params(client, run.info.run_id, params)
    log_metrics(client, run.info.run_id, metrics)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


__all__ = ["JobFailed", "allocate", "log_job", "simulate"]
