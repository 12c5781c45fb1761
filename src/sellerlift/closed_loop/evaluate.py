"""The whole closed-loop evaluation of a trained bundle on the simulator it was trained on.

1. the held-out customers at the cutoff (:class:`Population`), the observable ceiling for the world;
2. every policy run forward on them with common random numbers -> the policy table at 30 and 90 days;
3. the A/B test a seller would run, the seller-level rollout (DiD), off-policy estimates from the logs,
   each next to the truth;
4. tables, plots, an MLflow run, ``benchmarks/results/closed_loop.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift import ceiling
from sellerlift.closed_loop import policies as P
from sellerlift.closed_loop.forward import Population, run_policy
from sellerlift.closed_loop.observe import Budget, Observation
from sellerlift.closed_loop.outcomes import daily_series, policy_rows
from sellerlift.closed_loop.studies import ab_study, did_study, logged_offers, ope_study, qini_study
from sellerlift.features import FeatureSpec, build_features
from sellerlift.promotion_features import iter_offer_time_features
from sellerlift.runtime.decide import allocate_offers
from sellerlift.sim.config import LEVELS

AWARE_NAMES = {"margin": "retention_aware", "retention": "retention_aware_clv"}


@dataclass
class Settings:
    days: int = 90
    horizons: tuple[int, ...] = (30, 90)
    budget_fraction: float = 0.15
    per_seller: bool = False
    margin: float = 0.4
    max_customers: int | None = None  # cap on the held-out customers run forward
    ceiling_customers: int = ceiling.CEILING_CUSTOMERS
    ab: bool = True
    did: bool = True
    did_months: int = 12
    adopt_month: int = 6
    ope: bool = True
    retention_weight: float = 1.0  # the retention-aware policies' weight on the enduring value (bundles with it)
    # the enduring values a retention-aware policy is run for: "margin" (retention_aware, the A/B and DiD's
    # treatment) and "retention" (retention_aware_clv: retention valued at a kept customer's CLV)
    retention_values: tuple[str, ...] = ("margin", "retention")
    seed: int = 0
    extra_policies: list = field(default_factory=list)


@dataclass
class Result:
    table: pd.DataFrame
    daily: pd.DataFrame
    ab: dict | None
    did: dict | None
    ope: dict | None
    qini: pd.DataFrame | None
    timings: dict
    population: int
    runs: dict = field(default_factory=dict, repr=False)


def ceiling_policy(model: ceiling.CeilingModel, margin: float) -> P.CurvePolicy:
    """The same allocation as the model's, on curves fit to the truth from the model's inputs."""

    def curves(obs: Observation) -> np.ndarray:
        feats = build_features(obs.events(), obs.as_of, FeatureSpec(max_len=1), customers=obs.customer_id)
        return model.curves(feats.raw)

    return P.CurvePolicy("observable_ceiling", curves, margin)


def ceiling_enduring_policy(model: ceiling.CeilingModel, margin: float):
    """The retention-aware allocation (the 90-day profit of each level) on predictions fit to the truth."""
    from sellerlift.allocate import allocate_values

    class Policy:
        name = "observable_ceiling_enduring"

        def __call__(self, obs: Observation) -> np.ndarray:
            feats = build_features(obs.events(), obs.as_of, FeatureSpec(max_len=1), customers=obs.customer_id)
            e = model.enduring(feats.raw)
            profit = margin * (e["gross"] - e["gross"][:, :1]) - e["cost"]
            profit[:, 0] = 0.0
            kw = {"seller": obs.seller_id, "seller_budgets": obs.seller_budgets} if obs.seller_budgets else {}
            return allocate_values(profit, e["cost"], list(LEVELS), budget=obs.budget, **kw).level_index

    return Policy()


def loyalty_measure(bundle):
    """The bundle's loyalty score of every customer from their history so far (one yardstick for every
    policy); None when the bundle has no value head."""
    from sellerlift.runtime import Runtime

    rt = Runtime.load(bundle)
    if not rt.has_loyalty:
        return None

    def measure(obs: Observation) -> np.ndarray:
        feats = rt.features_of(obs.events(), obs.as_of, customers=obs.customer_id)
        return rt.loyalty(rt.score(feats))

    return measure


def policy_set(model_policy, ceil, s: Settings) -> list:
    out = [
        P.NoOffers(),
        P.blanket(10),
        P.top_value(10),
        P.rfm_at_risk(15, 60),
        P.random_offers(10, s.seed),
        P.Oracle("direct", s.margin),
        P.Oracle("enduring", s.margin, s.days),
    ]
    if ceil is not None:
        out += [ceiling_policy(ceil, s.margin), ceiling_enduring_policy(ceil, s.margin)]
    if model_policy is not None:
        out.append(model_policy)
    return out + list(s.extra_policies)


def _offer_time_curves(offers: pd.DataFrame, pop: Population, score, spec: FeatureSpec) -> tuple[np.ndarray, ...]:
    """[n, K] curves of ``score(feats)`` at each logged offer's time, and the observed basket then."""
    events = pd.concat([ch.history for ch in pop.chunks], ignore_index=True)
    q, basket = [], []
    for _, feats in iter_offer_time_features(events, offers["customer_id"].to_numpy(), offers["ts"].to_numpy(), spec):
        q.append(score(feats))
        has, monetary = feats.raw_columns(["has_purchase", "monetary"]).T
        basket.append(np.where(has > 0, monetary, np.nan))
    basket = np.concatenate(basket)
    return np.concatenate(q), np.where(np.isfinite(basket), basket, np.nanmedian(basket))


def _target_levels(offers: pd.DataFrame, q: np.ndarray, basket: np.ndarray, pop: Population, s: Settings):
    """What the policy would have offered on each logged campaign day, under that day's budget."""
    target = np.zeros(len(offers), dtype=np.int64)
    d = LEVELS / 100.0
    for _, rows in offers.groupby("ts").indices.items():
        top = (pop.logged_rates[-1] * basket[rows] * d[-1]).sum()
        a = allocate_offers(q[rows], basket[rows], s.margin, list(LEVELS), budget=s.budget_fraction * top)
        target[rows] = a.allocation.level_index
    return target


def run(
    sim_path: str | Path, bundle: str | Path | None, s: Settings, customer_ids: np.ndarray | None = None, progress=print
) -> Result:
    t_all = time.perf_counter()
    timings = {}
    pop = Population.load(sim_path, customer_ids)
    if s.max_customers and pop.n > s.max_customers:
        keep = np.random.default_rng(s.seed).choice(pop.customer_id, s.max_customers, replace=False)
        pop = Population.load(sim_path, keep)
    progress(f"closed loop: {pop.n:,} customers, {s.days} days, budget {s.budget_fraction:.0%} of the top level")
    t0 = time.perf_counter()
    ceil = ceiling.fit(pop.cfg, Path(sim_path).parent, n_customers=s.ceiling_customers) if s.ceiling_customers else None
    timings["ceiling_s"] = time.perf_counter() - t0
    model = P.model_policy(bundle, s.margin, name="next_week_dipn") if bundle is not None else None
    aware_all = []
    if bundle is not None and (Path(bundle) / "enduring.onnx").exists():
        aware_all = [
            P.retention_aware_policy(bundle, s.retention_weight, s.margin, name=AWARE_NAMES[v], value=v)
            for v in s.retention_values
            if v == "margin" or _has_value_head(bundle)  # retention is valued with the value head's CLV
        ]
    aware = aware_all[0] if aware_all else None
    budget = Budget(s.budget_fraction, s.per_seller)
    loyalty = loyalty_measure(bundle) if bundle is not None else None
    runs = {}
    for pol in policy_set(model, ceil, s) + aware_all:
        t0 = time.perf_counter()
        runs[pol.name] = run_policy(pop, pol, s.days, budget, horizons=s.horizons, loyalty=loyalty)
        timings[f"run/{pol.name}_s"] = time.perf_counter() - t0
        progress(f"  {pol.name}: {timings[f'run/{pol.name}_s']:.1f} s")
    table = policy_rows(runs, s.margin)
    treat = aware or model or (ceiling_policy(ceil, s.margin) if ceil is not None else P.Oracle("enduring", s.margin))
    ab = did = ope_res = qini = None
    if s.ab:
        t0 = time.perf_counter()
        ab = ab_study(pop, treat, P.NoOffers(), runs, budget, s.days, s.margin, s.seed)
        timings["ab_s"] = time.perf_counter() - t0
    if s.did:
        t0 = time.perf_counter()
        did = did_study(pop, P.top_value(10), treat, budget, s.did_months, s.adopt_month, s.seed)
        timings["did_s"] = time.perf_counter() - t0
    if s.ope:
        t0 = time.perf_counter()
        ope_res, qini = _ope(pop, bundle, ceil, s)
        timings["ope_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_all
    return Result(table, daily_series(runs), ab, did, ope_res, qini, timings, pop.n, runs)


def _ope(pop: Population, bundle, ceil, s: Settings):
    offers = logged_offers(pop)
    if bundle is not None:
        from sellerlift.runtime import Runtime

        rt = Runtime.load(bundle)
        q, basket = _offer_time_curves(offers, pop, lambda f: rt.curves(f), rt.spec)
    else:
        spec = FeatureSpec(max_len=1)
        spec.fit(build_features(pop.chunks[0].history, pop.cfg.cutoff, spec))
        q, basket = _offer_time_curves(offers, pop, lambda f: ceil.curves(f.raw), spec)
    q = np.clip(q.astype(np.float64), 1e-6, 1 - 1e-6)
    target = _target_levels(offers, q, basket, pop, s)
    res = ope_study(offers, q, target, seed=s.seed)
    rct = offers["randomized"].to_numpy().astype(bool)
    top = (q * basket[:, None] * (LEVELS / 100.0)[None, :])[:, -1].mean()
    qini = qini_study(offers, q, basket, np.linspace(0, top, 11), rct, s.seed) if rct.sum() >= 50 else None
    return res, qini


def _has_value_head(bundle) -> bool:
    return bool(json.loads((Path(bundle) / "manifest.json").read_text()).get("value"))
