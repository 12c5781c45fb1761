"""Policies run forward in time from the cutoff, on the same customers, with common random numbers.

A :class:`Population` is the simulator's world at the cutoff (the state the history run saved,
the customers drawn again from the seed, their logged history). :func:`run_policy` continues
every chunk day by day in lockstep; on a day a seller mails, the policy sees an
:class:`~sellerlift.closed_loop.observe.Observation` of the mailed customers (what a deployed
system would see: events and offers up to that day) and returns a level for each, under the
campaign's budget. Replication ``r`` uses the same random-number streams for every policy, so
the paired difference of two policies is their true effect (a policy minus itself: exactly 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.closed_loop.observe import Budget, Observation
from sellerlift.sim.config import LEVELS, N_LEVELS, SimulatorConfig
from sellerlift.sim.history import chunk_customers, read_parts
from sellerlift.sim.population import Customers
from sellerlift.sim.world import STATE_FIELDS, Campaign, Streams, World

FORWARD_STREAM = 100  # replication r of a forward run uses stream FORWARD_STREAM + r


@dataclass
class Chunk:
    """One simulator chunk's customers kept in the population, with their state at the cutoff."""

    index: int
    customers: Customers
    rows: np.ndarray  # rows of the full chunk (its random-number rows)
    n_rand: int  # size of the full chunk
    state: dict[str, np.ndarray]
    path: Path  # the simulator directory (the history is read from it when a policy first needs it)

    @cached_property
    def history(self) -> pd.DataFrame:
        """Their events before the cutoff (contract table); read on first use: rules and oracles never need it."""
        cutoff = pd.Timestamp(json.loads((self.path / "config.json").read_text())["cutoff"])
        ev = read_parts(self.path / "events", [self.index])
        return ev[ev["customer_id"].isin(self.customers.ids) & (ev["ts"] < cutoff)].reset_index(drop=True)


@dataclass
class Population:
    cfg: SimulatorConfig
    path: Path
    chunks: list[Chunk]
    logged_rates: np.ndarray  # conversion rate per level in the randomised slice of the logged campaigns

    @property
    def n(self) -> int:
        return sum(len(ch.customers) for ch in self.chunks)

    @property
    def customer_id(self) -> np.ndarray:
        return np.concatenate([ch.customers.ids for ch in self.chunks])

    @property
    def seller(self) -> np.ndarray:
        return np.concatenate([ch.customers.seller for ch in self.chunks])

    @classmethod
    def load(cls, path: str | Path, customer_ids: np.ndarray | None = None) -> Population:
        """The world at the cutoff from a finished simulator directory; ``customer_ids``: keep only these."""
        path = Path(path)
        if not (path / "_SUCCESS").exists() or not (path / "state").is_dir():
            raise FileNotFoundError(
                f"{path}: not a finished simulator v2 directory (no state at the cutoff); "
                "simulate it again with this version"
            )
        meta = json.loads((path / "config.json").read_text())
        cfg = SimulatorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
        keep = None if customer_ids is None else np.unique(np.asarray(customer_ids, dtype=np.int64))
        chunks = []
        for i in range(cfg.n_chunks):
            first, n = cfg.chunk_rows(i)
            rows = np.arange(n) if keep is None else keep[(keep >= first) & (keep < first + n)] - first
            if not len(rows):
                continue
            c, _ = chunk_customers(cfg, i)
            st = read_parts(path / "state", [i])
            if not np.array_equal(st["customer_id"].to_numpy(), c.ids):
                raise ValueError(f"{path}: the saved state of chunk {i} does not match its customers")
            chunks.append(Chunk(i, c.take(rows), rows, n, {k: st[k].to_numpy()[rows] for k in STATE_FIELDS}, path))
        promos = read_parts(path / "promotions")
        rct = promos[promos["randomized"]]
        rates = rct.groupby("discount_pct")["converted"].mean().reindex(sorted(rct["discount_pct"].unique()))
        return cls(
            cfg,
            path,
            chunks,
            rates.to_numpy(dtype=np.float64)
            if len(rates) == N_LEVELS
            else np.full(N_LEVELS, float(promos["converted"].mean())),
        )


@dataclass
class Outcomes:
    """Per-customer results of a forward run at one horizon (arrays over the population, chunk order)."""

    horizon: int
    alive_at_start: np.ndarray
    gross: np.ndarray
    cost: np.ndarray
    net: np.ndarray
    purchases: np.ndarray
    bought: np.ndarray  # any purchase in the horizon
    retained: np.ndarray  # a purchase in the horizon's last 30 days
    active: np.ndarray  # alive at the end and any event in its last 30 days
    offers: np.ndarray  # offers received
    discount_pct: np.ndarray  # sum of the levels offered (face value, percent)
    loyalty: np.ndarray | None = None  # the bundle's loyalty score at the horizon (``run_policy(loyalty=...)``)


@dataclass
class PolicyRun:
    policy: str
    replication: int
    outcomes: dict[int, Outcomes]  # horizon -> outcomes
    daily: pd.DataFrame  # day, net revenue, purchases, active customers, offers (whole population)
    seller_daily: pd.DataFrame  # day, seller_id, net revenue (for seller-level analyses)
    campaigns: list[dict] = field(default_factory=list)  # per campaign day: mailed, offered, planned spend
    loyalty_start: np.ndarray | None = None  # the loyalty score at the cutoff (``run_policy(loyalty=...)``)


def _world(pop: Population, ch: Chunk, stream: int, record: bool) -> World:
    w = World(
        pop.cfg,
        ch.customers,
        Streams(pop.cfg.seed, ch.index, stream, ch.n_rand),
        ch.state["x"],
        record=record,
        rand_rows=ch.rows,
    )
    w.restore(ch.state)
    return w


def run_policy(
    pop: Population,
    policy,
    days: int,
    budget: Budget,
    replication: int = 0,
    horizons: tuple[int, ...] = (30, 90),
    record_events: bool = True,
    frozen: bool = False,
    progress=None,
    loyalty=None,
) -> PolicyRun:
    """Run ``policy`` for ``days`` days after the cutoff; outcomes at each horizon (days <= ``days``).

    ``frozen``: keep the state frozen as the label truth assumes (a check of the simulator, not a world to
    decide in). ``loyalty``: a callable scoring an :class:`Observation` of every customer (their history so
    far) -> float [n]; called at the cutoff and at each horizon (the loyalty movement a policy causes).
    """
    T = pop.cfg.history_days
    worlds = [_world(pop, ch, FORWARD_STREAM + replication, record_events) for ch in pop.chunks]
    start = [
        {k: getattr(w, k).copy() for k in ("cum_gross", "cum_cost", "cum_net", "n_purchases", "offers_received")}
        for w in worlds
    ]
    pct0 = [np.zeros(len(w.x)) for w in worlds]
    alive0 = np.concatenate([w.alive.copy() for w in worlds])
    everyone = [np.arange(len(w.x)) for w in worlds]
    loyalty0 = None if loyalty is None else np.asarray(loyalty(Observation(T, pop, worlds, everyone, budget)))
    outcomes, daily, seller_daily, log = {}, [], [], []
    for t in range(T, T + days):
        mailed = [w.mailable(t) for w in worlds]
        camps = [None] * len(worlds)
        if sum(len(m) for m in mailed):
            obs = Observation(t, pop, worlds, mailed, budget)
            level = np.asarray(policy(obs), dtype=np.int64)
            if level.shape != (obs.n,) or level.min(initial=0) < 0 or level.max(initial=0) >= N_LEVELS:
                raise ValueError(
                    f"policy {getattr(policy, 'name', policy)!r} returned levels of shape {level.shape} "
                    f"in [{level.min(initial=0)}, {level.max(initial=0)}]; expected ({obs.n},) level "
                    f"indices in [0, {N_LEVELS - 1}]"
                )
            log.append(
                {
                    "day": t - T,
                    "mailed": obs.n,
                    "offered": int((level > 0).sum()),
                    "budget": obs.budget,
                    "planned_spend": float(obs.rule_spend()[np.arange(obs.n), level].sum()),
                }
            )
            for i, part in enumerate(obs.split(level)):
                if len(mailed[i]):
                    camps[i] = Campaign(mailed[i], part)
                    pct0[i][mailed[i]] += LEVELS[part]
        before = [w.cum_net.copy() for w in worlds]
        for w, camp in zip(worlds, camps):
            w.step(t, camp, frozen=frozen)
        net_today = [w.cum_net - b for w, b in zip(worlds, before)]
        daily.append(
            {
                "day": t - T + 1,
                "net_revenue": float(sum(x.sum() for x in net_today)),
                "alive": int(sum(w.alive.sum() for w in worlds)),
                "active_30d": int(sum((w.alive & (w.last_event > t - 30)).sum() for w in worlds)),
            }
        )
        seller_daily.append(
            pd.DataFrame(
                {
                    "day": t - T + 1,
                    "seller_id": np.concatenate([w.c.seller for w in worlds]),
                    "net_revenue": np.concatenate(net_today),
                }
            )
            .groupby(["day", "seller_id"], as_index=False)["net_revenue"]
            .sum()
        )
        h = t - T + 1
        if h in horizons:
            outcomes[h] = _outcomes(h, t, worlds, start, pct0, alive0)
            if loyalty is not None:  # as of the day after the horizon's last day: everything it saw
                outcomes[h].loyalty = np.asarray(loyalty(Observation(t + 1, pop, worlds, everyone, budget)))
        if progress is not None:
            progress()
    return PolicyRun(
        getattr(policy, "name", type(policy).__name__),
        replication,
        outcomes,
        pd.DataFrame(daily),
        pd.concat(seller_daily, ignore_index=True),
        log,
        loyalty0,
    )


def _outcomes(
    h: int, t: int, worlds: list[World], start: list[dict], pct: list[np.ndarray], alive0: np.ndarray
) -> Outcomes:
    def cat(f):
        return np.concatenate([f(w, s) for w, s in zip(worlds, start)])

    return Outcomes(
        horizon=h,
        alive_at_start=alive0,
        gross=cat(lambda w, s: w.cum_gross - s["cum_gross"]),
        cost=cat(lambda w, s: w.cum_cost - s["cum_cost"]),
        net=cat(lambda w, s: w.cum_net - s["cum_net"]),
        purchases=cat(lambda w, s: (w.n_purchases - s["n_purchases"]).astype(np.float64)),
        bought=cat(lambda w, s: w.n_purchases > s["n_purchases"]),
        retained=cat(lambda w, s: w.last_purchase > t - 30),
        active=cat(lambda w, s: w.alive & (w.last_event > t - 30)),
        offers=cat(lambda w, s: (w.offers_received - s["offers_received"]).astype(np.float64)),
        discount_pct=np.concatenate([p.copy() for p in pct]),
    )
