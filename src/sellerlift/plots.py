"""Evaluation plots written as PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402


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
