"""One MLflow parent run per Hydra sweep; every trial's run nests under it.

``configs/hparams_search/*.yaml`` register :class:`MLflowSweepCallback` as a
Hydra callback. When the multirun starts it creates the parent run (in the same
experiment as the trials: the MLflow UI shows the trials folded under it),
records the search space, and exports ``SELLERLIFT_PARENT_RUN_ID``, which
``tracking.parent_run_id`` reads, so each trial's run is created with the tag
``mlflow.parentRunId``. The id is also written to ``<sweep dir>/mlflow_parent_run_id``.

When the multirun ends it logs the best trial (by ``optimized_metric`` and the
sweeper's direction) to the parent: metric ``best/<optimized_metric>``, tags
``sweep.best_run_id`` and ``sweep.best_params``, a ``sweep_trials`` table, and
ends the parent run. A sweep that crashes leaves the parent FAILED, not RUNNING.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

PARENT_ENV = "SELLERLIFT_PARENT_RUN_ID"

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra < 1.1
    Callback = object  # type: ignore[misc,assignment]


def _direction(config: DictConfig) -> str:
    d = OmegaConf.select(config, "hydra.sweeper.direction", default="maximize")
    d = getattr(d, "name", d)
    return str(d[0] if isinstance(d, (list, tuple)) or OmegaConf.is_list(d) else d).lower()


class MLflowSweepCallback(Callback):
    def __init__(self, run_name: str | None = None):
        self.run_name = run_name
        self.client = None
        self.parent_id: str | None = None
        self._previous_env: str | None = None

    # ------------------------------------------------------------------ hydra hooks
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from mlflow.tracking import MlflowClient

        if not HydraConfig.initialized():  # resolve ${hydra:...} interpolations (paths.root_dir)
            HydraConfig.instance().set_config(config)
        tracking_uri = str(config.logger.tracking_uri)
        exp_name = str(config.logger.experiment_name)
        self.client = client = MlflowClient(tracking_uri)
        exp = client.get_experiment_by_name(exp_name)
        exp_id = (
            exp.experiment_id
            if exp is not None
            else client.create_experiment(
                exp_name, artifact_location=OmegaConf.select(config, "logger.artifact_location")
            )
        )
        sweep_dir = Path(str(config.hydra.sweep.dir))
        metric = str(config.get("optimized_metric") or "val/churn_auroc")
        name = self.run_name or f"sweep-{config.model.name}-{config.data.name}-{sweep_dir.name}"
        run = client.create_run(
            exp_id,
            run_name=name,
            tags={
                "sweep.kind": "parent",
                "sweep.dir": str(sweep_dir),
                "sweep.optimized_metric": metric,
                "sweep.direction": _direction(config),
                "model.kind": str(config.model.name),
                "data.name": str(config.data.name),
                "sweep.sweeper": str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).rsplit(".", 1)[-1],
            },
        )
        self.parent_id = run.info.run_id
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
        for k, v in OmegaConf.to_container(params, resolve=False).items():
            client.log_param(self.parent_id, f"search.{k}", str(v)[:6000])
        for k in ("n_trials", "study_name", "storage"):
            v = OmegaConf.select(config, f"hydra.sweeper.{k}", default=None)
            if v is not None:
                client.log_param(self.parent_id, f"sweeper.{k}", str(v))
        for k in ("sampler._target_", "sampler.seed"):
            v = OmegaConf.select(config, f"hydra.sweeper.{k}", default=None)
            if v is not None:
                client.log_param(self.parent_id, f"sweeper.{k}", str(v))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "mlflow_parent_run_id").write_text(self.parent_id + "\n")
        self._previous_env = os.environ.get(PARENT_ENV)
        os.environ[PARENT_ENV] = self.parent_id
        atexit.register(self._fail_if_running)
        print(
            f"sweep: MLflow parent run {self.parent_id} ({name}) in experiment '{exp_name}'; "
            f"optimising {metric} ({_direction(config)})",
            flush=True,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_id is None:
            return
        try:
            summary = summarise(
                self.client,
                self.parent_id,
                str(config.get("optimized_metric") or "val/churn_auroc"),
                _direction(config),
            )
            self.client.set_terminated(self.parent_id, "FINISHED")
            print(f"sweep: {summary}", flush=True)
        finally:
            self._restore_env()
            self.parent_id = None

    # ------------------------------------------------------------------ helpers
    def _restore_env(self) -> None:
        if self._previous_env is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = self._previous_env

    def _fail_if_running(self) -> None:
        if self.parent_id is None or self.client is None:
            return
        try:
            if self.client.get_run(self.parent_id).info.status == "RUNNING":
                self.client.set_tag(self.parent_id, "error", "the sweep ended before all trials finished")
                self.client.set_terminated(self.parent_id, "FAILED")
        except Exception:
            pass


def trials(client, parent_id: str) -> list:
    parent = client.get_run(parent_id)
    return client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=5000)


def summarise(client, parent_id: str, metric: str, direction: str = "maximize") -> str:
    """Log the best trial and a table of all trials to the parent run; returns a one-line summary."""
    import pandas as pd

    runs = trials(client, parent_id)
    rows = []
    for r in runs:
        row = {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name,
            "status": r.info.status,
            metric: r.data.metrics.get(metric),
            "test/churn_auroc": r.data.metrics.get("test/churn_auroc"),
            "test/intent_auroc": r.data.metrics.get("test/intent_auroc"),
        }
        rows.append(row)
    df = pd.DataFrame(rows)
    client.log_metric(parent_id, "sweep/n_trials", float(len(runs)))
    done = df.dropna(subset=[metric]) if len(df) else df
    if not len(done):
        return f"{len(runs)} trial(s), none with {metric}"
    best = done.sort_values(metric, ascending=(direction == "minimize")).iloc[0]
    best_run = client.get_run(best["run_id"])
    client.log_metric(parent_id, f"best/{metric}", float(best[metric]))
    for k in ("test/churn_auroc", "test/intent_auroc"):
        if pd.notna(best.get(k)):
            client.log_metric(parent_id, f"best/{k}", float(best[k]))
    overrides = best_run.data.tags.get("sweep.overrides") or ""
    client.set_tag(parent_id, "sweep.best_run_id", best["run_id"])
    client.set_tag(best["run_id"], "sweep.best", "true")
    if overrides:
        client.set_tag(parent_id, "sweep.best_overrides", overrides[:5000])
    with tempfile.TemporaryDirectory() as tmp:
        df.to_csv(Path(tmp) / "sweep_trials.csv", index=False)
        (Path(tmp) / "sweep_trials.md").write_text(df.to_markdown(index=False, floatfmt=".4f"))
        client.log_artifacts(parent_id, tmp, "tables")
    return f"{len(runs)} trial(s) under parent run {parent_id}; best {metric}={best[metric]:.4f} (run {best['run_id']})"


# --------------------------------------------------------------------------- one process per trial

RESULT_ENV = "SELLERLIFT_RESULT_FILE"
TRIAL_ENV = "SELLERLIFT_SWEEP_TRIAL"
OVERRIDES_ENV = "SELLERLIFT_SWEEP_OVERRIDES"


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_isolated(script: str | Path) -> float | None:
    """Run this sweep trial as ``python train.py <its overrides>`` in a fresh process; return its metric.

    Hydra's basic launcher runs trials one after another in one process. A fresh process per trial
    keeps trials independent (memory, threads, library state: a second ONNX export of the sequence
    model in one process currently comes out with a static sequence axis and fails the parity check).
    The trial's run still nests under the sweep's parent run (``SELLERLIFT_PARENT_RUN_ID`` is inherited).
    """
    import json
    import subprocess
    import sys

    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    result = out_dir / "trial_result.json"
    result.unlink(missing_ok=True)
    overrides = list(hc.overrides.task)
    cmd = [sys.executable, str(script), *overrides, "hydra.mode=RUN", f"hydra.run.dir={out_dir}"]
    env = {**os.environ, RESULT_ENV: str(result), TRIAL_ENV: str(hc.job.num), OVERRIDES_ENV: " ".join(overrides)[:5000]}
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"sweep trial {hc.job.num} failed (exit code {proc.returncode}): {' '.join(overrides)}")
    value = json.loads(result.read_text()).get("value") if result.exists() else None
    return None if value is None else float(value)


def write_result(value: float | None) -> None:
    """In a trial process: hand the optimised value back to the sweep (see :func:`run_isolated`)."""
    import json

    path = os.environ.get(RESULT_ENV)
    if path:
        Path(path).write_text(json.dumps({"value": value}))
