"""The truth the simulator knows: exact label probabilities and 7-day curves, and the 90-day effect of each level.

* Labels and the 7-day response curve at the cutoff are exact closed forms: the label
  future keeps the state frozen and runs no campaigns (:meth:`World.step` with ``frozen``).
* What an offer at each level, made at the cutoff, does over the next ``H`` days in the
  live world (the state moves on, the habit and reference-price effects play out) has no
  closed form: it is estimated by Monte Carlo with common random numbers. Every level is
  run on copies of the same customers with the same random numbers, replication by
  replication, so the difference between two levels is measured with small noise; each
  mean comes with its standard error over replications.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sellerlift.sim.config import ARCHETYPES, LEVELS, N_LEVELS, RESPONSE_COLUMNS, SimulatorConfig
from sellerlift.sim.population import Customers
from sellerlift.sim.world import Campaign, Streams, World, daily_hazard, purchase_rate

TRUTH_STREAM = 1_000  # stream ids of the truth replications (the history is 0, forward runs 1..)


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


def prob_purchase_within(c: Customers, x: np.ndarray, ref: np.ndarray, horizon: int) -> np.ndarray:
    """P(any purchase within ``horizon`` days | alive), state frozen at ``(x, ref)``."""
    a = np.exp(-purchase_rate(c, x, ref))
    return 1.0 - prob_no_purchase(a, daily_hazard(c, x), horizon)


def label_truth(cfg: SimulatorConfig, c: Customers, state: dict, world: World) -> pd.DataFrame:
    """Per customer: exact label probabilities and 7-day curves at the cutoff, and the realised labels."""
    alive, x, ref = state["alive"], state["x"], state["ref"]
    p_intent = np.where(alive, prob_purchase_within(c, x, ref, 7), 0.0)
    p_churn = np.where(alive, 1.0 - prob_purchase_within(c, x, ref, 90), 1.0)
    days = world.purchases.get("day", np.int64)
    cust = world.purchases.get("cust", np.int64)
    T, n = cfg.history_days, len(c)
    intent = np.bincount(cust[(days >= T) & (days < T + 7)], minlength=n) > 0
    bought_90 = np.bincount(cust[(days >= T) & (days < T + 90)], minlength=n) > 0
    truth = pd.DataFrame(
        {
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
            "death_day": world.death_day,  # -1 = alive at the end of the simulation
        }
    )
    response = 1.0 - (1.0 - p_intent[:, None]) * (1.0 - np.where(alive[:, None], c.u, 0.0))
    for j, col in enumerate(RESPONSE_COLUMNS):
        truth[col] = response[:, j]
    return truth


def level_outcomes(
    cfg: SimulatorConfig,
    chunk: int,
    c: Customers,
    state: dict,
    day0: int,
    rows: np.ndarray,
    reps: int,
    horizon: int,
    stream: int = TRUTH_STREAM,
    rand_rows: np.ndarray | None = None,
    n_rand: int | None = None,
) -> dict[str, np.ndarray]:
    """Outcomes over ``horizon`` days of one offer at each level on ``day0``, for customers ``rows``.

    Returns arrays [reps, len(rows), K]: ``gross`` (revenue before discount), ``cost`` (discount),
    ``purchases``, ``retained`` (a purchase after the offer's window, days window..horizon-1).
    Replication r uses stream ``stream + r`` for every level (common random numbers). ``rand_rows`` /
    ``n_rand``: the random-number rows of ``c``'s customers within their chunk (when ``c`` is a subset).
    """
    k_rows = np.tile(rows, N_LEVELS)
    level = np.repeat(np.arange(N_LEVELS), len(rows))
    out = {key: np.zeros((reps, len(rows), N_LEVELS)) for key in ("gross", "cost", "purchases", "retained")}
    sub = c.take(k_rows)
    rand = k_rows if rand_rows is None else rand_rows[k_rows]
    for r in range(reps):
        w = World(
            cfg,
            sub,
            Streams(cfg.seed, chunk, stream + r, n_rand or len(c)),
            state["x"][k_rows],
            record=False,
            rand_rows=rand,
        )
        w.restore(state, k_rows)
        start = {"gross": w.cum_gross.copy(), "cost": w.cum_cost.copy(), "purchases": w.n_purchases.copy()}
        for t in range(day0, day0 + horizon):
            w.step(t, Campaign(np.arange(len(k_rows)), level) if t == day0 else None)
        res = {
            "gross": w.cum_gross - start["gross"],
            "cost": w.cum_cost - start["cost"],
            "purchases": (w.n_purchases - start["purchases"]).astype(np.float64),
            "retained": (w.last_purchase >= day0 + cfg.campaign_window_days).astype(np.float64),
        }
        for key, v in res.items():
            out[key][r] = v.reshape(N_LEVELS, len(rows)).T
    return out


def enduring_truth(cfg: SimulatorConfig, chunk: int, c: Customers, state: dict) -> pd.DataFrame:
    """Per customer and level: the 90-day truth of an offer made at the cutoff (means and standard errors).

    Columns (H = ``cfg.truth_horizon_days``, d = level): ``p_retain_d`` (a purchase in days 8..H),
    ``gross_Hd_d``, ``cost_Hd_d``, their ``_se``, the standard errors of the differences to level 0
    (``..._diff_se``: what the enduring effect is measured with), and ``clv_Hd`` / ``purchases_Hd``:
    expected H-day spend and purchases with no offer. Customers dead at the cutoff get zeros.
    """
    H, R = cfg.truth_horizon_days, cfg.truth_replications
    rows = np.flatnonzero(state["alive"])
    out = {"customer_id": c.ids}
    o = level_outcomes(cfg, chunk, c, state, cfg.history_days, rows, R, H)
    n = len(c)

    def full(v):
        z = np.zeros((n,) + v.shape[1:])
        z[rows] = v
        return z

    def se(v):  # standard error of the mean over replications
        return v.std(axis=0, ddof=1) / np.sqrt(R) if R > 1 else np.full(v.shape[1:], np.nan)

    for key, name in (("retained", "p_retain"), ("gross", f"gross_{H}d"), ("cost", f"cost_{H}d")):
        mean, err = full(o[key].mean(axis=0)), full(se(o[key]))
        diff_err = full(se(o[key] - o[key][:, :, :1]))
        for j, d in enumerate(LEVELS):
            out[f"{name}_{d}"] = mean[:, j]
            out[f"{name}_{d}_se"] = err[:, j]
            if j > 0 and key != "cost":
                out[f"{name}_{d}_diff_se"] = diff_err[:, j]
    out[f"clv_{H}d"] = out[f"gross_{H}d_0"]  # no offer: no discount, spend = gross
    out[f"purchases_{H}d"] = full(o["purchases"].mean(axis=0))[:, 0]
    return pd.DataFrame(out)


def expected_outcomes(
    cfg: SimulatorConfig, c: Customers, x0: np.ndarray, ref0: np.ndarray, alive: np.ndarray, horizon: int | None = None
) -> dict[str, np.ndarray]:
    """The expected ``horizon``-day outcome of one offer today at each level, on the state's *mean path* [n, K].

    A deterministic, low-noise approximation of :func:`level_outcomes` (which is exact in expectation
    but noisy per customer): the engagement state follows its conditional mean ``rho^t x0`` (rates use
    the exact conditional mean of ``exp(x_t)``), a redemption is taken to happen on the offer's day
    with probability P(purchase in the window), and then shifts the state by ``habit * d / 30`` and the
    reference-price memory by ``d / 30``. Returns ``gross``, ``cost``, ``retained``, ``purchases``.
    The oracle decides with it; its agreement with the Monte Carlo truth is measured (tests, docs).
    """
    from sellerlift.sim.config import HAZARD_GAMMA, HAZARD_MAX
    from sellerlift.sim.world import REF_DECAY

    H, W, g = horizon or cfg.truth_horizon_days, cfg.campaign_window_days, HAZARD_GAMMA
    n, t = len(c), np.arange(H)
    rho_t = cfg.rho**t
    var = c.state_var[:, None]
    v_t = var * (1.0 - rho_t[None, :] ** 2)  # conditional variance of x_t given x_0
    base_x = x0[:, None] * rho_t[None, :]
    ref_t = ref0[:, None] * (REF_DECAY ** (t + 1))[None, :]
    d = LEVELS / 100.0
    shifted = (t >= 1)[None, :] * rho_t[None, :]
    ref_shift = (t >= 1)[None, :] * (REF_DECAY**t)[None, :]

    def path(k: int):
        mu = base_x + (c.habit[:, None] * d[k] / 0.3 * shifted if k else 0.0)
        ref = ref_t + (d[k] / 0.3 * ref_shift if k else 0.0)
        lam = c.purchase_rate[:, None] * np.exp(mu + 0.5 * v_t - 0.5 * var) * np.exp(-c.kappa[:, None] * ref)
        h = np.clip(c.hazard[:, None] * np.exp(-g * mu + 0.5 * g**2 * (v_t - var)), 0.0, HAZARD_MAX)
        surv = np.concatenate([np.ones((n, 1)), np.cumprod(1.0 - h, axis=1)[:, :-1]], axis=1)  # alive at day start
        a = np.exp(-lam)
        none_after = np.ones(n)  # P(no purchase in days W..H-1 | alive at day W), backwards
        for s in range(H - 1, W - 1, -1):
            none_after = a[:, s] * (h[:, s] + (1.0 - h[:, s]) * none_after)
        retained = surv[:, W] * (1.0 - none_after)
        no_buy_window = np.ones(n)  # P(no organic purchase in the window | alive at day 0), backwards
        for s in range(W - 1, -1, -1):
            no_buy_window = a[:, s] * (h[:, s] + (1.0 - h[:, s]) * no_buy_window)
        return (surv * lam).sum(axis=1), retained, no_buy_window

    base_purchases, base_retained, no_window = path(0)
    p_red = 1.0 - (1.0 - c.u) * no_window[:, None]  # [n, K]: P(a purchase in the window | offer at level k)
    out = {key: np.zeros((n, N_LEVELS)) for key in ("gross", "cost", "retained", "purchases")}
    for k in range(N_LEVELS):
        purchases, retained, _ = path(k) if k else (base_purchases, base_retained, None)
        pk = p_red[:, k] if k else np.zeros(n)
        out["purchases"][:, k] = (1 - pk) * base_purchases + pk * purchases + c.u[:, k]
        out["retained"][:, k] = (1 - pk) * base_retained + pk * retained
        out["cost"][:, k] = pk * d[k] * c.value
    out["gross"] = out["purchases"] * c.value[:, None]
    return {key: np.where(alive[:, None], v, 0.0) for key, v in out.items()}
