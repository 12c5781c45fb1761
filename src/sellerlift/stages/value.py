"""The sequence model's customer-value head within a run: targets, measurement, the manifest's ``value`` section.

The head predicts, per customer, the expected spend and the expected purchase days over the churn
horizon (``value_<d>d``, ``purchases_<d>d``; :mod:`sellerlift.labels`). Training targets come from the
same future window as the churn label, for the latest cutoff's customers and for the earlier cutoffs'
rows of ``data.rolling`` alike (every window ends by the evaluation cutoff). The exported model is
measured through the runtime on the test customers (:mod:`sellerlift.value_metrics`, bootstrap
intervals) against the realised spend and, on the simulator, against its true expected spend
(``truth["clv_90d"]``, 90-day horizon only); BG/NBD + Gamma-Gamma gets the same metrics in the
baselines stage (:func:`sellerlift.stages.baselines.train_baselines`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift import value_metrics as vm
from sellerlift.constants import VALUE_HEADS, value_outputs
from sellerlift.labels import value_labels
from sellerlift.runtime.loyalty import DEFINITION, reference_quantiles
from sellerlift.stages.context import RunContext

LOSS = (
    "Tweedie deviance (power {p:g}) on a log link for spend (zero-inflated, heavy-tailed: a point mass at 0 "
    "plus a skewed positive part; its minimiser is the mean), Poisson deviance on a log link for purchase days"
)


def horizon_days(ctx: RunContext) -> int:
    return int(ctx.cfg.data.horizons.churn_days)


def value_targets(ctx: RunContext) -> np.ndarray:
    """[n, 2] spend and purchase days after the cutoff of every customer of ``ctx.prep`` (its row order)."""
    return value_labels(
        ctx.tables.events, ctx.tables.cutoff, ctx.prep.feats.customer_id, horizon_days(ctx), check=False
    )


def training_value_targets(ctx: RunContext) -> np.ndarray:
    """[n + m, 2]: :func:`value_targets`, then the rolling rows' (each at its own cutoff), in the order of
    :meth:`~sellerlift.stages.context.Prepared.training_rows`."""
    base = value_targets(ctx)
    ex = ctx.prep.extra
    if ex is None or len(ex.targets) == 0:
        return base
    events, days = ctx.tables.events, horizon_days(ctx)
    past = events[events["ts"].to_numpy() < np.datetime64(ctx.tables.cutoff)]
    out = np.zeros((len(ex.targets), 2), np.float32)
    for c in pd.unique(ex.cutoff):
        rows = np.flatnonzero(ex.cutoff == c)
        out[rows] = value_labels(past, pd.Timestamp(c), ex.feats.customer_id[rows], days, check=False)
    return np.concatenate([base, out])


def exported_values(onnx_path: Path, feats) -> np.ndarray:
    """[n, 2] spend and purchase days of the exported model for ``feats`` through the runtime (as served)."""
    from sellerlift.runtime import SequenceModel

    model = SequenceModel.from_file(onnx_path)
    out = model.predict(feats)
    return np.stack([out[n] for n in model.value_outputs], axis=1).astype(np.float64)


def value_truth(ctx: RunContext, rows: np.ndarray) -> dict[str, np.ndarray] | None:
    """The simulator's true expected spend (and its Monte Carlo standard error) and purchases of ``rows``; None
    without truth or for another horizon (the simulator writes 90 days)."""
    truth, d = ctx.prep.truth, horizon_days(ctx)
    if truth is None or f"clv_{d}d" not in truth:
        return None
    se_col = f"gross_{d}d_0_se"
    return {
        "value": truth[f"clv_{d}d"].to_numpy(np.float64)[rows],
        "value_se": truth[se_col].to_numpy(np.float64)[rows] if se_col in truth else None,
        "purchases": truth[f"purchases_{d}d"].to_numpy(np.float64)[rows] if f"purchases_{d}d" in truth else None,
    }


def score_values(
    ctx: RunContext, pred: np.ndarray, rows: np.ndarray, prefix: str = "test/", intervals: bool = True
) -> dict[str, float]:
    """Every value metric of ``pred`` [len(rows), 2] (spend, purchase days): vs the realised outcome
    (``{prefix}value_*``, ``{prefix}purchases_*``) and vs the truth (``{prefix}value_truth_*``, ...), with bootstrap
    intervals of the spend metrics (``evaluation.*``)."""
    e = ctx.cfg.get("evaluation") or {}
    n_boot = int(e.get("bootstrap", 1000)) if intervals else 0
    level, seed = float(e.get("level", 0.95)), int(e.get("seed", 0))
    actual = value_targets(ctx)[rows].astype(np.float64)
    out = {}
    for j, head in enumerate(VALUE_HEADS):
        out.update(vm.value_metrics(actual[:, j], pred[:, j], f"{prefix}{head}_"))
    out.update(vm.value_metric_intervals(actual[:, 0], pred[:, 0], f"{prefix}value_", n_boot, level, seed))
    truth = value_truth(ctx, rows)
    if truth is not None:
        out.update(vm.value_metrics(truth["value"], pred[:, 0], f"{prefix}value_truth_", truth_se=truth["value_se"]))
        out.update(
            vm.value_metric_intervals(truth["value"], pred[:, 0], f"{prefix}value_truth_", n_boot, level, seed + 1)
        )
        if truth["purchases"] is not None:
            out.update(vm.value_metrics(truth["purchases"], pred[:, 1], f"{prefix}purchases_truth_"))
    return out


def measure(ctx: RunContext, onnx_path: Path, net) -> dict[str, float]:
    """Test metrics of the exported value head, the manifest's ``value`` section (into ``ctx.bundle_extra``), and
    the summary rows; returns the metrics (also logged)."""
    from dataclasses import replace

    from sellerlift.pipeline import cold_start_prior

    prep, h = ctx.prep, dict(ctx.cfg.data.horizons)
    names = value_outputs(h)
    test, train = np.flatnonzero(prep.split == 2), np.flatnonzero(prep.split == 0)
    pred = exported_values(onnx_path, prep.feats.take(test))
    m = score_values(ctx, pred, test)
    train_pred = exported_values(onnx_path, prep.feats.take(train))
    prior = cold_start_prior(replace(prep, targets=value_targets(ctx)), outputs=names)
    p = float(ctx.cfg.model.module.get("tweedie_power", 1.5))
    ctx.bundle_extra["value"] = {
        "outputs": list(names),
        "horizon_days": horizon_days(ctx),
        "what": {
            names[0]: f"expected spend in the next {horizon_days(ctx)} days",
            names[1]: f"expected days with a purchase in the next {horizon_days(ctx)} days",
        },
        "loss": LOSS.format(p=p),
        "scale": [float(x) for x in net.value_scale.tolist()],
        "cold_start": {k: prior[k] for k in names},
        "loyalty": DEFINITION,
        "reference_quantiles": reference_quantiles(train_pred[:, 0]),
        "reference": f"predicted {names[0]} of the {len(train):,} training customers at the cutoff",
    }
    ctx.metrics.update({k: v for k, v in m.items() if not k.endswith(("_ci_low", "_ci_high"))})
    ctx.log_metrics(m)
    ctx.summary_rows += summary_rows(m, names[0])
    return m


def summary_rows(m: dict, name: str) -> list[tuple[str, str]]:
    def f(key, fmt=".3f"):
        v = m.get(key)
        if v is None or not np.isfinite(v):
            return "—"
        lo, hi = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
        ci = f" [{lo:{fmt}}, {hi:{fmt}}]" if lo is not None and np.isfinite(lo) else ""
        return f"{v:{fmt}}{ci}"

    rows = [
        (
            f"{name}: RMSE · Spearman · top-decile share (realised)",
            f"{f('test/value_rmse', '.2f')} · {f('test/value_spearman')} · {f('test/value_top_decile_share')}",
        )
    ]
    if "test/value_truth_rmse" in m:
        rows.append(
            (
                f"{name}: RMSE · Spearman · top-decile share (true expected)",
                f"{f('test/value_truth_rmse', '.2f')} · {f('test/value_truth_spearman')} · "
                f"{f('test/value_truth_top_decile_share')}",
            )
        )
    return rows
