"""enduring.onnx: the direct and enduring response per level (conversion, 90-day retention, 90-day revenue)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sellerlift.constants import DIPN_INPUT
from sellerlift.runtime.bundle import BundleError
from sellerlift.runtime.onnx import session

OUTPUTS = ("conversion", "retention", "revenue")


class EnduringModel:
    """Runs enduring.onnx on the same inputs as the DIPN (aggregates, optionally the sequence scores)."""

    def __init__(self, sess, info: dict):
        from sellerlift.promotion_features import dipn_inputs

        names = [o.name for o in sess.get_outputs()]
        if [i.name for i in sess.get_inputs()] != [DIPN_INPUT] or names != list(OUTPUTS):
            raise BundleError(f"enduring.onnx must map '{DIPN_INPUT}' -> {list(OUTPUTS)}, has {names}")
        self.sess, self.info, self._inputs = sess, dict(info), dipn_inputs
        self.uses_sequence_outputs = bool(info.get("uses_sequence_outputs", False))
        self.revenue_scale = float(info.get("revenue_scale", 1.0))
        self.horizon_days = int(info.get("horizon_days", 90))

    @classmethod
    def from_bundle(cls, bundle_dir: str | Path, info: dict, threads: int = 1) -> EnduringModel:
        return cls(session(Path(bundle_dir) / "enduring.onnx", threads), info)

    def predict(self, feats, scores: dict | None) -> dict[str, np.ndarray]:
        """{conversion, retention, revenue} [n, K] float64; revenue (before discount) in currency."""
        x = np.ascontiguousarray(self._inputs(feats, scores if self.uses_sequence_outputs else None), np.float32)
        out = dict(zip(OUTPUTS, (v.astype(np.float64) for v in self.sess.run(list(OUTPUTS), {DIPN_INPUT: x}))))
        out["revenue"] = out["revenue"] * self.revenue_scale
        return out


def retention_aware_objective(curves: np.ndarray, enduring: dict, basket: np.ndarray, margin: float, levels,
                              weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(objective, expected spend) [n, K]: the week's incremental profit + ``weight`` x the enduring value.

    The enduring value of a level is the margin on the extra 90-day revenue *beyond* the week's extra purchases
    (``margin * ((R_k - R_0) - basket * (p_k - p_0))``); with weight 1 the objective is the whole 90-day
    incremental profit, with weight 0 exactly the week's (today's allocation).
    """
    d = np.asarray(levels, dtype=np.float64)[None, :] / 100.0
    p, b = np.asarray(curves, dtype=np.float64), np.asarray(basket, dtype=np.float64)[:, None]
    direct = b * (p * (margin - d) - p[:, :1] * margin)
    rev = enduring["revenue"]
    beyond = margin * ((rev - rev[:, :1]) - b * (p - p[:, :1]))
    return direct + float(weight) * beyond, b * p * d
