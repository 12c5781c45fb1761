"""The promotion models in the MLflow model registry, like the sequence model: a signature and descriptions.

``dipn.onnx`` (:func:`register_dipn`, called by the promotion stage) and ``enduring.onnx``
(:func:`register_enduring`, for the enduring stage) are registered as ONNX model versions of their run,
with the tensors they take and give as the signature, a description of what the model is and one of the
version (data set, fingerprint, cutoff, run, headline metrics). With ``tracking.per_data_set`` (the
default) each data set has its own registered model, ``<registered_model>-<data>``, as the sequence model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sellerlift import tracking
from sellerlift.runtime.bundle import registered_model_name
from sellerlift.schema import DISCOUNT_LEVELS
from sellerlift.stages.context import RunContext


def registry_name(ctx: RunContext, base: str) -> str:
    """``base`` for this run's data set (``base-<data>`` with ``tracking.per_data_set``, the default)."""
    tcfg = ctx.cfg.get("tracking") or {}
    return registered_model_name(str(base), ctx.tables.name) if tcfg.get("per_data_set", True) else str(base)


def _fmt(m: dict, key: str) -> str:
    v = m.get(key)
    return f"{v:.4f}" if v is not None and np.isfinite(v) else "—"


def _version_doc(ctx: RunContext, what: str, run_id: str, m: dict, keys) -> str:
    t = ctx.tables
    return f"{what} on {t.name} (fingerprint {t.fingerprint}, cutoff {t.cutoff.date()}), run {run_id}: " + ", ".join(
        f"{k} {_fmt(m, k)}" for k in keys
    )


def register_dipn(ctx: RunContext, run_id: str, onnx_path: Path, base: str, metrics: dict) -> str:
    """Register ``dipn.onnx`` of run ``run_id`` with its signature and descriptions; returns the registered name."""
    info = ctx.bundle_extra.get("dipn") or {}
    n_inputs, k = int(info.get("n_inputs", 0)) or -1, len(DISCOUNT_LEVELS)
    name = registry_name(ctx, base)
    mv = tracking.register_onnx(
        ctx.cfg.logger.tracking_uri,
        run_id,
        onnx_path,
        name,
        artifact_name="dipn_onnx_model",
        signature=tracking.dipn_signature(n_inputs, k),
    )
    levels = ", ".join(f"{d} %" for d in DISCOUNT_LEVELS)
    model_doc = (
        f"sellerlift DIPN (deep isotonic promotion network) trained on data set '{ctx.tables.name}' only: "
        f"features [batch, {n_inputs}] (the standardised aggregates"
        f"{' + the sequence model scores' if info.get('uses_sequence_outputs') else ''}, see the bundle's "
        f"manifest dipn.inputs) -> curve [batch, {k}], P(purchase within the offer's week) at each discount "
        f"level ({levels}), monotone in the level by construction (softplus increments), trained with "
        "inverse propensity weights on the logged campaigns."
    )
    tracking.describe_registered(
        ctx.client,
        name,
        getattr(mv, "version", mv),
        model_doc,
        _version_doc(
            ctx,
            "DIPN",
            run_id,
            metrics,
            ("test/curve_rmse", "test/uplift_rmse", "test/offer_ece", "alloc/medium/share_of_oracle/dipn"),
        ),
    )
    return name


def register_enduring(
    ctx: RunContext, run_id: str, onnx_path: Path, n_inputs: int, metrics: dict, base: str | None = None
) -> str:
    """Register ``enduring.onnx`` of run ``run_id`` (the enduring stage's child run) with its signature and
    descriptions; ``base`` defaults to ``promotion.enduring.registered_model`` (sellerlift-enduring)."""
    ecfg = (ctx.cfg.get("promotion") or {}).get("enduring") or {}
    info = ctx.bundle_extra.get("enduring") or {}
    h, k = int(info.get("horizon_days", ecfg.get("horizon_days", 90))), len(DISCOUNT_LEVELS)
    name = registry_name(ctx, base or ecfg.get("registered_model", "sellerlift-enduring"))
    mv = tracking.register_onnx(
        ctx.cfg.logger.tracking_uri,
        run_id,
        onnx_path,
        name,
        artifact_name="enduring_onnx_model",
        signature=tracking.enduring_signature(int(n_inputs), k),
    )
    model_doc = (
        f"sellerlift enduring response (CDEE-style multi-task network) trained on data set "
        f"'{ctx.tables.name}' only: features [batch, {n_inputs}] (as the DIPN's) -> conversion, retention, "
        f"revenue [batch, {k}] per discount level: P(purchase in the offer's week) (monotone in the level), "
        f"P(a purchase after the week, by day {h}) and the expected {h}-day revenue before discount in units "
        f"of revenue_scale={info.get('revenue_scale', '?')} (retention and revenue unconstrained: a discount "
        "can teach a customer to wait for one); trained with inverse propensity weights on logged offers "
        f"with a full {h}-day follow-up."
    )
    keys = [k_ for k_ in metrics if k_.startswith("enduring/enduring/")][:4] or [
        "export/enduring_onnx_parity_max_abs_diff"
    ]
    tracking.describe_registered(
        ctx.client,
        name,
        getattr(mv, "version", mv),
        model_doc,
        _version_doc(ctx, "enduring response", run_id, metrics, keys),
    )
    return name
