"""Seeded customer simulator with exact ground truth.

Daily discrete-time model, vectorised over the customers of a chunk:

* every customer has static latent parameters (drawn from its archetype plus
  per-customer noise) and an engagement state ``x_t`` (AR(1) in log space);
* while alive on day ``t``: purchases ~ Poisson(lam_p * m_t), extra visits ~
  Poisson(lam_v * m_t), email opens ~ Poisson(lam_e * m_t), support contacts
  whose rate grows with the churn hazard, with ``m_t = exp(x_t - var/2)``;
  then death with probability ``h_t = h * exp(-gamma x_t - gamma^2 var/2)``;
* every ``campaign_every_days`` each seller mails its observably active
  customers an offer drawn by a biased policy (or uniformly, for the RCT slice);
  a promo adds a same-day purchase with probability ``u(d)``;
* after the cutoff the state is frozen and there are no campaigns, so the label
  probabilities and response curves at the cutoff are exact (closed form).

Chunks of ``chunk_size`` customers use ``np.random.default_rng([seed, chunk])``;
sellers come from ``np.random.default_rng([seed, SELLER_STREAM])``, so the output
is a pure function of the config. No torch here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.io import atomic_write_parquet, atomic_write_text
from sellerlift.schema import DISCOUNT_LEVELS, EVENT_TYPES

SIM_VERSION = "1"  # bump when the model changes so cached runs are not reused
SELLER_STREAM = 2**31 - 1  # RNG stream id for sellers, disjoint from chunk ids
TABLE_NAMES = ("events", "promotions", "truth")
US_PER_DAY = 86_400 * 1_000_000

ARCHETYPES = ("new_low_engagement", "high_value", "intermittent", "promotion_sensitive")
LEVELS = np.asarray(DISCOUNT_LEVELS, dtype=np.int64)
N_LEVELS = len(LEVELS)
RESPONSE_COLUMNS = tuple(f"p_response_{d}" for d in DISCOUNT_LEVELS)

# Event type codes follow EVENT_TYPES so pd.Categorical.from_codes needs no lookup.
VISIT, VIEW, ADD_TO_CART, PURCHASE, EMAIL_OPEN, SUPPORT, COUPON = range(7)
assert EVENT_TYPES[PURCHASE] == "purchase" and EVENT_TYPES[COUPON] == "coupon_redeem"


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


ARCHETYPE_PARAMS: dict[str, Archetype] = {
    "new_low_engagement": Archetype(0.0065, 0.035, 15.0, 0.003, 0.15, 0.03, 0.15, 0.3, 0.25, 20.0, 0.30, True),
    "high_value": Archetype(0.027, 0.10, 126.0, 0.0004, 0.12, 0.08, 0.5, 1.0, 0.08, 15.0, 0.02, False),
    "intermittent": Archetype(0.0095, 0.05, 63.0, 0.0007, 0.22, 0.05, 0.3, 0.6, 0.15, 15.0, 0.15, False),
    "promotion_sensitive": Archetype(0.003, 0.045, 29.0, 0.0009, 0.15, 0.06, 0.5, 0.5, 0.50, 10.0, 0.40, False),
}

# Per-customer lognormal noise (sd of the log) around the archetype means.
NOISE = {"purchase_rate": 0.4, "visit_rate": 0.3, "basket_value": 0.3, "hazard": 0.4, "email_rate": 0.5, "u_max": 0.3}
BASKET_SIGMA = 0.5  # per-purchase lognormal spread around the customer's value
HAZARD_GAMMA = 0.6  # engagement lowers the hazard: h_t = h exp(-gamma x_t)
HAZARD_MAX = 0.2
POLICY_EXPLORE = 0.05
SUPPORT_BASE, SUPPORT_PER_HAZARD = 0.001, 2.0  # support contacts signal churn risk


@dataclass(frozen=True)
class SimulatorConfig:
    n_customers: int = 20_000
    n_sellers: int = 50
    seed: int = 0
    start: str = "2025-01-01"  # first day of history
    history_days: int = 365  # cutoff = start + history_days (midnight)
    future_days: int = 90  # simulated future after the cutoff (labels come from it)
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

    @property
    def cutoff(self) -> pd.Timestamp:
        return pd.Timestamp(self.start) + pd.Timedelta(days=self.history_days)

    @property
    def n_days(self) -> int:
        return self.history_days + self.future_days

    @property
    def n_chunks(self) -> int:
        return -(-self.n_customers // self.chunk_size)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def fingerprint(self) -> str:
        payload = json.dumps({"version": SIM_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class SimulatedData:
    events: pd.DataFrame
    promotions: pd.DataFrame
    truth: pd.DataFrame
    cutoff: pd.Timestamp


# --------------------------------------------------------------------------- latent draws


@dataclass
class Customers:
    """Static latent parameters of one chunk's customers (arrays of length n)."""

    ids: np.ndarray
    seller: np.ndarray
    archetype: np.ndarray  # index into ARCHETYPES
    start_day: np.ndarray
    rct: np.ndarray
    purchase_rate: np.ndarray
    visit_rate: np.ndarray
    email_rate: np.ndarray
    value: np.ndarray
    hazard: np.ndarray
    state_sigma: np.ndarray
    state_var: np.ndarray  # stationary variance of x
    offer_open_prob: np.ndarray
    extra_items: np.ndarray
    u: np.ndarray  # (n, N_LEVELS) incremental promo purchase probability per level

    def __len__(self) -> int:
        return len(self.ids)


def seller_weights(cfg: SimulatorConfig) -> np.ndarray:
    """Heavy-tailed seller sizes, drawn from the seed alone so all chunks agree."""
    rng = np.random.default_rng([cfg.seed, SELLER_STREAM])
    w = rng.pareto(cfg.seller_pareto_alpha, cfg.n_sellers) + 1.0
    return w / w.sum()


def seller_campaign_phase(cfg: SimulatorConfig) -> np.ndarray:
    """Day-of-cycle on which each seller mails, spread over the cycle."""
    sellers = np.arange(cfg.n_sellers)
    return (cfg.first_campaign_day + sellers * 5) % cfg.campaign_every_days


def _param(name: str, arch_idx: np.ndarray) -> np.ndarray:
    table = np.array([getattr(ARCHETYPE_PARAMS[a], name) for a in ARCHETYPES], dtype=np.float64)
    return table[arch_idx]


def _noisy(rng: np.random.Generator, mean: np.ndarray, sd: float) -> np.ndarray:
    """Lognormal noise with mean 1, so the archetype mean is kept."""
    return mean * rng.lognormal(-0.5 * sd**2, sd, size=mean.shape)


def response_curve(u_max: np.ndarray, center: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """u(d) = u_max (S(d) - S(0)) / (S(30) - S(0)), S logistic: u(0) = 0 exactly, monotone."""
    d = LEVELS[None, :].astype(np.float64)
    s = 1.0 / (1.0 + np.exp(-slope[:, None] * (d - center[:, None])))
    return u_max[:, None] * (s - s[:, :1]) / (s[:, -1:] - s[:, :1])


def _start_days(rng: np.random.Generator, late: np.ndarray, history_days: int) -> np.ndarray:
    """New customers start late in the history; others are many at day 0, the rest spread."""
    h = history_days
    late_day = rng.integers(int(0.4 * h), int(0.99 * h), size=len(late))
    spread_day = np.where(rng.random(len(late)) < 0.4, 0, rng.integers(0, int(0.75 * h), size=len(late)))
    return np.where(late, late_day, spread_day).astype(np.int64)


def draw_customers(rng: np.random.Generator, cfg: SimulatorConfig, first_id: int, n: int) -> Customers:
    arch = rng.choice(len(ARCHETYPES), size=n, p=np.asarray(cfg.archetype_shares))
    sigma = _param("state_sigma", arch)
    u_max = np.minimum(_noisy(rng, _param("u_max", arch), NOISE["u_max"]), 0.9)
    center = _param("u_center", arch) + rng.normal(0.0, 2.0, n)
    slope = _param("u_slope", arch) * rng.lognormal(0.0, 0.2, n)
    return Customers(
        ids=np.arange(first_id, first_id + n, dtype=np.int64),
        seller=rng.choice(cfg.n_sellers, size=n, p=seller_weights(cfg)).astype(np.int64),
        archetype=arch,
        start_day=_start_days(rng, _param("late_start", arch) > 0, cfg.history_days),
        rct=rng.random(n) < cfg.rct_fraction,
        purchase_rate=_noisy(rng, _param("purchase_rate", arch), NOISE["purchase_rate"]),
        visit_rate=_noisy(rng, _param("visit_rate", arch), NOISE["visit_rate"]),
        email_rate=_noisy(rng, _param("email_rate", arch), NOISE["email_rate"]),
        value=_noisy(rng, _param("basket_value", arch), NOISE["basket_value"]),
        hazard=_noisy(rng, _param("hazard", arch), NOISE["hazard"]),
        state_sigma=sigma,
        state_var=sigma**2 / (1.0 - cfg.rho**2),
        offer_open_prob=_param("offer_open_prob", arch),
        extra_items=_param("extra_items", arch),
        u=response_curve(u_max, center, slope),
    )


# --------------------------------------------------------------------------- closed forms


def activity_multiplier(x: np.ndarray, var: np.ndarray) -> np.ndarray:
    """exp(x - var/2): mean 1 under the stationary state, so rates keep their meaning."""
    return np.exp(x - 0.5 * var)


def daily_hazard(c: Customers, x: np.ndarray) -> np.ndarray:
    g = HAZARD_GAMMA
    return np.clip(c.hazard * np.exp(-g * x - 0.5 * g**2 * c.state_var), 0.0, HAZARD_MAX)


def prob_no_purchase(a: np.ndarray, h: np.ndarray, horizon: int) -> np.ndarray:
    """P(no purchase on days 1..H | alive at the start of day 1), frozen state.

    Each day: no purchase with prob ``a``, then death with prob ``h``; the dead
    never buy. Sum_{k<H} (a s)^{k-1} a h + (a s)^{H-1} a, with s = 1 - h.
    """
    total = np.zeros_like(a)
    alive_no_buy = np.ones_like(a)  # P(alive at start of day k, no purchase so far)
    for _ in range(horizon - 1):
        total += alive_no_buy * a * h
        alive_no_buy = alive_no_buy * a * (1.0 - h)
    return total + alive_no_buy * a


def prob_purchase_within(c: Customers, x: np.ndarray, horizon: int) -> np.ndarray:
    """P(any purchase within ``horizon`` days | alive), state frozen at ``x``."""
    a = np.exp(-c.purchase_rate * activity_multiplier(x, c.state_var))
    return 1.0 - prob_no_purchase(a, daily_hazard(c, x), horizon)


# --------------------------------------------------------------------------- logged policy


def policy_probs(recency_days: np.ndarray, monetary: np.ndarray, strength: float) -> np.ndarray:
    """Historical (biased) policy: recent, high-spend customers get bigger discounts.

    Uses only observable quantities. The score is clipped and a little uniform
    exploration mixed in so every level keeps a probability >= POLICY_EXPLORE / 7
    (overlap for inverse propensity weighting).
    """
    score = 0.8 * (np.log1p(monetary) - 4.0) - (np.minimum(recency_days, 365) - 45.0) / 40.0
    score = np.clip(score, -2.0, 2.0)
    tilt = np.linspace(0.0, 1.0, N_LEVELS)
    base = np.linspace(0.5, -0.5, N_LEVELS)  # discounts cost money: mild preference for small ones
    logits = strength * score[:, None] * tilt[None, :] + base[None, :]
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return (1.0 - POLICY_EXPLORE) * p + POLICY_EXPLORE / N_LEVELS


def sample_levels(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row (inverse CDF)."""
    cdf = np.cumsum(probs, axis=1)
    r = rng.random(len(probs))[:, None] * cdf[:, -1:]
    return np.minimum((r >= cdf).sum(axis=1), N_LEVELS - 1)


# --------------------------------------------------------------------------- day loop


@dataclass
class _Records:
    """Sparse per-day records collected by the day loop, concatenated at the end."""

    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, **arrays: np.ndarray) -> None:
        for k, v in arrays.items():
            self.parts.setdefault(k, []).append(v)

    def get(self, key: str, dtype) -> np.ndarray:
        parts = self.parts.get(key)
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


class ChunkSimulation:
    """Runs the daily simulation for one chunk of customers."""

    def __init__(self, cfg: SimulatorConfig, rng: np.random.Generator, customers: Customers):
        self.cfg, self.rng, self.c = cfg, rng, customers
        n = len(customers)
        self.x = rng.normal(0.0, np.sqrt(customers.state_var))  # stationary start
        self.alive = np.zeros(n, dtype=bool)
        self.death_day = np.full(n, -1, dtype=np.int64)
        self.last_event = np.full(n, -(10**6), dtype=np.int64)
        self.last_purchase = np.full(n, -1, dtype=np.int64)
        self.cum_spend = np.zeros(n)
        # Open campaign window per customer (windows never overlap).
        self.offer_day = np.full(n, -(10**6), dtype=np.int64)
        self.offer_pct = np.zeros(n, dtype=np.int64)
        self.redeemed = np.zeros(n, dtype=bool)
        self.win_conv = np.zeros(n, dtype=bool)
        self.win_rev = np.zeros(n)
        self.win_cost = np.zeros(n)
        self.pending: dict[int, dict[str, np.ndarray]] = {}
        self.x_cutoff: np.ndarray | None = None
        self.alive_at_cutoff: np.ndarray | None = None
        self.phase = seller_campaign_phase(cfg)[customers.seller]
        self.purchases = _Records()
        self.counts = _Records()  # visits / email opens / support contacts: (cust, day, type, count)
        self.offers = _Records()

    def run(self) -> None:
        cfg = self.cfg
        for t in range(cfg.n_days):
            if t == cfg.history_days:  # freeze: the truth is computed from this state
                self.x_cutoff = self.x.copy()
                self.alive_at_cutoff = self.alive.copy()
            self._close_window(t - cfg.campaign_window_days)
            self.alive |= self.c.start_day == t
            m = activity_multiplier(self.x, self.c.state_var)
            extra_purchase, offer_opened = self._campaign(t)
            n_purchases = self._poisson(self.c.purchase_rate * m) + extra_purchase
            self._record_purchases(t, n_purchases)
            visits = self._poisson(self.c.visit_rate * m)
            emails = self._poisson(self.c.email_rate * m) + offer_opened
            hazard = daily_hazard(self.c, self.x)
            support = self._poisson(SUPPORT_BASE + SUPPORT_PER_HAZARD * hazard)
            self._record_counts(t, visits, emails, support, n_purchases)
            # Death after the day's activity: the same order the closed form assumes.
            dies = self.alive & (self.rng.random(len(self.x)) < hazard)
            self.alive &= ~dies
            self.death_day[dies] = t
            if t < cfg.history_days:  # x_T is the last step; the future keeps it frozen
                self._step_state()

    def _poisson(self, lam: np.ndarray) -> np.ndarray:
        return np.where(self.alive, self.rng.poisson(lam), 0)

    def _step_state(self) -> None:
        self.x = self.cfg.rho * self.x + self.c.state_sigma * self.rng.standard_normal(len(self.x))

    # ----------------------------------------------------------------- campaigns

    def _campaign(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Mail today's sellers' eligible customers; return extra purchases and opened emails."""
        cfg, c, n = self.cfg, self.c, len(self.x)
        zero = np.zeros(n, dtype=np.int64)
        if t + cfg.campaign_window_days > cfg.history_days:  # windows must close before the cutoff
            return zero, zero
        mailed = (
            (self.phase == t % cfg.campaign_every_days)
            & (c.start_day < t)
            & (self.last_event >= t - cfg.eligibility_days)
        )
        idx = np.flatnonzero(mailed)
        if len(idx) == 0:
            return zero, zero
        recency = np.where(self.last_purchase[idx] >= 0, t - self.last_purchase[idx], t - c.start_day[idx])
        probs = policy_probs(recency.astype(np.float64), self.cum_spend[idx], cfg.policy_strength)
        rct = c.rct[idx]
        probs[rct] = 1.0 / N_LEVELS
        level = sample_levels(self.rng, probs)
        u = c.u[idx, level]
        alive = self.alive[idx]
        extra = zero.copy()
        extra[idx] = alive & (self.rng.random(len(idx)) < u)
        opened = zero.copy()
        opened[idx] = alive & (self.rng.random(len(idx)) < c.offer_open_prob[idx])
        self.offer_day[idx] = t
        self.offer_pct[idx] = LEVELS[level]
        self.pending[t] = {"idx": idx, "level": level, "propensity": probs[np.arange(len(idx)), level], "rct": rct}
        return extra, opened

    def _close_window(self, day: int) -> None:
        """Record the outcome of offers sent on ``day`` whose window has just ended."""
        offer = self.pending.pop(day, None)
        if offer is None:
            return
        idx = offer["idx"]
        self.offers.add(
            cust=idx,
            day=np.full(len(idx), day, dtype=np.int64),
            pct=LEVELS[offer["level"]],
            converted=self.win_conv[idx],
            revenue=self.win_rev[idx],
            cost=self.win_cost[idx],
            randomized=offer["rct"],
            propensity=offer["propensity"],
        )
        self.offer_day[idx] = -(10**6)
        self.win_conv[idx] = False
        self.win_rev[idx] = 0.0
        self.win_cost[idx] = 0.0
        self.redeemed[idx] = False

    # ----------------------------------------------------------------- purchases

    def _record_purchases(self, t: int, n_purchases: np.ndarray) -> None:
        idx = np.flatnonzero(n_purchases)
        if len(idx) == 0:
            return
        rng, c = self.rng, self.c
        cust = np.repeat(idx, n_purchases[idx])
        k = len(cust)
        start_s = rng.uniform(60.0, 82_800.0, k)  # > 0 so day-T events are strictly after the cutoff
        dur_s = rng.uniform(60.0, 1_800.0, k)
        gross = c.value[cust] * rng.lognormal(-0.5 * BASKET_SIGMA**2, BASKET_SIGMA, k)
        qty = 1 + rng.poisson(c.extra_items[cust])
        n_views = 1 + rng.poisson(0.5, k)
        discount = self._coupon_discount(t, cust, start_s + dur_s)
        net = gross * (1.0 - discount)
        in_window = (t - self.offer_day[cust]) < self.cfg.campaign_window_days
        self.win_conv[cust[in_window]] = True
        self.win_rev += np.bincount(cust[in_window], net[in_window], minlength=len(self.x))
        self.win_cost += np.bincount(cust, gross * discount, minlength=len(self.x))
        self.cum_spend += np.bincount(cust, net, minlength=len(self.x))
        self.last_purchase[idx] = t
        self.purchases.add(cust=cust, day=np.full(k, t, dtype=np.int64), start_s=start_s, dur_s=dur_s,
                           n_views=n_views, net=net, qty=qty, redeem=discount > 0)

    def _coupon_discount(self, t: int, cust: np.ndarray, purchase_s: np.ndarray) -> np.ndarray:
        """Discount fraction per purchase: the first purchase in an open window redeems the coupon."""
        discount = np.zeros(len(cust))
        can_redeem = (
            ((t - self.offer_day[cust]) < self.cfg.campaign_window_days)
            & (self.offer_pct[cust] > 0)
            & ~self.redeemed[cust]
        )
        if not can_redeem.any():
            return discount
        order = np.lexsort((purchase_s, cust))  # by customer, then time of day
        first = np.ones(len(cust), dtype=bool)
        first[1:] = cust[order][1:] != cust[order][:-1]
        use = order[first & can_redeem[order]]
        discount[use] = self.offer_pct[cust[use]] / 100.0
        self.redeemed[cust[use]] = True
        return discount

    def _record_counts(self, t, visits, emails, support, n_purchases) -> None:
        for code, counts in ((VISIT, visits), (EMAIL_OPEN, emails), (SUPPORT, support)):
            idx = np.flatnonzero(counts)
            self.counts.add(cust=idx, day=np.full(len(idx), t, dtype=np.int64),
                            type=np.full(len(idx), code, dtype=np.int8), count=counts[idx])
        active = (visits + emails + support + n_purchases > 0) | (self.c.start_day == t)  # first visit
        self.last_event[active] = t


# --------------------------------------------------------------------------- tables


def _session_events(day_us, start_s, dur_s, n_views, add_to_cart, purchase):
    """Expand sessions to visit -> views -> [add_to_cart] -> [purchase] rows with rising times.

    Returns (session index, ts in microseconds, type code) per row.
    """
    n = len(day_us)
    steps = n_views + add_to_cart + purchase  # events after the visit
    step_us = (dur_s * 1e6 / np.maximum(steps, 1)).astype(np.int64)
    t0 = day_us + (start_s * 1e6).astype(np.int64)
    per_session = 1 + steps
    sess = np.repeat(np.arange(n), per_session)
    offsets = np.repeat(np.cumsum(per_session) - per_session, per_session)
    rank = np.arange(len(sess)) - offsets  # 0 = visit, 1..n_views = views, then cart, purchase
    ts = t0[sess] + rank * step_us[sess]
    code = np.full(len(sess), VIEW, dtype=np.int8)
    code[rank == 0] = VISIT
    cart_rank = n_views + 1
    code[(add_to_cart[sess] > 0) & (rank == cart_rank[sess])] = ADD_TO_CART
    code[(purchase[sess] > 0) & (rank == per_session[sess] - 1)] = PURCHASE
    return sess, ts, code


def build_events(sim: ChunkSimulation, start: pd.Timestamp) -> pd.DataFrame:
    rng, c = sim.rng, sim.c
    p = {k: sim.purchases.get(k, dt) for k, dt in
         (("cust", np.int64), ("day", np.int64), ("start_s", np.float64), ("dur_s", np.float64),
          ("n_views", np.int64), ("net", np.float64), ("qty", np.int64), ("redeem", bool))}
    k = {key: sim.counts.get(key, dt) for key, dt in
         (("cust", np.int64), ("day", np.int64), ("type", np.int8), ("count", np.int64))}
    rows = np.repeat(np.arange(len(k["cust"])), k["count"])  # one row per visit / email / contact
    r_cust, r_day, r_type = k["cust"][rows], k["day"][rows], k["type"][rows]

    # Purchase sessions: visit -> views -> add_to_cart -> purchase (+ coupon_redeem at the same ts).
    n_p = len(p["cust"])
    sess, ts_p, code_p = _session_events(
        p["day"] * US_PER_DAY, p["start_s"], p["dur_s"], p["n_views"],
        np.ones(n_p, dtype=np.int64), np.ones(n_p, dtype=np.int64))
    is_purchase = code_p == PURCHASE
    amount_p = np.where(is_purchase, p["net"][sess], 0.0)
    qty_p = np.where(is_purchase, p["qty"][sess], 0)
    cust_p = p["cust"][sess]
    red = np.flatnonzero(p["redeem"])
    red_ts = ts_p[is_purchase][red]  # one purchase row per session, in session order

    # Browsing sessions without a purchase; some put something in the cart. Every customer's
    # history opens with one on its start day, before anything else that day (seconds < 60).
    v = r_type == VISIT
    n_first = len(c.ids)
    v_cust = np.concatenate([np.arange(n_first), r_cust[v]])
    v_day = np.concatenate([c.start_day, r_day[v]])
    n_v = len(v_cust)
    start_s = np.concatenate([rng.uniform(1.0, 59.0, n_first), rng.uniform(60.0, 82_800.0, n_v - n_first)])
    v_sess, ts_v, code_v = _session_events(
        v_day * US_PER_DAY, start_s, rng.uniform(30.0, 900.0, n_v),
        1 + rng.poisson(0.5, n_v), (rng.random(n_v) < 0.12).astype(np.int64), np.zeros(n_v, dtype=np.int64))

    # Single events (email opens, support contacts) at a random time of day.
    o = ~v
    o_cust, o_day, o_type = r_cust[o], r_day[o], r_type[o]
    ts_o = o_day * US_PER_DAY + (rng.uniform(60.0, 86_399.0, len(o_cust)) * 1e6).astype(np.int64)

    cust = np.concatenate([cust_p, p["cust"][red], v_cust[v_sess], o_cust])
    ts = np.concatenate([ts_p, red_ts, ts_v, ts_o])
    code = np.concatenate([code_p, np.full(len(red), COUPON, dtype=np.int8), code_v, o_type])
    amount = np.concatenate([amount_p, np.zeros(len(red) + len(ts_v) + len(ts_o))])
    qty = np.concatenate([qty_p, np.zeros(len(red) + len(ts_v) + len(ts_o), dtype=np.int64)])
    order = np.lexsort((code, ts, cust))  # ties (purchase, coupon_redeem) keep type order
    start_us = pd.Timestamp(start).value // 1000
    return pd.DataFrame({
        "customer_id": c.ids[cust[order]],
        "seller_id": c.seller[cust[order]],
        "ts": (ts[order] + start_us).astype("datetime64[us]"),
        "event_type": pd.Categorical.from_codes(code[order], categories=list(EVENT_TYPES)),
        "amount": amount[order].astype(np.float64),
        "quantity": qty[order].astype(np.int64),
    })


def build_promotions(sim: ChunkSimulation, start: pd.Timestamp) -> pd.DataFrame:
    o = sim.offers
    cust, day = o.get("cust", np.int64), o.get("day", np.int64)
    order = np.lexsort((day, cust))
    ts = (pd.Timestamp(start).value // 1000 + day * US_PER_DAY).astype("datetime64[us]")
    return pd.DataFrame({
        "customer_id": sim.c.ids[cust[order]],
        "seller_id": sim.c.seller[cust[order]],
        "ts": ts[order],
        "discount_pct": o.get("pct", np.int64)[order],
        "converted": o.get("converted", bool)[order],
        "revenue": o.get("revenue", np.float64)[order],
        "cost": o.get("cost", np.float64)[order],
        "randomized": o.get("randomized", bool)[order],
        "propensity": o.get("propensity", np.float64)[order],
    })


def build_truth(sim: ChunkSimulation) -> pd.DataFrame:
    cfg, c = sim.cfg, sim.c
    alive = sim.alive_at_cutoff
    p_intent = np.where(alive, prob_purchase_within(c, sim.x_cutoff, 7), 0.0)
    p_churn = np.where(alive, 1.0 - prob_purchase_within(c, sim.x_cutoff, 90), 1.0)
    days = sim.purchases.get("day", np.int64)
    cust = sim.purchases.get("cust", np.int64)
    T, n = cfg.history_days, len(c)
    intent = np.bincount(cust[(days >= T) & (days < T + 7)], minlength=n) > 0
    bought_90 = np.bincount(cust[(days >= T) & (days < T + 90)], minlength=n) > 0
    truth = pd.DataFrame({
        "customer_id": c.ids,
        "seller_id": c.seller,
        "archetype": pd.Series(np.asarray(ARCHETYPES, dtype=object)[c.archetype], dtype="str"),
        "start_day": c.start_day,
        "alive_at_cutoff": alive,
        "value": c.value,
        "p_intent_7d": p_intent,
        "p_churn_90d": p_churn,
        "intent_7d": intent,
        "churn_90d": ~bought_90,
        "death_day": sim.death_day,  # -1 = alive at the end of the simulation
    })
    response = 1.0 - (1.0 - p_intent[:, None]) * (1.0 - np.where(alive[:, None], c.u, 0.0))
    for j, col in enumerate(RESPONSE_COLUMNS):
        truth[col] = response[:, j]
    return truth


def simulate_chunk(cfg: SimulatorConfig, chunk: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Simulate customers [chunk * chunk_size, ...) and return (events, promotions, truth)."""
    rng = np.random.default_rng([cfg.seed, chunk])
    first = chunk * cfg.chunk_size
    n = min(cfg.chunk_size, cfg.n_customers - first)
    sim = ChunkSimulation(cfg, rng, draw_customers(rng, cfg, first, n))
    sim.run()
    start = pd.Timestamp(cfg.start)
    return build_events(sim, start), build_promotions(sim, start), build_truth(sim)


# --------------------------------------------------------------------------- I/O


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=False)


def _part_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


def _prepare_out_dir(out_dir: Path) -> None:
    """Mark the directory unfinished and drop parts of an earlier run before writing."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "_SUCCESS").unlink(missing_ok=True)
    for name in TABLE_NAMES:
        for part in (out_dir / name).glob("part-*.parquet"):
            part.unlink()


def simulate(cfg: SimulatorConfig, out_dir: str | Path | None = None, progress: bool = True) -> SimulatedData | Path:
    """Run the simulator; in memory when ``out_dir`` is None, else chunk by chunk to Parquet parts."""
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        _prepare_out_dir(out)
    kept: list[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]] = []
    with _progress(progress) as bar:
        task = bar.add_task("chunks", total=cfg.n_chunks)
        for chunk in range(cfg.n_chunks):
            tables = simulate_chunk(cfg, chunk)
            if out is None:
                kept.append(tables)
            else:  # write and forget: memory stays bounded by one chunk
                for name, df in zip(TABLE_NAMES, tables):
                    atomic_write_parquet(df, out / name / _part_name(chunk))
            del tables
            bar.advance(task)
    if out is None:
        events, promos, truth = (pd.concat(t, ignore_index=True) for t in zip(*kept))
        return SimulatedData(events, promos, truth, cfg.cutoff)
    meta = {"config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "version": SIM_VERSION,
            "cutoff": str(cfg.cutoff), "n_chunks": cfg.n_chunks}
    atomic_write_text(out / "config.json", json.dumps(meta, indent=2, sort_keys=True))
    atomic_write_text(out / "_SUCCESS", "")  # last: readers trust only finished directories
    return out


def _read_parts(folder: Path) -> pd.DataFrame:
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{folder}: no part-*.parquet files")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def load_simulated(out_dir: str | Path) -> SimulatedData:
    """Read a finished simulator output directory back into memory."""
    out = Path(out_dir)
    if not (out / "_SUCCESS").exists():
        raise FileNotFoundError(f"{out}: no _SUCCESS marker; the simulation did not finish")
    meta = json.loads((out / "config.json").read_text())
    events = _read_parts(out / "events")
    events["event_type"] = pd.Categorical(events["event_type"], categories=list(EVENT_TYPES))
    return SimulatedData(events, _read_parts(out / "promotions"), _read_parts(out / "truth"),
                         pd.Timestamp(meta["cutoff"]))


def simulate_cached(cfg: SimulatorConfig, cache_root: str | Path = "data/sim", progress: bool = True) -> SimulatedData:
    """Simulate into ``cache_root/<fingerprint>`` unless a finished run is already there."""
    out = Path(cache_root) / cfg.fingerprint()
    if not (out / "_SUCCESS").exists():
        simulate(cfg, out, progress=progress)
    return load_simulated(out)


__all__ = [
    "ARCHETYPES", "ARCHETYPE_PARAMS", "RESPONSE_COLUMNS", "SimulatorConfig", "SimulatedData",
    "simulate", "load_simulated", "simulate_cached", "prob_no_purchase", "policy_probs", "response_curve",
]
