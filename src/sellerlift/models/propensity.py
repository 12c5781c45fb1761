"""Propensity of each discount level under the logged (historical) campaign policy.

Two candidates are fitted on the non-randomised offers of the training customers
(multinomial logistic regression, LightGBM multiclass); the one with the lower
class-wise calibration error on the validation customers' offers is kept (log
loss breaks ties). Offers of the randomised slice have the known uniform
propensity 1/K. Inverse propensity weights are ``1 / (K * max(e, clip))``: 1
for a uniform policy, at most ``1 / (K * clip)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sellerlift.metrics import classwise_ece


@dataclass
class PropensityModel:
    kind: str
    model: object
    n_levels: int
    report: dict = field(default_factory=dict)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """[n, K] probabilities of each level under the logged (non-randomised) policy."""
        p = np.asarray(self.model.predict_proba(np.asarray(x, dtype=np.float32)), dtype=np.float64)
        if p.shape[1] != self.n_levels:  # a level never seen in training: give it the floor
            raise ValueError(f"propensity model knows {p.shape[1]} levels, expected {self.n_levels}")
        p = np.clip(p, 1e-6, 1.0)
        return p / p.sum(axis=1, keepdims=True)

    def propensity(self, x: np.ndarray, level: np.ndarray, randomized: np.ndarray | None = None) -> np.ndarray:
        """Probability of the logged level of each offer; 1/K for the randomised slice."""
        level = np.asarray(level, dtype=np.int64)
        e = self.predict_proba(x)[np.arange(len(level)), level]
        if randomized is not None:
            e = np.where(np.asarray(randomized, dtype=bool), 1.0 / self.n_levels, e)
        return e


def ipw_weights(propensity: np.ndarray, clip: float, n_levels: int) -> np.ndarray:
    """Clipped inverse propensity weights, ``1 / (K * max(e, clip))`` (finite, <= 1 / (K * clip))."""
    if not 0 < clip <= 1.0 / n_levels:
        raise ValueError(f"propensity clip must be in (0, 1/{n_levels}], got {clip}")
    e = np.asarray(propensity, dtype=np.float64)
    if not np.all(np.isfinite(e)) or (e < 0).any():
        raise ValueError("propensity: expected finite values >= 0")
    return (1.0 / (n_levels * np.maximum(e, clip))).astype(np.float32)


def effective_sample_size(w: np.ndarray) -> float:
    w = np.asarray(w, dtype=np.float64)
    return float(w.sum() ** 2 / max((w**2).sum(), 1e-300))


def _candidates(seed: int, n_threads: int):
    from lightgbm import LGBMClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=1.0)),
        "lightgbm": LGBMClassifier(
            n_estimators=80,
            learning_rate=0.1,
            num_leaves=15,
            min_child_samples=50,
            subsample=0.8,
            subsample_freq=1,
            random_state=seed,
            n_jobs=n_threads,
            verbose=-1,
        ),
    }


def fit_propensity(
    x_train: np.ndarray,
    level_train: np.ndarray,
    x_val: np.ndarray,
    level_val: np.ndarray,
    n_levels: int,
    candidates=("logistic", "lightgbm"),
    seed: int = 0,
    max_rows: int = 100_000,
    n_threads: int = 1,
) -> PropensityModel:
    """Fit each candidate, keep the best calibrated on the validation offers."""
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(seed)
    if len(level_train) > max_rows:
        keep = rng.choice(len(level_train), max_rows, replace=False)
        x_train, level_train = x_train[keep], level_train[keep]
    missing = set(range(n_levels)) - set(np.unique(level_train).tolist())
    if missing:  # every class must be seen: add one pseudo-row per missing level at the mean input
        extra = np.repeat(x_train.mean(axis=0, keepdims=True), len(missing), axis=0)
        x_train = np.concatenate([x_train, extra])
        level_train = np.concatenate([level_train, sorted(missing)])
    models = _candidates(seed, n_threads)
    scores, fitted = {}, {}
    for name in candidates:
        m = models[name]
        m.fit(x_train, level_train)
        pm = PropensityModel(name, m, n_levels)
        p = pm.predict_proba(x_val)
        scores[name] = {
            "ece": classwise_ece(p, level_val),
            "log_loss": float(log_loss(level_val, p, labels=range(n_levels))),
        }
        fitted[name] = pm
    best = min(scores, key=lambda k: (round(scores[k]["ece"], 4), scores[k]["log_loss"]))
    chosen = fitted[best]
    chosen.report = {"chosen": best, "candidates": scores}
    return chosen
