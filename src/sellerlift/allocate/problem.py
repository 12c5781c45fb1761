"""The allocation problem: inputs, per-level profit and spend, the result type, feasibility."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_LEVELS = (0, 5, 10, 15, 20, 25, 30)


@dataclass
class Allocation:
    level_index: np.ndarray  # [n] int, index into levels
    level_pct: np.ndarray  # [n] discount in percent
    spend: float  # expected discount spend
    profit: float  # expected incremental profit
    roi: float  # profit / spend (0 if spend == 0)
    multiplier: float | dict  # lam, or {"total": mu, "seller": {s: lam_s}}
    seller_spend: dict | None  # seller -> spend, if sellers were given
    status: str  # "optimal", "ok" (feasible, see bound), "lp_relaxation", ...
    bound: float = float("nan")  # upper bound on the optimal profit (LP / dual)
    n_iter: int = 0  # bisection steps (Lagrangian only)
    info: dict = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """Relative gap to ``bound`` (0 when bound is unknown or 0)."""
        if not np.isfinite(self.bound) or self.bound <= 0:
            return 0.0
        return max(0.0, (self.bound - self.profit) / self.bound)


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


def _check_budget(budget, name="budget"):
    if budget is None:
        return None
    b = float(budget)
    if not (b >= 0 and np.isfinite(b)):
        raise ValueError(f"{name}: expected a finite number >= 0, got {budget!r}")
    return b


def _check_sellers(seller, seller_budgets, n):
    """-> (seller ids [G], index [n] into them, budgets [G] or None)."""
    if seller is None:
        if seller_budgets is not None:
            raise ValueError("seller: required when seller_budgets is given")
        return None, None, None
    seller = np.asarray(seller)
    if seller.shape != (n,):
        raise ValueError(f"seller: expected shape ({n},) to match p, got {seller.shape}")
    ids, idx = np.unique(seller, return_inverse=True)
    if seller_budgets is None:
        return ids, idx, None
    known = set(ids.tolist())
    unknown = [s for s in seller_budgets if s not in known]
    if unknown:
        raise ValueError(f"seller_budgets: unknown seller(s) {unknown[:5]} not in `seller`")
    missing = [s for s in ids.tolist() if s not in seller_budgets]
    if missing:
        raise ValueError(f"seller_budgets: no budget for seller(s) {missing[:5]}")
    b = np.array([_check_budget(seller_budgets[s], f"seller_budgets[{s!r}]") for s in ids.tolist()])
    return ids, idx, b


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


def _at_levels(p, value, margin, d, level):
    """Per-customer profit and spend of the chosen levels (exact, float64)."""
    rows = np.arange(len(level))
    pk = p[rows, level].astype(np.float64)
    dk = d[level]
    profit = value * (pk * (margin - dk) - p[:, 0].astype(np.float64) * margin)
    return profit, value * pk * dk


def _finish(level, pr, sp, d, ids, seller_idx, **kw) -> Allocation:
    spend, profit = float(sp.sum()), float(pr.sum())
    seller_spend = None
    if ids is not None:
        per = np.bincount(seller_idx, sp, minlength=len(ids))
        seller_spend = dict(zip(ids.tolist(), per.tolist()))
    return Allocation(
        level_index=level, level_pct=d[level] * 100.0, spend=spend, profit=profit,
        roi=profit / spend if spend > 0 else 0.0, seller_spend=seller_spend, **kw,
    )


def _check_feasible(a: Allocation, budget, ids, seller_b):
    """Level 0 is free, so infeasibility means a bug: fail loudly."""
    if budget is not None and a.spend > budget * (1 + 1e-12) + 1e-12:
        raise RuntimeError(f"infeasible allocation: spend {a.spend} > budget {budget}")
    if seller_b is not None:
        for s, b in zip(ids.tolist(), seller_b):
            if a.seller_spend[s] > b * (1 + 1e-12) + 1e-12:
                raise RuntimeError(f"infeasible allocation: seller {s!r} over budget")
