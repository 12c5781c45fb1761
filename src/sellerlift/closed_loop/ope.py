"""Off-policy evaluation of a deterministic policy over K discrete arms (discount levels), from logged data.

Inputs, one entry per logged unit (customer x campaign):

* ``y`` [n]: the observed reward (conversion, revenue, profit...);
* ``a`` [n]: the arm the logging policy chose, an integer in 0..K-1;
* ``e`` [n]: its propensity P(a_i | x_i) under the logging policy, in (0, 1];
* ``t`` [n]: the arm the target policy would choose for the same unit;
* ``q`` [n, K] (optional): an outcome model, the predicted reward of every arm.

Estimators of the target policy's value V = E[y(t(x))] (the mean reward per unit):

* IPW: mean of 1{a=t} y / e (unbiased when ``e`` is right);
* SNIPW: sum(w y) / sum(w) with w = 1{a=t} / e (self-normalised; slightly biased, O(1/n),
  usually less variable, and invariant to shifting ``y``);
* DR: mean of q[t] + 1{a=t} (y - q[a]) / e (unbiased when either ``e`` or ``q`` is right,
  and lower variance than IPW when ``q`` is good).

:func:`evaluate` gives all of them with bootstrap percentile intervals; :func:`budget_curve`
is the multi-armed Qini / budget curve (Sverdrup, Wu, Athey & Wager 2023, the ``maq``
package) evaluated on held-out scores such as :func:`dr_scores`.

Propensity clipping (``clip``): propensities below ``clip`` are raised to ``clip`` (weights
capped at 1 / clip). This trades variance for bias (rarely logged arms are under-weighted);
the default None leaves propensities as given, which is what the unbiasedness above needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

_BOOT_CELLS = 1 << 21  # bootstrap cells (replicates x units) held in memory at once


# ---------------------------------------------------------------- validation
def _reward(y, name: str = "y") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise ValueError(f"{name}: expected a numeric 1-d array [n], got shape {y.shape} dtype {y.dtype}")
    y = y.astype(np.float64)
    if not np.isfinite(y).all():
        raise ValueError(f"{name}: non-finite values (first at index {int(np.flatnonzero(~np.isfinite(y))[0])})")
    return y


def _arms(x, name: str, n: int, k: int | None) -> np.ndarray:
    x = np.asarray(x)
    if x.shape != (n,):
        raise ValueError(f"{name}: expected one arm per unit, shape ({n},), got {x.shape}")
    integral = np.issubdtype(x.dtype, np.floating) and np.isfinite(x).all() and (x == np.round(x)).all()
    if not (np.issubdtype(x.dtype, np.integer) or integral):
        raise ValueError(f"{name}: expected integer arm indices, got dtype {x.dtype}")
    x = x.astype(np.int64)
    hi = k if k is not None else np.iinfo(np.int64).max
    bad = (x < 0) | (x >= hi)
    if bad.any():
        top = "K-1" if k is None else k - 1
        raise ValueError(
            f"{name}: arm indices must lie in 0..{top}, got {x[bad][:3].tolist()}"
            f" (first at index {int(np.flatnonzero(bad)[0])})"
        )
    return x


def _propensity(e, n: int, clip: float | None) -> np.ndarray:
    e = np.asarray(e, dtype=np.float64)
    if e.shape != (n,):
        raise ValueError(f"e: expected the logged arm's propensity per unit, shape ({n},), got {e.shape}")
    bad = ~((e > 0) & (e <= 1))
    if bad.any():
        raise ValueError(
            f"e: propensities must lie in (0, 1], got {e[bad][:3].tolist()} "
            f"(first at index {int(np.flatnonzero(bad)[0])})"
        )
    if clip is not None:
        if not 0 < clip < 1:
            raise ValueError(f"clip: expected a propensity floor in (0, 1), got {clip}")
        e = np.maximum(e, clip)
    return e


def _matrix(q, name: str, n: int, k: int | None = None) -> np.ndarray:
    q = np.asarray(q)
    if q.ndim != 2 or q.shape[0] != n or (k is not None and q.shape[1] != k) or q.shape[1] < 2:
        want = f"({n}, {k})" if k is not None else f"({n}, K) with K >= 2 arms"
        raise ValueError(f"{name}: expected shape {want}, got {q.shape}")
    q = q.astype(np.float64)
    if not np.isfinite(q).all():
        raise ValueError(f"{name}: non-finite values")
    return q


def _logged(y, a, e, t=None, q=None, clip=None):
    y = _reward(y)
    n = len(y)
    if n == 0:
        raise ValueError("y: no units")
    q = None if q is None else _matrix(q, "q", n)
    k = None if q is None else q.shape[1]
    a = _arms(a, "a", n, k)
    t = None if t is None else _arms(t, "t", n, k)
    return y, a, _propensity(e, n, clip), t, q


# ------------------------------------------------------------ per-unit scores
def ipw_scores(y, a, e, t, clip: float | None = None) -> np.ndarray:
    """Per-unit IPW scores [n], 1{a=t} y / e; their mean is the IPW estimate of V."""
    y, a, e, t, _ = _logged(y, a, e, t, clip=clip)
    return np.where(a == t, y / e, 0.0)


def ipw(y, a, e, t, clip: float | None = None) -> float:
    """IPW estimate of the target policy's mean reward per unit."""
    return float(ipw_scores(y, a, e, t, clip).mean())


def snipw_scores(y, a, e, t, clip: float | None = None) -> np.ndarray:
    """Per-unit linearised SNIPW scores [n], V + w (y - V) / mean(w); their mean is the SNIPW estimate
    and their standard deviation / sqrt(n) its delta-method standard error."""
    y, a, e, t, _ = _logged(y, a, e, t, clip=clip)
    w = np.where(a == t, 1.0 / e, 0.0)
    if not w.any():
        raise ValueError("t: the target policy never agrees with the logged arm a; SNIPW is undefined")
    v = (w * y).sum() / w.sum()
    return v + w * (y - v) / w.mean()


def snipw(y, a, e, t, clip: float | None = None) -> float:
    """Self-normalised IPW estimate, sum(w y) / sum(w) with w = 1{a=t} / e."""
    return float(snipw_scores(y, a, e, t, clip).mean())


def dr_scores(y, a, e, q, clip: float | None = None) -> np.ndarray:
    """Doubly robust pseudo-outcomes [n, K]: q[i, k] + 1{a_i = k} (y_i - q[i, a_i]) / e_i.

    Column k averages to the DR estimate of "arm k for everyone"; the score of a policy t is
    the entry [i, t_i]; differences of columns are per-unit effect scores (e.g. for
    :func:`budget_curve`).
    """
    y, a, e, _, q = _logged(y, a, e, None, q, clip)
    r = np.arange(len(y))
    out = q.copy()
    out[r, a] += (y - q[r, a]) / e
    return out


def dr(y, a, e, t, q, clip: float | None = None) -> float:
    """Doubly robust estimate of the target policy's mean reward per unit."""
    y, a, e, t, q = _logged(y, a, e, t, q, clip)
    return float(dr_scores(y, a, e, q)[np.arange(len(y)), t].mean())


# ------------------------------------------------------------------ evaluate
@dataclass(frozen=True)
class OPEResult:
    """One estimator's estimate of the target policy's mean reward per unit (units of ``y``)."""

    estimate: float
    se: float  # standard error from the per-unit (linearised) scores, sd / sqrt(n)
    ci: tuple[float, float]  # bootstrap percentile interval at level 1 - alpha (nan with n_boot = 0)
    ci_normal: tuple[float, float]  # estimate -/+ z * se
    n: int  # logged units
    ess: float  # effective sample size of the weights 1{a=t}/e: (sum w)^2 / sum w^2


def _boot_counts(n: int, n_boot: int, rng: np.random.Generator, width: int | None = None) -> Iterator[np.ndarray]:
    """Bootstrap multiplicities [b, n] (units drawn with replacement), in chunks of at most _BOOT_CELLS cells
    (counting ``width`` cells per replicate, default n)."""
    step = max(1, _BOOT_CELLS // max(width or n, n))
    for b0 in range(0, n_boot, step):
        b = min(step, n_boot - b0)
        idx = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)


def evaluate(
    y, a, e, t, q=None, alpha: float = 0.05, n_boot: int = 1000, seed: int = 0, clip: float | None = None
) -> dict[str, OPEResult]:
    """IPW, SNIPW and (when ``q`` is given) DR estimates of the target policy's value, with intervals.

    All estimators share the same bootstrap resamples of units (percentile intervals).
    n_boot = 0 skips the bootstrap.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha}")
    if n_boot < 0:
        raise ValueError(f"n_boot: expected >= 0 bootstrap replicates, got {n_boot}")
    y, a, e, t, q = _logged(y, a, e, t, q, clip)
    n = len(y)
    w = np.where(a == t, 1.0 / e, 0.0)
    if not w.any():
        raise ValueError("t: the target policy never agrees with the logged arm a; nothing to evaluate")
    cols = [w * y, w]
    if q is not None:
        cols.append(dr_scores(y, a, e, q)[np.arange(n), t])
    S = np.column_stack(cols)
    v_snipw = S[:, 0].sum() / S[:, 1].sum()
    point = {"ipw": S[:, 0].mean(), "snipw": v_snipw}
    unit = {"ipw": S[:, 0], "snipw": v_snipw + w * (y - v_snipw) / w.mean()}
    if q is not None:
        point["dr"], unit["dr"] = S[:, 2].mean(), S[:, 2]
    boot = {k: np.empty(n_boot) for k in point}
    rng, b0 = np.random.default_rng(seed), 0
    for counts in _boot_counts(n, n_boot, rng):
        sums = counts.astype(np.float64) @ S
        b = slice(b0, b0 + len(counts))
        boot["ipw"][b] = sums[:, 0] / n
        with np.errstate(invalid="ignore", divide="ignore"):
            boot["snipw"][b] = sums[:, 0] / sums[:, 1]  # nan if a resample has no matching unit
        if q is not None:
            boot["dr"][b] = sums[:, 2] / n
        b0 += len(counts)
    from scipy.stats import norm

    z = norm.ppf(1 - alpha / 2)
    ess = float(w.sum() ** 2 / (w**2).sum())
    out = {}
    for k, v in point.items():
        se = float(unit[k].std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        ci = (
            tuple(float(c) for c in np.nanquantile(boot[k], [alpha / 2, 1 - alpha / 2]))
            if n_boot
            else (math.nan, math.nan)
        )
        out[k] = OPEResult(
            estimate=float(v), se=se, ci=ci, ci_normal=(float(v - z * se), float(v + z * se)), n=n, ess=ess
        )
    return out


# -------------------------------------------------------------- budget curve
def _hull_path(tau: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every unit's upper convex hull of (cost, effect) from arm 0, as steps ordered by slope (best first).

    Returns (unit, arm_from, arm_to, slope), one row per step. Walking the steps in that order
    is the Lagrangian solution path of the multiple-choice knapsack's LP relaxation: at
    multiplier lam each unit sits at the hull vertex where the slope drops below lam.
    """
    n, k = tau.shape
    r = np.arange(n)
    cur, active = np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
    steps = []
    for _ in range(k - 1):  # gift wrapping: at most K-1 vertices per unit (a loop over arms, not units)
        dc = cost - cost[r, cur][:, None]
        dt = tau - tau[r, cur][:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(dc > 0, dt / dc, -np.inf)
        nxt = slope.argmax(axis=1)
        best = slope[r, nxt]
        move = active & (best > 0)
        if not move.any():
            break
        steps.append((r[move], cur[move], nxt[move], best[move]))
        cur, active = np.where(move, nxt, cur), move
    if not steps:
        return tuple(np.empty(0, dtype=kind) for kind in (np.int64, np.int64, np.int64, np.float64))
    unit, frm, to, slope = (np.concatenate(c) for c in zip(*steps))
    order = np.argsort(-slope, kind="stable")  # ties keep each unit's own order
    return unit[order], frm[order], to[order], slope[order]


def budget_curve(
    scores, cost, budgets, reference_policy_effects=None, n_boot: int = 200, seed: int = 0, alpha: float = 0.05
) -> pd.DataFrame:
    """The multi-armed Qini / budget curve: gain per unit of the best allocation at each average spend per unit.

    scores [n, K]: held-out per-unit effect scores used to *evaluate* the allocation, e.g.
      ``dr_scores(...) - dr_scores(...)[:, :1]``; cost [n, K]: spend per unit of each arm;
      reference_policy_effects [n, K]: the estimated effects tau_hat used to *choose* the
      allocation (None = the scores themselves: an in-sample, optimistic curve).
    Everything is relative to arm 0 (control, no spend): column 0 of each matrix is subtracted
      from its columns, and every other arm must cost > 0. The gain at budget B is
      mean_i [scores(i, arm_i) - scores(i, 0)], i.e. the value of the allocation minus the value
      of giving every unit arm 0.
    The allocation at B is the convex-hull / Lagrangian rule on (cost, tau_hat): hull steps are
      taken by decreasing gain per unit of spend until the average spend reaches B, the
      marginal step fractionally (as in ``maq``); beyond the spend of every unit's best hull
      arm the curve is flat.
    Intervals: the units are resampled (n_boot times) and the path is re-walked on each
      resample (the budget threshold moves with the resample), percentile intervals.
    Returns one row per budget: budget, spend (average spend actually allocated), gain, se
    (bootstrap sd), ci_low, ci_high.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores: expected [n, K] per-unit scores of every arm, got shape {scores.shape}")
    n, k = scores.shape
    scores = _matrix(scores, "scores", n, k)
    cost = _matrix(cost, "cost", n, k)
    tau = (
        scores
        if reference_policy_effects is None
        else _matrix(reference_policy_effects, "reference_policy_effects", n, k)
    )
    scores, cost, tau = (m - m[:, :1] for m in (scores, cost, tau))
    if not (cost[:, 1:] > 0).all():
        raise ValueError("cost: every arm but arm 0 must cost more than arm 0 (> 0 after subtracting column 0)")
    budgets = np.asarray(budgets, dtype=np.float64)
    if budgets.ndim != 1 or not (np.isfinite(budgets).all() and (budgets >= 0).all()):
        raise ValueError(f"budgets: expected a 1-d array of average spends per unit >= 0, got {budgets}")
    if n_boot < 0 or not 0 < alpha < 1:
        raise ValueError(f"n_boot/alpha: expected n_boot >= 0 and alpha in (0, 1), got {n_boot}, {alpha}")
    unit, frm, to, _ = _hull_path(tau, cost)
    dcost = cost[unit, to] - cost[unit, frm]
    dgain = scores[unit, to] - scores[unit, frm]

    def walk(weight):
        s = np.concatenate([[0.0], np.cumsum(weight * dcost) / n])
        g = np.concatenate([[0.0], np.cumsum(weight * dgain) / n])
        return np.interp(budgets, s, g), np.minimum(budgets, s[-1])

    gain, spend = walk(1.0)
    boot = np.empty((n_boot, len(budgets)))
    rng, b0 = np.random.default_rng(seed), 0
    for counts in _boot_counts(n, n_boot, rng, width=len(unit)):
        w = counts[:, unit].astype(np.float64)
        for j in range(len(w)):  # a loop over replicates; each walk is vectorised over units
            boot[b0 + j] = walk(w[j])[0]
        b0 += len(w)
    if n_boot:
        lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
        se = boot.std(axis=0, ddof=1) if n_boot > 1 else np.full(len(budgets), np.nan)
    else:
        lo = hi = se = np.full(len(budgets), np.nan)
    return pd.DataFrame({"budget": budgets, "spend": spend, "gain": gain, "se": se, "ci_low": lo, "ci_high": hi})
