"""RFM segmentation: log1p + standardise -> k-means for a range of k -> named segments.

k is picked by ``rule``: one of the criteria of :mod:`sellerlift.k_selection` (``"elbow"``,
``"silhouette"``, ``"gap"``) or fixed by passing an int. The default is ``"silhouette"``.

The fitted :class:`SegmentModel` is plain data (JSON-serialisable) and assigns
segments with NumPy only, so the server needs no scikit-learn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from sellerlift.k_selection import RULES, KSelection, _kmeans, select_k

RFM_FEATURES: list[str] = ["recency_days", "frequency", "monetary", "tenure_days"]


# --------------------------------------------------------------------------- model


@dataclass
class SegmentModel:
    """Nearest-centroid segment assignment in log1p-standardised RFM space."""

    feature_names: list[str]
    scaler_mean: list[float]
    scaler_scale: list[float]
    centroids: list[list[float]]  # scaled space, one row per segment
    names: list[str]
    k: int

    def transform(self, rfm: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Raw RFM (original units) -> the scaled space the centroids live in."""
        X = _feature_matrix(rfm, self.feature_names)
        return (np.log1p(X) - np.asarray(self.scaler_mean)) / np.asarray(self.scaler_scale)

    def assign(self, rfm: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Index of the nearest centroid for each row (pure NumPy)."""
        return nearest_centroid(self.transform(rfm), np.asarray(self.centroids, dtype=np.float64))

    def assign_names(self, rfm: np.ndarray | pd.DataFrame) -> np.ndarray:
        return np.asarray(self.names, dtype=object)[self.assign(rfm)]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> SegmentModel:
        return cls(
            feature_names=[str(f) for f in d["feature_names"]],
            scaler_mean=[float(v) for v in d["scaler_mean"]],
            scaler_scale=[float(v) for v in d["scaler_scale"]],
            centroids=[[float(v) for v in row] for row in d["centroids"]],
            names=[str(n) for n in d["names"]],
            k=int(d["k"]),
        )


def nearest_centroid(Xs: np.ndarray, C: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """argmin_j ||x - c_j||^2, with exact differences (not the ||x||^2 - 2xc trick) in chunks."""
    out = np.empty(len(Xs), dtype=np.int64)
    for s in range(0, len(Xs), chunk):
        d = ((Xs[s : s + chunk, None, :] - C[None, :, :]) ** 2).sum(axis=-1)
        out[s : s + chunk] = d.argmin(axis=1)
    return out


def _feature_matrix(rfm: np.ndarray | pd.DataFrame, feature_names: list[str]) -> np.ndarray:
    if isinstance(rfm, pd.DataFrame):
        missing = [c for c in feature_names if c not in rfm.columns]
        if missing:
            raise ValueError(f"rfm is missing column(s) {missing}; expected {feature_names}")
        X = rfm[feature_names].to_numpy(dtype=np.float64)
    else:
        X = np.asarray(rfm, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(feature_names):
            raise ValueError(
                f"rfm must have shape (n, {len(feature_names)}) with columns {feature_names}; got {X.shape}"
            )
    if not np.isfinite(X).all():
        raise ValueError("rfm has NaN or infinite values")
    if (X < 0).any():
        bad = [feature_names[j] for j in np.flatnonzero((X < 0).any(axis=0))]
        raise ValueError(f"rfm has negative values in {bad}; RFM features are >= 0 (log1p scale)")
    return X


# --------------------------------------------------------------------------- naming

# Archetype -> weights on the centroid's z-scores (recency, frequency, monetary, tenure).
# A name is used only where its score clears NAME_THRESHOLD ("where the data supports it"), and only
# when the data has every feature the name speaks of (no money words without order values).
ARCHETYPES: dict[str, tuple[float, float, float, float]] = {
    "high value": (-1.0, 1.0, 1.0, 0.0),  # recent, frequent, big baskets
    "lapsed": (1.0, -0.5, 0.0, 0.5),  # long gone, had been around
    "new / low engagement": (-0.5, -1.0, 0.0, -1.0),  # short tenure, few purchases
    "promotion-sensitive": (0.0, 0.5, -1.0, 0.0),  # buys fairly often, small baskets
    "occasional": (0.0, -0.5, 0.5, 0.0),  # rare buyers with normal baskets
    "intermittent": (0.0, 1.0, 0.0, 0.0),  # repeat buyers, neither recent nor gone
}
# Used instead of the money names when the data has no order values (monetary is 0 for everyone).
NO_MONEY_ARCHETYPES: dict[str, tuple[float, float, float, float]] = {
    "most active": (-1.0, 1.0, 0.0, 0.0),  # recent and frequent
}
NAME_THRESHOLD = 0.5
_AXES = ("recency_days", "frequency", "monetary", "tenure_days")


def _describe(z: np.ndarray, present=_AXES) -> str:
    """Fallback name from the centroid's levels on the features the data has, e.g. 'recent frequent low-spend'
    (no commas: a list of names must not read like more segments)."""
    r, f, m = z[0], z[1], z[2]
    words = []
    if "recency_days" in present:
        words.append("recent" if r < -0.5 else "dormant" if r > 0.5 else "mid-recency")
    if "frequency" in present:
        words.append("frequent" if f > 0.5 else "infrequent" if f < -0.5 else "mid-frequency")
    if "monetary" in present:
        words.append("high-spend" if m > 0.5 else "low-spend" if m < -0.5 else "mid-spend")
    return " ".join(words) or "customers"


def archetypes_for(feature_names: list[str]) -> dict[str, tuple[float, float, float, float]]:
    """The archetype names the features support: each name's non-zero weights must be features the data has."""
    present = set(feature_names)
    pool = dict(ARCHETYPES)
    if "monetary" not in present:
        pool.update(NO_MONEY_ARCHETYPES)
    return {name: w for name, w in pool.items() if all(w[i] == 0 or _AXES[i] in present for i in range(4))}


def name_segments(centroids_scaled: np.ndarray, feature_names: list[str]) -> list[str]:
    """Unique, deterministic names from centroids (in z-score units of log1p features).

    Archetype names go to clusters by a maximum-score one-to-one matching; a
    cluster whose best available archetype scores below NAME_THRESHOLD gets a
    descriptive name instead. Only names about features in ``feature_names`` are
    used (:func:`archetypes_for`). Duplicates get ' (2)', ' (3)', ...
    """
    from scipy.optimize import linear_sum_assignment

    C = np.asarray(centroids_scaled, dtype=np.float64)
    k = len(C)
    Z = np.zeros((k, 4))
    for i, f in enumerate(_AXES):
        if f in feature_names:
            Z[:, i] = C[:, feature_names.index(f)]
    pool = archetypes_for(feature_names)
    W = np.array(list(pool.values())).reshape(-1, 4)
    W = W / np.linalg.norm(W, axis=1, keepdims=True)
    scores = Z @ W.T  # k x archetypes
    # Extra "descriptive" columns worth the threshold: chosen when no archetype beats it.
    full = np.hstack([scores, np.full((k, k), NAME_THRESHOLD)])
    rows, cols = linear_sum_assignment(full, maximize=True)
    arche = list(pool)
    present = tuple(f for f in _AXES if f in feature_names)
    names = [""] * k
    for i, j in zip(rows, cols):
        names[i] = arche[j] if j < len(arche) else _describe(Z[i], present)
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            names[i] = f"{n} ({seen[n]})"
    return names


def informative_features(rfm: pd.DataFrame | np.ndarray, feature_names: list[str]) -> list[str]:
    """The features that vary across customers. A constant one carries nothing for k-means and would
    name segments after data that is not there (monetary is 0 for everyone in a file without order values)."""
    X = _feature_matrix(rfm, feature_names)
    varies = (X.max(axis=0) > X.min(axis=0)) if len(X) else np.ones(len(feature_names), bool)
    kept = [f for f, v in zip(feature_names, varies) if v]
    return kept or list(feature_names)


# --------------------------------------------------------------------------- fitting


def _scale(rfm: pd.DataFrame, feature_names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log1p (RFM is heavy-tailed) then StandardScaler; returns scaled X, mean, scale."""
    from sklearn.preprocessing import StandardScaler

    L = np.log1p(_feature_matrix(rfm, feature_names))
    sc = StandardScaler().fit(L)
    return sc.transform(L), sc.mean_.copy(), sc.scale_.copy()


def fit_segments(
    rfm: pd.DataFrame,
    ks=range(3, 11),
    rule: str | int = "silhouette",
    seed: int = 0,
    feature_names: list[str] | None = None,
    silhouette_sample: int = 10000,
    gap_refs: int = 10,
    gap_sample: int = 3000,
    n_init: int = 4,
) -> tuple[SegmentModel, KSelection]:
    """Scale RFM, pick k by ``rule`` ("silhouette" | "gap" | "elbow" | an int k), fit, name.

    Segments are ordered by descending "value" (frequency + monetary - recency of
    the centroid) so segment 0 is the most valuable, whatever k-means' labels were.
    Features that are constant in ``rfm`` (monetary without order values) are left out of the
    model and of the names (:func:`informative_features`).
    """
    feature_names = informative_features(rfm, list(feature_names or RFM_FEATURES))
    if isinstance(rule, (int, np.integer)) and not isinstance(rule, bool):
        ks_used = [int(rule)]
    elif rule in RULES:
        ks_used = ks
    else:
        raise ValueError(f"rule={rule!r}: expected one of {list(RULES)} or a fixed int k")
    X, mean, scale = _scale(rfm, feature_names)
    sel = select_k(
        X,
        ks_used,
        seed=seed,
        silhouette_sample=silhouette_sample,
        gap_refs=gap_refs,
        gap_sample=gap_sample,
        n_init=n_init,
    )
    k = (
        int(rule)
        if len(ks_used) == 1
        else {"silhouette": sel.k_silhouette, "gap": sel.k_gap, "elbow": sel.k_elbow}[rule]
    )
    sel.chosen, sel.rule = k, str(rule)
    C = _kmeans(X, k, seed, n_init).cluster_centers_
    idx = {f: feature_names.index(f) for f in ("recency_days", "frequency", "monetary") if f in feature_names}
    value = sum(C[:, idx[f]] * (-1 if f == "recency_days" else 1) for f in idx) if idx else np.zeros(k)
    C = C[np.argsort(-np.asarray(value), kind="stable")]
    model = SegmentModel(
        feature_names=feature_names,
        scaler_mean=mean.tolist(),
        scaler_scale=scale.tolist(),
        centroids=C.tolist(),
        names=name_segments(C, feature_names),
        k=k,
    )
    return model, sel


# --------------------------------------------------------------------------- reporting


def segment_summary(rfm: pd.DataFrame, labels_or_names, churn=None, intent=None) -> pd.DataFrame:
    """Per segment: size, share, mean recency/frequency/monetary/tenure, churn and intent rates."""
    seg = np.asarray(labels_or_names)
    if len(seg) != len(rfm):
        raise ValueError(f"labels_or_names has {len(seg)} entries but rfm has {len(rfm)} rows")
    df = pd.DataFrame({"segment": seg})
    for c in RFM_FEATURES:
        if c in rfm.columns:
            df[c] = rfm[c].to_numpy(dtype=np.float64)
    for name, y in (("churn_rate", churn), ("intent_rate", intent)):
        df[name] = np.nan if y is None else np.asarray(y, dtype=np.float64)
    g = df.groupby("segment", sort=False)
    out = g.mean()
    out.insert(0, "n", g.size())
    out.insert(1, "share", out["n"] / len(df))
    out = out.rename(columns={c: f"mean_{c}" for c in RFM_FEATURES})
    return out.sort_values("share", ascending=False, kind="stable").reset_index()
