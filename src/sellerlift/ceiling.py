"""The observable ceiling: the best any function of the model's inputs can do on the simulator.

The simulator's ceiling and oracle know hidden state (who is still alive, per-customer response
noise), so no model reaches them. The observable ceiling is a truth-supervised model: LightGBM
regressing the simulator's *true* probabilities, curves and 90-day outcomes on the customer
aggregates a model sees, fit on several times more customers (another seed) than any run trains
on. A model's distance to it is what better modelling could still win; its distance to the true
ceiling is what no model can. Fitted once per world (simulator parameters) and cached.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from sellerlift.features import AGGREGATES, FeatureSpec, build_features
from sellerlift.sim import RESPONSE_COLUMNS, SimulatorConfig, simulate_cached
from sellerlift.sim.config import LEVELS

CEILING_CUSTOMERS, CEILING_SEED = 170_000, 7
LGBM = {
    "n_estimators": 200,
    "learning_rate": 0.08,
    "num_leaves": 31,
    "min_child_samples": 100,
    "subsample": 0.8,
    "subsample_freq": 1,
    "verbose": -1,
}


def inputs(raw_aggregates: np.ndarray) -> np.ndarray:
    """The ceiling's inputs: log1p of the raw aggregates (features.AGGREGATES, natural units)."""
    return np.log1p(np.maximum(np.asarray(raw_aggregates, dtype=np.float64), 0.0))


def targets(truth, horizon: int = 90) -> dict[str, np.ndarray]:
    """What the ceiling learns: intent and churn probabilities, the uplift of each level, the 90-day effects."""
    out = {"p_intent_7d": truth["p_intent_7d"].to_numpy(), "p_churn_90d": truth["p_churn_90d"].to_numpy()}
    for col, d in zip(RESPONSE_COLUMNS[1:], LEVELS[1:]):
        out[f"uplift_{d}"] = truth[col].to_numpy() - truth[RESPONSE_COLUMNS[0]].to_numpy()
    if f"gross_{horizon}d_0" in truth:
        out[f"gross_{horizon}d_0"] = truth[f"gross_{horizon}d_0"].to_numpy()
        for d in LEVELS[1:]:
            out[f"gross_gain_{d}"] = (truth[f"gross_{horizon}d_{d}"] - truth[f"gross_{horizon}d_0"]).to_numpy()
            out[f"cost_{d}"] = truth[f"cost_{horizon}d_{d}"].to_numpy()
    return out


class CeilingModel:
    """One LightGBM regressor per target, on :func:`inputs`."""

    def __init__(self, boosters: dict, meta: dict):
        self.boosters, self.meta = boosters, meta

    def predict(self, raw_aggregates: np.ndarray, names=None) -> dict[str, np.ndarray]:
        """Predicted targets (all, or ``names``); one thread: calls are small and OpenMP start-up dominates."""
        x = inputs(raw_aggregates)
        return {n: self.boosters[n].predict(x, num_threads=1) for n in (names or self.boosters)}

    def curves(self, raw_aggregates: np.ndarray) -> np.ndarray:
        """[n, K] predicted 7-day conversion at each level (clipped to [0, 1], made monotone)."""
        p = self.predict(raw_aggregates, ["p_intent_7d", *(f"uplift_{d}" for d in LEVELS[1:])])
        base = np.clip(p["p_intent_7d"], 0.0, 1.0)
        c = np.column_stack([base] + [base + p[f"uplift_{d}"] for d in LEVELS[1:]])
        return np.maximum.accumulate(np.clip(c, 0.0, 1.0), axis=1)

    def enduring(self, raw_aggregates: np.ndarray) -> dict[str, np.ndarray]:
        """[n, K] predicted 90-day gross and discount cost of one offer at each level."""
        h = self.meta["horizon"]
        names = [f"gross_{h}d_0", *(f"{k}_{d}" for d in LEVELS[1:] for k in ("gross_gain", "cost"))]
        if not set(names) <= set(self.boosters):
            raise ValueError("the ceiling was fitted without the 90-day truth (truth_replications=0)")
        p = self.predict(raw_aggregates, names)
        gross = np.column_stack([p[f"gross_{h}d_0"]] + [p[f"gross_{h}d_0"] + p[f"gross_gain_{d}"] for d in LEVELS[1:]])
        cost = np.column_stack([np.zeros(len(gross))] + [np.maximum(p[f"cost_{d}"], 0.0) for d in LEVELS[1:]])
        return {"gross": gross, "cost": cost}


def fit(
    world: SimulatorConfig,
    cache_root: str | Path,
    n_customers: int = CEILING_CUSTOMERS,
    seed: int = CEILING_SEED,
    n_jobs: int = 2,
) -> CeilingModel:
    """The ceiling for ``world``'s parameters: simulate ``n_customers`` with ``seed``, fit, cache; or load."""
    import lightgbm as lgb

    cfg = dataclasses.replace(
        world, n_customers=n_customers, seed=seed, truth_replications=max(world.truth_replications, 2)
    )
    folder = Path(cache_root) / f"ceiling-{cfg.fingerprint()}"
    meta_path = folder / "ceiling.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return CeilingModel({n: lgb.Booster(model_file=str(folder / f"{n}.txt")) for n in meta["targets"]}, meta)
    sim = simulate_cached(cfg, cache_root, progress=False)
    feats = build_features(sim.events, sim.cutoff, FeatureSpec(max_len=1))
    truth = sim.truth.set_index("customer_id").loc[feats.customer_id]
    x = inputs(feats.raw)
    folder.mkdir(parents=True, exist_ok=True)
    boosters = {}
    for name, y in targets(truth, cfg.truth_horizon_days).items():
        model = lgb.LGBMRegressor(**LGBM, random_state=seed, n_jobs=n_jobs).fit(x, y)
        model.booster_.save_model(str(folder / f"{name}.txt"))
        boosters[name] = model.booster_
    meta = {
        "targets": list(boosters),
        "customers": int(len(x)),
        "seed": seed,
        "horizon": cfg.truth_horizon_days,
        "inputs": [f"log1p({a})" for a in AGGREGATES],
        "world": cfg.fingerprint(),
    }
    (folder / "ceiling.json").write_text(json.dumps(meta, indent=2))  # last: a half-fitted folder is refitted
    return CeilingModel(boosters, meta)
