"""Find, verify and load a bundle into an immutable :class:`Model`.

Only onnxruntime, NumPy, pandas and the project's torch-free modules
(features, schema, segment, allocate, promotion_features) are imported here.
Bundles are verified by :func:`sellerlift.bundle.read_verified`, which hashes
exactly the bytes that are then loaded, so a file swapped between check and
load cannot slip through.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from sellerlift.bundle import MANIFEST, BundleError  # noqa: F401  (BundleError is part of this module's API)
from sellerlift.bundle import read_verified as _read_verified
from sellerlift.features import FeatureSpec, SequenceFeatures, build_features_from_arrays
from sellerlift.schema import DISCOUNT_LEVELS, EVENT_TYPES

log = logging.getLogger("serve.bundle")

SEQUENCE_INPUTS = ("event_type", "numeric", "length", "aggregates")
SEQUENCE_OUTPUTS = ("intent_7d", "churn_90d", "customer_embedding")
DIPN_INPUT, DIPN_OUTPUT = "features", "curve"




# ------------------------------------------------------------------ finding


def _registry_db(settings) -> Path | None:
    if settings.registry_db:
        return Path(settings.registry_db)
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None  # a server: not resolvable
    return Path(settings.bundles_dir).resolve().parent / "mlruns" / "mlflow.db"


def champion_run_id(db: Path, model_name: str, alias: str) -> str | None:
    """run_id of ``model_name@alias`` read straight from MLflow's sqlite store (no mlflow import)."""
    if not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        try:
            row = con.execute(
                "SELECT mv.run_id FROM registered_model_aliases a JOIN model_versions mv "
                "ON a.name = mv.name AND a.version = mv.version WHERE a.name = ? AND a.alias = ? "
                "ORDER BY mv.version DESC LIMIT 1", (model_name, alias)).fetchone()
        finally:
            con.close()
    except sqlite3.Error as err:  # an older schema or a locked file: fall back, say why
        log.warning("could not read the MLflow registry at %s: %s", db, err)
        return None
    return row[0] if row and row[0] else None


def newest_bundle(bundles_dir: Path) -> Path | None:
    """The complete bundle (one with a manifest) written last."""
    if not bundles_dir.is_dir():
        return None
    cands = [p.parent for p in bundles_dir.glob(f"*/{MANIFEST}")]
    return max(cands, key=lambda p: (p / MANIFEST).stat().st_mtime, default=None)


def resolve_bundle(settings) -> tuple[Path, str]:
    """(bundle directory, how it was chosen): --bundle/SELLERLIFT_BUNDLE, then the registry alias, then the newest."""
    if settings.bundle:
        return Path(settings.bundle), "given (--bundle / SELLERLIFT_BUNDLE)"
    bundles_dir = Path(settings.bundles_dir)
    db = _registry_db(settings)
    if db is not None:
        run_id = champion_run_id(db, settings.registered_model, settings.model_alias)
        if run_id:
            cand = bundles_dir / run_id
            if (cand / MANIFEST).is_file():
                return cand, f"registry alias {settings.registered_model}@{settings.model_alias} (run {run_id})"
            log.warning("%s@%s points at run %s but %s has no bundle; using the newest bundle",
                        settings.registered_model, settings.model_alias, run_id, cand)
    newest = newest_bundle(bundles_dir)
    if newest is None:
        raise BundleError(f"no bundle to serve: none given (--bundle DIR or SELLERLIFT_BUNDLE), no "
                          f"{settings.registered_model}@{settings.model_alias} alias, and no complete bundle "
                          f"under {bundles_dir} (run `make train` first)")
    return newest, f"newest under {bundles_dir}"


# ------------------------------------------------------------------ verifying


def read_verified(bundle_dir: Path) -> tuple[dict, dict[str, bytes], str]:
    """Manifest, the verified bytes of every listed file, and the manifest's sha256."""
    return _read_verified(bundle_dir, required=("sequence", "feature_spec"))


# ------------------------------------------------------------------ the model


@dataclass(frozen=True)
class EventBatch:
    """A request's events as flat arrays (one row per event) plus per-customer as-of times."""

    n: int  # customers
    cust: np.ndarray  # [E] int64: position of the event's customer in the request
    ts: np.ndarray  # [E] datetime64[us], naive UTC
    type_code: np.ndarray  # [E] int8: index into EVENT_TYPES
    amount: np.ndarray  # [E] float64
    as_of: np.ndarray  # [n] datetime64[us], naive UTC


def _session(data: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting: on a small shared box a spinning intra-op pool steals the core the other
    # request (or worker) needs; with 1 thread per call (the default) there is no pool at all.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])


def _dipn_inputs_fn():
    try:
        from sellerlift.promotion_features import dipn_inputs
    except ImportError as err:
        raise BundleError("the bundle has a promotion model ('dipn') but sellerlift.promotion_features "
                          f"cannot be imported ({err}); upgrade the sellerlift package") from None
    return dipn_inputs


@dataclass(frozen=True)
class Model:
    """Everything one bundle serves. Immutable: a reload builds a new one and swaps the reference."""

    bundle_dir: Path
    source: str
    manifest: MappingProxyType
    manifest_sha256: str
    spec: FeatureSpec
    sequence: object  # onnxruntime.InferenceSession
    segments: object | None  # sellerlift.segment.SegmentModel
    dipn: object | None  # onnxruntime.InferenceSession
    dipn_inputs: object | None  # callable(feats, sequence_outputs) -> float32 [B, F]
    dipn_uses_sequence: bool
    levels: tuple[int, ...]
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        """Short id of the bundle: the manifest's sha256 prefix (covers every file's sha256)."""
        return self.manifest_sha256[:12]

    @property
    def run_id(self) -> str | None:
        return self.manifest.get("run_id")

    # ---------------------------------------------------------- loading
    @classmethod
    def load(cls, bundle_dir: str | Path, source: str = "given", ort_threads: int = 1) -> "Model":
        bundle_dir = Path(bundle_dir)
        t0 = time.perf_counter()
        manifest, blobs, msha = read_verified(bundle_dir)
        try:
            spec = FeatureSpec.from_json(json.loads(blobs["feature_spec"]))
        except (ValueError, TypeError) as err:
            raise BundleError(f"{bundle_dir}: feature_spec is not a valid FeatureSpec ({err})") from None
        if not spec.fitted:
            raise BundleError(f"{bundle_dir}: feature_spec is not fitted (no standardisation statistics)")
        if tuple(spec.event_types) != EVENT_TYPES:
            raise BundleError(f"{bundle_dir}: bundle event types {list(spec.event_types)} differ from this "
                              f"server's schema {list(EVENT_TYPES)}")
        try:
            seq = _session(blobs["sequence"], ort_threads)
        except Exception as err:  # onnxruntime raises its own exception types
            raise BundleError(f"{bundle_dir}: sequence.onnx does not load in onnxruntime ({err})") from None
        names_in = [i.name for i in seq.get_inputs()]
        names_out = [o.name for o in seq.get_outputs()]
        if names_in != list(SEQUENCE_INPUTS) or names_out[:2] != list(SEQUENCE_OUTPUTS[:2]):
            raise BundleError(f"{bundle_dir}: sequence.onnx has inputs {names_in} / outputs {names_out}; expected "
                              f"{list(SEQUENCE_INPUTS)} -> {list(SEQUENCE_OUTPUTS)}")
        segments = None
        if "segments" in blobs:
            from sellerlift.segment import SegmentModel

            try:
                segments = SegmentModel.from_json(json.loads(blobs["segments"]))
            except (ValueError, TypeError, KeyError) as err:
                raise BundleError(f"{bundle_dir}: segments.json is not a valid SegmentModel ({err})") from None
        levels = tuple(int(x) for x in manifest.get("discount_levels", DISCOUNT_LEVELS))
        dipn = dipn_inputs = None
        uses_seq = False
        if "dipn" in blobs:
            dipn_inputs = _dipn_inputs_fn()
            try:
                dipn = _session(blobs["dipn"], ort_threads)
            except Exception as err:
                raise BundleError(f"{bundle_dir}: dipn.onnx does not load in onnxruntime ({err})") from None
            if [i.name for i in dipn.get_inputs()] != [DIPN_INPUT] or DIPN_OUTPUT not in [
                    o.name for o in dipn.get_outputs()]:
                raise BundleError(f"{bundle_dir}: dipn.onnx must map '{DIPN_INPUT}' -> '{DIPN_OUTPUT}'")
            info = manifest.get("dipn") or {}
            width = dipn.get_inputs()[0].shape[-1]
            if "uses_sequence_outputs" in info:
                uses_seq = bool(info["uses_sequence_outputs"])
            else:  # older manifests: tell from the input width
                from sellerlift.features import AGGREGATES

                uses_seq = isinstance(width, int) and width != len(AGGREGATES)
            names = info.get("inputs")
            if isinstance(width, int) and isinstance(names, list) and len(names) != width:
                raise BundleError(f"{bundle_dir}: manifest lists {len(names)} DIPN inputs but dipn.onnx takes {width}")
        model = cls(bundle_dir=bundle_dir, source=source, manifest=MappingProxyType(manifest), manifest_sha256=msha,
                    spec=spec, sequence=seq, segments=segments, dipn=dipn, dipn_inputs=dipn_inputs,
                    dipn_uses_sequence=uses_seq, levels=levels)
        model.warm_up()
        log.info("loaded bundle %s (version %s, run %s, %s) in %.2fs; promotion model: %s", bundle_dir,
                 model.version, model.run_id, source, time.perf_counter() - t0, "yes" if dipn else "no")
        return model

    def warm_up(self) -> None:
        """One real pass through every path (features, both models, segments) so the first request is not slow."""
        t = np.datetime64("2025-01-01T00:00:00", "us")
        batch = EventBatch(
            n=2, cust=np.array([1, 1], np.int64), ts=np.array([t - np.timedelta64(3, "D"), t - np.timedelta64(1, "D")]),
            type_code=np.array([EVENT_TYPES.index("visit"), EVENT_TYPES.index("purchase")], np.int8),
            amount=np.array([0.0, 10.0]), as_of=np.array([t, t]))
        try:
            feats = self.features(batch)
            out = self.run_sequence(feats)
            self.assign_segments(feats)
            if self.dipn is not None:
                self.run_curves(feats, out)
        except BundleError:
            raise
        except Exception as err:
            raise BundleError(f"{self.bundle_dir}: warm-up inference failed ({type(err).__name__}: {err})") from None

    # ---------------------------------------------------------- inference
    def features(self, b: EventBatch) -> SequenceFeatures:
        """Standardised features of the batch's customers, in request order.

        The request's arrays go straight to ``build_features_from_arrays`` (no
        DataFrame), one call per distinct as-of time (usually exactly one).
        """
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

    def run_sequence(self, feats: SequenceFeatures) -> dict[str, np.ndarray]:
        names = [o.name for o in self.sequence.get_outputs()]
        out = self.sequence.run(names, {
            "event_type": feats.event_type, "numeric": feats.numeric,
            "length": feats.length, "aggregates": feats.aggregates})
        return dict(zip(names, out))

    def assign_segments(self, feats: SequenceFeatures) -> tuple[np.ndarray, np.ndarray] | None:
        if self.segments is None:
            return None
        # same numbers as segments.assign(feats.rfm()), without building a DataFrame per request
        idx = self.segments.assign(feats.raw_columns(self.segments.feature_names))
        return idx, np.asarray(self.segments.names, dtype=object)[idx]

    def run_curves(self, feats: SequenceFeatures, sequence_outputs: dict) -> np.ndarray:
        """Conversion probability at each discount level, [n, K] float32."""
        if self.dipn is None:
            raise RuntimeError("no promotion model in this bundle")
        x = self.dipn_inputs(feats, sequence_outputs if self.dipn_uses_sequence else None)
        x = np.ascontiguousarray(x, dtype=np.float32)
        (curve,) = self.dipn.run([DIPN_OUTPUT], {DIPN_INPUT: x})
        if curve.shape != (len(feats.length), len(self.levels)) or not np.isfinite(curve).all():
            raise RuntimeError(f"promotion model returned shape {curve.shape} / non-finite values; expected "
                               f"({len(feats.length)}, {len(self.levels)}) probabilities")
        return curve

    def describe(self) -> dict:
        m = self.manifest
        return {
            "version": self.version,
            "manifest_sha256": self.manifest_sha256,
            "bundle_dir": str(self.bundle_dir),
            "source": self.source,
            "loaded_at": pd.Timestamp(self.loaded_at, unit="s", tz="UTC").isoformat(),
            "run_id": m.get("run_id"),
            "model": m.get("model"),
            "data": m.get("data"),
            "cutoff": m.get("cutoff"),
            "format": m.get("format"),
            "files": {k: dict(v) for k, v in m.get("files", {}).items()},
            "metrics": dict(m.get("metrics", {})),
            "discount_levels": list(self.levels),
            "max_events_used": int(self.spec.max_len),
            "segments": list(self.segments.names) if self.segments is not None else None,
            "promotion_model": self.dipn is not None,
        }
