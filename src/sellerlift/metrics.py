"""Every test-time number, in NumPy: binary-head metrics, calibration, uplift (Qini/AUUC), curves vs truth.

The sequence model, the baselines, the simulator's ceiling and the promotion engine are
all scored here, so a comparison table never mixes two definitions of one metric.
Lightning logs torchmetrics during training (:mod:`sellerlift.models.metrics`); the
definitions agree (``tests/test_baselines.py`` checks AUROC, AP, ECE and precision@top).

Qini and uplift curves follow scikit-uplift's definitions (``sklift.metrics``:
``qini_curve``, ``uplift_curve``, ``perfect_qini_curve`` with ``negative_effect=True``,
``qini_auc_score``, ``uplift_auc_score``), extended with optional per-row weights: every
count becomes a sum of weights. With inverse propensity weights this is the IPW estimate
on logged data; with constant weights it is exactly the unweighted sklift value.
Customers are sorted by score, best first; ties are grouped so the curve has one point
per distinct score. At each cut-off with cumulative (weighted) treated count N_t, treated
conversions Y_t, control count N_c and control conversions Y_c:

* Qini:   Y_t - Y_c * N_t / N_c     (N_t / N_c taken as 0 where N_c = 0)
* uplift: (Y_t / N_t - Y_c / N_c) * (N_t + N_c)   (a ratio with a zero count is taken as 0)

x is the cumulative (weighted) number of customers, from (0, 0); areas by the trapezoid
rule; the normalised scores are (AUC(model) - AUC(random)) / (AUC(perfect) - AUC(random)).
"""

from __future__ import annotations

import numpy as np

from sellerlift.constants import HEADS

# --------------------------------------------------------------------------- calibration


def ece(y, p, weight=None, n_bins: int = 15) -> float:
    """L1 expected calibration error, binned exactly like torchmetrics' BinaryCalibrationError; optional weights.

    Boundaries are ``linspace(0, 1, n_bins + 1)`` in float32; a score falls into bin ``i`` when
    ``b_i <= p < b_{i+1}`` (p == 1 gets a bin of its own, as in torchmetrics).
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    p32 = np.asarray(p, dtype=np.float32).ravel()
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64).ravel()
    if len(y) == 0 or w.sum() <= 0:
        return float("nan")
    bounds = np.linspace(0, 1, n_bins + 1, dtype=np.float32)
    idx = np.clip(np.searchsorted(bounds, p32, side="right") - 1, 0, n_bins)
    count = np.bincount(idx, weights=w, minlength=n_bins + 1)
    conf = np.bincount(idx, weights=w * p32.astype(np.float64), minlength=n_bins + 1)
    acc = np.bincount(idx, weights=w * y, minlength=n_bins + 1)
    return float(np.abs(acc - conf).sum() / count.sum())


def classwise_ece(proba, label, n_bins: int = 15) -> float:
    """Mean over classes of the one-vs-rest ECE of a [n, K] probability matrix."""
    proba = np.asarray(proba, dtype=np.float64)
    label = np.asarray(label, dtype=np.int64)
    return float(np.mean([ece(label == k, proba[:, k], n_bins=n_bins) for k in range(proba.shape[1])]))


def calibration_bands(y, p, low: float = 0.25, high: float = 0.75) -> dict[str, float]:
    """Observed rate (and share of customers) among scores below ``low`` and above ``high``."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    lo, hi = p < low, p > high
    return {
        f"rate_below_{low:g}": float(y[lo].mean()) if lo.any() else float("nan"),
        f"share_below_{low:g}": float(lo.mean()),
        f"rate_above_{high:g}": float(y[hi].mean()) if hi.any() else float("nan"),
        f"share_above_{high:g}": float(hi.mean()),
    }


# --------------------------------------------------------------------------- binary heads


def precision_at_top(y, p, fraction: float = 0.2) -> float:
    """Share of positives among the top ``round(fraction * n)`` scores (at least one).

    Ties at the threshold are shared: customers tied with the k-th score count with equal
    weight (the expected precision under random tie-breaking; tree models and BG/NBD give
    many identical scores). Without ties this is torch.topk's answer.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    n = len(p)
    if n == 0:
        return float("nan")
    k = max(1, int(round(fraction * n)))
    thr = np.partition(p, n - k)[n - k]  # k-th largest score
    above, tied = p > thr, p == thr
    w_tied = (k - int(above.sum())) / max(int(tied.sum()), 1)
    return float((y[above].sum() + w_tied * y[tied].sum()) / k)


def top_key(top_fraction: float) -> str:
    return f"precision_top{int(round(top_fraction * 100))}"


def binary_metrics(y, p, top_fraction: float = 0.2, n_bins: int = 15) -> dict[str, float]:
    """auroc, ap, ece, precision_top<pct> of scores ``p`` for binary labels ``y`` (NaN where undefined)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if len(y) != len(p):
        raise ValueError(f"y has {len(y)} entries but p has {len(p)}")
    two_classes = len(y) > 0 and 0 < y.mean() < 1
    return {
        "auroc": float(roc_auc_score(y, p)) if two_classes else float("nan"),
        "ap": float(average_precision_score(y, p)) if two_classes else float("nan"),
        "ece": ece(y, p, n_bins=n_bins),
        top_key(top_fraction): precision_at_top(y, p, top_fraction),
    }


def head_metrics(
    targets: np.ndarray, probs: np.ndarray, prefix: str = "test/", top_fraction: float = 0.2
) -> dict[str, float]:
    """``{prefix}{head}_{metric}`` for both heads: the names every model logs."""
    out = {}
    for i, head in enumerate(HEADS):
        for k, v in binary_metrics(targets[:, i], probs[:, i], top_fraction).items():
            out[f"{prefix}{head}_{k}"] = v
    return out


# --------------------------------------------------------------------------- uplift


def _check(y, treatment, score, weight):
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    t = np.asarray(treatment).reshape(-1).astype(bool)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64).reshape(-1)
    if not (len(y) == len(t) == len(s) == len(w)):
        raise ValueError(
            f"y, treatment, score, weight: expected equal lengths, got {len(y)}, {len(t)}, {len(s)}, {len(w)}"
        )
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(w)) and (w >= 0).all()):
        raise ValueError("score and weight: expected finite values, weights >= 0")
    return y, t, s, w


def _cumulative(y, t, s, w):
    order = np.argsort(-s, kind="mergesort")
    y, t, s, w = y[order], t[order], s[order], w[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each tie group
    z = np.zeros(1)
    return tuple(np.r_[z, np.cumsum(v)[last]] for v in (w * t, w * t * y, w * ~t, w * ~t * y))


def qini_curve(y, treatment, score, weight=None) -> tuple[np.ndarray, np.ndarray]:
    """(x, qini): cumulative (weighted) customers targeted and incremental conversions (sklift definition)."""
    nt, yt, nc, yc = _cumulative(*_check(y, treatment, score, weight))
    return nt + nc, yt - yc * np.divide(nt, nc, out=np.zeros_like(nt), where=nc > 0)


def uplift_curve(y, treatment, score, weight=None) -> tuple[np.ndarray, np.ndarray]:
    """(x, uplift * x): sklift's uplift curve, weighted counts."""
    nt, yt, nc, yc = _cumulative(*_check(y, treatment, score, weight))
    rt = np.divide(yt, nt, out=np.zeros_like(yt), where=nt > 0)
    rc = np.divide(yc, nc, out=np.zeros_like(yc), where=nc > 0)
    return nt + nc, (rt - rc) * (nt + nc)


def _area(x, y):
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def _normalised(curve, y, t, s, w, perfect_score):
    x, q = curve(y, t, s, w)
    xp, qp = curve(y, t, perfect_score, w)
    random = x[-1] * q[-1] / 2.0  # area under the straight line to the end point
    denom = _area(xp, qp) - random
    return (_area(x, q) - random) / denom if denom != 0 else 0.0


def qini_auc_score(y, treatment, score, weight=None) -> float:
    """Normalised Qini coefficient (sklift ``qini_auc_score``, negative_effect=True), weighted."""
    y, t, s, w = _check(y, treatment, score, weight)
    return _normalised(qini_curve, y, t, s, w, y * t - y * ~t)


def uplift_auc_score(y, treatment, score, weight=None) -> float:
    """Normalised area under the uplift curve (sklift ``uplift_auc_score``), weighted."""
    y, t, s, w = _check(y, treatment, score, weight)
    # sklift perfect_uplift_curve: score 2 * (y == t) + (y if #(y=1, t=1) > #(y=0, t=0) else t)
    yb = y > 0
    summand = y if w[yb & t].sum() > w[~yb & ~t].sum() else t.astype(np.float64)
    return _normalised(uplift_curve, y, t, s, w, 2.0 * (yb == t) + summand)


def qini_by_level(curves, level, y, randomized, weight, levels) -> dict[str, float]:
    """Qini / AUUC of each discount level against no discount, scored with the predicted uplift
    ``curves[:, k] - curves[:, 0]`` at logged offers (``level``: index of each offer's level).

    ``rct``: the randomised offers, unweighted; ``ipw``: the logged (non-randomised) offers weighted
    by ``weight``. Keys ``qini_<rct|ipw>_<level>``, ``auuc_<rct|ipw>_<level>`` and the means
    ``qini_rct_mean`` / ``qini_ipw_mean``; a level with fewer than 5 treated or 5 control offers is left out.
    """
    randomized = np.asarray(randomized, dtype=bool)
    out, means = {}, {"rct": [], "ipw": []}
    for k in range(1, len(levels)):
        score = curves[:, k] - curves[:, 0]
        for tag, rows, w in (("rct", randomized, None), ("ipw", ~randomized, weight)):
            sel = rows & ((level == k) | (level == 0))
            t = level[sel] == k
            if t.sum() < 5 or (~t).sum() < 5:
                continue
            ww = None if w is None else w[sel]
            q = qini_auc_score(y[sel], t, score[sel], ww)
            out[f"qini_{tag}_{levels[k]}"] = q
            out[f"auuc_{tag}_{levels[k]}"] = uplift_auc_score(y[sel], t, score[sel], ww)
            means[tag].append(q)
    out.update({f"qini_{tag}_mean": float(np.mean(qs)) for tag, qs in means.items() if qs})
    return out


# --------------------------------------------------------------------------- response curves vs truth


def curve_metrics(pred, true) -> dict[str, float]:
    """Curve RMSE, uplift RMSE (level k minus level 0, k >= 1), share of non-monotone curves, mean bias."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    up_p, up_t = pred[:, 1:] - pred[:, :1], true[:, 1:] - true[:, :1]
    return {
        "curve_rmse": float(np.sqrt(np.mean((pred - true) ** 2))),
        "uplift_rmse": float(np.sqrt(np.mean((up_p - up_t) ** 2))),
        "non_monotone_frac": float(np.mean((np.diff(pred, axis=1) < -1e-6).any(axis=1))),
        "curve_bias": float(np.mean(pred - true)),
        "uplift_corr": _corr(up_p[:, -1], up_t[:, -1]),
    }


def _corr(a, b) -> float:
    """Pearson correlation; NaN when either side is constant."""
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
