"""Stage: classic baselines on the run's customers, split and labels; each its own MLflow run.

Runs after the model stage (an entry of ``cfg.extras``). For every entry of
``cfg.baselines.models`` it fits the baseline, scores validation and test with
the metric names the sequence model uses (``test/intent_auroc``, ...), and logs
a run of its own in the same experiment, tagged ``model.kind=baseline`` and
nested under the main run (``mlflow.parentRunId``), so the MLflow UI compares
them side by side. The main run gets the comparison table (sequence vs
baselines vs the simulator's ceiling, every test metric with its bootstrap
interval), a paired bootstrap of "sequence minus best baseline", calibration by
score band and ROC plots of all models. Baseline metrics never enter the bundle's
manifest: the bundle describes the exported model. With ``data.rolling`` the
baselines train on the same extra rows as the sequence model. The customer-value
baselines (``baselines.value_models``: BG/NBD + Gamma-Gamma) are compared with the
sequence model's value head in :mod:`sellerlift.stages.value_baselines`.
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
from sellerlift import bootstrap, metrics, tracking
from sellerlift.constants import HEADS
from sellerlift.stages.context import RunContext
from sellerlift.stages.sequence import evaluation_intervals, exported_probabilities, fmt_ci, truth_probabilities

METRICS = ("auroc", "ap", "ece")
SPLIT_NAMES = {0: "train", 1: "val", 2: "test"}


def baseline_data(ctx: RunContext) -> bl.BaselineData:
    """The baselines' inputs: the run's customers, split and labels, plus the rolling rows (training split)."""
    prep, events = ctx.prep, ctx.tables.events
    data = bl.baseline_data(prep, events, ctx.tables.cutoff, ctx.cfg.data.horizons)
    ex = prep.extra
    if ex is None or len(ex.targets) == 0:
        return data
    tenure = ex.feats.raw_aggregates["tenure_days"].to_numpy()
    frames, order = [], []
    for c in pd.unique(ex.cutoff):  # BG/NBD inputs as of each row's own cutoff (never the later one)
        rows = np.flatnonzero(ex.cutoff == c)
        order.append(rows)
        frames.append(
            bl.bgnbd_inputs(
                events[events["ts"].to_numpy() < c], pd.Timestamp(c), ex.feats.customer_id[rows], tenure[rows]
            )
        )
    bg = pd.concat(frames, ignore_index=True).iloc[np.argsort(np.concatenate(order), kind="stable")]
    return bl.BaselineData(
        customer_id=np.concatenate([data.customer_id, ex.feats.customer_id]),
        X=np.concatenate([data.X, ex.feats.aggregates.astype(np.float32)]),
        feature_names=data.feature_names,
        targets=np.concatenate([data.targets, ex.targets.astype(np.float32)]),
        split=np.concatenate([data.split, np.zeros(len(ex.targets), data.split.dtype)]),
        bgnbd=pd.concat([data.bgnbd, bg], ignore_index=True),
        horizons=data.horizons,
    )


def train_baselines(ctx: RunContext) -> dict[str, bl.BaselineResult]:
    bcfg = ctx.cfg.get("baselines") or {}
    models_cfg = {k: v for k, v in (bcfg.get("models") or {}).items() if v is not None}
    value_cfg = {k: v for k, v in (bcfg.get("value_models") or {}).items() if v is not None}
    if not models_cfg and not value_cfg and not bcfg.get("predictions_dir"):
        return {}
    top_fraction = float(bcfg.get("top_fraction", 0.2))
    t0 = time.perf_counter()
    data = baseline_data(ctx)
    commit = tracking.git_commit(ctx.root) if ctx.client is not None else None

    test = data.rows(2)
    results: dict[str, bl.BaselineResult] = {}
    for name, mcfg in models_cfg.items():
        model = instantiate(mcfg)
        res = bl.fit_and_evaluate(model, data, top_fraction)
        res.name = name
        res.metrics.update(evaluation_intervals(ctx, data.targets[test], res.test_probs, "test/"))
        results[name] = res
        _log_child_run(ctx, name, mcfg, res, commit)
    if value_cfg:
        from sellerlift.stages.value_baselines import train_value_baselines

        train_value_baselines(ctx, data, commit)

    probs = {name: r.test_probs for name, r in results.items()}
    seq_name, seq_probs = _sequence_test_probs(ctx, test)
    table = comparison_table(ctx, results, top_fraction)
    bands = calibration_band_table(ctx, data, {**({seq_name: seq_probs} if seq_probs is not None else {}), **probs})
    ctx.log_table(table, "model_comparison")
    ctx.log_table(bands, "calibration_bands")
    gaps, best = gap_metrics(ctx, table, data.targets[test], seq_probs, probs)
    ctx.log_metrics(gaps)
    if ctx.client is not None:
        for c, name in best.items():
            ctx.client.set_tag(ctx.run_id, f"compare.{c}_best_baseline", name)
    if bcfg.get("plots", True) and results:
        _log_plots(ctx, data, seq_name, seq_probs, probs)
    if bcfg.get("predictions_dir"):
        _write_predictions(Path(bcfg.predictions_dir), ctx, data, seq_name, results, table, bands)
    ctx.timings["baselines_s"] = time.perf_counter() - t0
    if results:
        ctx.summary_rows += _summary(table, gaps, best)
    return results


# --------------------------------------------------------------------------- tracking


def _log_child_run(ctx: RunContext, name: str, mcfg, res: bl.BaselineResult, commit: str | None) -> None:
    if ctx.client is None:
        return
    cfg = ctx.cfg
    tags = {
        "model.kind": "baseline",
        "model.name": name,
        "data.name": ctx.tables.name,
        "data.fingerprint": ctx.tables.fingerprint,
        "data.cutoff": str(ctx.tables.cutoff),
        "git.commit": commit or "unknown",
        "guards.small_data": str(bool((ctx.bundle_extra.get("guards") or {}).get("small_data"))).lower(),
    }
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg.pop("datamodule", None)
    params = {
        "model": {"name": name, "kind": "baseline", **OmegaConf.to_container(mcfg, resolve=True)},
        "data": data_cfg,
        "seed": cfg.seed,
        "baselines": {"top_fraction": cfg.baselines.get("top_fraction", 0.2)},
    }
    with tracking.child_run(ctx.client, ctx.run_id, f"{name}-{ctx.tables.name}", tags, params) as run_id:
        from sellerlift.pipeline import data_profile

        tracking.log_dataset(
            ctx.client, run_id, ctx.tables.name, ctx.tables.fingerprint, ctx.data_source, data_profile(ctx)
        )
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


def _sequence_test_probs(
    ctx: RunContext, test: np.ndarray, rows: np.ndarray | None = None
) -> tuple[str, np.ndarray | None]:
    """The exported sequence model's probabilities on the test customers (ONNX, as served)."""
    name = str(ctx.cfg.model.name)
    path = ctx.bundle_files.get("sequence")
    if path is None or not Path(path).exists():
        return name, None
    return name, exported_probabilities(ctx, Path(path), test if rows is None else rows)


def comparison_table(ctx: RunContext, results: dict[str, bl.BaselineResult], top_fraction: float = 0.2) -> pd.DataFrame:
    """One row per model (sequence, baselines, ceiling): test metrics of both heads, their bootstrap intervals
    (``<metric>_ci_low`` / ``_ci_high``) and fit time."""
    top = f"precision_top{int(round(top_fraction * 100))}"
    cols = [f"{h}_{m}" for h in HEADS for m in (*METRICS, top)]
    cols = [c for base in cols for c in (base, f"{base}_ci_low", f"{base}_ci_high")]
    rows = []
    m = {**ctx.metrics, **(ctx.bundle_extra.get("test_intervals") or {})}
    if any(k.startswith("test/") for k in m):
        rows.append(
            {
                "model": str(ctx.cfg.model.name),
                "kind": "sequence",
                **{c: m.get(f"test/{c}", np.nan) for c in cols},
                "fit_s": ctx.timings.get("fit_s", np.nan),
            }
        )
    for name, r in results.items():
        rows.append(
            {
                "model": name,
                "kind": "baseline",
                **{c: r.metrics.get(f"test/{c}", np.nan) for c in cols},
                "fit_s": r.fit_s,
            }
        )
    test = np.flatnonzero(ctx.prep.split == 2)
    truth = truth_probabilities(ctx, test)
    if truth is not None:
        y = ctx.prep.targets[test]
        ceil = {**metrics.head_metrics(y, truth, "", top_fraction), **evaluation_intervals(ctx, y, truth, "")}
        rows.append(
            {
                "model": "ceiling (true probabilities)",
                "kind": "ceiling",
                **{c: ceil.get(c, np.nan) for c in cols},
                "fit_s": np.nan,
            }
        )
    return pd.DataFrame(rows, columns=["model", "kind", *cols, "fit_s"])


def calibration_band_table(ctx: RunContext, data: bl.BaselineData, probs: dict[str, np.ndarray]) -> pd.DataFrame:
    test = data.rows(2)
    rows = []
    for name, p in probs.items():
        for i, head in enumerate(HEADS):
            rows.append({"model": name, "head": head, **metrics.calibration_bands(data.targets[test, i], p[:, i])})
    return pd.DataFrame(rows)


def gap_metrics(
    ctx: RunContext, table: pd.DataFrame, y_test: np.ndarray, seq_probs: np.ndarray | None, probs: dict[str, np.ndarray]
) -> tuple[dict[str, float], dict[str, str]]:
    """Sequence minus the best baseline (highest test value) per AUROC/AP, positive = the sequence model is ahead,
    with a paired bootstrap interval over the same resampled test customers (``evaluation.*``) and the share of
    resamples without a gain: ``compare/<head>_<metric>_minus_best_baseline[_ci_low|_ci_high]`` and
    ``compare/<head>_<metric>_p_no_gain``; also returns which baseline was best per ``<head>_<metric>``."""
    seq, base = table[table["kind"] == "sequence"], table[table["kind"] == "baseline"]
    if seq.empty or base.empty:
        return {}, {}
    e = ctx.cfg.get("evaluation") or {}
    n_boot = int(e.get("bootstrap", 1000))
    out, best_of = {}, {}
    for i, h in enumerate(HEADS):
        for m in ("auroc", "ap"):
            c = f"{h}_{m}"
            vals = base.set_index("model")[c]
            if not np.isfinite(vals).any() or not np.isfinite(seq[c].iloc[0]):
                continue
            best = str(vals.idxmax())
            key = f"compare/{c}_minus_best_baseline"
            out[key] = float(seq[c].iloc[0] - vals[best])
            if n_boot > 0 and seq_probs is not None:
                d = bootstrap.paired_difference(
                    y_test[:, i],
                    seq_probs[:, i],
                    probs[best][:, i],
                    m,
                    n_boot,
                    float(e.get("level", 0.95)),
                    int(e.get("seed", 0)),
                )
                out.update(
                    {
                        f"{key}_ci_low": d["ci_low"],
                        f"{key}_ci_high": d["ci_high"],
                        f"compare/{c}_p_no_gain": d["p_not_better"],
                    }
                )
            best_of[c] = best
    return out, best_of


def _log_plots(ctx, data, seq_name, seq_probs, probs) -> None:
    if ctx.client is None:
        return
    from sellerlift import plots

    test = data.rows(2)
    truth = truth_probabilities(ctx, test)
    with tempfile.TemporaryDirectory() as tmp:
        for i, head in enumerate(HEADS):
            y = data.targets[test, i]
            if not 0 < y.mean() < 1:
                continue
            scores = {seq_name: seq_probs[:, i]} if seq_probs is not None else {}
            scores.update({n: p[:, i] for n, p in probs.items()})
            if truth is not None:
                scores["truth (ceiling)"] = truth[:, i]
            ctx.log_artifact(
                plots.roc_and_calibration(y, scores, f"{head}: all models", Path(tmp) / f"{head}_roc_all_models.png"),
                "plots",
            )


def _write_predictions(out_dir: Path, ctx, data, seq_name, results, table, bands) -> None:
    """Validation and test scores of every model (and the truth), one row per customer with its ``split``, for
    paired comparisons and ensembles fitted on validation outside the run."""
    from sellerlift.io import atomic_write_parquet

    rows = np.concatenate([data.rows(1), data.rows(2)])
    df = pd.DataFrame(
        {"customer_id": data.customer_id[rows], "split": np.asarray([SPLIT_NAMES[int(s)] for s in data.split[rows]])}
    )
    for i, h in enumerate(HEADS):
        df[f"y_{h}"] = data.targets[rows, i]
    seq_probs = _sequence_test_probs(ctx, rows)[1]
    all_probs = {
        **({seq_name: seq_probs} if seq_probs is not None else {}),
        **{name: r.model.predict(data, rows) for name, r in results.items()},
    }
    for name, p in all_probs.items():
        for i, h in enumerate(HEADS):
            df[f"{name}__{h}"] = p[:, i]
    truth = truth_probabilities(ctx, rows)
    if truth is not None:
        for i, h in enumerate(HEADS):
            df[f"truth__{h}"] = truth[:, i]
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{ctx.tables.name}-{seq_name}-{ctx.run_id or 'norun'}"
    atomic_write_parquet(df, out_dir / f"{tag}.parquet")
    table.to_csv(out_dir / f"{tag}.comparison.csv", index=False)
    bands.to_csv(out_dir / f"{tag}.bands.csv", index=False)


def _summary(table: pd.DataFrame, gaps: dict, best_of: dict) -> list[tuple[str, str]]:
    base = table[table["kind"] == "baseline"]
    rows = []
    for h in HEADS:
        rows.append(
            (
                f"baselines: test {h} AUROC [95% CI]",
                " · ".join(
                    f"{r['model']} {fmt_ci({k: r[k] for k in r.index}, f'{h}_auroc')}" for _, r in base.iterrows()
                ),
            )
        )
    for h in HEADS:
        key = f"compare/{h}_auroc_minus_best_baseline"
        if key not in gaps:
            continue
        best = best_of.get(f"{h}_auroc", "?")
        lo, hi = gaps.get(f"{key}_ci_low", np.nan), gaps.get(f"{key}_ci_high", np.nan)
        ci = f" [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else ""
        verdict = (
            "" if not np.isfinite(lo) else " (ahead)" if lo > 0 else " (behind)" if hi < 0 else " (not significant)"
        )
        rows.append(
            (f"sequence − best baseline, {h} AUROC (paired 95% CI)", f"{gaps[key]:+.3f}{ci} vs {best}{verdict}")
        )
    return rows
