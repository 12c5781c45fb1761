"""Customer value next to the classic model: BG/NBD + Gamma-Gamma against the sequence model's value head.

Called by :func:`sellerlift.stages.baselines.train_baselines` for every entry of
``baselines.value_models`` (default: ``bgnbd_gg``, :class:`sellerlift.clv_baseline.BGNBDGammaGammaValue`).
Each is fitted on the run's training customers (and rolling rows), scored on the test customers with
the metric names the value head uses (``test/value_*`` vs the realised spend, ``test/value_truth_*`` vs
the simulator's true expected spend; :func:`sellerlift.stages.value.score_values`) and logged as its
own child run (``model.kind=baseline``). The main run gets the table ``clv_comparison`` (every model
against every target, 95 % bootstrap intervals; on the simulator also the truth itself as a predictor of
the realised spend: the best any model can do) and paired bootstrap differences
``compare/value[_truth]_<metric>_minus_<baseline>`` (sequence minus baseline).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sellerlift import baselines as bl
from sellerlift import tracking
from sellerlift import value_metrics as vm
from sellerlift.stages.context import RunContext
from sellerlift.stages.value import exported_values, score_values, value_targets, value_truth

TARGETS = {"value": "realised spend", "value_truth": "true expected spend"}
COMPARED = ("rmse", "spearman", "top_decile_share")


def sequence_values(ctx: RunContext, rows: np.ndarray) -> np.ndarray | None:
    """[n, 2] the exported value head's spend and purchase days for ``rows``; None without the head."""
    from pathlib import Path

    path = ctx.bundle_files.get("sequence")
    if path is None or not Path(path).exists():
        return None
    from sellerlift.runtime import SequenceModel

    if not SequenceModel.from_file(path).value_outputs:
        return None
    return exported_values(Path(path), ctx.prep.feats.take(rows))


def train_value_baselines(ctx: RunContext, data: bl.BaselineData, commit: str | None) -> dict[str, np.ndarray]:
    """Fit, score and log every value baseline; the comparison table and paired differences in the main run.
    Returns {model: test predictions [n_test, 2]} (the sequence head's under the model's name)."""
    bcfg = ctx.cfg.get("baselines") or {}
    models = {k: v for k, v in (bcfg.get("value_models") or {}).items() if v is not None}
    test = data.rows(2)
    preds: dict[str, np.ndarray] = {}
    seq = sequence_values(ctx, test)
    seq_name = f"{ctx.cfg.model.name} (value head)"
    if seq is not None:
        preds[seq_name] = seq
    metrics = {}
    for name, mcfg in models.items():
        model = instantiate(mcfg)
        try:
            model.fit(data)
        except ValueError as err:  # e.g. no amounts: nothing to fit Gamma-Gamma on
            ctx.summary_rows.append((f"value baseline {name}", f"skipped: {err}"))
            continue
        preds[name] = model.predict(data, test)
        metrics[name] = score_values(ctx, preds[name], test)
        _log_child_run(ctx, name, mcfg, model, metrics[name], commit)
    if len(preds) < 1:
        return preds
    table = comparison_table(ctx, preds, test)
    ctx.log_table(table, "clv_comparison")
    gaps = paired_gaps(ctx, test, preds.get(seq_name), {k: v for k, v in preds.items() if k != seq_name})
    ctx.log_metrics(gaps)
    ctx.summary_rows += _summary(table, gaps)
    return preds


def _log_child_run(ctx: RunContext, name: str, mcfg, model, metrics: dict, commit: str | None) -> None:
    if ctx.client is None:
        return
    tags = {
        "model.kind": "baseline",
        "model.name": name,
        "model.task": "customer_value",
        "data.name": ctx.tables.name,
        "data.fingerprint": ctx.tables.fingerprint,
        "data.cutoff": str(ctx.tables.cutoff),
        "git.commit": commit or "unknown",
    }
    params = {
        "model": {"name": name, "kind": "baseline", **OmegaConf.to_container(mcfg, resolve=True)},
        "seed": ctx.cfg.seed,
        "horizon_days": int(ctx.cfg.data.horizons.churn_days),
    }
    with tracking.child_run(ctx.client, ctx.run_id, f"{name}-{ctx.tables.name}", tags, params) as run_id:
        from sellerlift.pipeline import data_profile

        tracking.log_dataset(
            ctx.client, run_id, ctx.tables.name, ctx.tables.fingerprint, ctx.data_source, data_profile(ctx)
        )
        fitted = {f"fitted/{k}": v for k, v in model.fitted_params().items()} if hasattr(model, "fitted_params") else {}
        tracking.log_metrics(ctx.client, run_id, {**metrics, **fitted})


def _targets(ctx: RunContext, rows: np.ndarray) -> dict[str, np.ndarray]:
    out = {"value": value_targets(ctx)[rows, 0].astype(np.float64)}
    truth = value_truth(ctx, rows)
    if truth is not None:
        out["value_truth"] = truth["value"]
    return out


def comparison_table(ctx: RunContext, preds: dict[str, np.ndarray], rows: np.ndarray) -> pd.DataFrame:
    """One row per (model, target): every value metric of the spend with its bootstrap interval."""
    e = ctx.cfg.get("evaluation") or {}
    n_boot, level, seed = int(e.get("bootstrap", 1000)), float(e.get("level", 0.95)), int(e.get("seed", 0))
    targets = _targets(ctx, rows)
    models = dict(preds)
    if "value_truth" in targets:  # the truth as a predictor of the realised spend: the ceiling
        models["ceiling (true expected spend)"] = np.stack([targets["value_truth"], targets["value_truth"]], axis=1)
    out = []
    for name, p in models.items():
        for key, y in targets.items():
            if name.startswith("ceiling") and key == "value_truth":
                continue
            row = {"model": name, "target": TARGETS[key], "customers": len(y)}
            row.update(vm.value_metrics(y, p[:, 0]))
            row.update(vm.value_metric_intervals(y, p[:, 0], "", n_boot, level, seed))
            out.append(row)
    return pd.DataFrame(out)


def paired_gaps(
    ctx: RunContext, rows: np.ndarray, seq: np.ndarray | None, baselines: dict[str, np.ndarray]
) -> dict[str, float]:
    """``compare/<target>_<metric>_minus_<baseline>`` (sequence minus baseline) with paired 95 % intervals."""
    if seq is None or not baselines:
        return {}
    e = ctx.cfg.get("evaluation") or {}
    n_boot, level, seed = int(e.get("bootstrap", 1000)), float(e.get("level", 0.95)), int(e.get("seed", 0))
    out = {}
    for key, y in _targets(ctx, rows).items():
        for name, p in baselines.items():
            for m in COMPARED:
                d = vm.paired_value_difference(y, seq[:, 0], p[:, 0], m, n_boot, level, seed)
                k = f"compare/{key}_{m}_minus_{name}"
                out.update(
                    {
                        k: d["diff"],
                        f"{k}_ci_low": d["ci_low"],
                        f"{k}_ci_high": d["ci_high"],
                        f"compare/{key}_{m}_p_no_gain_vs_{name}": d["p_not_better"],
                    }
                )
    return out


def _summary(table: pd.DataFrame, gaps: dict) -> list[tuple[str, str]]:
    rows = []
    for target, t in table.groupby("target", sort=False):
        parts = []
        for _, r in t.iterrows():
            ci = (
                f" [{r['spearman_ci_low']:.3f}, {r['spearman_ci_high']:.3f}]"
                if np.isfinite(r.get("spearman_ci_low", np.nan))
                else ""
            )
            parts.append(f"{r['model']} {r['spearman']:.3f}{ci} / {r['top_decile_share']:.2f} / {r['rmse']:.1f}")
        rows.append((f"value vs {target}: Spearman [95% CI] / top-decile share / RMSE", " · ".join(parts)))
    for k, v in gaps.items():
        if k.startswith("compare/") and "_minus_" in k and "spearman" in k and not k.endswith(("_low", "_high")):
            lo, hi = gaps.get(f"{k}_ci_low", np.nan), gaps.get(f"{k}_ci_high", np.nan)
            verdict = "" if not np.isfinite(lo) else " (ahead)" if lo > 0 else " (behind)" if hi < 0 else " (level)"
            rows.append((k.removeprefix("compare/"), f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]{verdict}"))
    return rows
