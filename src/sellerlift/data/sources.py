"""Data sources: each turns its input into the contract tables plus a cutoff.

Built from config with Hydra's ``_target_`` (``configs/data/*.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


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
        return Tables(self.name, sim.events, sim.cutoff, f"sim-{self.config.fingerprint()}",
                      promotions=sim.promotions, truth=sim.truth, world=sim.path)
