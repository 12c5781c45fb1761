"""torchmetrics for the binary heads, including precision in the top fraction of scores."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryCalibrationError
from torchmetrics.utilities import dim_zero_cat


class PrecisionAtTopFraction(Metric):
    """Share of positives among the ``fraction`` of customers with the highest scores.

    Ties at the threshold are shared, as in :func:`sellerlift.metrics.precision_at_top` (the
    test-time number): the expected precision under random tie-breaking.
    """

    higher_is_better = True
    full_state_update = False

    def __init__(self, fraction: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach().flatten().float())
        self.target.append(target.detach().flatten().float())

    def compute(self) -> torch.Tensor:
        preds, target = dim_zero_cat(self.preds), dim_zero_cat(self.target)
        k = max(1, int(round(self.fraction * preds.numel())))
        thr = torch.topk(preds, k).values[-1]
        above, tied = preds > thr, preds == thr
        w_tied = (k - above.sum()) / tied.sum().clamp_min(1)
        return (target[above].sum() + w_tied * target[tied].sum()) / k


def binary_metrics(top_fraction: float = 0.2) -> dict:
    return {
        "auroc": BinaryAUROC(),
        "ap": BinaryAveragePrecision(),
        "ece": BinaryCalibrationError(n_bins=15, norm="l1"),
        f"precision_top{int(round(top_fraction * 100))}": PrecisionAtTopFraction(top_fraction),
    }
