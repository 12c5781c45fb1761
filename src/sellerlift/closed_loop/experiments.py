"""The experiments a seller would run, as estimators on plain arrays / DataFrames (NumPy + statsmodels).

* :func:`assign_ab` randomises customers into two arms *within* each seller;
* :func:`ab_test` compares the arms: difference in means (size-weighted over strata when
  given), a Welch t interval, a stratified percentile bootstrap interval and a p-value;
* :func:`sample_size` is the power calculator: customers per arm to detect an absolute lift;
* :func:`did` is the seller-level two-way fixed-effects difference-in-differences with
  standard errors clustered by seller, :func:`event_study` its dynamic version (one
  coefficient per period relative to adoption), :func:`plot_event_study` its picture.

The fixed-effects fits absorb the unit effects by the within transformation (demeaning by
unit, exact for unbalanced panels too), keep the period effects as dummies, and are fitted
by statsmodels OLS with cluster-robust covariance (CR1: G/(G-1) * (N-1)/(N-K), K counting
the period dummies but not the absorbed unit effects, which are nested in the clusters) and
t(G-1) inference. The point estimates equal those of OLS on the full set of unit and period
dummies; the standard errors are those of Stata's ``xtreg, fe vce(cluster)`` / ``reghdfe``
rather than the over-conservative dummy-variable ones (with 2 periods the latter are
inflated by about sqrt(2)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
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


# ------------------------------------------------- difference-in-differences
@dataclass(frozen=True)
class DiDResult:
    """The two-way fixed-effects DiD coefficient of treated x post (in the units of ``y``)."""

    estimate: float  # average effect on the treated units in their post periods
    se: float  # cluster-robust (by unit) standard error
    ci: tuple[float, float]  # t(G-1) interval at level 1 - alpha
    p_value: float  # two-sided test of estimate == 0
    n_units: int  # clusters G
    n_periods: int
    n_obs: int
    n_treated_units: int  # units with treated x post = 1 in some period
    alpha: float


def _codes(panel: pd.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray]:
    if col not in panel.columns:
        raise ValueError(f"{col!r}: not a column of the panel (columns: {list(panel.columns)})")
    if panel[col].isna().any():
        raise ValueError(f"{col!r}: {int(panel[col].isna().sum())} missing values")
    levels, code = np.unique(panel[col].to_numpy(), return_inverse=True)
    return levels, code


def _within(a: np.ndarray, ucode: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """Columns of ``a`` [N, p] minus their unit means (the within transformation)."""
    means = np.stack([np.bincount(ucode, col, minlength=cnt.size) for col in a.T], axis=1) / cnt[:, None]
    return a - means[ucode]


def _fe_fit(panel, unit, period, y, X: np.ndarray, names: list[str]):
    """statsmodels OLS of y on X + period dummies with unit effects absorbed, clustered by unit.

    Returns (the fit, whose first X.shape[1] parameters are X's coefficients, n_units, n_periods).
    """
    import statsmodels.api as sm

    if len(panel) == 0:
        raise ValueError("panel: no rows")
    _, ucode = _codes(panel, unit)
    plev, pcode = _codes(panel, period)
    if ucode.max() < 1 or len(plev) < 2:
        raise ValueError(f"panel: need >= 2 units and >= 2 periods, got {ucode.max() + 1} and {len(plev)}")
    if y not in panel.columns:
        raise ValueError(f"{y!r}: not a column of the panel (columns: {list(panel.columns)})")
    yv = _numeric(panel[y].to_numpy(), y)
    Z = np.column_stack([X, (pcode[:, None] == np.arange(1, len(plev))).astype(np.float64)])
    cnt = np.bincount(ucode)
    Zw, yw = _within(Z, ucode, cnt), _within(yv[:, None], ucode, cnt)[:, 0]
    if np.linalg.matrix_rank(Zw) < Z.shape[1]:
        raise ValueError(
            f"panel: {names} not identified with unit and period effects (each must vary within units "
            "beyond what the periods explain; e.g. some units must stay untreated)"
        )
    res = sm.OLS(yw, Zw).fit(cov_type="cluster", cov_kwds={"groups": ucode}, use_t=True)
    return res, int(cnt.size), len(plev)


def did(
    panel: pd.DataFrame,
    unit: str = "seller",
    period: str = "month",
    y: str = "revenue",
    treated: str = "treated",
    post: str = "post",
    alpha: float = 0.05,
) -> DiDResult:
    """Two-way fixed-effects DiD: y_it = a_i + g_t + b * treated_i * post_it + e_it, SEs clustered by unit.

    panel: one row per unit and period (unbalanced and repeated rows allowed); ``treated``
    and ``post`` are 0/1 columns, their product is the treatment indicator.
    """
    alpha = _alpha(alpha)
    for col in (treated, post):
        if col not in panel.columns:
            raise ValueError(f"{col!r}: not a column of the panel (columns: {list(panel.columns)})")
    d = (_binary(panel[treated].to_numpy(), treated) & _binary(panel[post].to_numpy(), post)).astype(np.float64)
    res, n_units, n_periods = _fe_fit(panel, unit, period, y, d[:, None], [f"{treated} x {post}"])
    lo, hi = res.conf_int(alpha)[0]
    return DiDResult(
        estimate=float(res.params[0]),
        se=float(res.bse[0]),
        ci=(float(lo), float(hi)),
        p_value=float(res.pvalues[0]),
        n_units=n_units,
        n_periods=n_periods,
        n_obs=len(panel),
        n_treated_units=int(panel.loc[d > 0, unit].nunique()),
        alpha=alpha,
    )


def event_study(
    panel: pd.DataFrame,
    adopt_period,
    unit: str = "seller",
    period: str = "month",
    y: str = "revenue",
    treated: str = "treated",
    ref: int = -1,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Dynamic DiD: one coefficient per period relative to adoption, the period ``ref`` before it as reference.

    adopt_period: the period in which treated units adopt (a value of ``period``; units with
    ``treated`` = 1 adopt then, the others never), or the name of a column holding each row's
    unit's adoption period (missing = never adopts). Relative periods count positions in the
    sorted periods (0 = the adoption period). Returns rel_period, estimate (effect vs the
    reference period, net of the never-adopters' change), se, ci_low, ci_high, p_value, n_obs
    (adopter rows at that relative period) and is_ref; ``.attrs["pretrend_p_value"]`` is the
    joint cluster-robust F test that every pre-adoption coefficient is 0.
    """
    alpha = _alpha(alpha)
    plev, pcode = _codes(panel, period)
    if isinstance(adopt_period, str):
        if adopt_period not in panel.columns:
            raise ValueError(f"{adopt_period!r}: not a column of the panel (columns: {list(panel.columns)})")
        adopt = panel[adopt_period].to_numpy()
        adopter = ~pd.isna(adopt)
    else:
        if treated not in panel.columns:
            raise ValueError(f"{treated!r}: not a column of the panel (columns: {list(panel.columns)})")
        adopter = _binary(panel[treated].to_numpy(), treated)
        adopt = np.full(len(panel), adopt_period, dtype=object)
    acode = np.searchsorted(plev, adopt[adopter].astype(plev.dtype))
    ok = (acode < len(plev)) & (plev[np.minimum(acode, len(plev) - 1)] == adopt[adopter].astype(plev.dtype))
    if not ok.all():
        raise ValueError(f"adopt_period: expected one of the panel's periods, got {adopt[adopter][~ok][:3].tolist()}")
    rel = np.full(len(panel), np.iinfo(np.int64).min)
    rel[adopter] = pcode[adopter] - acode
    rels = np.unique(rel[adopter])
    if ref not in rels:
        raise ValueError(f"ref: relative period {ref} is not observed for any adopter (observed: {rels.tolist()})")
    rels = rels[rels != ref]
    X = (rel[:, None] == rels).astype(np.float64)
    names = [f"rel{r}" for r in rels]
    res, n_units, _ = _fe_fit(panel, unit, period, y, X, names)
    k = len(rels)
    ci = res.conf_int(alpha)[:k]
    out = pd.DataFrame(
        {
            "rel_period": rels,
            "estimate": res.params[:k],
            "se": res.bse[:k],
            "ci_low": ci[:, 0],
            "ci_high": ci[:, 1],
            "p_value": res.pvalues[:k],
            "n_obs": (rel[:, None] == rels).sum(axis=0),
            "is_ref": False,
        }
    )
    ref_row = pd.DataFrame(
        {
            "rel_period": [ref],
            "estimate": [0.0],
            "se": [0.0],
            "ci_low": [0.0],
            "ci_high": [0.0],
            "p_value": [np.nan],
            "n_obs": [int((rel == ref).sum())],
            "is_ref": [True],
        }
    )
    out = pd.concat([out, ref_row]).sort_values("rel_period").reset_index(drop=True)
    pre = np.flatnonzero(rels < 0)
    if len(pre):
        R = np.zeros((len(pre), res.params.size))
        R[np.arange(len(pre)), pre] = 1.0
        out.attrs["pretrend_p_value"] = float(np.squeeze(res.f_test(R).pvalue))
    else:
        out.attrs["pretrend_p_value"] = math.nan
    out.attrs.update(alpha=alpha, n_units=n_units, ref=ref)
    return out


def plot_event_study(
    es: pd.DataFrame, true_effect=None, path: str | Path = "event_study.png", title: str = "Event study"
) -> Path:
    """Coefficients of :func:`event_study` with CI whiskers, a zero line, the adoption marker and, when given,
    the true effect as a dashed line (a number: 0 before adoption, that value from adoption on; or one value
    per row of ``es``). Written as PNG (Agg backend); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for col in ("rel_period", "estimate", "ci_low", "ci_high"):
        if col not in es.columns:
            raise ValueError(f"es: expected the columns of event_study(), missing {col!r}")
    x, b = es["rel_period"].to_numpy(), es["estimate"].to_numpy()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.axhline(0, c="grey", lw=1)
    ax.axvline(-0.5, c="grey", ls=":", lw=1)
    ax.errorbar(
        x,
        b,
        yerr=[b - es["ci_low"].to_numpy(), es["ci_high"].to_numpy() - b],
        fmt="o",
        capsize=3,
        label=f"estimate, {100 * (1 - es.attrs.get('alpha', 0.05)):.0f} % CI (clustered)",
    )
    if true_effect is not None:
        truth = np.asarray(true_effect, dtype=np.float64)
        if truth.ndim == 0:
            truth = np.where(x >= 0, float(truth), 0.0)
        elif truth.shape != x.shape:
            raise ValueError(
                f"true_effect: expected a number or {len(x)} values (one per row of es), got shape {truth.shape}"
            )
        ax.plot(x, truth, "--", c="C3", drawstyle="steps-mid", label="true effect")
    p = es.attrs.get("pretrend_p_value", math.nan)
    ax.set(
        xlabel="periods relative to adoption",
        ylabel="effect",
        title=title if np.isnan(p) else f"{title} (pre-trend p = {p:.2f})",
    )
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
