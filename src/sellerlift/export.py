"""ONNX export with a parity check, and the serving bundle.

A bundle is a directory::

    manifest.json      files with sha256, feature spec, levels, metrics, versions
    sequence.onnx      (event_type, numeric, length, aggregates) -> intent_7d, churn_90d, customer_embedding
    feature_spec.json  the fitted FeatureSpec (same content as in the manifest)

The manifest is written last, through a temp file + rename, so a half-written
bundle never looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from sellerlift.features import FeatureSpec
from sellerlift.models.networks import ExportWrapper, SequenceNet
from sellerlift.schema import DISCOUNT_LEVELS

INPUT_NAMES = ["event_type", "numeric", "length", "aggregates"]
OUTPUT_NAMES = ["intent_7d", "churn_90d", "customer_embedding"]
PARITY_TOL = 1e-5
MANIFEST = "manifest.json"


class ParityError(AssertionError):
    pass


def example_inputs(batch: int, length: int, n_numeric: int, n_aggregates: int, seed: int = 0) -> dict:
    """Random but valid inputs: right-padded sequences with lengths 0..length."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, length + 1, size=batch)
    lengths[0] = length  # at least one full row so the padded width is used
    mask = np.arange(length)[None, :] < lengths[:, None]
    return {
        "event_type": np.where(mask, rng.integers(1, 8, size=(batch, length)), 0).astype(np.int64),
        "numeric": (rng.normal(size=(batch, length, n_numeric)) * mask[..., None]).astype(np.float32),
        "length": lengths.astype(np.int64),
        "aggregates": rng.normal(size=(batch, n_aggregates)).astype(np.float32),
    }


def export_sequence_onnx(net: SequenceNet, path: str | Path, n_numeric: int, n_aggregates: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(net).eval()
    ex = example_inputs(4, 6, n_numeric, n_aggregates)
    args = tuple(torch.from_numpy(ex[k]) for k in INPUT_NAMES)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    dynamic_shapes = ({0: batch, 1: seq}, {0: batch, 1: seq}, {0: batch}, {0: batch})
    with torch.no_grad():
        program = torch.onnx.export(wrapper, args, dynamo=True, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                                    dynamic_shapes=dynamic_shapes, verbose=False)
    tmp = path.with_suffix(".onnx.tmp")
    program.save(str(tmp))
    os.replace(tmp, path)
    return path


def check_parity(net: SequenceNet, onnx_path: str | Path, n_numeric: int, n_aggregates: int,
                 shapes=((1, 1), (1, 37), (7, 5), (32, 64), (256, 128)), tol: float = PARITY_TOL) -> float:
    """Max abs difference of probabilities between PyTorch and onnxruntime; raises if above ``tol``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    wrapper = ExportWrapper(net).eval()
    worst = 0.0
    for i, (b, length) in enumerate(shapes):
        ex = example_inputs(b, length, n_numeric, n_aggregates, seed=100 + i)
        with torch.no_grad():
            ref = wrapper(*(torch.from_numpy(ex[k]) for k in INPUT_NAMES))
        got = sess.run(OUTPUT_NAMES[:2], ex)
        diff = max(float(np.abs(r.numpy() - g).max()) for r, g in zip(ref[:2], got))
        worst = max(worst, diff)
        if not diff <= tol:
            raise ParityError(f"ONNX parity failed at batch={b}, length={length}: max |torch - onnx| = {diff:.2e} "
                              f"> {tol:.0e}; refusing to write a bundle")
    return worst


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_bundle(bundle_dir: str | Path, files: dict[str, Path], spec: FeatureSpec, metrics: dict,
                 extra: dict | None = None) -> Path:
    """Write ``feature_spec.json`` and the manifest (last) for files already inside ``bundle_dir``."""
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(bundle_dir / "feature_spec.json", json.dumps(spec.to_json(), indent=2))
    entries = {"feature_spec": bundle_dir / "feature_spec.json", **files}
    manifest = {
        "format": "sellerlift-bundle/1",
        "files": {name: {"path": p.name, "sha256": sha256_file(p)} for name, p in entries.items()},
        "feature_spec": spec.to_json(),
        "discount_levels": list(DISCOUNT_LEVELS),
        "inputs": INPUT_NAMES,
        "outputs": OUTPUT_NAMES,
        "metrics": {k: float(v) for k, v in metrics.items()},
        **(extra or {}),
    }
    _atomic_write_text(bundle_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return bundle_dir / MANIFEST


def verify_bundle(bundle_dir: str | Path) -> dict:
    """Load the manifest and check every file's sha256; raises on any mismatch."""
    bundle_dir = Path(bundle_dir)
    mpath = bundle_dir / MANIFEST
    if not mpath.exists():
        raise FileNotFoundError(f"{bundle_dir}: no {MANIFEST}; not a (complete) sellerlift bundle")
    manifest = json.loads(mpath.read_text())
    for name, entry in manifest["files"].items():
        p = bundle_dir / entry["path"]
        if not p.exists():
            raise FileNotFoundError(f"{p}: listed in the manifest as '{name}' but missing")
        actual = sha256_file(p)
        if actual != entry["sha256"]:
            raise ValueError(f"{p}: sha256 {actual[:12]}... does not match the manifest ({entry['sha256'][:12]}...); "
                             "the bundle was modified or corrupted")
    return manifest
