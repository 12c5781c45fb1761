"""Bootstrap intervals of the test metrics (AUROC, AP, ECE, precision@top), vectorised.

A bootstrap resample of n customers is a row of counts W[b] (how often each customer was drawn);
every metric here is the metric of that resample, computed for all resamples at once from one
sort of the scores (ties grouped), so 1,000 resamples of 10^4 customers cost a few array passes.
Paired comparisons apply the same W to both models' scores. The point metrics are :mod:`sellerlift.metrics`.
"""

from __future__ import annotations

import numpy as np

from sellerlift.constants import HEADS
from sellerlift.metrics import top_key

BOOTSTRAP_METRICS = ("auroc", "ap", "ece", "precision_top")
_CHUNK_CELLS = 4_000_000  # resamples x customers per block (bounded memory on any test set)


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n] float64 counts of each customer in each resample (a multinomial(n, 1/n) row each)."""
    draws = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def _grouped(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weight, positive weight) of each run of tied scores, scores ascending: [B, groups] each (one sort)."""
    order = np.argsort(p, kind="mergesort")
    s = p[order]
    starts = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1]
    Ws = W[:, order]
    return np.add.reduceat(Ws, starts, axis=1), np.add.reduceat(Ws * y[order], starts, axis=1)


def _auroc(w, pos):
    neg = w - pos
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), out, np.nan)


def _ap(w, pos):
    w, pos = w[:, ::-1], pos[:, ::-1]  # highest scores first
    tp, seen = np.cumsum(pos, axis=1), np.cumsum(w, axis=1)
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    n_pos, n_neg = pos.sum(axis=1), (w - pos).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (pos * precision).sum(axis=1) / n_pos
    return np.where((n_pos > 0) & (n_neg > 0), out, np.nan)


def _precision_top(w, pos, k: int):
    w, pos = w[:, ::-1], pos[:, ::-1]
    cw, cy = np.cumsum(w, axis=1), np.cumsum(pos, axis=1)
    g = np.argmax(cw >= k - 1e-9, axis=1)  # the group holding the k-th customer
    rows = np.arange(len(w))
    above_w, above_y = cw[rows, g] - w[rows, g], cy[rows, g] - pos[rows, g]
    return (above_y + (k - above_w) * pos[rows, g] / np.maximum(w[rows, g], 1e-12)) / k


def weighted_auroc(y, p, W) -> np.ndarray:
    """AUROC of each resample (rows of ``W``): P(score of a positive > a negative), ties count 1/2; NaN if one class."""
    return _auroc(*_grouped(np.asarray(y, float), np.asarray(p, float), W))


def weighted_ap(y, p, W) -> np.ndarray:
    """Average precision of each resample (sklearn's step definition, thresholds at distinct scores)."""
    return _ap(*_grouped(np.asarray(y, float), np.asarray(p, float), W))


def weighted_precision_at_top(y, p, W, fraction: float = 0.2) -> np.ndarray:
    """:func:`precision_at_top` of each resample (ties at the threshold shared, as there)."""
    k = max(1, round(fraction * W.shape[1]))
    return _precision_top(*_grouped(np.asarray(y, float), np.asarray(p, float), W), k)


def weighted_ece(y, p, W, n_bins: int = 15) -> np.ndarray:
    """:func:`ece` of each resample (same bins)."""
    bounds = np.linspace(0, 1, n_bins + 1, dtype=np.float32)
    p32 = np.asarray(p).astype(np.float32)
    idx = np.clip(np.searchsorted(bounds, p32, side="right") - 1, 0, n_bins)
    count = np.stack([W[:, idx == b].sum(axis=1) for b in np.unique(idx)], axis=1)
    conf = np.stack([W[:, idx == b] @ p32[idx == b].astype(np.float64) for b in np.unique(idx)], axis=1)
    acc = np.stack([W[:, idx == b] @ np.asarray(y, float)[idx == b] for b in np.unique(idx)], axis=1)
    return np.abs(acc - conf).sum(axis=1) / count.sum(axis=1)


def _block(y, p, W, metrics, top_fraction) -> dict[str, np.ndarray]:
    out = {}
    if set(metrics) & {"auroc", "ap", "precision_top"}:
        w, pos = _grouped(y, p, W)
        fns = {
            "auroc": lambda: _auroc(w, pos),
            "ap": lambda: _ap(w, pos),
            "precision_top": lambda: _precision_top(w, pos, max(1, round(top_fraction * W.shape[1]))),
        }
        out.update({m: fns[m]() for m in metrics if m in fns})
    if "ece" in metrics:
        out["ece"] = weighted_ece(y, p, W)
    return out


def bootstrap_samples(
    y, p, n_boot: int = 1000, seed: int = 0, top_fraction: float = 0.2, metrics: tuple[str, ...] = BOOTSTRAP_METRICS
) -> dict[str, np.ndarray]:
    """``{metric: [n_boot]}`` over customer resamples; ``p`` may be [n] or [n, M] (M models, paired: the same
    resamples for every column, then each value is [n_boot, M])."""
    y = np.asarray(y, dtype=np.float64).ravel()
    P = np.asarray(p, dtype=np.float64)
    single = P.ndim == 1
    P = P.reshape(len(y), -1)
    unknown = sorted(set(metrics) - set(BOOTSTRAP_METRICS))
    if unknown:
        raise ValueError(f"bootstrap metrics {unknown}: expected some of {list(BOOTSTRAP_METRICS)}")
    rng = np.random.default_rng(seed)
    out = {m: np.full((n_boot, P.shape[1]), np.nan) for m in metrics}
    if len(y) == 0:
        return {m: v[:, 0] if single else v for m, v in out.items()}
    block = max(1, _CHUNK_CELLS // len(y))
    for b0 in range(0, n_boot, block):
        W = bootstrap_weights(len(y), min(block, n_boot - b0), rng)
        for j in range(P.shape[1]):
            for m, v in _block(y, P[:, j], W, metrics, top_fraction).items():
                out[m][b0 : b0 + len(W), j] = v
    return {m: v[:, 0] if single else v for m, v in out.items()}


def _interval(samples: np.ndarray, level: float, debias_to: float | None = None) -> tuple[float, float]:
    """Percentile interval; with ``debias_to`` (the full-data value) shifted by the bootstrap bias
    ``mean(samples) - debias_to``: ECE of a resample is biased upward (noise adds calibration error), so its plain
    percentile interval can miss the estimate entirely."""
    s = samples[np.isfinite(samples)]
    if len(s) < 10:  # too few defined resamples (a class almost never drawn): no interval
        return float("nan"), float("nan")
    lo, hi = np.quantile(s, [(1 - level) / 2, (1 + level) / 2])
    if debias_to is not None:
        shift = float(s.mean()) - debias_to
        return max(float(lo) - shift, 0.0), float(hi) - shift
    return float(lo), float(hi)


def head_metric_intervals(
    targets,
    probs,
    prefix: str = "test/",
    top_fraction: float = 0.2,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile bootstrap interval of every :func:`~sellerlift.metrics.head_metrics` value:
    ``{prefix}{head}_{metric}_ci_low/high`` (ECE: bias-shifted, see :func:`_interval`)."""
    out = {}
    for i, head in enumerate(HEADS):
        samples = bootstrap_samples(targets[:, i], probs[:, i], n_boot, seed + i, top_fraction)
        for m, s in samples.items():
            name = top_key(top_fraction) if m == "precision_top" else m
            center = bootstrap_point(targets[:, i], probs[:, i], m, top_fraction) if m == "ece" else None
            out[f"{prefix}{head}_{name}_ci_low"], out[f"{prefix}{head}_{name}_ci_high"] = _interval(s, level, center)
    return out


def paired_difference(
    y, pa, pb, metric: str = "auroc", n_boot: int = 1000, level: float = 0.95, seed: int = 0, top_fraction: float = 0.2
) -> dict[str, float]:
    """Paired bootstrap of ``metric(pa) - metric(pb)`` on the same resampled customers.

    ``diff`` is the difference on the full data; ``ci_low`` / ``ci_high`` the percentile interval;
    ``p_not_better`` the share of resamples where ``pa`` is not better (for ECE lower is better).
    """
    s = bootstrap_samples(
        y, np.stack([np.asarray(pa, float), np.asarray(pb, float)], axis=1), n_boot, seed, top_fraction, (metric,)
    )[metric]
    d = s[:, 0] - s[:, 1]
    ok = np.isfinite(d)
    point = bootstrap_point(y, pa, metric, top_fraction) - bootstrap_point(y, pb, metric, top_fraction)
    lo, hi = _interval(d, level)
    worse = d[ok] >= 0 if metric == "ece" else d[ok] <= 0
    return {
        "diff": float(point),
        "ci_low": lo,
        "ci_high": hi,
        "p_not_better": float(worse.mean()) if ok.any() else float("nan"),
        "n_boot": int(ok.sum()),
    }


def bootstrap_point(y, p, metric: str, top_fraction: float = 0.2) -> float:
    """The metric on the data itself (weights all 1), by the same code as the resamples."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    return float(_block(y, p, np.ones((1, len(y))), (metric,), top_fraction)[metric][0])
