"""What a policy sees on a campaign day: the mailed customers, their observable history, and the budget.

Everything on :class:`Observation` is a function of what a deployed system has: the events and
offers up to the campaign day (aggregates kept by the world are such functions). The one
exception is :attr:`Observation.truth`, which only the oracle policies read (and say so).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from sellerlift.sim.config import LEVELS, N_LEVELS
from sellerlift.sim.tables import build_events
from sellerlift.sim.truth import expected_outcomes, level_outcomes, prob_purchase_within

D = LEVELS.astype(np.float64) / 100.0


@dataclass(frozen=True)
class Budget:
    """A campaign's budget: ``fraction`` of the expected spend of offering every mailed customer the top level,
    estimated as a seller would (observed basket x the logged redemption rate at that level); split over
    sellers in proportion when ``per_seller``."""

    fraction: float | None = 0.15  # None: no budget
    per_seller: bool = False


class Observation:
    def __init__(self, day: int, pop, worlds, mailed: list[np.ndarray], budget: Budget):
        self.day, self.pop, self.worlds, self.mailed, self.budget_rule = day, pop, worlds, mailed, budget
        self._parts = [(i, m) for i, m in enumerate(mailed) if len(m)]

    # ----------------------------------------------------------------- who
    @property
    def n(self) -> int:
        return sum(len(m) for m in self.mailed)

    @property
    def as_of(self) -> pd.Timestamp:
        return pd.Timestamp(self.pop.cfg.start) + pd.Timedelta(days=self.day)

    def _cat(self, f) -> np.ndarray:
        parts = [f(self.worlds[i], m) for i, m in self._parts]
        return np.concatenate(parts) if parts else np.zeros(0)

    @cached_property
    def customer_id(self) -> np.ndarray:
        return self._cat(lambda w, m: w.c.ids[m]).astype(np.int64)

    @cached_property
    def seller_id(self) -> np.ndarray:
        return self._cat(lambda w, m: w.c.seller[m]).astype(np.int64)

    # ----------------------------------------------------------------- observable aggregates
    @cached_property
    def recency_days(self) -> np.ndarray:
        return self._cat(lambda w, m: w.recency_days(self.day, m))

    @cached_property
    def frequency(self) -> np.ndarray:
        return self._cat(lambda w, m: w.n_purchases[m]).astype(np.float64)

    @cached_property
    def monetary(self) -> np.ndarray:
        """Mean observed basket (net), 0 for customers who never bought."""

        def mean_basket(w, m):
            return np.where(w.n_purchases[m] > 0, w.cum_net[m] / np.maximum(w.n_purchases[m], 1), 0.0)

        return self._cat(mean_basket)

    @cached_property
    def basket(self) -> np.ndarray:
        """Expected order value for planning: the observed mean basket, else the population's median."""
        m = self.monetary
        fallback = float(np.median(m[m > 0])) if (m > 0).any() else 1.0
        return np.where(m > 0, m, fallback)

    def rule_spend(self) -> np.ndarray:
        """[n, K] expected discount spend of each level as a seller estimates it: redemption rate x basket x d."""
        return self.pop.logged_rates[None, :] * self.basket[:, None] * D[None, :]

    @cached_property
    def budget(self) -> float | None:
        f = self.budget_rule.fraction
        return None if f is None else float(f * self.rule_spend()[:, -1].sum())

    @cached_property
    def seller_budgets(self) -> dict | None:
        if self.budget is None or not self.budget_rule.per_seller:
            return None
        top = pd.Series(self.rule_spend()[:, -1]).groupby(self.seller_id).sum()
        return {int(s): float(v * self.budget_rule.fraction) for s, v in top.items()}

    # ----------------------------------------------------------------- events (for models)
    def events(self) -> pd.DataFrame:
        """The mailed customers' events before the campaign day (logged history + the forward run so far)."""
        T, start = self.pop.cfg.history_days, pd.Timestamp(self.pop.cfg.start)
        parts = []
        for i, m in self._parts:
            hist = self.pop.chunks[i].history
            parts.append(hist[hist["customer_id"].isin(self.worlds[i].c.ids[m])])
            parts.append(build_events(self.worlds[i], start, first_visits=False, day_from=T, rows=m))
        ev = pd.concat(parts, ignore_index=True)
        ev = ev[ev["ts"] < self.as_of]
        return ev.sort_values(["customer_id", "ts"], kind="stable").reset_index(drop=True)

    # ----------------------------------------------------------------- splitting
    def split(self, level: np.ndarray) -> list[np.ndarray]:
        """The levels of the whole observation back per chunk (in ``mailed`` order)."""
        out, a = [], 0
        for m in self.mailed:
            out.append(level[a : a + len(m)])
            a += len(m)
        return out

    def subset(self, keep: np.ndarray) -> Observation:
        """The observation of the customers where ``keep`` (bool [n]) holds, with the budget recomputed for them."""
        mailed, a = [], 0
        for m in self.mailed:
            mailed.append(m[keep[a : a + len(m)]])
            a += len(m)
        return Observation(self.day, self.pop, self.worlds, mailed, self.budget_rule)

    # ----------------------------------------------------------------- the truth (oracle policies only)
    @cached_property
    def truth(self) -> Truth:
        return Truth(self)


class Truth:
    """What the simulator knows about the mailed customers now. No deployed system has this."""

    def __init__(self, obs: Observation):
        self.obs = obs

    def curves(self) -> np.ndarray:
        """[n, K] P(purchase within the 7-day window | offer at each level), from today's state."""

        def f(w, m):
            c = w.c.take(m)
            p0 = np.where(w.alive[m], prob_purchase_within(c, w.x[m], w.ref[m], 7), 0.0)
            return 1.0 - (1.0 - p0[:, None]) * (1.0 - np.where(w.alive[m][:, None], c.u, 0.0))

        parts = [f(self.obs.worlds[i], m) for i, m in self.obs._parts]
        return np.concatenate(parts) if parts else np.zeros((0, N_LEVELS))

    def value(self) -> np.ndarray:
        """True expected gross basket."""
        return self.obs._cat(lambda w, m: w.c.value[m])

    def enduring(self, horizon: int = 90) -> dict[str, np.ndarray]:
        """The expected ``horizon``-day outcome of one offer today at each level (mean-path approximation of
        the Monte Carlo truth, :func:`sellerlift.sim.truth.expected_outcomes`): gross, cost, retained [n, K]."""

        def f(w, m):
            return expected_outcomes(self.obs.pop.cfg, w.c.take(m), w.x[m], w.ref[m], w.alive[m], horizon)

        parts = [f(self.obs.worlds[i], m) for i, m in self.obs._parts]
        keys = ("gross", "cost", "retained", "purchases")
        return {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros((0, N_LEVELS)) for k in keys}

    def enduring_mc(self, horizon: int = 90, reps: int = 4, stream: int = 5_000) -> dict[str, np.ndarray]:
        """The same by Monte Carlo with common random numbers (exact in expectation, noisy per customer)."""
        out = {"gross": [], "cost": [], "retained": []}
        cfg = self.obs.pop.cfg
        for i, m in self.obs._parts:
            w, ch = self.obs.worlds[i], self.obs.pop.chunks[i]
            o = level_outcomes(
                cfg,
                ch.index,
                w.c,
                w.state(),
                self.obs.day,
                m,
                reps,
                horizon,
                stream + 17 * self.obs.day,
                rand_rows=w.rand_rows,
                n_rand=ch.n_rand,
            )
            for k in out:
                out[k].append(o[k].mean(axis=0))
        return {k: np.concatenate(v) if v else np.zeros((0, N_LEVELS)) for k, v in out.items()}
