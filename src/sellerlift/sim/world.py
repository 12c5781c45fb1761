"""One chunk of customers living day by day: the state, its daily step, campaigns, enduring effects.

The same :meth:`World.step` runs the history (campaigns from the logged, biased policy),
the label future (state frozen, no campaigns: the truth is exact), the forward runs of
any policy and the Monte Carlo truth per discount level. Every random number a customer
uses on a day comes from a generator seeded by (seed, chunk, stream, day) and is drawn
for the whole chunk in a fixed order, and counts are drawn by inverse CDF: two runs that
differ only in the offers made see *the same* random numbers (common random numbers),
so their paired difference is the effect of the offers, not noise.

Enduring effects (``cfg.enduring``): a redeemed offer at level d shifts the engagement
state by ``habit * d / 30`` (it then decays with the state's persistence ``rho``) and
adds ``d / 30`` to a reference-price memory ``r`` that fades with a 45-day half-life;
full-price buying is multiplied by ``exp(-kappa * r)``. See docs/simulator.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sellerlift.sim.config import (
    BASKET_SIGMA,
    HAZARD_GAMMA,
    HAZARD_MAX,
    LEVELS,
    N_LEVELS,
    REF_HALF_LIFE_DAYS,
    SUPPORT_BASE,
    SUPPORT_PER_HAZARD,
    TOP_LEVEL,
    SimulatorConfig,
)
from sellerlift.sim.population import Customers, seller_campaign_phase

# Event type codes follow schema.EVENT_TYPES.
VISIT, VIEW, ADD_TO_CART, PURCHASE, EMAIL_OPEN, SUPPORT, COUPON = range(7)
NEVER = -(10**6)
# uniforms per customer-day, in this order; then normals
U_PURCHASE, U_VISIT, U_EMAIL, U_SUPPORT, U_DEATH, U_PROMO, U_OPEN, U_LEVEL = range(8)
Z_STATE, Z_BASKET = range(2)
HISTORY_STREAM = 0
REF_DECAY = 0.5 ** (1.0 / REF_HALF_LIFE_DAYS)
STATE_FIELDS = (
    "x",
    "alive",
    "death_day",
    "last_event",
    "last_purchase",
    "n_purchases",
    "cum_net",
    "cum_gross",
    "cum_cost",
    "ref",
    "offers_received",
    "offer_day",
    "offer_pct",
    "redeemed",
    "win_conv",
    "win_rev",
    "win_cost",
)


def activity_multiplier(x: np.ndarray, var: np.ndarray) -> np.ndarray:
    """exp(x - var/2): mean 1 under the stationary state, so rates keep their meaning."""
    return np.exp(x - 0.5 * var)


def daily_hazard(c: Customers, x: np.ndarray) -> np.ndarray:
    g = HAZARD_GAMMA
    return np.clip(c.hazard * np.exp(-g * x - 0.5 * g**2 * c.state_var), 0.0, HAZARD_MAX)


def purchase_rate(c: Customers, x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Full-price purchases per day: the engagement multiplier, lowered by the reference-price memory."""
    return c.purchase_rate * activity_multiplier(x, c.state_var) * np.exp(-c.kappa * ref)


def poisson_icdf(lam: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Poisson(lam) draws by inversion of uniforms ``u``: monotone in lam for a fixed u (coupled draws)."""
    u = np.minimum(u, 1.0 - 1e-12)
    p = np.exp(-lam)
    cdf = p.copy()
    k = np.zeros(len(lam), dtype=np.int64)
    more = np.flatnonzero(u > cdf)
    step = 0
    while len(more) and step < 60:  # daily rates are well below 1: one or two rounds
        step += 1
        k[more] += 1
        p[more] *= lam[more] / k[more]
        cdf[more] += p[more]
        more = more[u[more] > cdf[more]]
    return k


class Streams:
    """The random numbers of one chunk in one stream (history, a forward replication, a truth replication)."""

    def __init__(self, seed: int, chunk: int, stream: int, n: int):
        self.key, self.n = (int(seed), int(chunk), int(stream)), n
        self._t, self._draws = None, None

    def day(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(uniforms [8, n], normals [2, n]) of day ``t``; the same arrays every time they are asked for."""
        if t != self._t:
            rng = np.random.default_rng([*self.key, int(t), 0])
            self._t, self._draws = t, (rng.random((8, self.n)), rng.standard_normal((2, self.n)))
        return self._draws

    def details(self, t: int) -> np.random.Generator:
        """Draws that shape events but not outcomes (times of day, views, extra baskets)."""
        return np.random.default_rng([*self.key, int(t), 1])


@dataclass
class Records:
    """Sparse per-day records collected by the day loop, concatenated at the end."""

    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, **arrays: np.ndarray) -> None:
        for k, v in arrays.items():
            self.parts.setdefault(k, []).append(v)

    def get(self, key: str, dtype) -> np.ndarray:
        parts = self.parts.get(key)
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


@dataclass
class Campaign:
    """Offers made today: rows of the world, the level index of each, and how it was chosen."""

    rows: np.ndarray
    level: np.ndarray
    propensity: np.ndarray | None = None
    randomized: np.ndarray | None = None
    true_curve: np.ndarray | None = None  # [m, K] P(purchase in the window | each level): truth kept apart


class World:
    """One chunk's customers and their state. ``rand_rows`` maps each row to its random-number row
    (rows that are copies of one customer, e.g. one per discount level, share its random numbers)."""

    def __init__(
        self,
        cfg: SimulatorConfig,
        customers: Customers,
        streams: Streams,
        x0: np.ndarray,
        record: bool = True,
        rand_rows: np.ndarray | None = None,
    ):
        self.cfg, self.c, self.streams, self.record = cfg, customers, streams, record
        n = len(customers)
        self.rand_rows = np.arange(n) if rand_rows is None else rand_rows
        self.x = np.asarray(x0, dtype=np.float64).copy()
        self.alive = np.zeros(n, dtype=bool)
        self.death_day = np.full(n, -1, dtype=np.int64)
        self.last_event = np.full(n, NEVER, dtype=np.int64)
        self.last_purchase = np.full(n, -1, dtype=np.int64)
        self.n_purchases = np.zeros(n, dtype=np.int64)
        self.cum_net, self.cum_gross, self.cum_cost = np.zeros(n), np.zeros(n), np.zeros(n)
        self.ref = np.zeros(n)
        self.offers_received = np.zeros(n, dtype=np.int64)
        self.offer_day = np.full(n, NEVER, dtype=np.int64)
        self.offer_pct = np.zeros(n, dtype=np.int64)
        self.redeemed = np.zeros(n, dtype=bool)
        self.win_conv = np.zeros(n, dtype=bool)
        self.win_rev, self.win_cost = np.zeros(n), np.zeros(n)
        self.pending: dict[int, dict[str, np.ndarray]] = {}
        self.phase = seller_campaign_phase(cfg)[customers.seller]
        self.purchases, self.counts, self.offers = Records(), Records(), Records()

    # ----------------------------------------------------------------- state
    def state(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).copy() for name in STATE_FIELDS}

    def restore(self, state: dict[str, np.ndarray], rows: np.ndarray | None = None) -> None:
        for name in STATE_FIELDS:
            v = np.asarray(state[name])
            setattr(self, name, (v if rows is None else v[rows]).copy())

    def mailable(self, t: int) -> np.ndarray:
        """Rows a seller mailing on day ``t`` can reach: started, and any event in the eligibility window."""
        return np.flatnonzero(
            (self.phase == t % self.cfg.campaign_every_days)
            & (self.c.start_day < t)
            & (self.last_event >= t - self.cfg.eligibility_days)
        )

    def recency_days(self, t: int, rows: np.ndarray) -> np.ndarray:
        """Days since the last purchase (since the first event if none): observable."""
        last = self.last_purchase[rows]
        return np.where(last >= 0, t - last, t - self.c.start_day[rows]).astype(np.float64)

    # ----------------------------------------------------------------- the day
    def step(self, t: int, campaign: Campaign | None = None, frozen: bool = False) -> None:
        """Day ``t``: close windows, campaign, purchases, other events, deaths, then the state moves on.

        ``frozen``: the label future: no state innovation and no fading memory, so the closed-form
        truth at the cutoff is exact.
        """
        c, cfg = self.c, self.cfg
        u_all, z_all = self.streams.day(t)
        u, z = u_all[:, self.rand_rows], z_all[:, self.rand_rows]
        self._close_window(t - cfg.campaign_window_days)
        self.alive |= c.start_day == t
        if not frozen:
            self.ref *= REF_DECAY
        n = len(self.x)
        extra = np.zeros(n, dtype=np.int64)
        opened = np.zeros(n, dtype=np.int64)
        if campaign is not None and len(campaign.rows):
            self._open_window(t, campaign, u, extra, opened)
        m = activity_multiplier(self.x, c.state_var)
        n_purchases = np.where(self.alive, poisson_icdf(purchase_rate(c, self.x, self.ref), u[U_PURCHASE]), 0) + extra
        self._purchases(t, n_purchases, z[Z_BASKET])
        visits = np.where(self.alive, poisson_icdf(c.visit_rate * m, u[U_VISIT]), 0)
        emails = np.where(self.alive, poisson_icdf(c.email_rate * m, u[U_EMAIL]), 0) + opened
        hazard = daily_hazard(c, self.x)
        support = np.where(self.alive, poisson_icdf(SUPPORT_BASE + SUPPORT_PER_HAZARD * hazard, u[U_SUPPORT]), 0)
        if self.record:
            for code, counts in ((VISIT, visits), (EMAIL_OPEN, emails), (SUPPORT, support)):
                idx = np.flatnonzero(counts)
                self.counts.add(
                    cust=idx,
                    day=np.full(len(idx), t, dtype=np.int64),
                    type=np.full(len(idx), code, dtype=np.int8),
                    count=counts[idx],
                )
        active = (visits + emails + support + n_purchases > 0) | (c.start_day == t)  # the first visit
        self.last_event[active] = t
        dies = self.alive & (u[U_DEATH] < hazard)  # after the day's activity, as the closed form assumes
        self.alive &= ~dies
        self.death_day[dies] = t
        if not frozen:
            self.x = cfg.rho * self.x + c.state_sigma * z[Z_STATE]

    # ----------------------------------------------------------------- campaigns
    def _open_window(self, t: int, camp: Campaign, u: np.ndarray, extra: np.ndarray, opened: np.ndarray) -> None:
        idx, level = camp.rows, camp.level
        alive = self.alive[idx]
        extra[idx] = alive & (u[U_PROMO, idx] < self.c.u[idx, level])
        opened[idx] = alive & (u[U_OPEN, idx] < self.c.offer_open_prob[idx])
        self.offer_day[idx] = t
        self.offer_pct[idx] = LEVELS[level]
        self.offers_received[idx] += 1
        self.redeemed[idx] = False  # a new window starts afresh (the last one may still be open at a snapshot)
        self.win_conv[idx], self.win_rev[idx], self.win_cost[idx] = False, 0.0, 0.0
        k = len(idx)
        self.pending[t] = {
            "idx": idx,
            "level": level,
            "propensity": np.ones(k) if camp.propensity is None else camp.propensity,
            "rct": np.zeros(k, bool) if camp.randomized is None else camp.randomized,
            "true_curve": np.full((k, N_LEVELS), np.nan) if camp.true_curve is None else camp.true_curve,
        }

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
            true_curve=offer["true_curve"],
        )
        self.offer_day[idx] = NEVER
        self.win_conv[idx] = False
        self.win_rev[idx] = 0.0
        self.win_cost[idx] = 0.0
        self.redeemed[idx] = False

    # ----------------------------------------------------------------- purchases
    def _purchases(self, t: int, n_purchases: np.ndarray, z_basket: np.ndarray) -> None:
        idx = np.flatnonzero(n_purchases)
        if len(idx) == 0:
            return
        c, rng = self.c, self.streams.details(t)
        cust = np.repeat(idx, n_purchases[idx])
        k = len(cust)
        first = np.ones(k, dtype=bool)
        first[1:] = cust[1:] != cust[:-1]  # each customer's first purchase of the day: coupled basket draw
        z = np.where(first, z_basket[cust], rng.standard_normal(k))
        gross = c.value[cust] * np.exp(BASKET_SIGMA * z - 0.5 * BASKET_SIGMA**2)
        # the first purchase of the day in an open window redeems the coupon
        can_redeem = (
            first
            & ((t - self.offer_day[cust]) < self.cfg.campaign_window_days)
            & (self.offer_pct[cust] > 0)
            & ~self.redeemed[cust]
        )
        discount = np.where(can_redeem, self.offer_pct[cust] / 100.0, 0.0)
        net = gross * (1.0 - discount)
        red = cust[can_redeem]
        self.redeemed[red] = True
        if len(red):  # the enduring effects of a redeemed offer
            pct = self.offer_pct[red].astype(np.float64)
            self.x[red] += c.habit_shift(pct, red)
            self.ref[red] += pct / TOP_LEVEL
        in_window = (t - self.offer_day[cust]) < self.cfg.campaign_window_days
        n = len(self.x)
        self.win_conv[cust[in_window]] = True
        self.win_rev += np.bincount(cust[in_window], net[in_window], minlength=n)
        self.win_cost += np.bincount(cust, gross * discount, minlength=n)
        self.cum_net += np.bincount(cust, net, minlength=n)
        self.cum_gross += np.bincount(cust, gross, minlength=n)
        self.cum_cost += np.bincount(cust, gross * discount, minlength=n)
        self.n_purchases += n_purchases
        self.last_purchase[idx] = t
        if self.record:
            start_s = rng.uniform(60.0, 82_800.0, k)  # > 0 so day-T events are strictly after the cutoff
            start_s = start_s[np.lexsort((start_s, cust))]  # records are grouped by customer: the first is earliest
            self.purchases.add(
                cust=cust,
                day=np.full(k, t, dtype=np.int64),
                start_s=start_s,
                dur_s=rng.uniform(60.0, 1_800.0, k),
                n_views=1 + rng.poisson(0.5, k),
                net=net,
                qty=1 + rng.poisson(c.extra_items[cust]),
                redeem=discount > 0,
            )


def offer_levels(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One categorical draw per row by inverse CDF of the uniforms ``u``."""
    cdf = np.cumsum(probs, axis=1)
    return np.minimum((u[:, None] * cdf[:, -1:] >= cdf).sum(axis=1), N_LEVELS - 1)
