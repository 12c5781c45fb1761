"""enduring.onnx: the direct and enduring response per level (conversion, 90-day retention, 90-day revenue and
the revenue after the offer's window), the retention-aware objective built on it, and the action segments' inputs.

:meth:`sellerlift.runtime.Runtime.load` builds :class:`EnduringModel` from the verified bytes of
``enduring.onnx`` and the manifest's ``enduring`` section; :func:`enduring_value` is the value of each
level beyond the week that the allocation weighs (``weight``: 0 = the week's profit, 1 = the whole
90-day profit); :func:`action_inputs` are the features the action segments were fitted on
(:func:`sellerlift.action_segments.action_features`, computed as ``stages.action_segments`` does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sellerlift.constants import DIPN_INPUT
from sellerlift.runtime.bundle import BundleError
from sellerlift.runtime.onnx import session

OUTPUTS = ("conversion", "retention", "revenue", "later_revenue")


class EnduringModel:
    """Runs enduring.onnx on the same inputs as the DIPN (aggregates, optionally the sequence scores)."""

    def __init__(self, sess, info: dict):
        from sellerlift.promotion_features import dipn_inputs

        names = [o.name for o in sess.get_outputs()]
        if [i.name for i in sess.get_inputs()] != [DIPN_INPUT] or names != list(OUTPUTS):
            raise BundleError(
                f"enduring.onnx must map '{DIPN_INPUT}' -> {list(OUTPUTS)}, has {names}: a bundle from before the "
                "later_revenue output; retrain it (python train.py) to get the retention-aware objective"
            )
        self.sess, self.info, self._inputs = sess, dict(info), dipn_inputs
        self.uses_sequence_outputs = bool(info.get("uses_sequence_outputs", False))
        self.revenue_scale = float(info.get("revenue_scale", 1.0))
        self.horizon_days = int(info.get("horizon_days", 90))
        if not (np.isfinite(self.revenue_scale) and self.revenue_scale > 0) or self.horizon_days < 1:
            raise BundleError(
                f"enduring: revenue_scale {self.revenue_scale} / horizon_days {self.horizon_days}: "
                "expected a positive scale and a horizon of >= 1 day"
            )

    @classmethod
    def from_bundle(cls, bundle_dir: str | Path, info: dict, threads: int = 1) -> EnduringModel:
        """From the file on disk (unverified: :meth:`Runtime.load` uses the verified bytes instead)."""
        return cls(session(Path(bundle_dir) / "enduring.onnx", threads), info)

    def predict(self, feats, scores: dict | None) -> dict[str, np.ndarray]:
        """{conversion, retention, revenue, later_revenue} [n, K] float64; revenues (before discount, over the
        90 days and after the offer's window) in currency."""
        x = np.ascontiguousarray(self._inputs(feats, scores if self.uses_sequence_outputs else None), np.float32)
        n = len(x)
        parts = [self.sess.run(list(OUTPUTS), {DIPN_INPUT: x[s : s + 8192]}) for s in range(0, max(n, 1), 8192)]
        out = {name: np.concatenate([p[j] for p in parts]).astype(np.float64) for j, name in enumerate(OUTPUTS)}
        for name in ("revenue", "later_revenue"):
            out[name] = out[name] * self.revenue_scale
        if not all(np.isfinite(v).all() for v in out.values()):
            raise RuntimeError("enduring model returned non-finite values")
        return out


ENDURING_VALUES = ("margin", "retention")  # what the enduring value of a level is (the seller's choice)
KEPT_FLOOR = 0.05  # the smallest P(buy again) a kept customer's value is divided by


def enduring_value(enduring: dict, margin, kind: str = "margin", kept_value=None) -> np.ndarray:
    """[n, K] the value of each level *beyond* the offer's week; exactly 0 at level 0.

    * ``margin``: the margin on the extra revenue after the window, ``margin * (L_k - L_0)``
      (``enduring["later_revenue"]``);
    * ``retention``: the change in retention after the window, valued at what a kept customer brings,
      ``kept_value * (r_k - r_0)`` (``enduring["retention"]``; ``kept_value`` [n] from :func:`kept_value`).

    ``margin`` a number or [n].
    """
    if kind == "margin":
        later = np.asarray(enduring["later_revenue"], dtype=np.float64)
        m = np.asarray(margin, dtype=np.float64)
        return (m[:, None] if m.ndim else m) * (later - later[:, :1])
    if kind == "retention":
        if kept_value is None:
            raise ValueError("enduring value 'retention' needs kept_value: the bundle's value head (value_<d>d)")
        r = np.asarray(enduring["retention"], dtype=np.float64)
        return np.asarray(kept_value, dtype=np.float64)[:, None] * (r - r[:, :1])
    raise ValueError(f"enduring value {kind!r}: expected one of {ENDURING_VALUES}")


def kept_value(spend, churn, margin) -> np.ndarray:
    """[n] the margin a customer who buys again brings over the horizon: the value head's expected spend over the
    chance of buying at all, ``margin * value / max(1 - churn, KEPT_FLOOR)`` (the CLV of a kept customer)."""
    m = np.asarray(margin, dtype=np.float64)
    alive = np.maximum(1.0 - np.asarray(churn, dtype=np.float64), KEPT_FLOOR)
    return m * np.asarray(spend, dtype=np.float64) / alive


def retention_aware_objective(
    curves: np.ndarray,
    enduring: dict,
    basket: np.ndarray,
    margin: float,
    levels,
    weight: float,
    kind: str = "margin",
    kept: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(objective, expected spend) [n, K]: the week's incremental profit on the DIPN curves + ``weight`` x the
    enduring value (:func:`enduring_value` of ``kind``). Weight 1 values the whole 90 days, weight 0 is exactly
    the week's (today's allocation; ``enduring`` is then not read)."""
    d = np.asarray(levels, dtype=np.float64)[None, :] / 100.0
    p, b = np.asarray(curves, dtype=np.float64), np.asarray(basket, dtype=np.float64)[:, None]
    direct = b * (p * (margin - d) - p[:, :1] * margin)
    if float(weight) != 0.0:
        direct = direct + float(weight) * enduring_value(enduring, margin, kind, kept)
    return direct, b * p * d


def action_inputs(feats, curves: np.ndarray, enduring: dict, basket: np.ndarray, margin: float, levels) -> np.ndarray:
    """The action segments' features of each customer, as ``stages.action_segments`` computes them: raw RFM,
    the curve (clipped to [0, 1]), the enduring model's 90-day revenue with no offer and the incremental
    90-day profit of the top level (margin on the extra revenue minus the expected coupon)."""
    from sellerlift.action_segments import action_features

    d = np.asarray(levels, dtype=np.float64) / 100.0
    rev, conv = enduring["revenue"], enduring["conversion"]
    top = margin * (rev[:, -1] - rev[:, 0]) - conv[:, -1] * d[-1] * np.asarray(basket, dtype=np.float64)
    rfm = feats.raw_columns(["recency_days", "frequency", "monetary", "tenure_days"])
    return action_features(rfm, np.clip(curves, 0.0, 1.0), rev[:, 0], top)
