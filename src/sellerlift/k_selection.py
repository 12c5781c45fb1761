"""Choosing k for k-means: every k in a range is fitted and scored by three criteria (:func:`select_k`):

- ``"elbow"``: kneedle-style, the k whose (normalised) inertia lies farthest
  below the chord from the first to the last k;
- ``"silhouette"``: the k with the highest mean silhouette (subsampled on large data);
- ``"gap"``: the gap statistic (Tibshirani, Walther & Hastie 2001) with the
  1-standard-error rule: the smallest k with Gap(k) >= Gap(k+1) - s_{k+1};
  reference data are uniform over the bounding box of the scaled data.

(The PyPI ``gap-stat`` package ships only an sdist that no longer builds, so the gap
statistic is implemented here.) :func:`plot_k_selection` draws the three criteria.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

RULES = ("silhouette", "gap", "elbow")


@dataclass
class KSelection:
    ks: list[int]
    inertia: list[float]
    silhouette: list[float]
    gap: list[float]
    gap_se: list[float]  # s_k = sd_k * sqrt(1 + 1/B)
    k_elbow: int
    k_silhouette: int
    k_gap: int
    chosen: int | None = None
    rule: str | None = None
    extra: dict = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "k": self.ks,
                "inertia": self.inertia,
                "silhouette": self.silhouette,
                "gap": self.gap,
                "gap_se": self.gap_se,
            }
        ).set_index("k")


def _kmeans(X: np.ndarray, k: int, seed: int, n_init: int):
    from sklearn.cluster import KMeans  # training-time only; the model itself needs NumPy alone
    from threadpoolctl import threadpool_limits

    # On small data OpenMP start-up dominates (10-50x slower on a busy machine): run single-threaded.
    with threadpool_limits(limits=1 if len(X) < 50_000 else None):
        return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(X)


def _check_ks(ks, n_rows: int) -> list[int]:
    ks = sorted({int(k) for k in ks})
    if not ks:
        raise ValueError("ks is empty; give at least one number of clusters, e.g. ks=range(3, 11)")
    if ks[0] < 2:
        raise ValueError(f"ks must be >= 2 (got {ks[0]}): silhouette and segment names need two or more clusters")
    if n_rows <= ks[-1]:
        raise ValueError(
            f"ks goes up to k={ks[-1]} but the data has only {n_rows} row(s); "
            f"k-means needs more rows than clusters: lower ks or pass more customers"
        )
    return ks


def elbow_k(ks, inertia) -> int:
    """Kneedle-style elbow: k whose normalised inertia lies farthest below the first-last chord."""
    ks = np.asarray(ks, dtype=np.float64)
    w = np.asarray(inertia, dtype=np.float64)
    if len(ks) < 3:
        return int(ks[0])
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    span = w[0] - w[-1]
    y = (w - w[-1]) / span if span > 0 else np.zeros_like(w)
    # The chord goes from (0, 1) to (1, 0): distance below it is proportional to 1 - x - y.
    return int(ks[int(np.argmax(1.0 - x - y))])


def gap_k(ks, gap, gap_se) -> int:
    """Tibshirani's 1-SE rule: smallest k with Gap(k) >= Gap(k+1) - s_{k+1} (falls back to argmax Gap)."""
    for i in range(len(ks) - 1):
        if gap[i] >= gap[i + 1] - gap_se[i + 1]:
            return int(ks[i])
    return int(ks[int(np.argmax(gap))])


def gap_statistic(X: np.ndarray, ks, inertia_of, refs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gap(k) = E*[log W*_k] - log W_k with uniform references over the bounding box of X.

    ``inertia_of(data, k)`` returns the within-cluster sum of squares W_k.
    Returns (gap, s) with s_k = sd_k * sqrt(1 + 1/B).
    """
    if refs < 1:
        raise ValueError(f"gap_refs must be >= 1, got {refs}")
    rng = np.random.default_rng(seed)
    lo, hi = X.min(axis=0), X.max(axis=0)
    log_w = np.array([np.log(inertia_of(X, k)) for k in ks])
    log_w_ref = np.empty((refs, len(ks)))
    for b in range(refs):
        R = rng.uniform(lo, hi, size=X.shape)
        log_w_ref[b] = [np.log(inertia_of(R, k)) for k in ks]
    gap = log_w_ref.mean(axis=0) - log_w
    s = log_w_ref.std(axis=0) * np.sqrt(1.0 + 1.0 / refs)
    return gap, s


def select_k(
    X_scaled: np.ndarray,
    ks=range(3, 11),
    seed: int = 0,
    silhouette_sample: int = 10000,
    gap_refs: int = 10,
    gap_sample: int = 3000,
    n_init: int = 4,
) -> KSelection:
    """Fit k-means for every k in ``ks`` on already-scaled data and score each k.

    Silhouette is computed on ``silhouette_sample`` rows at most and the gap
    statistic on ``gap_sample`` rows at most (both seeded subsamples), so large
    tables stay fast; inertia and elbow use all rows.
    """
    from sklearn.metrics import silhouette_score

    X = np.asarray(X_scaled, dtype=np.float64)
    ks = _check_ks(ks, len(X))
    rng = np.random.default_rng(seed)
    inertia, sil = [], []
    for k in ks:
        km = _kmeans(X, k, seed, n_init)
        inertia.append(float(km.inertia_))
        ss = silhouette_sample if len(X) > silhouette_sample else None
        sil.append(float(silhouette_score(X, km.labels_, sample_size=ss, random_state=seed)))
    Xg = X[rng.choice(len(X), gap_sample, replace=False)] if len(X) > gap_sample else X
    gap, se = gap_statistic(Xg, ks, lambda D, k: _kmeans(D, k, seed, n_init).inertia_, gap_refs, seed)
    return KSelection(
        ks=ks,
        inertia=inertia,
        silhouette=sil,
        gap=gap.tolist(),
        gap_se=se.tolist(),
        k_elbow=elbow_k(ks, inertia),
        k_silhouette=int(ks[int(np.argmax(sil))]),
        k_gap=gap_k(ks, gap, se),
    )


def plot_k_selection(sel: KSelection, path) -> Path:
    """Elbow, silhouette and gap panels in one PNG (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [
        ("inertia (elbow)", sel.inertia, None, sel.k_elbow),
        ("silhouette", sel.silhouette, None, sel.k_silhouette),
        ("gap statistic (1-SE)", sel.gap, sel.gap_se, sel.k_gap),
    ]
    for ax, (title, y, err, k_best) in zip(axes, panels):
        ax.errorbar(sel.ks, y, yerr=err, marker="o", capsize=3 if err is not None else 0)
        ax.axvline(k_best, color="tab:red", ls="--", lw=1, label=f"k = {k_best}")
        if sel.chosen is not None and sel.chosen != k_best:
            ax.axvline(sel.chosen, color="gray", ls=":", lw=1, label=f"chosen k = {sel.chosen}")
        ax.set_title(title)
        ax.set_xlabel("k")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
