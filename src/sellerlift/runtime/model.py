"""One verified bundle, loaded once: features -> sequence scores, promotion curves, segments (no torch).

The server, the batch scorer, the training stages that need sequence scores and the
tests all run the ONNX models through :class:`SequenceModel` / :class:`PromotionModel`,
which a :class:`Runtime` holds for a bundle. Customers are scored in length-sorted
batches, each trimmed to its longest history, so memory is bounded by the batch and
the model runs over real events instead of padding.
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

from sellerlift.constants import (
    DIPN_INPUT,
    DIPN_OUTPUT,
    EMBEDDING_OUTPUT,
    HEADS,
    SCORE_OUTPUTS,
    SEQUENCE_INPUTS,
    horizons_of,
    horizons_of_outputs,
    score_outputs,
)
from sellerlift.features import FeatureSpec, SequenceFeatures, build_features, build_features_from_arrays
from sellerlift.runtime.bundle import BundleError, read_verified
from sellerlift.runtime.onnx import session
from sellerlift.schema import DISCOUNT_LEVELS, EVENT_TYPES

log = logging.getLogger("sellerlift.runtime")
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
    """sequence.onnx: features -> one probability per head, length-sorted and batched.

    The probability outputs are named after the horizons the model was trained for
    (``intent_7d``, ``churn_30d``, ...); ``outputs`` lists the file's names in head order and
    ``horizons`` the horizons they encode. ``horizons`` given (a manifest's) must agree with them.
    """

    def __init__(self, sess, batch: int = BATCH, horizons: dict | None = None):
        names_in = [i.name for i in sess.get_inputs()]
        names_out = [o.name for o in sess.get_outputs()]
        scores = [n for n in names_out if n != EMBEDDING_OUTPUT]
        try:
            found = horizons_of_outputs(scores)
        except ValueError as err:
            found = None
            why = str(err)
        if names_in != list(SEQUENCE_INPUTS) or found is None:
            raise BundleError(f"sequence.onnx has inputs {names_in} / outputs {names_out}; expected "
                              f"{list(SEQUENCE_INPUTS)} -> {list(SCORE_OUTPUTS)} (one intent_<days>d and one "
                              f"churn_<days>d output, named after the horizons)"
                              + ("" if found is not None else f": {why}"))
        if horizons is not None and horizons_of(horizons) != found:
            raise BundleError(f"sequence.onnx outputs {scores} encode horizons {found}, but the manifest records "
                              f"horizons {dict(horizons)}; expected outputs {list(score_outputs(horizons))}")
        self.outputs: list[str] = scores
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
        """``{output name: float32 [n]}`` for every customer of ``feats``, in its order."""
        n = len(feats.length)
        out = {name: np.empty(n, np.float32) for name in self.outputs}
        order = np.argsort(feats.length, kind="stable")
        for s in range(0, n, self.batch):
            rows = order[s:s + self.batch]
            width = max(int(feats.length[rows].max(initial=0)), 1)
            res = self.sess.run(self.outputs, {
                "event_type": feats.event_type[rows, :width], "numeric": feats.numeric[rows, :width],
                "length": feats.length[rows], "aggregates": feats.aggregates[rows]})
            for name, r in zip(self.outputs, res):
                out[name][rows] = r.reshape(-1)
        return out


class PromotionModel:
    """dipn.onnx: DIPN inputs (aggregates, optionally the sequence scores) -> conversion at each level."""

    def __init__(self, sess, uses_sequence_outputs: bool, levels: tuple[int, ...], input_names=None):
        from sellerlift.promotion_features import dipn_inputs

        if [i.name for i in sess.get_inputs()] != [DIPN_INPUT] or DIPN_OUTPUT not in [o.name for o in
                                                                                     sess.get_outputs()]:
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
        parts = [self.sess.run([DIPN_OUTPUT], {DIPN_INPUT: x[s:s + BATCH * 8]})[0] for s in range(0, n, BATCH * 8)]
        curve = np.concatenate(parts) if parts else np.zeros((0, len(self.levels)), np.float32)
        if curve.shape != (n, len(self.levels)) or not np.isfinite(curve).all():
            raise RuntimeError(f"promotion model returned shape {curve.shape} / non-finite values; expected "
                               f"({n}, {len(self.levels)}) probabilities")
        return curve


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
    def horizons(self) -> dict[str, int]:
        """``{"intent_days": ..., "churn_days": ...}`` the model was trained for (7 / 90 for old bundles)."""
        return dict(self.sequence.horizons)

    @property
    def data(self) -> str | None:
        """Name of the data set the bundle was trained on (``manifest["data"]``; None if not recorded)."""
        return self.manifest.get("data")

    # ---------------------------------------------------------- loading
    @classmethod
    def load(cls, bundle_dir: str | Path, source: str = "given", threads: int = 1, key: bytes | None = None,
             warm: bool = True) -> Runtime:
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
            raise BundleError(f"{bundle_dir}: bundle event types {list(spec.event_types)} differ from this "
                              f"package's schema {list(EVENT_TYPES)}")
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
            promotion = PromotionModel(_load_session(bundle_dir, "dipn", blobs, threads),
                                       bool(info.get("uses_sequence_outputs", False)), levels, info.get("inputs"))
        rt = cls(bundle_dir=bundle_dir, source=source, manifest=MappingProxyType(manifest),
                 manifest_sha256=vb.manifest_sha256, signed=vb.signed, spec=spec, sequence=sequence,
                 promotion=promotion, segments=segments, levels=levels,
                 prior=_prior(bundle_dir, manifest.get("cold_start"), sequence.outputs))
        if warm:
            rt.warm_up()
        log.info("loaded bundle %s (version %s, run %s, %s) in %.2fs; promotion model: %s", bundle_dir, rt.version,
                 rt.run_id, source, time.perf_counter() - t0, "yes" if promotion else "no")
        return rt

    def warm_up(self) -> None:
        """One real pass through every path, so the first request is not slow (and a broken model fails now)."""
        t = np.datetime64("2025-01-01T00:00:00", "us")
        batch = EventBatch(
            n=2, cust=np.array([1, 1], np.int64), ts=np.array([t - np.timedelta64(3, "D"), t - np.timedelta64(1, "D")]),
            type_code=np.array([EVENT_TYPES.index("visit"), EVENT_TYPES.index("purchase")], np.int8),
            amount=np.array([0.0, 10.0]), as_of=np.array([t, t]))
        try:
            feats = self.features(batch)
            scores = self.score(feats)
            self.assign_segments(feats)
            if self.promotion is not None:
                self.curves(feats, scores)
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
            return build_features_from_arrays(cust, ts, type_id, amount, int(cutoffs[0]), self.spec,
                                              customers=np.arange(b.n))
        parts, rows = [], []
        for c in cutoffs:
            who = np.flatnonzero(as_of == c)
            sel = np.isin(cust, who)
            parts.append(build_features_from_arrays(cust[sel], ts[sel], type_id[sel], amount[sel], int(c), self.spec,
                                                    customers=who))
            rows.append(who)
        return SequenceFeatures.concat(parts).take(np.argsort(np.concatenate(rows), kind="stable"))

    def features_of(self, events: pd.DataFrame, as_of, customers: np.ndarray | None = None) -> SequenceFeatures:
        """Standardised features from a contract events table (the batch scorer's input)."""
        return build_features(events, as_of, self.spec, customers=customers)

    # ---------------------------------------------------------- models
    def score(self, feats: SequenceFeatures) -> dict[str, np.ndarray]:
        """``{<outputs>}`` float32 [n] (e.g. ``intent_7d``, ``churn_90d``: named after the bundle's horizons, see
        :attr:`outputs`), plus ``prior`` (bool [n]): customers with no history get the bundle's calibrated
        cold-start prior instead of the model's output on an empty sequence."""
        out = self.sequence.predict(feats)
        prior = feats.length == 0
        if self.prior is not None and prior.any():
            for name, p in self.prior.items():
                out[name][prior] = np.float32(p)
        else:
            prior = np.zeros(len(prior), bool)
        out["prior"] = prior
        return out

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
            "cold_start_prior": dict(self.prior) if self.prior is not None else None,
        }


def _prior(bundle_dir: Path, prior: dict | None, outputs: list[str]) -> dict[str, float] | None:
    """The cold-start prior keyed by the output names (bundles write it under those names)."""
    if not prior:
        return None
    missing = [k for k in outputs if k not in prior]
    if missing:
        raise BundleError(f"{bundle_dir}: the manifest's cold_start prior has no {missing}; expected one rate per "
                          f"output {outputs}")
    return {k: float(prior[k]) for k in outputs}


def _load_session(bundle_dir: Path, name: str, blobs: dict[str, bytes], threads: int):
    try:
        return session(blobs[name], threads)
    except Exception as err:  # onnxruntime raises its own exception types
        raise BundleError(f"{bundle_dir}: {name}.onnx does not load in onnxruntime ({err})") from None
