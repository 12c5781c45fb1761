"""The allocation problem: inputs, per-level profit and spend, the result type."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_LEVELS = (0, 5, 10, 15, 20, 25, 30)


@dataclass
class Allocation:
    """One level per customer and what it brings.

    ``profit`` is the objective the solver maximised: the direct incremental profit, plus ``weight`` x the
    enduring value, minus the spread penalty when those options are used (``direct``, ``enduring`` and
    ``penalty`` are the parts; with none of them ``profit == direct``). ``bound`` is an upper bound on the
    best objective of any allocation (the LP / Lagrangian dual bound, or HiGHS' MIP bound): ``gap_to_bound``
    is therefore an upper bound on the optimality gap, not the gap itself; an optimal integer answer can
    still show a gap against the LP bound on small instances.
    """

    level_index: np.ndarray  # [n] int, index into levels
    level_pct: np.ndarray  # [n] discount in percent
    spend: float  # expected discount spend
    profit: float  # the objective: direct + weight * enduring - penalty (= direct profit by default)
    roi: float  # profit / spend (0 if spend == 0)
    multiplier: float | dict  # lam, or {"total": mu, "seller": {s: lam_s}, "tier": {t: lam_t}}
    seller_spend: dict | None  # seller -> spend, if sellers were given
    status: str  # "optimal", "ok" (feasible, see bound), "lp_relaxation", ...
    bound: float = float("nan")  # upper bound on the optimal objective (LP / dual, or the MIP bound)
    n_iter: int = 0  # bisection steps (Lagrangian only)
    info: dict = field(default_factory=dict)
    tier_spend: dict | None = None  # tier -> spend, if seller tiers were given
    direct: float = float("nan")  # expected incremental profit of the week (from the curves)
    enduring: float = 0.0  # enduring value of the chosen levels (not weighted; 0 without `enduring`)
    penalty: float = 0.0  # spread penalty paid: sum of spread_penalty * spend_i ** 2
    spread: float = float("nan")  # std of per-customer expected incentive among offered customers (0: none)

    @property
    def gap_to_bound(self) -> float:
        """Relative distance to ``bound`` (0 when bound is unknown or <= 0): an upper bound on the true gap."""
        if not np.isfinite(self.bound) or self.bound <= 0:
            return 0.0
        return max(0.0, (self.bound - self.profit) / self.bound)

    @property
    def gap(self) -> float:
        """Alias of :attr:`gap_to_bound` (kept for callers)."""
        return self.gap_to_bound


# ----------------------------------------------------------------- validation
def _check_inputs(p, value, margin, levels):
    p = np.asarray(p)
    if p.ndim != 2 or not np.issubdtype(p.dtype, np.number):
        raise ValueError(f"p: expected a numeric [n, K] array, got shape {p.shape}")
    if p.dtype.kind != "f":
        p = p.astype(np.float64)
    n, k = p.shape
    d = np.asarray(levels, dtype=np.float64)
    if d.ndim != 1 or len(d) != k:
        raise ValueError(f"levels: expected {k} levels (p has K={k} columns), got {d.shape}")
    if d[0] != 0 or np.any(np.diff(d) <= 0) or d[-1] >= 100 or not np.all(np.isfinite(d)):
        raise ValueError(f"levels: expected strictly increasing percents in [0, 100) starting at 0, got {d.tolist()}")
    if n and not (p.min() >= 0 and p.max() <= 1):  # NaN fails both
        raise ValueError("p: expected probabilities in [0, 1] with no NaN")
    value = np.asarray(value, dtype=np.float64)
    if value.shape != (n,):
        raise ValueError(f"value: expected shape ({n},) to match p, got {value.shape}")
    if n and not (value.min() >= 0 and np.isfinite(value.max())):
        raise ValueError("value: expected finite order values >= 0")
    margin = np.asarray(margin, dtype=np.float64)
    if margin.shape not in ((), (n,)):
        raise ValueError(f"margin: expected a scalar or shape ({n},), got {margin.shape}")
    if margin.size and not (margin.min() > 0 and margin.max() <= 1):
        raise ValueError("margin: expected profit margins in (0, 1]")
    return p, value, margin, d / 100.0


def _check_values(profit, spend, levels):
    profit = np.asarray(profit, dtype=np.float64)
    spend = np.asarray(spend, dtype=np.float64)
    if profit.ndim != 2 or spend.shape != profit.shape:
        raise ValueError(f"profit, spend: expected two [n, K] arrays of one shape, got {profit.shape}, {spend.shape}")
    d = np.asarray(levels, dtype=np.float64)
    if len(d) != profit.shape[1] or d[0] != 0 or np.any(np.diff(d) <= 0):
        raise ValueError(f"levels: expected {profit.shape[1]} increasing percents from 0, got {d.tolist()}")
    if not (np.isfinite(profit).all() and np.isfinite(spend).all()) or (spend < 0).any():
        raise ValueError("profit, spend: expected finite values and spend >= 0")
    if len(profit) and (np.abs(profit[:, 0]).max() > 0 or np.abs(spend[:, 0]).max() > 0):
        raise ValueError("profit, spend: level 0 (no offer) must have profit 0 and spend 0 (use increments)")
    return profit, spend, d / 100.0


def _check_budget(budget, name="budget"):
    if budget is None:
        return None
    try:
        b = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a finite number >= 0, got {budget!r}") from None
    if not (b >= 0 and np.isfinite(b)):
        raise ValueError(f"{name}: expected a finite number >= 0, got {budget!r}")
    return b


# ------------------------------------------------------- profit and spend
def _chunk_profit_spend(p, value, margin, d):
    p = p.astype(np.float64, copy=False)
    v = value[:, None]
    m = margin[:, None] if margin.ndim else margin
    profit = v * (p * (m - d) - p[:, :1] * m)  # exactly 0 at level 0
    return profit, v * p * d


def incremental_profit_and_spend(p, value, margin, levels):
    """Expected incremental profit and expected spend, each [n, K] float64."""
    p, value, margin, d = _check_inputs(p, value, margin, levels)
    return _chunk_profit_spend(p, value, margin, d)


def profit_and_spend_at(p, value, margin, levels, level_index):
    """Expected incremental profit and spend of each customer at its level ``level_index`` [n] (float64, the
    same numbers as :func:`incremental_profit_and_spend` at those levels, without the [n, K] matrices)."""
    p, value, margin, d = _check_inputs(p, value, margin, levels)
    return _at_levels(p, value, margin, d, np.asarray(level_index, dtype=np.intp))


def _at_levels(p, value, margin, d, level):
    """Per-customer profit and spend of the chosen levels (exact, float64)."""
    rows = np.arange(len(level))
    pk = p[rows, level].astype(np.float64)
    dk = d[level]
    profit = value * (pk * (margin - dk) - p[:, 0].astype(np.float64) * margin)
    return profit, value * pk * dk


def incentive_spread(spend, level_index) -> float:
    """Standard deviation of the per-customer expected incentive among customers offered a discount (0: none)."""
    offered = np.asarray(spend)[np.asarray(level_index) > 0]
    return float(offered.std()) if len(offered) else 0.0


def _group_spend(layer, sp):
    if layer is None:
        return None
    per = np.bincount(layer.idx, sp, minlength=len(layer.ids))
    return dict(zip(layer.ids.tolist(), per.tolist()))


def _finish(level, pr, sp, d, seller_layer=None, tier_layer=None, parts=None, **kw) -> Allocation:
    """The result from per-customer objective ``pr`` and spend ``sp``; ``parts`` = totals of
    (direct, enduring, penalty) when the objective is not the direct profit alone."""
    spend, profit = float(sp.sum()), float(pr.sum())
    direct, enduring, penalty = (profit, 0.0, 0.0) if parts is None else parts
    return Allocation(
        level_index=level,
        level_pct=d[level] * 100.0,
        spend=spend,
        profit=profit,
        roi=profit / spend if spend > 0 else 0.0,
        seller_spend=_group_spend(seller_layer, sp),
        tier_spend=_group_spend(tier_layer, sp),
        direct=direct,
        enduring=enduring,
        penalty=penalty,
        spread=incentive_spread(sp, level),
        **kw,
    )
