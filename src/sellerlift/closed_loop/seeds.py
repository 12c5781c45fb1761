"""The closed-loop evaluation over several seeds, one unit per seed on an engine (in-process or Ray tasks).

Each seed's evaluation (:func:`sellerlift.closed_loop.evaluate.run` with ``Settings.seed``) is independent and a
pure function of the simulator output, the bundle and the settings, so a seed run on a Ray worker gives the JSON
:func:`sellerlift.closed_loop.report.summary` gives in this process, figure for figure (the wall-clock timings
are left out of the comparison: they are the only thing that differs).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from sellerlift.closed_loop.evaluate import Settings, run
from sellerlift.closed_loop.report import summary


def one_seed(sim_path: str, bundle: str | None, settings: Settings, customer_ids, seed: int) -> dict:
    """The evaluation's JSON for ``seed`` (without its timings)."""
    s = replace(settings, seed=int(seed))
    result = run(sim_path, bundle, s, customer_ids, progress=lambda *_: None)
    doc = summary(result, s, {"bundle": bundle, "simulator": str(sim_path)})
    doc.pop("timings", None)
    return doc


def evaluate_seeds(
    sim_path: str | Path, bundle: str | Path | None, settings: Settings, seeds, customer_ids=None, engine=None
) -> dict[int, dict]:
    """``{seed: JSON}`` for every seed, one task per seed on ``engine`` (default: this process)."""
    from sellerlift.engine import LocalEngine

    engine = engine or LocalEngine()
    seeds = [int(s) for s in seeds]
    # workers do not share this process's working directory: absolute paths
    fn = partial(
        one_seed,
        str(Path(sim_path).absolute()),
        None if bundle is None else str(Path(bundle).absolute()),
        settings,
        customer_ids,
    )
    return dict(zip(seeds, engine.map(fn, seeds, desc="closed loop")))
