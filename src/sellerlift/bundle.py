"""The serving bundle on disk: writing it and verifying it (NumPy-free of torch, used by serve/).

A bundle is a directory::

    manifest.json      files with sha256, feature spec, levels, metrics, versions (written last)
    sequence.onnx      (event_type, numeric, length, aggregates) -> intent_7d, churn_90d, customer_embedding
    feature_spec.json  the fitted FeatureSpec (same content as in the manifest)
    segments.json      RFM segment model (plain data), dipn.onnx: promotion curves (when trained)

The manifest is written through a temp file + rename after every other file,
so a half-written bundle never looks complete.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sellerlift.features import FeatureSpec
from sellerlift.schema import DISCOUNT_LEVELS, atomic_write_text, sha256_file  # noqa: F401 (re-exported)

MANIFEST = "manifest.json"
SEQUENCE_INPUTS = ["event_type", "numeric", "length", "aggregates"]
SEQUENCE_OUTPUTS = ["intent_7d", "churn_90d", "customer_embedding"]


class BundleError(ValueError):
    """A bundle that cannot be used: missing, incomplete, tampered or inconsistent."""


def write_bundle(bundle_dir: str | Path, files: dict[str, Path], spec: FeatureSpec, metrics: dict,
                 extra: dict | None = None) -> Path:
    """Write ``feature_spec.json`` and the manifest (last) for files already inside ``bundle_dir``."""
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(bundle_dir / "feature_spec.json", json.dumps(spec.to_json(), indent=2))
    entries = {"feature_spec": bundle_dir / "feature_spec.json", **files}
    manifest = {
        "format": "sellerlift-bundle/1",
        "files": {name: {"path": Path(p).name, "sha256": sha256_file(p)} for name, p in entries.items()},
        "feature_spec": spec.to_json(),
        "discount_levels": list(DISCOUNT_LEVELS),
        "inputs": SEQUENCE_INPUTS,
        "outputs": SEQUENCE_OUTPUTS,
        "metrics": {k: float(v) for k, v in metrics.items()},
        **(extra or {}),
    }
    atomic_write_text(bundle_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return bundle_dir / MANIFEST


def read_verified(bundle_dir: str | Path, required: tuple[str, ...] = ()) -> tuple[dict, dict[str, bytes], str]:
    """Manifest, the bytes of every listed file, and the manifest's sha256.

    Each file is hashed from exactly the bytes returned, so a file swapped between
    the check and the load cannot slip through. Raises :class:`BundleError`.
    """
    bundle_dir = Path(bundle_dir)
    mpath = bundle_dir / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{bundle_dir}: no {MANIFEST}; not a (complete) sellerlift bundle")
    raw = mpath.read_bytes()
    try:
        manifest = json.loads(raw)
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
    except (ValueError, KeyError, TypeError) as err:
        raise BundleError(f"{mpath}: unreadable manifest ({err})") from None
    blobs: dict[str, bytes] = {}
    root = bundle_dir.resolve()
    for name, entry in files.items():
        try:
            rel, expected = str(entry["path"]), str(entry["sha256"])
        except (KeyError, TypeError):
            raise BundleError(f"{mpath}: entry '{name}' lacks path/sha256") from None
        p = (bundle_dir / rel).resolve()
        if p.parent != root:
            raise BundleError(f"{mpath}: entry '{name}' points outside the bundle ({rel!r})")
        if not p.is_file():
            raise BundleError(f"{p}: listed in the manifest as '{name}' but missing")
        data = p.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise BundleError(f"{p}: sha256 {actual[:12]}... does not match the manifest ({expected[:12]}...); "
                              "the bundle was modified or corrupted: refusing to load it")
        blobs[name] = data
    for name in required:
        if name not in blobs:
            raise BundleError(f"{mpath}: no '{name}' file in the manifest")
    return manifest, blobs, hashlib.sha256(raw).hexdigest()


def verify_bundle(bundle_dir: str | Path) -> dict:
    """Check every file's sha256 against the manifest and return the manifest; raises BundleError."""
    return read_verified(bundle_dir)[0]
