"""Segments that say how to act: k-means on RFM *and* the predicted response and value, named by what they
mean for a promotion ("buys anyway", "needs a large incentive", "promotion-sensitive", "at risk, worth
saving", "low value, leave alone").

RFM alone recovers the simulator's archetypes poorly (they differ in how they respond, which RFM does
not see). Here each customer is described by its log RFM, its predicted 7-day conversion without an
offer, the uplift at a small and at the top level, the shape of the curve (how much of the top-level
uplift the small level already gives), its predicted 90-day value and the enduring profit of the top
level. The model is plain data (JSON) and assigns with NumPy, like :class:`sellerlift.segment.SegmentModel`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from sellerlift.k_selection import select_k
from sellerlift.segment import nearest_centroid

FEATURES = (
    "log_recency",
    "log_frequency",
    "log_monetary",
    "log_tenure",
    "p_no_offer",
    "uplift_small",
    "uplift_top",
    "early_share",
    "log_value_90d",
    "enduring_top",
)
# Each name's direction in the z-scored feature space (unit-normalised when scored).
NAMES: dict[str, dict[str, float]] = {
    "buys anyway": {"p_no_offer": 1.0, "uplift_top": -0.6, "log_frequency": 0.4},
    "promotion-sensitive": {"uplift_small": 1.0, "early_share": 0.6, "enduring_top": -0.5, "p_no_offer": -0.3},
    "needs a large incentive": {"uplift_top": 0.6, "early_share": -0.8, "p_no_offer": -0.4},
    "at risk, worth saving": {"log_recency": 0.8, "log_value_90d": 0.6, "enduring_top": 0.6},
    "low value, leave alone": {"log_value_90d": -1.0, "uplift_top": -0.4, "log_frequency": -0.4},
}
NAME_THRESHOLD = 0.35


def action_features(rfm: np.ndarray, curves: np.ndarray, value_90d: np.ndarray, enduring_top: np.ndarray) -> np.ndarray:
    """[n, len(FEATURES)] from raw RFM (recency, frequency, monetary, tenure), curves [n, K], the predicted
    90-day value and the predicted enduring profit of the top level."""
    rfm = np.log1p(np.maximum(np.asarray(rfm, dtype=np.float64), 0.0))
    c = np.asarray(curves, dtype=np.float64)
    small = c[:, min(2, c.shape[1] - 1)] - c[:, 0]  # the second discount level (10 %)
    top = c[:, -1] - c[:, 0]
    early = np.divide(small, top, out=np.zeros_like(top), where=top > 1e-9)
    return np.column_stack(
        [rfm, c[:, 0], small, top, np.clip(early, 0, 1), np.log1p(np.maximum(value_90d, 0)), enduring_top]
    ).astype(np.float64)


@dataclass
class ActionSegmentModel:
    feature_names: list[str]
    mean: list[float]
    scale: list[float]
    centroids: list[list[float]]
    names: list[str]
    k: int

    def assign(self, X: np.ndarray) -> np.ndarray:
        z = (np.asarray(X, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return nearest_centroid(z, np.asarray(self.centroids))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> ActionSegmentModel:
        return cls(**{k: d[k] for k in ("feature_names", "mean", "scale", "centroids", "names", "k")})


def name_segments(centroids: np.ndarray) -> list[str]:
    """One name per centroid by a maximum-score one-to-one matching; below the threshold a descriptive name."""
    from scipy.optimize import linear_sum_assignment

    C = np.asarray(centroids, dtype=np.float64)
    W = np.array([[NAMES[n].get(f, 0.0) for f in FEATURES] for n in NAMES])
    W = W / np.linalg.norm(W, axis=1, keepdims=True)
    k = len(C)
    scores = np.hstack([C @ W.T, np.full((k, k), NAME_THRESHOLD)])
    rows, cols = linear_sum_assignment(scores, maximize=True)
    labels = list(NAMES)
    out = [""] * k
    for i, j in zip(rows, cols):
        out[i] = labels[j] if j < len(labels) else _describe(C[i])
    seen: dict[str, int] = {}
    for i, n in enumerate(out):
        seen[n] = seen.get(n, 0) + 1
        out[i] = n if seen[n] == 1 else f"{n} ({seen[n]})"
    return out


def _describe(z: np.ndarray) -> str:
    i = FEATURES.index
    resp = "responsive" if z[i("uplift_top")] > 0.3 else "unresponsive" if z[i("uplift_top")] < -0.3 else "moderate"
    v = z[i("log_value_90d")]
    value = "high-value" if v > 0.3 else "low-value" if v < -0.3 else "mid-value"
    return f"{value} {resp}"


def fit(X: np.ndarray, ks=range(3, 9), seed: int = 0) -> tuple[ActionSegmentModel, object]:
    """Standardise, pick k by silhouette, k-means, name; segments ordered by predicted value (highest first)."""
    from sellerlift.k_selection import _kmeans

    X = np.asarray(X, dtype=np.float64)
    mean, scale = X.mean(axis=0), np.maximum(X.std(axis=0), 1e-9)
    Z = (X - mean) / scale
    sel = select_k(Z, ks, seed=seed)
    k = sel.k_silhouette
    sel.chosen, sel.rule = k, "silhouette"
    C = _kmeans(Z, k, seed, 4).cluster_centers_
    C = C[np.argsort(-C[:, FEATURES.index("log_value_90d")], kind="stable")]
    return ActionSegmentModel(list(FEATURES), mean.tolist(), scale.tolist(), C.tolist(), name_segments(C), k), sel


def summary(X: np.ndarray, names: np.ndarray, archetype: np.ndarray | None = None) -> pd.DataFrame:
    """Per segment: share, the mean of each feature (in natural units where they are logs), archetype mix."""
    df = pd.DataFrame(X, columns=list(FEATURES))
    for f in [f for f in FEATURES if f.startswith("log_")]:
        df[f.removeprefix("log_")] = np.expm1(df.pop(f))
    df.insert(0, "segment", names)
    g = df.groupby("segment", sort=False)
    out = g.mean()
    out.insert(0, "share", g.size() / len(df))
    if archetype is not None:
        mix = pd.crosstab(pd.Series(names, name="segment"), pd.Series(archetype, name="archetype"), normalize="index")
        out = out.join(mix.add_prefix("share_"))
    return out.sort_values("share", ascending=False).reset_index()
