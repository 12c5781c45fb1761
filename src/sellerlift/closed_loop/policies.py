"""The policies the closed loop compares: no offers, the sellers' rules, random, the oracles, a trained model.

A policy is a callable ``policy(obs) -> level index per mailed customer`` with a ``name``. Rules
spend down a ranked list with the seller's own spend estimate (observed basket x logged
redemption rate); the model and the oracles allocate with the Lagrangian under the campaign's
budget, each with its own idea of conversion and spend. Only the oracles read ``obs.truth``.
"""

from __future__ import annotations

import numpy as np

from sellerlift.allocate import allocate_values
from sellerlift.closed_loop.observe import Observation
from sellerlift.runtime.decide import allocate_offers
from sellerlift.sim.config import LEVELS

_LEVELS = [int(v) for v in LEVELS]


def _level_index(pct: float) -> int:
    if int(pct) not in _LEVELS:
        raise ValueError(f"level {pct}: expected one of the discount levels {_LEVELS}")
    return _LEVELS.index(int(pct))


def _seller_kw(obs: Observation) -> dict:
    return {"seller": obs.seller_id, "seller_budgets": obs.seller_budgets} if obs.seller_budgets else {}


class NoOffers:
    name = "no_offers"

    def __call__(self, obs: Observation) -> np.ndarray:
        return np.zeros(obs.n, dtype=np.int64)


class RankedRule:
    """One flat level down a ranked list of eligible customers while the estimated spend fits the budget."""

    def __init__(self, name: str, level_pct: float, rank=None, eligible=None, seed: int = 0):
        self.name, self.k, self.rank, self.eligible, self.seed = name, _level_index(level_pct), rank, eligible, seed

    def __call__(self, obs: Observation) -> np.ndarray:
        level = np.zeros(obs.n, dtype=np.int64)
        ok = np.ones(obs.n, bool) if self.eligible is None else self.eligible(obs)
        if self.rank is None:  # random order, a fresh one each campaign day
            score = np.random.default_rng([self.seed, obs.day]).random(obs.n)
        else:
            score = self.rank(obs)
        order = np.flatnonzero(ok)[np.argsort(-score[ok], kind="stable")]
        cost = obs.rule_spend()[order, self.k]
        if obs.budget is None:
            take = order
        elif obs.seller_budgets:  # each seller spends down its own list
            take = []
            for s, b in obs.seller_budgets.items():
                mine = obs.seller_id[order] == s
                take.append(order[mine][np.cumsum(cost[mine]) <= b])
            take = np.concatenate(take) if take else order[:0]
        else:
            take = order[np.cumsum(cost) <= obs.budget]
        level[take] = self.k
        return level


def top_value(level_pct: float = 10) -> RankedRule:
    """What sellers do: their best customers (highest observed basket) get a flat discount."""
    return RankedRule("rule_top_value", level_pct, rank=lambda o: o.monetary)


def rfm_at_risk(level_pct: float = 15, min_recency_days: float = 60) -> RankedRule:
    """Lapsing buyers (no purchase for ``min_recency_days``) get a win-back discount, biggest spenders first."""
    return RankedRule(
        "rule_rfm_at_risk",
        level_pct,
        rank=lambda o: o.monetary,
        eligible=lambda o: (o.frequency > 0) & (o.recency_days >= min_recency_days),
    )


def blanket(level_pct: float = 10) -> RankedRule:
    return RankedRule(f"blanket_{int(level_pct)}", level_pct)


def random_offers(level_pct: float = 10, seed: int = 0) -> RankedRule:
    return RankedRule("random", level_pct, seed=seed + 1)


class Oracle:
    """The allocation on the truth: the true 7-day curves (``direct``) or the expected 90-day profit of each
    level from today's state (``enduring``). Knows hidden state no model sees."""

    def __init__(self, objective: str = "direct", margin: float = 0.4, horizon: int = 90):
        if objective not in ("direct", "enduring"):
            raise ValueError(f"objective={objective!r}: expected 'direct' or 'enduring'")
        self.objective, self.margin, self.horizon = objective, margin, horizon
        self.name = f"oracle_{objective}"

    def values(self, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        """(incremental profit, expected spend) [n, K] of each level under this oracle's objective."""
        if self.objective == "direct":
            p, v = obs.truth.curves(), obs.truth.value()
            d = LEVELS / 100.0
            return v[:, None] * (p * (self.margin - d) - p[:, :1] * self.margin), v[:, None] * p * d
        e = obs.truth.enduring(self.horizon)
        return self.margin * (e["gross"] - e["gross"][:, :1]) - e["cost"], e["cost"]

    def __call__(self, obs: Observation) -> np.ndarray:
        profit, spend = self.values(obs)
        spend = np.maximum(spend, 0.0)
        profit[:, 0], spend[:, 0] = 0.0, 0.0
        return allocate_values(profit, spend, _LEVELS, budget=obs.budget, **_seller_kw(obs)).level_index


class CurvePolicy:
    """The Lagrangian allocation on predicted 7-day curves and the observed basket (a model or the ceiling)."""

    def __init__(self, name: str, curves, margin: float = 0.4):
        self.name, self.curves, self.margin = name, curves, margin

    def __call__(self, obs: Observation) -> np.ndarray:
        p = np.clip(np.asarray(self.curves(obs), dtype=np.float64), 0.0, 1.0)
        offers = allocate_offers(p, obs.basket, self.margin, _LEVELS, budget=obs.budget, **_seller_kw(obs))
        return offers.allocation.level_index


def model_policy(bundle_dir, margin: float = 0.4, name: str = "model") -> CurvePolicy:
    """A trained bundle's DIPN curves from the customers' event histories, through the torch-free runtime."""
    from sellerlift.runtime import Runtime

    rt = Runtime.load(bundle_dir)
    if rt.promotion is None:
        raise ValueError(
            f"{bundle_dir}: the bundle has no promotion model (dipn.onnx); train it with the promotion "
            "stage (the default extras) to run the model policy"
        )

    def curves(obs: Observation) -> np.ndarray:
        feats = rt.features_of(obs.events(), obs.as_of, customers=obs.customer_id)
        return rt.curves(feats)

    return CurvePolicy(name, curves, margin)


def retention_aware_policy(
    bundle_dir, weight: float = 1.0, margin: float = 0.4, name: str | None = None, value: str = "margin"
):
    """The bundle's DIPN curves and enduring response: the week's profit + ``weight`` x the enduring value of kind
    ``value`` (:func:`sellerlift.runtime.enduring.retention_aware_objective`: the margin after the week, or the
    retention after it valued at a kept customer's CLV), allocated under the campaign's budget."""
    import json
    from pathlib import Path

    from sellerlift.runtime import Runtime
    from sellerlift.runtime.enduring import EnduringModel, retention_aware_objective

    rt = Runtime.load(bundle_dir)
    info = json.loads((Path(bundle_dir) / "manifest.json").read_text()).get("enduring")
    if rt.promotion is None or info is None:
        raise ValueError(
            f"{bundle_dir}: the bundle needs dipn.onnx and enduring.onnx (the promotion and enduring "
            "stages) for the retention-aware policy"
        )
    model = EnduringModel.from_bundle(bundle_dir, info)
    if value == "retention" and rt.value is None:
        raise ValueError(f"{bundle_dir}: value='retention' needs the sequence model's value head (value_<d>d)")

    class Policy:
        def __init__(self):
            self.name = name or f"retention_aware_{value}_w{weight:g}"

        def __call__(self, obs: Observation) -> np.ndarray:
            feats = rt.features_of(obs.events(), obs.as_of, customers=obs.customer_id)
            scores = rt.score(feats)
            curves = rt.curves(feats, scores)
            kept = rt.kept_value(scores, margin) if value == "retention" else None
            objective, spend = retention_aware_objective(
                curves, model.predict(feats, scores), obs.basket, margin, _LEVELS, weight, value, kept
            )
            return allocate_values(objective, spend, _LEVELS, budget=obs.budget, **_seller_kw(obs)).level_index

    return Policy()


class ABTest:
    """``treat`` for the customers in ``treated_ids``, ``control`` for the rest; each arm gets its own budget."""

    def __init__(self, treat, control, treated_ids: np.ndarray):
        self.treat, self.control, self.treated = treat, control, np.asarray(treated_ids)
        self.name = f"ab[{treat.name} vs {control.name}]"

    def __call__(self, obs: Observation) -> np.ndarray:
        arm = np.isin(obs.customer_id, self.treated)
        level = np.zeros(obs.n, dtype=np.int64)
        for mask, policy in ((arm, self.treat), (~arm, self.control)):
            if mask.any():
                level[mask] = policy(obs.subset(mask))
        return level


class Rollout:
    """Sellers in ``adopters`` switch from ``before`` to ``after`` on ``adopt_day`` (days after the cutoff)."""

    def __init__(self, before, after, adopters, adopt_day: int, cutoff_day: int):
        self.before, self.after, self.adopters = before, after, np.asarray(list(adopters))
        self.adopt_at = cutoff_day + adopt_day
        self.name = f"rollout[{before.name} -> {after.name}]"

    def __call__(self, obs: Observation) -> np.ndarray:
        new = np.isin(obs.seller_id, self.adopters) & (obs.day >= self.adopt_at)
        level = np.zeros(obs.n, dtype=np.int64)
        for mask, policy in ((new, self.after), (~new, self.before)):
            if mask.any():
                level[mask] = policy(obs.subset(mask))
        return level
