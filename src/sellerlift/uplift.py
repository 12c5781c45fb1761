"""Uplift and calibration metrics in NumPy (no library taken on faith).

Qini and uplift curves follow scikit-uplift's definitions (``sklift.metrics``:
``qini_curve``, ``uplift_curve``, ``perfect_qini_curve`` with
``negative_effect=True``, ``qini_auc_score``, ``uplift_auc_score``), extended with
optional per-row weights: every count becomes a sum of weights. With inverse
propensity weights this is the IPW estimate on logged (non-randomised) data; with
constant weights it is exactly the unweighted sklift value.

Customers are sorted by score, best first; ties are grouped so the curve has one
point per distinct score. At each cut-off with cumulative (weighted) treated
count N_t, treated conversions Y_t, control count N_c and control conversions Y_c:

* Qini:   Y_t - Y_c * N_t / N_c     (N_t / N_c taken as 0 where N_c = 0)
* uplift: (Y_t / N_t - Y_c / N_c) * (N_t + N_c)   (a ratio with a zero count is taken as 0)

x is the cumulative (weighted) number of customers, starting at (0, 0). Areas
use the trapezoid rule. The normalised scores are
(AUC(model) - AUC(random)) / (AUC(perfect) - AUC(random)), random being the
straight line from (0, 0) to the curve's end point; the perfect Qini ranks
treated converters first and control converters last (sklift's
``perfect_qini_curve``), the perfect uplift curve is sklift's ``perfect_uplift_curve``.
"""

from __future__ import annotations

import numpy as np


def _check(y, treatment, score, weight):
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    t = np.asarray(treatment).reshape(-1).astype(bool)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64).reshape(-1)
    if not (len(y) == len(t) == len(s) == len(w)):
        raise ValueError(f"y, treatment, score, weight: expected equal lengths, got {len(y)}, {len(t)}, {len(s)}, "
                         f"{len(w)}")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(w)) and (w >= 0).all()):
        raise ValueError("score and weight: expected finite values, weights >= 0")
    return y, t, s, w


def _cumulative(y, t, s, w):
    order = np.argsort(-s, kind="mergesort")
    y, t, s, w = y[order], t[order], s[order], w[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each tie group
    nt = np.cumsum(w * t)[last]
    yt = np.cumsum(w * t * y)[last]
    nc = np.cumsum(w * ~t)[last]
    yc = np.cumsum(w * ~t * y)[last]
    z = np.zeros(1)
    return (np.r_[z, nt], np.r_[z, yt], np.r_[z, nc], np.r_[z, yc])


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
    perfect = 2.0 * (yb == t) + summand
    return _normalised(uplift_curve, y, t, s, w, perfect)


def qini_area(y, treatment, score, weight=None) -> float:
    """Qini area above the random line with both axes as shares of the population (scale-free).

    Incremental conversions per customer, integrated over the share targeted; unlike
    the normalised score it does not depend on the outcome noise of a "perfect" ranking.
    """
    x, q = qini_curve(y, treatment, score, weight)
    if x[-1] <= 0:
        return 0.0
    return (_area(x, q) - x[-1] * q[-1] / 2.0) / x[-1] ** 2


# ------------------------------------------------------------ calibration
def ece(p, y, weight=None, n_bins: int = 15) -> float:
    """Expected calibration error (L1, equal-width bins), optionally weighted."""
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    w = np.ones(len(p)) if weight is None else np.asarray(weight, dtype=np.float64).reshape(-1)
    if len(p) == 0 or w.sum() <= 0:
        return 0.0
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    sw = np.bincount(b, w, minlength=n_bins)
    sp = np.bincount(b, w * p, minlength=n_bins)
    sy = np.bincount(b, w * y, minlength=n_bins)
    return float(np.abs(sp - sy).sum() / sw.sum())


def classwise_ece(proba, label, n_bins: int = 15) -> float:
    """Mean over classes of the one-vs-rest ECE of a [n, K] probability matrix."""
    proba = np.asarray(proba, dtype=np.float64)
    label = np.asarray(label, dtype=np.int64)
    return float(np.mean([ece(proba[:, k], label == k, n_bins=n_bins) for k in range(proba.shape[1])]))


# ------------------------------------------------------------ curves vs truth
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
