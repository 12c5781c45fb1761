"""Difference-in-differences on a seller panel (NumPy + statsmodels): :func:`did` is the seller-level two-way
fixed-effects estimate with standard errors clustered by seller, :func:`event_study` its dynamic version (one
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

from sellerlift.closed_loop.experiments import _alpha, _binary, _numeric


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
