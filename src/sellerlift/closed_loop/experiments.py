"""The A/B experiments a seller would run, as estimators on plain arrays (NumPy + statsmodels).

* :func:`assign_ab` randomises customers into two arms *within* each seller;
* :func:`ab_test` compares the arms: difference in means (size-weighted over strata when
  given), a Welch t interval, a stratified percentile bootstrap interval and a p-value;
* :func:`sample_size` is the power calculator: customers per arm to detect an absolute lift.

The difference-in-differences estimators are :mod:`sellerlift.closed_loop.did`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

_BOOT_CELLS = 1 << 21  # bootstrap draws held in memory at once (n_boot is processed in chunks)


# ---------------------------------------------------------------- validation
def _vector(x, name: str, n: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {x.shape}")
    if n is not None and len(x) != n:
        raise ValueError(f"{name}: expected length {n} (one per customer), got {len(x)}")
    return x


def _numeric(x, name: str, n: int | None = None) -> np.ndarray:
    x = _vector(x, name, n)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{name}: expected numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(
            f"{name}: {int((~np.isfinite(x)).sum())} non-finite values (first at index "
            f"{int(np.flatnonzero(~np.isfinite(x))[0])})"
        )
    return x


def _binary(x, name: str, n: int | None = None) -> np.ndarray:
    x = _vector(x, name, n)
    if x.dtype != bool:
        bad = ~np.isin(x, (0, 1))
        if bad.any():
            raise ValueError(
                f"{name}: expected booleans or 0/1, got {x[bad][:3].tolist()} "
                f"(first at index {int(np.flatnonzero(bad)[0])})"
            )
    return x.astype(bool)


def _alpha(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha}")
    return float(alpha)


# ------------------------------------------------------------------- A/B test
def assign_ab(seller, frac: float = 0.5, seed: int = 0) -> np.ndarray:
    """Random treatment flags [n] (True = treatment), drawn within each seller.

    Each seller with n_s customers gets floor(frac * n_s) or that + 1 treated (the extra one
    with probability equal to the fractional part), so every seller is balanced to within one
    customer and the expected treated share is exactly ``frac`` everywhere.
    """
    seller = _vector(seller, "seller")
    if not 0 < frac < 1:
        raise ValueError(f"frac: expected a treated share in (0, 1), got {frac}")
    rng = np.random.default_rng(seed)
    _, code, counts = np.unique(seller, return_inverse=True, return_counts=True)
    order = np.lexsort((rng.random(len(seller)), code))  # by seller, random within seller
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(seller), dtype=np.int64)
    rank[order] = np.arange(len(seller)) - starts[code[order]]
    target = frac * counts
    n_treat = np.floor(target) + (rng.random(len(counts)) < target - np.floor(target))
    return rank < n_treat[code]


@dataclass(frozen=True)
class ABResult:
    """An A/B comparison of treatment vs control (all in the units of ``y``).

    estimate = mean_treat - mean_control; with strata these are the stratum-size-weighted
    (standardised) arm means, so the estimate is the size-weighted average of the
    within-stratum differences. relative_lift = estimate / mean_control.
    """

    estimate: float
    se: float  # Welch (stratified) standard error of the estimate
    df: float  # Welch-Satterthwaite degrees of freedom
    ci_t: tuple[float, float]  # Welch t interval at level 1 - alpha
    ci_bootstrap: tuple[float, float]  # percentile bootstrap (customers resampled within stratum x arm)
    p_value: float  # two-sided Welch t test of estimate == 0
    n_treat: int
    n_control: int
    mean_treat: float
    mean_control: float
    relative_lift: float  # nan when mean_control is 0
    alpha: float
    n_strata: int


def ab_test(y, treated, strata=None, alpha: float = 0.05, n_boot: int = 2000, seed: int = 0) -> ABResult:
    """Difference in means of ``y`` between treated and control customers, with its intervals.

    strata [n] (e.g. the seller): the estimate is sum_s w_s (mean_treat_s - mean_control_s)
    with w_s the stratum's share of customers, its variance sum_s w_s^2 (v_ts/n_ts + v_cs/n_cs);
    every stratum needs at least 2 customers in each arm. n_boot = 0 skips the bootstrap
    (ci_bootstrap is then (nan, nan)).
    """
    y = _numeric(y, "y")
    treated = _binary(treated, "treated", len(y))
    alpha = _alpha(alpha)
    if n_boot < 0:
        raise ValueError(f"n_boot: expected >= 0 bootstrap replicates, got {n_boot}")
    if strata is None:
        code, labels = np.zeros(len(y), dtype=np.int64), np.array(["all"])
    else:
        labels, code = np.unique(_vector(strata, "strata", len(y)), return_inverse=True)
    n_s = len(labels)
    g = 2 * code + treated  # cell = stratum x arm (arm 1 = treated)
    cnt = np.bincount(g, minlength=2 * n_s).reshape(n_s, 2)
    small = np.flatnonzero((cnt < 2).any(axis=1))
    if len(small):
        raise ValueError(
            f"treated/strata: every stratum needs >= 2 customers in each arm; {len(small)} do not, "
            f"e.g. {labels[small[:3]].tolist()} with (control, treated) = {cnt[small[:3]].tolist()}"
        )
    mean = np.bincount(g, y, minlength=2 * n_s) / cnt.ravel()
    var = np.bincount(g, (y - mean[g]) ** 2, minlength=2 * n_s).reshape(n_s, 2) / (cnt - 1)
    mean = mean.reshape(n_s, 2)
    w = cnt.sum(axis=1) / len(y)
    m_t, m_c = float(w @ mean[:, 1]), float(w @ mean[:, 0])
    est = m_t - m_c
    c = w[:, None] ** 2 * var / cnt
    se = float(np.sqrt(c.sum()))
    if se > 0:
        df = float(c.sum() ** 2 / (c**2 / (cnt - 1)).sum())
        half = stats.t.ppf(1 - alpha / 2, df) * se
        ci_t = (est - half, est + half)
        p = float(2 * stats.t.sf(abs(est) / se, df))
    else:  # y constant within every cell
        df, ci_t, p = float(len(y) - 2 * n_s), (est, est), float(est == 0)
    ci_b = _ab_bootstrap(y, g, cnt, w, alpha, n_boot, seed) if n_boot else (math.nan, math.nan)
    return ABResult(
        estimate=est,
        se=se,
        df=df,
        ci_t=(float(ci_t[0]), float(ci_t[1])),
        ci_bootstrap=ci_b,
        p_value=p,
        n_treat=int(cnt[:, 1].sum()),
        n_control=int(cnt[:, 0].sum()),
        mean_treat=m_t,
        mean_control=m_c,
        relative_lift=est / m_c if m_c != 0 else math.nan,
        alpha=alpha,
        n_strata=n_s,
    )


def _ab_bootstrap(y, g, cnt, w, alpha, n_boot, seed) -> tuple[float, float]:
    """Percentile interval of the (stratified) difference in means, customers resampled within each cell."""
    rng = np.random.default_rng(seed)
    order = np.argsort(g, kind="stable")
    ys, size = y[order], cnt.ravel()
    starts = np.concatenate([[0], np.cumsum(size)[:-1]])
    start_pos, size_pos = starts[g[order]], size[g[order]]
    n, est = len(y), np.empty(n_boot)
    step = max(1, _BOOT_CELLS // n)
    for b0 in range(0, n_boot, step):  # chunks of replicates, each vectorised over customers
        b = min(step, n_boot - b0)
        idx = start_pos + (rng.random((b, n)) * size_pos).astype(np.int64)
        means = (np.add.reduceat(ys[idx], starts, axis=1) / size).reshape(b, -1, 2)
        est[b0 : b0 + b] = (means[:, :, 1] - means[:, :, 0]) @ w
    lo, hi = np.quantile(est, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def sample_size(
    baseline: float,
    lift: float,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    kind: str = "proportion",
    sd: float | None = None,
) -> int:
    """Customers needed in the treatment arm to detect an absolute ``lift`` (two-sided test at ``alpha``).

    kind="proportion": baseline is the control rate, the effect size Cohen's h between
    baseline + lift and baseline (statsmodels ``proportion_effectsize``); kind="mean": the
    effect size is Cohen's d = lift / sd. ratio = n_control / n_treat (the control arm needs
    ceil(ratio * n)). Normal approximation (statsmodels ``NormalIndPower``).
    """
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    _alpha(alpha)
    if not 0 < power < 1:
        raise ValueError(f"power: expected a probability in (0, 1), got {power}")
    if not ratio > 0:
        raise ValueError(f"ratio: expected n_control / n_treat > 0, got {ratio}")
    if not (np.isfinite(lift) and lift != 0):
        raise ValueError(f"lift: expected a non-zero absolute difference, got {lift}")
    if kind == "proportion":
        if not (0 < baseline < 1 and 0 < baseline + lift < 1):
            raise ValueError(
                f"baseline/lift: expected rates in (0, 1), got baseline={baseline}, baseline + lift={baseline + lift}"
            )
        es = proportion_effectsize(baseline + lift, baseline)
    elif kind == "mean":
        if sd is None or not sd > 0:
            raise ValueError(f"sd: kind='mean' needs the outcome's standard deviation > 0, got {sd}")
        es = lift / sd
    else:
        raise ValueError(f"kind: expected 'proportion' or 'mean', got {kind!r}")
    n = NormalIndPower().solve_power(
        effect_size=abs(float(es)), alpha=alpha, power=power, ratio=ratio, alternative="two-sided"
    )
    return int(math.ceil(float(np.squeeze(n)) - 1e-9))
