"""Data sources: each turns its input into the contract tables plus a cutoff.

Built from config with Hydra's ``_target_`` (``configs/data/*.yaml``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd


@dataclass
class Coverage:
    """Who and what lies before / after the cutoff: what a run trains on and what it cannot see.

    Customers whose first event is on or after the cutoff have no history to learn from: they are
    not in the training rows (their events only count as the labels' future, or not at all).
    """

    cutoff: pd.Timestamp
    first: pd.Timestamp  # first and last event of the whole file
    last: pd.Timestamp
    events: int  # all events (after mapping)
    events_before: int  # ts < cutoff: the history features are built from
    customers: int  # every customer in the file
    customers_before: int  # with at least one event before the cutoff: the training rows
    shorter: dict | None = None  # churn horizon (days) -> (cutoff, customers_before) for cutoff "auto"

    @property
    def events_after(self) -> int:
        return self.events - self.events_before

    @property
    def customers_excluded(self) -> int:
        """Customers whose first event is on or after the cutoff."""
        return self.customers - self.customers_before

    def lines(self, label: str, how: str, later: str | None = None) -> list[str]:
        """In words: what the cutoff (chosen ``how``) keeps and, when customers are left out, why and what would
        keep more (a shorter horizon for an ``auto`` cutoff; ``later`` otherwise)."""
        out = [
            f"data {label}: cutoff {self.cutoff.date()} ({how}); before it {self.customers_before:,} of "
            f"{self.customers:,} customers and {self.events_before:,} of {self.events:,} events (the history "
            f"models learn from); {self.events_after:,} events on or after it (the labels' future)"
        ]
        if self.customers_excluded:
            line = (
                f"data {label}: {self.customers_excluded:,} of {self.customers:,} customers "
                f"({self.customers_excluded / max(self.customers, 1):.0%}) are left out: their first event is on "
                "or after the cutoff, so they have no history before it"
            )
            better = [
                f"churn_days={d} -> cutoff {c.date()}, {k:,} customers"
                for d, (c, k) in (self.shorter or {}).items()
                if k > self.customers_before
            ]
            if better:
                line += "; a shorter horizon keeps more: " + "; ".join(better)
            elif later and not self.shorter:
                line += f"; {later}"
            out.append(line)
        return out

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(events_after=self.events_after, customers_excluded=self.customers_excluded)
        return d


def coverage_of(events: pd.DataFrame, cutoff: pd.Timestamp, shorter_horizons=()) -> Coverage:
    """:class:`Coverage` of a contract events table at ``cutoff``; ``shorter_horizons``: churn horizons (days)
    for which to say how many customers an ``auto`` cutoff (last day minus the horizon) would keep."""
    ts = events["ts"].to_numpy()
    cut = np.datetime64(pd.Timestamp(cutoff))
    first_of = events.groupby("customer_id", sort=False)["ts"].min().to_numpy()
    last = pd.Timestamp(ts.max())
    shorter = {}
    for days in shorter_horizons:
        c = last.normalize() - pd.Timedelta(days=int(days))
        shorter[int(days)] = (c, int((first_of < np.datetime64(c)).sum()))
    return Coverage(
        pd.Timestamp(cutoff),
        pd.Timestamp(ts.min()),
        last,
        int(len(ts)),
        int((ts < cut).sum()),
        int(len(first_of)),
        int((first_of < cut).sum()),
        shorter or None,
    )


@dataclass
class Tables:
    """What every source hands to the pipeline."""

    name: str
    events: pd.DataFrame
    cutoff: pd.Timestamp
    fingerprint: str
    promotions: pd.DataFrame | None = None
    truth: pd.DataFrame | None = None  # simulator only: true probabilities per customer
    world: object | None = None  # simulator only: its cache directory (the state at the cutoff, for forward runs)
    coverage: Coverage | None = None  # file sources: customers / events before and after the cutoff


class SimulatorSource:
    """The built-in simulator (cached on disk by config fingerprint)."""

    name = "simulator"

    def __init__(self, cache_root: str = "data/sim", progress: bool = True, **simulator_config):
        from sellerlift.sim import SimulatorConfig

        self.config = SimulatorConfig(**simulator_config)
        self.cache_root = cache_root
        self.progress = progress

    def load(self) -> Tables:
        from sellerlift.sim import simulate_cached

        sim = simulate_cached(self.config, cache_root=self.cache_root, progress=self.progress)
        return Tables(
            self.name,
            sim.events,
            sim.cutoff,
            f"sim-{self.config.fingerprint()}",
            promotions=sim.promotions,
            truth=sim.truth,
            world=sim.path,
        )
