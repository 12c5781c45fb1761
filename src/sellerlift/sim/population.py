"""Who the customers are: static latent parameters drawn from archetypes, sellers and their campaign days."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from sellerlift.sim.config import ARCHETYPE_PARAMS, ARCHETYPES, LEVELS, NOISE, SELLER_STREAM, TOP_LEVEL, SimulatorConfig


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
    habit: np.ndarray  # engagement shift per top-level redemption (0 without enduring effects)
    kappa: np.ndarray  # reference-price sensitivity (0 without enduring effects)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> Customers:
        return Customers(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def habit_shift(self, level_pct: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Engagement shift of a redemption at ``level_pct`` for customers ``rows``."""
        return self.habit[rows] * level_pct / TOP_LEVEL


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
    c = Customers(
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
        # drawn whether or not the effects are on, so both worlds hold the same customers
        habit=_noisy(rng, _param("habit", arch), NOISE["habit"]),
        kappa=_noisy(rng, _param("ref_sensitivity", arch), NOISE["ref_sensitivity"]),
    )
    if not cfg.enduring:
        c.habit, c.kappa = np.zeros(n), np.zeros(n)
    return c
