"""The simulated world's parameters: archetypes, per-customer noise, enduring effects, the run's config."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sellerlift.schema import DISCOUNT_LEVELS

SIM_VERSION = "2"  # 2: enduring effects of redeemed offers, common random numbers per customer-day
SELLER_STREAM = 2**31 - 1  # RNG stream id for sellers, disjoint from chunk ids
ARCHETYPES = ("new_low_engagement", "high_value", "intermittent", "promotion_sensitive")
LEVELS = np.asarray(DISCOUNT_LEVELS, dtype=np.int64)
N_LEVELS = len(LEVELS)
TOP_LEVEL = float(LEVELS[-1])
RESPONSE_COLUMNS = tuple(f"p_response_{d}" for d in DISCOUNT_LEVELS)


@dataclass(frozen=True)
class Archetype:
    """Population means of the latent parameters of one archetype (rates are per day)."""

    purchase_rate: float
    visit_rate: float
    basket_value: float  # mean gross basket
    hazard: float  # mean daily death probability
    state_sigma: float  # AR(1) innovation sd of the engagement state
    email_rate: float
    offer_open_prob: float  # chance the campaign email is opened
    extra_items: float  # quantity = 1 + Poisson(extra_items)
    u_max: float  # incremental promo purchase probability at the top level
    u_center: float  # discount (pct) where the response is steepest
    u_slope: float  # logistic slope; small = nearly linear
    late_start: bool  # starts uniformly in the second half of the history
    # Enduring effects of a redeemed offer (see docs/simulator.md):
    habit: float  # engagement shift per redemption at the top level (x += habit * d / 30), decays with rho
    ref_sensitivity: float  # full-price buying multiplier exp(-kappa * r); r += d / 30 per redemption


ARCHETYPE_PARAMS: dict[str, Archetype] = {
    "new_low_engagement": Archetype(
        0.0065, 0.035, 15.0, 0.003, 0.15, 0.03, 0.15, 0.3, 0.25, 20.0, 0.30, True, habit=1.0, ref_sensitivity=0.0
    ),
    "high_value": Archetype(
        0.027, 0.10, 126.0, 0.0004, 0.12, 0.08, 0.5, 1.0, 0.08, 15.0, 0.02, False, habit=0.05, ref_sensitivity=0.3
    ),
    "intermittent": Archetype(
        0.0095, 0.05, 63.0, 0.0007, 0.22, 0.05, 0.3, 0.6, 0.15, 15.0, 0.15, False, habit=0.6, ref_sensitivity=0.1
    ),
    "promotion_sensitive": Archetype(
        0.003, 0.045, 29.0, 0.0009, 0.15, 0.06, 0.5, 0.5, 0.50, 10.0, 0.40, False, habit=0.0, ref_sensitivity=3.0
    ),
}

# Per-customer lognormal noise (sd of the log) around the archetype means.
NOISE = {
    "purchase_rate": 0.4,
    "visit_rate": 0.3,
    "basket_value": 0.3,
    "hazard": 0.4,
    "email_rate": 0.5,
    "u_max": 0.3,
    "habit": 0.5,
    "ref_sensitivity": 0.4,
}
BASKET_SIGMA = 0.5  # per-purchase lognormal spread around the customer's value
HAZARD_GAMMA = 0.6  # engagement lowers the hazard: h_t = h exp(-gamma x_t)
HAZARD_MAX = 0.2
POLICY_EXPLORE = 0.05
SUPPORT_BASE, SUPPORT_PER_HAZARD = 0.001, 2.0  # support contacts signal churn risk
REF_HALF_LIFE_DAYS = 45.0  # the reference-price memory of past discounts fades with this half-life


@dataclass(frozen=True)
class SimulatorConfig:
    n_customers: int = 20_000
    n_sellers: int = 50
    seed: int = 0
    start: str = "2025-01-01"  # first day of history
    history_days: int = 365  # cutoff = start + history_days (midnight)
    future_days: int = 90  # simulated future after the cutoff (labels come from it, state frozen)
    rct_fraction: float = 0.1  # share of customers whose offers are drawn uniformly at random
    campaign_every_days: int = 28
    chunk_size: int = 50_000
    archetype_shares: tuple[float, ...] = (0.41, 0.19, 0.23, 0.17)
    rho: float = 0.98  # persistence of the engagement state
    campaign_window_days: int = 7  # conversion window of an offer
    eligibility_days: int = 180  # mailed if any event in this many days before the campaign
    policy_strength: float = 2.0  # how strongly the logged policy tilts discounts to good customers
    seller_pareto_alpha: float = 1.1  # smaller = more heavy-tailed seller sizes
    first_campaign_day: int = 3
    enduring: bool = True  # redeemed offers change the customer's future (habit, reference price)
    truth_replications: int = 4  # Monte Carlo replications of the per-level 90-day truth (0: not computed)
    truth_horizon_days: int = 90

    def __post_init__(self):
        if self.n_customers < 1 or self.n_sellers < 1 or self.chunk_size < 1:
            raise ValueError("n_customers, n_sellers and chunk_size must be positive")
        if self.future_days < 90:
            raise ValueError("future_days must be >= 90: the churn label looks 90 days ahead")
        if self.campaign_every_days < self.campaign_window_days:
            raise ValueError("campaign_every_days must be >= campaign_window_days (windows may not overlap)")
        if len(self.archetype_shares) != len(ARCHETYPES) or abs(sum(self.archetype_shares) - 1) > 1e-9:
            raise ValueError(f"archetype_shares needs {len(ARCHETYPES)} shares summing to 1")
        if not 0.0 <= self.rct_fraction <= 1.0:
            raise ValueError("rct_fraction must be in [0, 1]")
        if self.history_days < 30:
            raise ValueError("history_days must be >= 30")
        if self.truth_replications < 0 or self.truth_horizon_days <= self.campaign_window_days:
            raise ValueError("truth_replications must be >= 0 and truth_horizon_days > campaign_window_days")

    @property
    def cutoff(self) -> pd.Timestamp:
        return pd.Timestamp(self.start) + pd.Timedelta(days=self.history_days)

    @property
    def n_days(self) -> int:
        return self.history_days + self.future_days

    @property
    def n_chunks(self) -> int:
        return -(-self.n_customers // self.chunk_size)

    def chunk_rows(self, chunk: int) -> tuple[int, int]:
        """(first customer id, number of customers) of ``chunk``."""
        first = chunk * self.chunk_size
        return first, min(self.chunk_size, self.n_customers - first)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def fingerprint(self) -> str:
        payload = json.dumps({"version": SIM_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
