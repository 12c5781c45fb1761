"""Evaluation plots written as PNG (matplotlib, Agg backend: no display needed).

ROC and calibration of the binary heads; the promotion engine's response curves, uplift by level,
budget curves, assigned levels and propensity calibration.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score, roc_curve

from sellerlift.schema import DISCOUNT_LEVELS


def roc_and_calibration(y: np.ndarray, scores: dict[str, np.ndarray], title: str, path: str | Path) -> Path:
    """ROC (left) and reliability diagram (right); ``scores`` maps a label ('model', 'truth') to probabilities."""
    fig, (ax_roc, ax_cal) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax_roc.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
        frac, mean_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
        ax_cal.plot(mean_pred, frac, marker="o", label=name)
    ax_roc.plot([0, 1], [0, 1], ls=":", c="grey")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC")
    ax_cal.plot([0, 1], [0, 1], ls=":", c="grey")
    ax_cal.set(xlabel="mean predicted probability", ylabel="observed rate", title=f"{title}: calibration")
    for ax in (ax_roc, ax_cal):
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- promotion engine
# ``curves`` below map a label (a model's display name) to [n, K] response curves at DISCOUNT_LEVELS.


def _save(path, fig, legend_axes=()) -> Path:
    """Save and close ``fig``; the axes in ``legend_axes`` get a light grid and a small legend first."""
    for a in legend_axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.savefig(path, dpi=90)  # no tight_layout: it costs more than the drawing
    plt.close(fig)
    return Path(path)


def response_curves_by_archetype(curves: dict, true_curves, archetype, path, per_arch: int = 2) -> Path:
    """A few test customers of each archetype: true curve (black) vs each model's."""
    levels = np.asarray(DISCOUNT_LEVELS)
    archs = sorted(np.unique(archetype))
    fig, axes = plt.subplots(1, len(archs), figsize=(3.4 * len(archs), 3.4), squeeze=False)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.14, top=0.88, wspace=0.25)
    rng = np.random.default_rng(0)
    styles = ["-", ":"]
    for ax, arch in zip(axes[0], archs):
        rows = np.flatnonzero(archetype == arch)
        for j, r in enumerate(rng.choice(rows, min(per_arch, len(rows)), replace=False)):
            ls = styles[j % 2]
            ax.plot(levels, true_curves[r], ls, c="k", lw=2, label="truth" if j == 0 else None)
            for i, (label, c) in enumerate(curves.items()):
                ax.plot(levels, c[r], ls, c=f"C{i}", label=label if j == 0 else None)
        ax.set_title(arch, fontsize=9)
        ax.set_xlabel("discount %", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("P(purchase in 7 days)")
    axes[0, 0].legend(fontsize=6)
    return _save(path, fig)


def uplift_by_level(curves: dict, true_curves, path) -> Path:
    """Mean uplift over no discount at each level (left) and its RMSE against the truth (right)."""
    levels = np.asarray(DISCOUNT_LEVELS)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    true_up = true_curves - true_curves[:, :1]
    a1.plot(levels, true_up.mean(0), "k-o", label="truth")
    for label, c in curves.items():
        up = c - c[:, :1]
        a1.plot(levels, up.mean(0), "-o", ms=3, label=label)
        a2.plot(levels[1:], np.sqrt(((up - true_up) ** 2).mean(0))[1:], "-o", ms=3, label=label)
    a1.set(xlabel="discount %", ylabel="mean uplift vs no discount", title="uplift by level (test customers)")
    a2.set(xlabel="discount %", ylabel="uplift RMSE vs truth", title="uplift error by level")
    return _save(path, fig, legend_axes=(a1, a2))


def budget_curves(curve_df, path) -> Path:
    """Profit and ROI of each policy against the budget (multi-armed Qini), the oracle in black."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, g in curve_df.groupby("policy"):
        style = dict(lw=2.5, c="k") if name == "oracle" else {}
        a1.plot(g["budget_frac"], g["profit"], "-o", ms=3, label=name, **style)
        a2.plot(g["budget_frac"], 100 * g["roi"], "-o", ms=3, label=name, **style)
    a1.set(
        xlabel="budget (fraction of top-level-for-all spend)",
        ylabel="incremental profit (true curves)",
        title="budget curve (multi-armed Qini)",
    )
    a2.set(xlabel="budget (fraction of top-level-for-all spend)", ylabel="ROI %", title="ROI by budget")
    return _save(path, fig, legend_axes=(a1, a2))


def levels_by_archetype(levels_df, path) -> Path:
    """Share of each discount level per archetype, for a few policies (medium budget)."""
    pols = [p for p in ("oracle", "dipn", "lightgbm", "rule_top_value") if p in set(levels_df["policy"])]
    fig, axes = plt.subplots(1, len(pols), figsize=(3.6 * len(pols), 3.6), squeeze=False)
    cols = [f"{d}%" for d in DISCOUNT_LEVELS]
    for ax, pol in zip(axes[0], pols):
        g = levels_df[levels_df["policy"] == pol].set_index("archetype")[cols]
        bottom = np.zeros(len(g))
        for c in cols:
            ax.bar(range(len(g)), g[c].to_numpy(), bottom=bottom, label=c)
            bottom += g[c].to_numpy()
        ax.set_xticks(range(len(g)), [a.replace("_", "\n") for a in g.index], fontsize=6)
        ax.set_title(f"{pol}: levels (medium budget)", fontsize=8)
    axes[0, -1].legend(fontsize=6, bbox_to_anchor=(1.0, 1.0))
    return _save(path, fig)


def propensity_calibration(proba, level, path) -> Path:
    """Predicted propensity of each level against its observed share (deciles of the prediction)."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for k in range(proba.shape[1]):
        p = proba[:, k]
        bins = np.quantile(p, np.linspace(0, 1, 11))
        idx = np.clip(np.searchsorted(bins, p, side="right") - 1, 0, 9)
        mp = np.bincount(idx, p, 10) / np.maximum(np.bincount(idx, minlength=10), 1)
        fr = np.bincount(idx, level == k, 10) / np.maximum(np.bincount(idx, minlength=10), 1)
        ax.plot(mp, fr, "-o", ms=2, label=f"{DISCOUNT_LEVELS[k]}%")
    ax.plot([0, 1], [0, 1], ":", c="grey")
    ax.set(xlabel="predicted propensity", ylabel="observed share", title="propensity calibration (val)")
    ax.legend(fontsize=6)
    return _save(path, fig)
