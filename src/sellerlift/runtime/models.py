"""The ONNX models a bundle holds, each behind a small class (no torch): events -> arrays, arrays -> outputs.

:class:`EventBatch` (a request's events as flat arrays), :class:`SequenceModel` (sequence.onnx: the
probabilities and, with the customer-value head, the value outputs), :class:`PromotionModel` (dipn.onnx:
the conversion curve). :class:`sellerlift.runtime.Runtime` holds them for one verified bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sellerlift.constants import (
    DIPN_INPUT,
    DIPN_OUTPUT,
    EMBEDDING_OUTPUT,
    HEADS,
    SCORE_OUTPUTS,
    SEQUENCE_INPUTS,
    horizons_of,
    horizons_of_outputs,
    is_value_output,
    score_outputs,
    value_days_of_outputs,
)
from sellerlift.features import SequenceFeatures
from sellerlift.runtime.bundle import BundleError
from sellerlift.runtime.onnx import session

BATCH = 1024  # customers per model call: as fast as 4096, and onnxruntime's arena keeps ~350 MiB less


@dataclass(frozen=True)
class EventBatch:
    """A request's events as flat arrays (one row per event) plus per-customer as-of times."""

    n: int  # customers
    cust: np.ndarray  # [E] int64: position of the event's customer in the request
    ts: np.ndarray  # [E] datetime64[us], naive UTC
    type_code: np.ndarray  # [E] int8: index into EVENT_TYPES
    amount: np.ndarray  # [E] float64
    as_of: np.ndarray  # [n] datetime64[us], naive UTC

    def events_used(self) -> np.ndarray:
        """Events per customer that the features see (strictly before its as-of)."""
        return np.bincount(self.cust[self.ts < self.as_of[self.cust]], minlength=self.n)


class SequenceModel:
    """sequence.onnx: features -> one probability per head (and the value head's means), length-sorted and batched.

    The probability outputs are named after the horizons the model was trained for
    (``intent_7d``, ``churn_30d``, ...); ``outputs`` lists the file's names in head order and
    ``horizons`` the horizons they encode. ``horizons`` given (a manifest's) must agree with them.
    A model with the customer-value head also has ``value_<d>d`` and ``purchases_<d>d`` (``value_outputs``,
    d = the churn horizon); a model without it (every older bundle) has ``value_outputs == []``.
    """

    def __init__(self, sess, batch: int = BATCH, horizons: dict | None = None):
        names_in = [i.name for i in sess.get_inputs()]
        names_out = [o.name for o in sess.get_outputs()]
        values = [n for n in names_out if is_value_output(n)]
        scores = [n for n in names_out if n != EMBEDDING_OUTPUT and n not in values]
        try:
            found = horizons_of_outputs(scores)
            if values and value_days_of_outputs(values) != found["churn_days"]:
                raise ValueError(f"value outputs {values} must use the churn horizon ({found['churn_days']} days)")
        except ValueError as err:
            found = None
            why = str(err)
        if names_in != list(SEQUENCE_INPUTS) or found is None:
            raise BundleError(
                f"sequence.onnx has inputs {names_in} / outputs {names_out}; expected "
                f"{list(SEQUENCE_INPUTS)} -> {list(SCORE_OUTPUTS)} (one intent_<days>d and one "
                f"churn_<days>d output, named after the horizons; optionally value_<days>d and "
                f"purchases_<days>d)" + ("" if found is not None else f": {why}")
            )
        if horizons is not None and horizons_of(horizons) != found:
            raise BundleError(
                f"sequence.onnx outputs {scores} encode horizons {found}, but the manifest records "
                f"horizons {dict(horizons)}; expected outputs {list(score_outputs(horizons))}"
            )
        self.outputs: list[str] = scores
        self.value_outputs: list[str] = values
        self.heads: dict[str, str] = dict(zip(HEADS, scores))  # head -> output name
        self.horizons: dict[str, int] = found
        self.sess, self.batch = sess, int(batch)

    @classmethod
    def from_file(cls, path: str | Path, threads: int = 1) -> SequenceModel:
        return cls(session(path, threads))

    def probabilities(self, feats: SequenceFeatures) -> np.ndarray:
        """float64 [n, 2]: the heads' probabilities in head order (intent, churn), whatever their names."""
        out = self.predict(feats)
        return np.stack([out[name] for name in self.outputs], axis=1).astype(np.float64)

    def predict(self, feats: SequenceFeatures) -> dict[str, np.ndarray]:
        """``{output name: float32 [n]}`` for every customer of ``feats``, in its order (probabilities, then the
        value outputs when the model has them)."""
        n = len(feats.length)
        names = [*self.outputs, *self.value_outputs]
        out = {name: np.empty(n, np.float32) for name in names}
        order = np.argsort(feats.length, kind="stable")
        for s in range(0, n, self.batch):
            rows = order[s : s + self.batch]
            width = max(int(feats.length[rows].max(initial=0)), 1)
            res = self.sess.run(
                names,
                {
                    "event_type": feats.event_type[rows, :width],
                    "numeric": feats.numeric[rows, :width],
                    "length": feats.length[rows],
                    "aggregates": feats.aggregates[rows],
                },
            )
            for name, r in zip(names, res):
                out[name][rows] = r.reshape(-1)
        return out


class PromotionModel:
    """dipn.onnx: DIPN inputs (aggregates, optionally the sequence scores) -> conversion at each level."""

    def __init__(self, sess, uses_sequence_outputs: bool, levels: tuple[int, ...], input_names=None):
        from sellerlift.promotion_features import dipn_inputs

        if [i.name for i in sess.get_inputs()] != [DIPN_INPUT] or DIPN_OUTPUT not in [
            o.name for o in sess.get_outputs()
        ]:
            raise BundleError(f"dipn.onnx must map '{DIPN_INPUT}' -> '{DIPN_OUTPUT}'")
        width = sess.get_inputs()[0].shape[-1]
        if isinstance(width, int) and input_names is not None and len(input_names) != width:
            raise BundleError(f"the manifest lists {len(input_names)} DIPN inputs but dipn.onnx takes {width}")
        self.sess, self.uses_sequence_outputs, self.levels = sess, bool(uses_sequence_outputs), tuple(levels)
        self._inputs = dipn_inputs

    def curves(self, feats: SequenceFeatures, scores: dict[str, np.ndarray] | None) -> np.ndarray:
        """P(purchase) at each discount level, [n, K] float32, monotone in the level."""
        x = np.ascontiguousarray(self._inputs(feats, scores if self.uses_sequence_outputs else None), np.float32)
        n = len(feats.length)
        parts = [self.sess.run([DIPN_OUTPUT], {DIPN_INPUT: x[s : s + BATCH * 8]})[0] for s in range(0, n, BATCH * 8)]
        curve = np.concatenate(parts) if parts else np.zeros((0, len(self.levels)), np.float32)
        if curve.shape != (n, len(self.levels)) or not np.isfinite(curve).all():
            raise RuntimeError(
                f"promotion model returned shape {curve.shape} / non-finite values; expected "
                f"({n}, {len(self.levels)}) probabilities"
            )
        return curve
