"""Stage: classic baselines on the run's customers, split and labels; each its own MLflow run.

Runs after the model stage (an entry of ``cfg.extras``). For every entry of
``cfg.baselines.models`` it fits the baseline, scores validation and test with
the metric names the sequence model uses (``test/intent_auroc``, ...), and logs
a run of its own in the same experiment, tagged ``model.kind=baseline`` and
nested under the main run (``mlflow.parentRunId``), so the MLflow UI compares
them side by side. The main run gets the comparison table (sequence vs
baselines vs the simulator's ceiling), calibration by score band and ROC plots
of all models. Baseline metrics never enter the bundle's manifest: the bundle
describes the exported model.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sellerlift import baselines as bl
from sellerlift import metrics, tracking
from sellerlift.constants import HEADS, TRUTH_COLUMNS
from sellerlift.stages.context import RunContext

METRICS = ("auroc", "ap", "ece")


def train_baselines(ctx: RunContext) -> dict[str, bl.BaselineResult]:
    bcfg = ctx.cfg.get("baselines") or {}
    models_cfg = {k: v for k, v in (bcfg.get("models") or {}).items() if v is not None}
    if not models_cfg and not bcfg.get("predictions_dir"):
        return {}
    top_fraction = float(bcfg.get("top_fraction", 0.2))
    t0 = time.perf_counter()
    data = bl.baseline_data(ctx.prep, ctx.tables.events, ctx.tables.cutoff, ctx.cfg.data.horizons)
    commit = tracking.git_commit(ctx.root) if ctx.client is not None else None

    results: dict[str, bl.BaselineResult] = {}
    for name, mcfg in models_cfg.items():
        model = instantiate(mcfg)
        res = bl.fit_and_evaluate(model, data, top_fraction)
        res.name = name
        results[name] = res
        _log_child_run(ctx, name, mcfg, res, commit)

    test = data.rows(2)
    probs = {name: r.test_probs for name, r in results.items()}
    seq_name, seq_probs = _sequence_test_probs(ctx, test)
    table = comparison_table(ctx, results, top_fraction)
    bands = calibration_band_table(ctx, data, {**({seq_name: seq_probs} if seq_probs is not None else {}), **probs})
    ctx.log_table(table, "model_comparison")
    ctx.log_table(bands, "calibration_bands")
    ctx.log_metrics(_gap_metrics(table))
    if bcfg.get("plots", True) and results:
        _log_plots(ctx, data, seq_name, seq_probs, probs)
    if bcfg.get("predictions_dir"):
        _write_predictions(Path(bcfg.predictions_dir), ctx, data, seq_name, seq_probs, probs, table, bands)
    ctx.timings["baselines_s"] = time.perf_counter() - t0
    if results:
        ctx.summary_rows += _summary(table)
    return results


# --------------------------------------------------------------------------- tracking


def _log_child_run(ctx: RunContext, name: str, mcfg, res: bl.BaselineResult, commit: str | None) -> None:
    if ctx.client is None:
        return
    cfg = ctx.cfg
    tags = {"model.kind": "baseline", "model.name": name, "data.name": ctx.tables.name,
            "data.fingerprint": ctx.tables.fingerprint, "data.cutoff": str(ctx.tables.cutoff),
            "git.commit": commit or "unknown"}
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg.pop("datamodule", None)
    params = {"model": {"name": name, "kind": "baseline", **OmegaConf.to_container(mcfg, resolve=True)},
              "data": data_cfg, "seed": cfg.seed, "baselines": {"top_fraction": cfg.baselines.get("top_fraction", 0.2)}}
    with tracking.child_run(ctx.client, ctx.run_id, f"{name}-{ctx.tables.name}", tags, params) as run_id:
        metrics = {**res.metrics, "timing/fit_s": res.fit_s}
        if hasattr(res.model, "fitted_params"):
            metrics.update({f"fitted/{k}": v for k, v in res.model.fitted_params().items()})
        if hasattr(res.model, "best_iterations"):
            metrics.update({f"fitted/{k}": v for k, v in res.model.best_iterations().items()})
        tracking.log_metrics(ctx.client, run_id, metrics)
        imp = res.model.importance()
        if imp is not None:
            tracking.log_table(ctx.client, run_id, imp, "feature_importance")


# --------------------------------------------------------------------------- comparison


def _sequence_test_probs(ctx: RunContext, test: np.ndarray) -> tuple[str, np.ndarray | None]:
    """The exported sequence model's probabilities on the test customers (ONNX, as served)."""
    from sellerlift.constants import SCORE_OUTPUTS
    from sellerlift.runtime import SequenceModel

    name = str(ctx.cfg.model.name)
    path = ctx.bundle_files.get("sequence")
    if path is None or not Path(path).exists():
        return name, None
    out = SequenceModel.from_file(path).predict(ctx.prep.feats.take(test))
    return name, np.stack([out[k] for k in SCORE_OUTPUTS], axis=1).astype(np.float64)


def comparison_table(ctx: RunContext, results: dict[str, bl.BaselineResult], top_fraction: float = 0.2) -> pd.DataFrame:
    """One row per model (sequence, baselines, ceiling): test metrics of both heads and fit time."""
    top = f"precision_top{int(round(top_fraction * 100))}"
    cols = [f"{h}_{m}" for h in HEADS for m in (*METRICS, top)]
    rows = []
    m = ctx.metrics
    if any(k.startswith("test/") for k in m):
        rows.append({"model": str(ctx.cfg.model.name), "kind": "sequence",
                     **{c: m.get(f"test/{c}", np.nan) for c in cols}, "fit_s": ctx.timings.get("fit_s", np.nan)})
    for name, r in results.items():
        rows.append({"model": name, "kind": "baseline", **{c: r.metrics.get(f"test/{c}", np.nan) for c in cols},
                     "fit_s": r.fit_s})
    prep = ctx.prep
    if prep.truth is not None and all(c in prep.truth for c in TRUTH_COLUMNS.values()):
        test = np.flatnonzero(prep.split == 2)
        p = np.stack([prep.truth[TRUTH_COLUMNS[h]].to_numpy()[test] for h in HEADS], axis=1)
        ceil = metrics.head_metrics(prep.targets[test], p, "", top_fraction)
        rows.append({"model": "ceiling (true probabilities)", "kind": "ceiling",
                     **{c: ceil.get(c, np.nan) for c in cols}, "fit_s": np.nan})
    return pd.DataFrame(rows, columns=["model", "kind", *cols, "fit_s"])


def calibration_band_table(ctx: RunContext, data: bl.BaselineData, probs: dict[str, np.ndarray]) -> pd.DataFrame:
    test = data.rows(2)
    rows = []
    for name, p in probs.items():
        for i, head in enumerate(HEADS):
            rows.append({"model": name, "head": head, **metrics.calibration_bands(data.targets[test, i], p[:, i])})
    return pd.DataFrame(rows)


def _gap_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Sequence minus the best baseline per AUROC/AP (positive = the sequence model is ahead)."""
    seq, base = table[table["kind"] == "sequence"], table[table["kind"] == "baseline"]
    if seq.empty or base.empty:
        return {}
    out = {}
    for h in HEADS:
        for m in ("auroc", "ap"):
            c = f"{h}_{m}"
            best = base[c].max()
            if np.isfinite(best) and np.isfinite(seq[c].iloc[0]):
                out[f"compare/{c}_minus_best_baseline"] = float(seq[c].iloc[0] - best)
    return out


def _log_plots(ctx, data, seq_name, seq_probs, probs) -> None:
    if ctx.client is None:
        return
    from sellerlift import plots

    test = data.rows(2)
    with tempfile.TemporaryDirectory() as tmp:
        for i, head in enumerate(HEADS):
            y = data.targets[test, i]
            if not 0 < y.mean() < 1:
                continue
            scores = {seq_name: seq_probs[:, i]} if seq_probs is not None else {}
            scores.update({n: p[:, i] for n, p in probs.items()})
            if ctx.prep.truth is not None and TRUTH_COLUMNS[head] in ctx.prep.truth:
                scores["truth (ceiling)"] = ctx.prep.truth[TRUTH_COLUMNS[head]].to_numpy()[test]
            ctx.log_artifact(plots.roc_and_calibration(y, scores, f"{head}: all models",
                                                       Path(tmp) / f"{head}_roc_all_models.png"), "plots")


def _write_predictions(out_dir: Path, ctx, data, seq_name, seq_probs, probs, table, bands) -> None:
    """Test-set scores of every model (and the truth) for paired comparisons outside the run."""
    from sellerlift.io import atomic_write_parquet

    test = data.rows(2)
    df = pd.DataFrame({"customer_id": data.customer_id[test]})
    for i, h in enumerate(HEADS):
        df[f"y_{h}"] = data.targets[test, i]
    all_probs = {**({seq_name: seq_probs} if seq_probs is not None else {}), **probs}
    for name, p in all_probs.items():
        for i, h in enumerate(HEADS):
            df[f"{name}__{h}"] = p[:, i]
    if ctx.prep.truth is not None:
        for h, c in TRUTH_COLUMNS.items():
            if c in ctx.prep.truth:
                df[f"truth__{h}"] = ctx.prep.truth[c].to_numpy()[test]
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{ctx.tables.name}-{seq_name}-{ctx.run_id or 'norun'}"
    atomic_write_parquet(df, out_dir / f"{tag}.parquet")
    table.to_csv(out_dir / f"{tag}.comparison.csv", index=False)
    bands.to_csv(out_dir / f"{tag}.bands.csv", index=False)


def _summary(table: pd.DataFrame) -> list[tuple[str, str]]:
    def f(v):
        return f"{v:.3f}" if np.isfinite(v) else "—"

    base = table[table["kind"] == "baseline"]
    rows = [("baselines: test AUROC intent / churn",
             " · ".join(f"{r.model} {f(r.intent_auroc)}/{f(r.churn_auroc)}" for r in base.itertuples()))]
    gaps = _gap_metrics(table)
    if gaps:
        rows.append(("sequence − best baseline AUROC intent / churn",
                     f"{gaps.get('compare/intent_auroc_minus_best_baseline', np.nan):+.3f} / "
                     f"{gaps.get('compare/churn_auroc_minus_best_baseline', np.nan):+.3f}"))
    return rows
