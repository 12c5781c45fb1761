"""One verified bundle, loaded once: features -> sequence scores (and customer value, loyalty), promotion curves,
the enduring response, segments and action segments (no torch).

The server, the batch scorer, the training stages that need sequence scores and the
tests all run the ONNX models through :class:`SequenceModel` / :class:`PromotionModel` /
:class:`~sellerlift.runtime.enduring.EnduringModel`, which a :class:`Runtime` holds for a
bundle. Every file is loaded from the bytes the manifest's sha256 was checked on
(:func:`~sellerlift.runtime.bundle.read_verified`); what a bundle lacks (older bundles: no
value head, no enduring model, no action segments) is None and is simply not served.
Customers are scored in length-sorted batches, each trimmed to its longest history, so
memory is bounded by the batch and the model runs over real events instead of padding.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from sellerlift.features import FeatureSpec, SequenceFeatures, build_features, build_features_from_arrays
from sellerlift.runtime.bundle import BundleError, read_verified
from sellerlift.runtime.enduring import EnduringModel, action_inputs, kept_value
from sellerlift.runtime.loyalty import DEFINITION as LOYALTY_DEFINITION
from sellerlift.runtime.loyalty import ValueInfo, loyalty_score
from sellerlift.runtime.models import BATCH, EventBatch, PromotionModel, SequenceModel  # noqa: F401 (re-exported)
from sellerlift.runtime.onnx import session
from sellerlift.schema import DISCOUNT_LEVELS, EVENT_TYPES

log = logging.getLogger("sellerlift.runtime")


@dataclass(frozen=True)
class Runtime:
    """Everything one bundle serves. Immutable: a reload builds a new one and swaps the reference."""

    bundle_dir: Path
    source: str
    manifest: MappingProxyType
    manifest_sha256: str
    signed: bool
    spec: FeatureSpec
    sequence: SequenceModel
    promotion: PromotionModel | None
    segments: object | None  # sellerlift.segment.SegmentModel
    levels: tuple[int, ...]
    prior: dict | None  # cold-start prior: {output name: probability}, from the manifest
    value: ValueInfo | None = None  # the customer-value head (outputs, prior, loyalty reference), if any
    enduring: EnduringModel | None = None  # enduring.onnx: conversion, retention, revenue per level
    action_segments: object | None = None  # sellerlift.action_segments.ActionSegmentModel
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        """Short id of the bundle: the manifest's sha256 prefix (covers every file's sha256)."""
        return self.manifest_sha256[:12]

    @property
    def run_id(self) -> str | None:
        return self.manifest.get("run_id")

    @property
    def outputs(self) -> tuple[str, ...]:
        """Names of the probability outputs (``score()`` keys, scorer columns), in head order."""
        return tuple(self.sequence.outputs)

    @property
    def value_outputs(self) -> tuple[str, ...]:
        """Names of the customer-value outputs (``value_90d``, ``purchases_90d``); () for a bundle without them."""
        return tuple(self.sequence.value_outputs)

    @property
    def has_loyalty(self) -> bool:
        return self.value is not None and self.value.reference is not None

    @property
    def margin(self) -> float:
        """The margin the bundle's promotion models were trained and evaluated with (``dipn.margin``, else 0.4)."""
        return float((self.manifest.get("dipn") or {}).get("margin", 0.4))

    @property
    def value_fallback(self) -> float:
        """Order value of a customer without purchases (``dipn.value_fallback``)."""
        return float((self.manifest.get("dipn") or {}).get("value_fallback", 0.0))

    @property
    def horizons(self) -> dict[str, int]:
        """``{"intent_days": ..., "churn_days": ...}`` the model was trained for (7 / 90 for old bundles)."""
        return dict(self.sequence.horizons)

    @property
    def data(self) -> str | None:
        """Name of the data set the bundle was trained on (``manifest["data"]``; None if not recorded)."""
        return self.manifest.get("data")

    # ---------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        source: str = "given",
        threads: int = 1,
        key: bytes | None = None,
        warm: bool = True,
    ) -> Runtime:
        """Verify (sha256, signature when a key is set) and load a bundle; raises :class:`BundleError`."""
        bundle_dir = Path(bundle_dir)
        t0 = time.perf_counter()
        vb = read_verified(bundle_dir, required=("sequence", "feature_spec"), key=key)
        manifest, blobs = vb.manifest, vb.blobs
        try:
            spec = FeatureSpec.from_json(json.loads(blobs["feature_spec"]))
        except (ValueError, TypeError) as err:
            raise BundleError(f"{bundle_dir}: feature_spec is not a valid FeatureSpec ({err})") from None
        if not spec.fitted:
            raise BundleError(f"{bundle_dir}: feature_spec is not fitted (no standardisation statistics)")
        if tuple(spec.event_types) != EVENT_TYPES:
            raise BundleError(
                f"{bundle_dir}: bundle event types {list(spec.event_types)} differ from this "
                f"package's schema {list(EVENT_TYPES)}"
            )
        horizons = manifest.get("horizons")  # absent in bundles from before names followed the horizons
        sequence = SequenceModel(_load_session(bundle_dir, "sequence", blobs, threads), horizons=horizons)
        segments = None
        if "segments" in blobs:
            from sellerlift.segment import SegmentModel

            try:
                segments = SegmentModel.from_json(json.loads(blobs["segments"]))
            except (ValueError, TypeError, KeyError) as err:
                raise BundleError(f"{bundle_dir}: segments.json is not a valid SegmentModel ({err})") from None
        levels = tuple(int(x) for x in manifest.get("discount_levels", DISCOUNT_LEVELS))
        promotion = None
        if "dipn" in blobs:
            info = manifest.get("dipn") or {}
            promotion = PromotionModel(
                _load_session(bundle_dir, "dipn", blobs, threads),
                bool(info.get("uses_sequence_outputs", False)),
                levels,
                info.get("inputs"),
            )
        enduring = _enduring(bundle_dir, manifest, blobs, threads, promotion, levels)
        action = _action_segments(bundle_dir, blobs, promotion, enduring)
        rt = cls(
            bundle_dir=bundle_dir,
            source=source,
            manifest=MappingProxyType(manifest),
            manifest_sha256=vb.manifest_sha256,
            signed=vb.signed,
            spec=spec,
            sequence=sequence,
            promotion=promotion,
            segments=segments,
            levels=levels,
            prior=_prior(bundle_dir, manifest.get("cold_start"), sequence.outputs),
            value=ValueInfo.from_manifest(bundle_dir, manifest.get("value"), sequence.value_outputs),
            enduring=enduring,
            action_segments=action,
        )
        if warm:
            rt.warm_up()
        log.info(
            "loaded bundle %s (version %s, run %s, %s) in %.2fs; promotion model: %s, enduring: %s, value head: "
            "%s, action segments: %s",
            bundle_dir,
            rt.version,
            rt.run_id,
            source,
            time.perf_counter() - t0,
            *("yes" if x is not None else "no" for x in (promotion, enduring, rt.value, action)),
        )
        return rt

    def warm_up(self) -> None:
        """One real pass through every path, so the first request is not slow (and a broken model fails now)."""
        t = np.datetime64("2025-01-01T00:00:00", "us")
        batch = EventBatch(
            n=2,
            cust=np.array([1, 1], np.int64),
            ts=np.array([t - np.timedelta64(3, "D"), t - np.timedelta64(1, "D")]),
            type_code=np.array([EVENT_TYPES.index("visit"), EVENT_TYPES.index("purchase")], np.int8),
            amount=np.array([0.0, 10.0]),
            as_of=np.array([t, t]),
        )
        try:
            feats = self.features(batch)
            scores = self.score(feats)
            self.assign_segments(feats)
            self.loyalty(scores)
            if self.promotion is not None:
                curves = self.curves(feats, scores)
                if self.enduring is not None:
                    self.assign_action_segments(feats, scores, curves, self.enduring_response(feats, scores))
        except Exception as err:
            raise BundleError(f"{self.bundle_dir}: warm-up inference failed ({type(err).__name__}: {err})") from None

    # ---------------------------------------------------------- features
    def features(self, b: EventBatch) -> SequenceFeatures:
        """Standardised features of the batch's customers, in request order (one call per distinct as-of)."""
        order = np.lexsort((b.ts, b.cust))  # stable: by customer, then time; ties keep request order
        cust, type_id, amount = b.cust[order], b.type_code[order].astype(np.int64) + 1, b.amount[order]
        ts = b.ts[order].astype("datetime64[us]").astype(np.int64)
        as_of = b.as_of.astype("datetime64[us]").astype(np.int64)
        cutoffs = np.unique(as_of)
        if len(cutoffs) == 1:
            return build_features_from_arrays(
                cust, ts, type_id, amount, int(cutoffs[0]), self.spec, customers=np.arange(b.n)
            )
        parts, rows = [], []
        for c in cutoffs:
            who = np.flatnonzero(as_of == c)
            sel = np.isin(cust, who)
            parts.append(
                build_features_from_arrays(
                    cust[sel], ts[sel], type_id[sel], amount[sel], int(c), self.spec, customers=who
                )
            )
            rows.append(who)
        return SequenceFeatures.concat(parts).take(np.argsort(np.concatenate(rows), kind="stable"))

    def features_of(self, events: pd.DataFrame, as_of, customers: np.ndarray | None = None) -> SequenceFeatures:
        """Standardised features from a contract events table (the batch scorer's input)."""
        return build_features(events, as_of, self.spec, customers=customers)

    # ---------------------------------------------------------- models
    def score(self, feats: SequenceFeatures) -> dict[str, np.ndarray]:
        """``{<outputs>, <value outputs>}`` float32 [n] (e.g. ``intent_7d``, ``churn_90d``, ``value_90d``,
        ``purchases_90d``: named after the bundle's horizons, see :attr:`outputs` / :attr:`value_outputs`), plus
        ``prior`` (bool [n]): customers with no history get the bundle's calibrated cold-start prior (of the
        value outputs too, when the manifest has one) instead of the model's output on an empty sequence."""
        out = self.sequence.predict(feats)
        prior = feats.length == 0
        if self.prior is not None and prior.any():
            for name, p in {**self.prior, **((self.value.prior or {}) if self.value is not None else {})}.items():
                out[name][prior] = np.float32(p)
        else:
            prior = np.zeros(len(prior), bool)
        out["prior"] = prior
        return out

    def loyalty(self, scores: dict[str, np.ndarray]) -> np.ndarray | None:
        """The loyalty score (0-1, :mod:`sellerlift.runtime.loyalty`) of each scored customer; None when the bundle
        has no value head with a reference distribution."""
        if not self.has_loyalty:
            return None
        return loyalty_score(scores[self.sequence.heads["churn"]], scores[self.value.spend], self.value.reference)

    def kept_value(self, scores: dict[str, np.ndarray], margin) -> np.ndarray | None:
        """[n] the margin a kept customer brings over the churn horizon (:func:`~sellerlift.runtime.enduring.
        kept_value`, what ``enduring_value="retention"`` values retention at); None without the value head."""
        if self.value is None:
            return None
        return kept_value(scores[self.value.spend], scores[self.sequence.heads["churn"]], margin)

    def enduring_response(self, feats: SequenceFeatures, scores: dict | None = None) -> dict[str, np.ndarray] | None:
        """{conversion, retention, revenue, later_revenue} [n, K] of the enduring model (None without it)."""
        if self.enduring is None:
            return None
        if scores is None and self.enduring.uses_sequence_outputs:
            scores = self.score(feats)
        return self.enduring.predict(feats, scores)

    def basket(self, feats: SequenceFeatures) -> np.ndarray:
        """Expected order value per customer for the promotion models: the observed mean basket, else the bundle's
        fallback (:func:`sellerlift.promotion_features.order_value`)."""
        from sellerlift.promotion_features import order_value

        return order_value(feats, self.value_fallback)

    def assign_action_segments(
        self, feats: SequenceFeatures, scores=None, curves=None, enduring=None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(action segment index, name) per customer from RFM + the curves + the enduring response, or None when the
        bundle has no action segments (``curves`` / ``enduring`` are computed when not given)."""
        if self.action_segments is None:
            return None
        if scores is None:
            scores = self.score(feats)
        curves = self.curves(feats, scores) if curves is None else curves
        enduring = self.enduring_response(feats, scores) if enduring is None else enduring
        X = action_inputs(feats, curves, enduring, self.basket(feats), self.margin, self.levels)
        idx = self.action_segments.assign(X)
        return idx, np.asarray(self.action_segments.names, dtype=object)[idx]

    def assign_segments(self, feats: SequenceFeatures) -> tuple[np.ndarray, np.ndarray] | None:
        """(segment index, segment name) per customer, or None when the bundle has no segments."""
        if self.segments is None:
            return None
        idx = self.segments.assign(feats.raw_columns(self.segments.feature_names))  # no DataFrame per request
        return idx, np.asarray(self.segments.names, dtype=object)[idx]

    def curves(self, feats: SequenceFeatures, scores: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Conversion probability at each discount level, [n, K] float32."""
        if self.promotion is None:
            raise RuntimeError("no promotion model in this bundle")
        if scores is None and self.promotion.uses_sequence_outputs:
            scores = self.score(feats)
        return self.promotion.curves(feats, scores)

    def describe(self) -> dict:
        m = self.manifest
        return {
            "version": self.version,
            "manifest_sha256": self.manifest_sha256,
            "signed": self.signed,
            "bundle_dir": str(self.bundle_dir),
            "source": self.source,
            "loaded_at": pd.Timestamp(self.loaded_at, unit="s", tz="UTC").isoformat(),
            "run_id": m.get("run_id"),
            "model": m.get("model"),
            "data": m.get("data"),
            "data_fingerprint": m.get("data_fingerprint"),
            "outputs": list(self.outputs),
            "horizons": self.horizons,
            "cutoff": m.get("cutoff"),
            "format": m.get("format"),
            "files": {k: dict(v) for k, v in m.get("files", {}).items()},
            "metrics": dict(m.get("metrics", {})),
            "discount_levels": list(self.levels),
            "max_events_used": int(self.spec.max_len),
            "segments": list(self.segments.names) if self.segments is not None else None,
            "promotion_model": self.promotion is not None,
            "cold_start_prior": {**(self.prior or {}), **((self.value.prior or {}) if self.value else {})} or None,
            "value_outputs": list(self.value_outputs),
            "loyalty": LOYALTY_DEFINITION if self.has_loyalty else None,
            "enduring_model": (
                {"horizon_days": self.enduring.horizon_days, "outputs": ["conversion", "retention", "revenue"]}
                if self.enduring is not None
                else None
            ),
            "action_segments": list(self.action_segments.names) if self.action_segments is not None else None,
        }


def _prior(bundle_dir: Path, prior: dict | None, outputs: list[str]) -> dict[str, float] | None:
    """The cold-start prior keyed by the output names (bundles write it under those names)."""
    if not prior:
        return None
    missing = [k for k in outputs if k not in prior]
    if missing:
        raise BundleError(
            f"{bundle_dir}: the manifest's cold_start prior has no {missing}; expected one rate per output {outputs}"
        )
    return {k: float(prior[k]) for k in outputs}


def _enduring(bundle_dir: Path, manifest: dict, blobs: dict, threads: int, promotion, levels) -> EnduringModel | None:
    """enduring.onnx from its verified bytes, with the manifest's ``enduring`` section; None when absent."""
    if "enduring" not in blobs:
        return None
    info = manifest.get("enduring")
    if not isinstance(info, dict):
        raise BundleError(
            f"{bundle_dir}: enduring.onnx is listed but the manifest has no 'enduring' section "
            "(revenue_scale, horizon_days, uses_sequence_outputs)"
        )
    if promotion is None:
        raise BundleError(f"{bundle_dir}: enduring.onnx needs dipn.onnx in the same bundle (its conversion curve)")
    model = EnduringModel(_load_session(bundle_dir, "enduring", blobs, threads), info)
    width = model.sess.get_outputs()[0].shape[-1]
    if isinstance(width, int) and width != len(levels):
        raise BundleError(f"{bundle_dir}: enduring.onnx gives {width} levels, the bundle has {len(levels)}")
    return model


def _action_segments(bundle_dir: Path, blobs: dict, promotion, enduring):
    """action_segments.json from its verified bytes (an ActionSegmentModel, checked); None when absent."""
    if "action_segments" not in blobs:
        return None
    from sellerlift.action_segments import FEATURES, ActionSegmentModel

    if promotion is None or enduring is None:
        raise BundleError(
            f"{bundle_dir}: action_segments.json needs dipn.onnx and enduring.onnx (its features are "
            "the curves and the enduring response)"
        )
    try:
        m = ActionSegmentModel.from_json(json.loads(blobs["action_segments"]))
        C = np.asarray(m.centroids, dtype=np.float64)
        ok = (
            list(m.feature_names) == list(FEATURES)
            and C.shape == (m.k, len(FEATURES))
            and len(m.names) == m.k
            and len(m.mean) == len(m.scale) == len(FEATURES)
            and np.isfinite(C).all()
            and min(m.scale) > 0
        )
    except (ValueError, TypeError, KeyError) as err:
        raise BundleError(f"{bundle_dir}: action_segments.json is not a valid ActionSegmentModel ({err})") from None
    if not ok:
        raise BundleError(
            f"{bundle_dir}: action_segments.json does not match this package's action features "
            f"{list(FEATURES)} (k centroids of that width, k names, positive scales)"
        )
    return m


def _load_session(bundle_dir: Path, name: str, blobs: dict[str, bytes], threads: int):
    try:
        return session(blobs[name], threads)
    except Exception as err:  # onnxruntime raises its own exception types
        raise BundleError(f"{bundle_dir}: {name}.onnx does not load in onnxruntime ({err})") from None
