"""The constraints of an allocation, checked: budgets on a laminar family (sellers in tiers in the total) and
per-customer caps (a highest discount, directly or by segment; a most expected incentive in money).

Every error is a ValueError whose message starts with the argument's name and says what was expected.
Level 0 (no offer) costs nothing and no cap can forbid it, so checked inputs are always feasible: a
contradiction (a budget for an unknown tier, a seller with no tier, a negative cap) is an input error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sellerlift.allocate.problem import Allocation, _check_budget


@dataclass
class Layer:
    """One layer of the laminar family: a partition of the customers into groups, each with a budget."""

    name: str  # "seller" or "tier"
    ids: np.ndarray  # [G] the groups' ids
    idx: np.ndarray  # [n] customer -> group index
    budgets: np.ndarray | None  # [G] spend caps, or None (spend reported only)
    parent: np.ndarray | None = None  # [G] index of each group's group in the next layer out (sellers -> tiers)


@dataclass
class Constraints:
    budget: float | None  # total spend cap
    seller: Layer | None
    tier: Layer | None
    max_level: np.ndarray | None  # [n] highest allowed level index per customer
    max_incentive: np.ndarray | None  # [n] or () most expected incentive (money) per customer

    @property
    def layers(self) -> list[Layer]:
        """The layers with budgets, innermost first (sellers, then tiers); the total comes after them."""
        return [g for g in (self.seller, self.tier) if g is not None and g.budgets is not None]


def check_constraints(
    n,
    levels_pct,
    budget=None,
    seller=None,
    seller_budgets=None,
    seller_tier=None,
    tier_budgets=None,
    max_discount=None,
    segment=None,
    segment_max_discount=None,
    max_incentive=None,
) -> Constraints:
    """Check every constraint argument against ``n`` customers and the levels (percents) -> Constraints."""
    budget = _check_budget(budget)
    s = _check_sellers(seller, seller_budgets, n)
    t = _check_tiers(s, seller_tier, tier_budgets)
    max_level = _check_max_level(
        n, np.asarray(levels_pct, dtype=np.float64), max_discount, segment, segment_max_discount
    )
    return Constraints(budget, s, t, max_level, _check_cap(max_incentive, n, "max_incentive"))


def _budgets(ids, budgets, arg, what):
    """Budgets [G] in the order of ``ids`` from a mapping that must name each id exactly."""
    if not isinstance(budgets, Mapping):
        raise ValueError(f"{arg}: expected a mapping {what} -> budget, got {type(budgets).__name__}")
    known = set(ids.tolist())
    unknown = [g for g in budgets if g not in known]
    if unknown:
        raise ValueError(
            f"{arg}: unknown {what}(s) {unknown[:5]} not in `{what}`"
            if what == "seller"
            else f"{arg}: unknown {what}(s) {unknown[:5]}: not a tier of any seller in `seller_tier`"
        )
    missing = [g for g in ids.tolist() if g not in budgets]
    if missing:
        raise ValueError(f"{arg}: no budget for {what}(s) {missing[:5]}")
    return np.array([_check_budget(budgets[g], f"{arg}[{g!r}]") for g in ids.tolist()], dtype=np.float64)


def _check_sellers(seller, seller_budgets, n):
    if seller is None:
        if seller_budgets is not None:
            raise ValueError("seller: required when seller_budgets is given")
        return None
    seller = np.asarray(seller)
    if seller.shape != (n,):
        raise ValueError(f"seller: expected shape ({n},) to match p, got {seller.shape}")
    ids, idx = np.unique(seller, return_inverse=True)
    b = None if seller_budgets is None else _budgets(ids, seller_budgets, "seller_budgets", "seller")
    return Layer("seller", ids, idx, b)


def _check_tiers(sellers, seller_tier, tier_budgets):
    if seller_tier is None:
        if tier_budgets is not None:
            raise ValueError("seller_tier: required when tier_budgets is given (a tier for every seller)")
        return None
    if sellers is None:
        raise ValueError("seller: required when seller_tier is given (each customer's seller)")
    if not isinstance(seller_tier, Mapping):
        raise ValueError(f"seller_tier: expected a mapping seller -> tier, got {type(seller_tier).__name__}")
    no_tier = [s for s in sellers.ids.tolist() if s not in seller_tier]
    if no_tier:
        raise ValueError(f"seller_tier: no tier for seller(s) {no_tier[:5]} (every seller in `seller` needs one)")
    try:
        ids = np.unique(np.asarray(list(seller_tier.values())))
        parent = np.searchsorted(ids, np.asarray([seller_tier[s] for s in sellers.ids.tolist()]))
    except TypeError as e:
        raise ValueError(f"seller_tier: expected tiers of one sortable type (str or int), got: {e}") from None
    b = None if tier_budgets is None else _budgets(ids, tier_budgets, "tier_budgets", "tier")
    sellers.parent = parent  # sellers nest in tiers: seller group g lies in tier parent[g]
    return Layer("tier", ids, parent[sellers.idx], b)


def _check_cap(cap, n, arg):
    """A per-customer cap >= 0: a scalar or [n] (inf = no cap) -> float64 array, or None."""
    if cap is None:
        return None
    try:
        c = np.asarray(cap, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{arg}: expected a number >= 0 or an array of shape ({n},), got {cap!r}") from None
    if c.shape not in ((), (n,)):  # n == (): a scalar only
        raise ValueError(f"{arg}: expected a scalar" + ("" if n == () else f" or shape ({n},)") + f", got {c.shape}")
    if c.size and not (c.min() >= 0):  # NaN fails too
        raise ValueError(f"{arg}: expected caps >= 0 (inf = no cap) with no NaN, got min {c.min()}")
    return c


def _check_max_level(n, pct, max_discount, segment, segment_max_discount):
    """Highest allowed level index per customer from a cap in percent and/or caps by segment; None if neither."""
    caps = []
    c = _check_cap(max_discount, n, "max_discount")
    if c is not None:
        caps.append(c)
    if segment_max_discount is not None:
        if segment is None:
            raise ValueError("segment: required when segment_max_discount is given (each customer's segment)")
        if not isinstance(segment_max_discount, Mapping):
            raise ValueError(
                "segment_max_discount: expected a mapping segment -> max discount in percent, "
                f"got {type(segment_max_discount).__name__}"
            )
        seg = np.asarray(segment)
        if seg.shape != (n,):
            raise ValueError(f"segment: expected shape ({n},) to match p, got {seg.shape}")
        per = np.full(n, np.inf)  # one pass per named segment: no sort of the n labels
        for g, v in segment_max_discount.items():
            cap = _check_cap(v, (), f"segment_max_discount[{g!r}]")
            hit = seg == g
            if not np.any(hit):
                raise ValueError(f"segment_max_discount: unknown segment {g!r}: not in `segment`")
            per = np.where(hit, np.minimum(per, cap), per)
        caps.append(per)
    if not caps:
        return None
    cap = caps[0] if len(caps) == 1 else np.minimum(*caps)
    # the highest level whose percent is <= the cap (level 0 always qualifies)
    k = np.searchsorted(pct, cap, side="right") - 1
    return np.broadcast_to(k, (n,)).astype(np.int8 if len(pct) < 128 else np.int16)


# ---------------------------------------------------------------- the result holds every constraint
def check_feasible(a: Allocation, cons: Constraints, sp: np.ndarray):
    """Raise RuntimeError if the result breaks a constraint (checked inputs are always feasible: it would be a
    bug). Budgets hold to float rounding of the sums (1e-12 relative); caps hold exactly."""

    def over(spend, cap):
        return spend > cap * (1 + 1e-12) + 1e-12

    if cons.budget is not None and over(a.spend, cons.budget):
        raise RuntimeError(f"infeasible allocation: spend {a.spend} > budget {cons.budget}")
    for layer in cons.layers:
        per = np.bincount(layer.idx, sp, minlength=len(layer.ids))
        bad = np.flatnonzero(over(per, layer.budgets))
        if len(bad):
            raise RuntimeError(f"infeasible allocation: {layer.name} {layer.ids[bad[0]]!r} over budget")
    if cons.max_level is not None and (a.level_index > cons.max_level).any():
        raise RuntimeError("infeasible allocation: a customer above its max_discount")
    if cons.max_incentive is not None and (sp > cons.max_incentive).any():
        raise RuntimeError("infeasible allocation: a customer above its max_incentive")
