"""Customer-value (CLV) metrics (NumPy/SciPy): how well a model ranks and sizes what customers will spend.

Every value model (the sequence model's value head, BG/NBD + Gamma-Gamma) is scored by
:func:`value_metrics` against the same target, with the same names, so MLflow compares them:

* ``rmse``, ``mae``: error in currency (or purchase days);
* ``spearman``: rank correlation (is the order right, whatever the scale);
* ``top_decile_share``: the value of the customers the model ranks in its top 10 %, as a share of the
  value of the true top 10 % (1 = it found exactly the most valuable customers; ties at the threshold
  shared, i.e. the expectation under random tie-breaking);
* ``mean_ratio``: total predicted / total actual (1 = the totals match: calibration in the large).

Targets: the realised spend after the cutoff (any data), and on the simulator its *true expected*
spend (``truth["clv_90d"]``, a Monte Carlo mean: ``rmse_corrected`` removes its own noise,
``sqrt(max(MSE - mean(se^2), 0))``). :func:`value_metric_intervals` gives percentile bootstrap
intervals over customers, :func:`paired_value_difference` a paired one for "model A minus model B".
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

VALUE_METRICS = ("rmse", "mae", "spearman", "top_decile_share", "mean_ratio")
HIGHER_IS_BETTER = {"rmse": False, "mae": False, "spearman": True, "top_decile_share": True, "mean_ratio": None}


def top_share(y, pred, fraction: float = 0.1) -> float:
    """Share of the true top-``fraction`` value captured by the predicted top ``fraction`` (ties shared)."""
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    n = len(y)
    if n == 0:
        return float("nan")
    k = max(1, int(round(fraction * n)))
    best = np.sort(y)[::-1][:k].sum()
    if best <= 0:
        return float("nan")
    thr = np.partition(pred, n - k)[n - k]
    above, tied = pred > thr, pred == thr
    captured = y[above].sum() + (k - above.sum()) / max(tied.sum(), 1) * y[tied].sum()
    return float(captured / best)


def _spearman(y, pred) -> float:
    if len(y) < 3 or np.ptp(y) == 0 or np.ptp(pred) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(y), rankdata(pred))[0, 1])


def _one(y, pred, metric: str, top: float) -> float:
    if metric == "rmse":
        return float(np.sqrt(np.mean((pred - y) ** 2))) if len(y) else float("nan")
    if metric == "mae":
        return float(np.mean(np.abs(pred - y))) if len(y) else float("nan")
    if metric == "spearman":
        return _spearman(y, pred)
    if metric == "top_decile_share":
        return top_share(y, pred, top)
    if metric == "mean_ratio":
        s = float(np.sum(y))
        return float(np.sum(pred) / s) if s > 0 else float("nan")
    raise ValueError(f"value metric {metric!r}: expected one of {list(VALUE_METRICS)}")


def _check(y, pred) -> tuple[np.ndarray, np.ndarray]:
    y, pred = np.asarray(y, dtype=np.float64).ravel(), np.asarray(pred, dtype=np.float64).ravel()
    if y.shape != pred.shape:
        raise ValueError(f"target and prediction: expected one shape, got {y.shape} and {pred.shape}")
    if not (np.isfinite(y).all() and np.isfinite(pred).all()):
        raise ValueError("target and prediction: expected finite values")
    return y, pred


def value_metrics(y, pred, prefix: str = "", top: float = 0.1, truth_se=None) -> dict[str, float]:
    """``{prefix}{metric}`` for every metric of :data:`VALUE_METRICS` (+ ``rmse_corrected`` with ``truth_se``)."""
    y, pred = _check(y, pred)
    out = {f"{prefix}{m}": _one(y, pred, m, top) for m in VALUE_METRICS}
    if truth_se is not None and len(y):
        se = np.nan_to_num(np.asarray(truth_se, dtype=np.float64).ravel())
        out[f"{prefix}rmse_corrected"] = float(np.sqrt(max(np.mean((pred - y) ** 2) - np.mean(se**2), 0.0)))
    return out


def _resamples(n: int, n_boot: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n, n)


def _interval(s: np.ndarray, level: float) -> tuple[float, float]:
    s = s[np.isfinite(s)]
    if len(s) < 10:
        return float("nan"), float("nan")
    lo, hi = np.quantile(s, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def value_metric_intervals(
    y, pred, prefix: str = "", n_boot: int = 1000, level: float = 0.95, seed: int = 0, top: float = 0.1
) -> dict[str, float]:
    """Percentile bootstrap interval (customers resampled) of every metric: ``{prefix}{metric}_ci_low/high``."""
    y, pred = _check(y, pred)
    if n_boot <= 0 or len(y) == 0:
        return {}
    samples = {m: [] for m in VALUE_METRICS}
    for idx in _resamples(len(y), n_boot, seed):
        for m in VALUE_METRICS:
            samples[m].append(_one(y[idx], pred[idx], m, top))
    out = {}
    for m, s in samples.items():
        out[f"{prefix}{m}_ci_low"], out[f"{prefix}{m}_ci_high"] = _interval(np.asarray(s), level)
    return out


def paired_value_difference(
    y, pa, pb, metric: str, n_boot: int = 1000, level: float = 0.95, seed: int = 0, top: float = 0.1
) -> dict[str, float]:
    """``metric(pa) - metric(pb)`` on the same customers, with a paired bootstrap interval and the share of
    resamples where ``pa`` is not better (``p_not_better``; nan for ``mean_ratio``, which has no direction)."""
    y, pa = _check(y, pa)
    _, pb = _check(y, pb)
    point = _one(y, pa, metric, top) - _one(y, pb, metric, top)
    d = (
        np.asarray(
            [_one(y[i], pa[i], metric, top) - _one(y[i], pb[i], metric, top) for i in _resamples(len(y), n_boot, seed)]
        )
        if n_boot > 0 and len(y)
        else np.zeros(0)
    )
    lo, hi = _interval(d, level)
    better = HIGHER_IS_BETTER[metric]
    ok = d[np.isfinite(d)]
    p = float("nan") if better is None or not len(ok) else float(((ok <= 0) if better else (ok >= 0)).mean())
    return {"diff": float(point), "ci_low": lo, "ci_high": hi, "p_not_better": p}
