"""Customer value and the loyalty score, from a bundle's sequence outputs (no new model, no torch).

**Customer value** is the sequence model's value head: ``value_<d>d`` (expected spend in the next d days,
d = the churn horizon) and ``purchases_<d>d`` (expected days with a purchase). The bundle's manifest
``value`` section holds what the runtime needs besides the ONNX outputs: their names and horizon, the
cold-start prior (the mean spend and purchase days of the newest training customers, as for intent and
churn) and the *reference distribution*: quantiles of the predicted spend of the training customers.

**Loyalty** (0-1) combines the two things a seller means by a loyal customer, that they stay and that
they are worth keeping::

    loyalty = sqrt( P(no churn) x value percentile )

the geometric mean of the predicted retention ``1 - churn_<d>d`` and the customer's predicted 90-day
value as a percentile of the training customers' predicted values (mid-rank among the reference
quantiles, so 0.5 is a median customer). It is 0 when either part is 0, 1 only for a customer certain to
buy again who is worth more than every reference customer, non-decreasing in the value and
non-increasing in the churn probability; a median-value customer with 80 % retention scores 0.63. It
is comparable across customers of one bundle (one reference distribution), not across bundles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sellerlift.runtime.bundle import BundleError

DEFINITION = (
    "sqrt((1 - churn) * value percentile): the geometric mean of the predicted retention and the "
    "customer's predicted value as a percentile of the training customers' predicted values"
)


@dataclass(frozen=True)
class ValueInfo:
    """The manifest's ``value`` section, checked against sequence.onnx's value outputs."""

    outputs: tuple[str, ...]  # ("value_90d", "purchases_90d")
    horizon_days: int
    prior: dict[str, float] | None  # cold-start prior per value output
    reference: np.ndarray | None  # sorted quantiles of the training customers' predicted spend (loyalty)

    @property
    def spend(self) -> str:
        return self.outputs[0]

    @classmethod
    def from_manifest(cls, bundle_dir, entry: dict | None, value_outputs: list[str]) -> ValueInfo | None:
        """None for a model without the value head; BundleError when the manifest and the model disagree."""
        if not value_outputs:
            if entry:
                raise BundleError(
                    f"{bundle_dir}: the manifest has a 'value' section but sequence.onnx has no "
                    "value outputs (value_<d>d, purchases_<d>d)"
                )
            return None
        entry = dict(entry or {})
        listed = list(entry.get("outputs") or value_outputs)
        if listed != list(value_outputs):
            raise BundleError(
                f"{bundle_dir}: the manifest's value outputs {listed} differ from sequence.onnx's {list(value_outputs)}"
            )
        prior = entry.get("cold_start")
        if prior is not None:
            missing = [k for k in value_outputs if k not in prior]
            if missing:
                raise BundleError(f"{bundle_dir}: the manifest's value cold_start prior has no {missing}")
            prior = {k: float(prior[k]) for k in value_outputs}
        ref = entry.get("reference_quantiles")
        if ref is not None:
            ref = np.asarray(ref, dtype=np.float64)
            if ref.ndim != 1 or len(ref) < 2 or not np.isfinite(ref).all() or (np.diff(ref) < 0).any():
                raise BundleError(f"{bundle_dir}: value.reference_quantiles must be >= 2 sorted finite numbers")
        days = int(value_outputs[0].rsplit("_", 1)[1][:-1])
        return cls(tuple(value_outputs), days, prior, ref)


def reference_quantiles(values: np.ndarray, n: int = 1001) -> list[float]:
    """``n`` evenly spaced quantiles (0 .. 1) of ``values``: the loyalty score's reference distribution."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return [0.0, 0.0]
    return np.quantile(v, np.linspace(0.0, 1.0, n)).tolist()


def value_percentile(value, reference) -> np.ndarray:
    """Mid-rank of each value among the reference quantiles, in [0, 1], non-decreasing in the value."""
    ref = np.asarray(reference, dtype=np.float64)
    v = np.nan_to_num(np.asarray(value, dtype=np.float64), nan=0.0)
    lo, hi = np.searchsorted(ref, v, side="left"), np.searchsorted(ref, v, side="right")
    return (lo + hi) / (2.0 * len(ref))


def loyalty_score(churn, value, reference) -> np.ndarray:
    """float64 [n] in [0, 1]: ``sqrt((1 - churn) * value_percentile(value, reference))`` (module docstring)."""
    retention = 1.0 - np.clip(np.nan_to_num(np.asarray(churn, dtype=np.float64), nan=1.0), 0.0, 1.0)
    return np.sqrt(retention * value_percentile(value, reference))


def loyalty_of(rt, events: pd.DataFrame, as_of, customers: np.ndarray | None = None) -> pd.DataFrame:
    """Loyalty of ``customers`` (default: everyone in ``events``) as of ``as_of``, from a contract events table.

    Columns: ``customer_id``, the churn output (``churn_<d>d``), ``value_<d>d``, ``value_percentile``, ``loyalty``
    (what the closed loop reports per policy: call it on each policy's events at the start and at the end).
    Raises ValueError when the bundle has no value head (or no reference distribution).
    """
    if rt.value is None or rt.value.reference is None:
        raise ValueError(
            f"{rt.bundle_dir}: the bundle has no customer-value head with a reference distribution "
            "(train with model.module.net.value=true): no loyalty score"
        )
    if customers is None:
        customers = np.sort(pd.unique(events["customer_id"].to_numpy()))
    feats = rt.features_of(events, as_of, customers=customers)
    scores = rt.score(feats)
    churn, value = scores[rt.sequence.heads["churn"]], scores[rt.value.spend]
    return pd.DataFrame(
        {
            "customer_id": np.asarray(customers),
            rt.sequence.heads["churn"]: churn,
            rt.value.spend: value,
            "value_percentile": value_percentile(value, rt.value.reference),
            "loyalty": loyalty_score(churn, value, rt.value.reference),
        }
    )
