"""The simulated data set: a year of history under the logged (biased) campaign policy, the label future,
the truth, and the state at the cutoff, written chunk by chunk to Parquet and cached by config fingerprint.

Chunks of ``chunk_size`` customers draw their parameters from ``default_rng([seed, chunk])``
and their daily random numbers from their own streams (:class:`sellerlift.sim.world.Streams`);
sellers come from ``default_rng([seed, SELLER_STREAM])``. The output is a pure function of
the config. No torch here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sellerlift.io import atomic_write_parquet, atomic_write_text
from sellerlift.schema import EVENT_TYPES
from sellerlift.sim.config import N_LEVELS, POLICY_EXPLORE, SIM_VERSION, SimulatorConfig
from sellerlift.sim.population import Customers, draw_customers
from sellerlift.sim.tables import build_events, build_offer_truth, build_promotions
from sellerlift.sim.truth import enduring_truth, label_truth, prob_purchase_within
from sellerlift.sim.world import HISTORY_STREAM, U_LEVEL, Campaign, Streams, World, offer_levels

TABLE_NAMES = ("events", "promotions", "truth", "state", "offer_truth")


@dataclass
class SimulatedData:
    events: pd.DataFrame
    promotions: pd.DataFrame
    truth: pd.DataFrame
    cutoff: pd.Timestamp
    path: Path | None = None  # the cache directory (forward runs read the state at the cutoff from it)


# --------------------------------------------------------------------------- the logged policy


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


def logged_campaign(w: World, t: int) -> Campaign | None:
    """Day ``t``'s offers under the logged policy (uniform for the randomised slice); windows close by the cutoff."""
    cfg = w.cfg
    if t + cfg.campaign_window_days > cfg.history_days:
        return None
    idx = w.mailable(t)
    if len(idx) == 0:
        return None
    probs = policy_probs(w.recency_days(t, idx), w.cum_net[idx], cfg.policy_strength)
    rct = w.c.rct[idx]
    probs[rct] = 1.0 / N_LEVELS
    u = w.streams.day(t)[0][U_LEVEL, w.rand_rows[idx]]
    level = offer_levels(probs, u)
    return Campaign(idx, level, probs[np.arange(len(idx)), level], rct, true_offer_curve(w, idx))


def true_offer_curve(w: World, idx: np.ndarray) -> np.ndarray:
    """[m, K] P(a purchase in the offer's window | each level), from the state on the offer's day (frozen week).

    Kept apart from the promotions table (``offer_truth``): what off-policy estimates are checked against.
    """
    c = w.c.take(idx)
    alive = w.alive[idx]
    p0 = np.where(alive, prob_purchase_within(c, w.x[idx], w.ref[idx], w.cfg.campaign_window_days), 0.0)
    return 1.0 - (1.0 - p0[:, None]) * (1.0 - np.where(alive[:, None], c.u, 0.0))


# --------------------------------------------------------------------------- one chunk


def chunk_customers(cfg: SimulatorConfig, chunk: int) -> tuple[Customers, np.ndarray]:
    """The chunk's customers and their initial (stationary) engagement state, from the config alone."""
    rng = np.random.default_rng([cfg.seed, chunk])
    first, n = cfg.chunk_rows(chunk)
    c = draw_customers(rng, cfg, first, n)
    return c, rng.normal(0.0, np.sqrt(c.state_var))


def simulate_chunk(cfg: SimulatorConfig, chunk: int) -> tuple[pd.DataFrame, ...]:
    """Simulate customers [chunk * chunk_size, ...): (events, promotions, truth, state at the cutoff, offer truth)."""
    c, x0 = chunk_customers(cfg, chunk)
    w = World(cfg, c, Streams(cfg.seed, chunk, HISTORY_STREAM, len(c)), x0)
    for t in range(cfg.history_days):
        w.step(t, logged_campaign(w, t))
    state = w.state()
    for t in range(cfg.history_days, cfg.n_days):  # the label future: state frozen, no campaigns
        w.step(t, frozen=True)
    start = pd.Timestamp(cfg.start)
    truth = label_truth(cfg, c, state, w)
    if cfg.truth_replications:
        extra = enduring_truth(cfg, chunk, c, state)
        truth = pd.concat([truth, extra.drop(columns="customer_id")], axis=1)
    return (
        build_events(w, start),
        build_promotions(w, start),
        truth,
        pd.DataFrame({"customer_id": c.ids, **state}),
        build_offer_truth(w, start),
    )


# --------------------------------------------------------------------------- the whole data set, cached


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def _part_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


def _prepare_out_dir(out_dir: Path) -> None:
    """Mark the directory unfinished and drop parts of an earlier run before writing."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "_SUCCESS").unlink(missing_ok=True)
    for name in TABLE_NAMES:
        for part in (out_dir / name).glob("part-*.parquet"):
            part.unlink()


def write_chunk(cfg: SimulatorConfig, out_dir: str | Path, chunk: int) -> int:
    """Simulate chunk ``chunk`` and write its tables as ``<table>/part-<chunk>.parquet`` (atomic, idempotent:
    the same bytes every time); returns its customers. What :func:`simulate` and the Ray engine run per chunk."""
    out = Path(out_dir)
    tables = simulate_chunk(cfg, chunk)
    for name, df in zip(TABLE_NAMES, tables):
        atomic_write_parquet(df, out / name / _part_name(chunk))
    return len(tables[3])


def write_meta(cfg: SimulatorConfig, out_dir: str | Path) -> None:
    """``config.json`` and, last, ``_SUCCESS``: readers trust only finished directories."""
    out = Path(out_dir)
    meta = {
        "config": cfg.to_dict(),
        "fingerprint": cfg.fingerprint(),
        "version": SIM_VERSION,
        "cutoff": str(cfg.cutoff),
        "n_chunks": cfg.n_chunks,
    }
    atomic_write_text(out / "config.json", json.dumps(meta, indent=2, sort_keys=True))
    atomic_write_text(out / "_SUCCESS", "")


def simulate(cfg: SimulatorConfig, out_dir: str | Path | None = None, progress: bool = True) -> SimulatedData | Path:
    """Run the simulator; in memory when ``out_dir`` is None, else chunk by chunk to Parquet parts.

    On several processes or machines: ``sellerlift.engine.jobs.simulate`` (one task per chunk, same bytes).
    """
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        _prepare_out_dir(out)
    kept: list[tuple[pd.DataFrame, ...]] = []
    with _progress(progress) as bar:
        task = bar.add_task("chunks", total=cfg.n_chunks)
        for chunk in range(cfg.n_chunks):
            if out is None:
                kept.append(simulate_chunk(cfg, chunk)[:3])
            else:  # write and forget: memory stays bounded by one chunk
                write_chunk(cfg, out, chunk)
            bar.advance(task)
    if out is None:
        events, promos, truth = (pd.concat(t, ignore_index=True) for t in zip(*kept))
        return SimulatedData(events, promos, truth, cfg.cutoff)
    write_meta(cfg, out)
    return out


def read_parts(folder: Path, chunks: list[int] | None = None) -> pd.DataFrame:
    parts = sorted(folder.glob("part-*.parquet")) if chunks is None else [folder / _part_name(i) for i in chunks]
    if not parts:
        raise FileNotFoundError(f"{folder}: no part-*.parquet files")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def load_simulated(out_dir: str | Path) -> SimulatedData:
    """Read a finished simulator output directory back into memory (the state at the cutoff stays on disk)."""
    out = Path(out_dir)
    if not (out / "_SUCCESS").exists():
        raise FileNotFoundError(f"{out}: no _SUCCESS marker; the simulation did not finish")
    meta = json.loads((out / "config.json").read_text())
    events = read_parts(out / "events")
    events["event_type"] = pd.Categorical(events["event_type"], categories=list(EVENT_TYPES))
    return SimulatedData(
        events, read_parts(out / "promotions"), read_parts(out / "truth"), pd.Timestamp(meta["cutoff"]), out
    )


def simulate_cached(cfg: SimulatorConfig, cache_root: str | Path = "data/sim", progress: bool = True) -> SimulatedData:
    """Simulate into ``cache_root/<fingerprint>`` unless a finished run is already there."""
    out = Path(cache_root) / cfg.fingerprint()
    if not (out / "_SUCCESS").exists():
        simulate(cfg, out, progress=progress)
    return load_simulated(out)
