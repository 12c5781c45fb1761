"""The serving bundle on disk: writing it, verifying it, signing it, and finding it (torch-free).

A bundle is a directory::

    manifest.json      every file with its sha256, the levels, horizons, metrics, versions (written last)
    manifest.sig       HMAC-SHA256 of manifest.json (when SELLERLIFT_BUNDLE_KEY is set at export)
    sequence.onnx      (event_type, numeric, length, aggregates) -> intent_<d>d, churn_<d>d, customer_embedding
                       (named after the horizons; the manifest records them and the data set trained on)
    feature_spec.json  the fitted FeatureSpec (the only copy)
    segments.json      RFM segment model (plain data); dipn.onnx: promotion curves (when trained)

Each fact is written once. The manifest goes through a temp file + rename after every
other file, so a half-written bundle never looks complete. Verification hashes exactly
the bytes it returns, so a file swapped between check and load cannot slip through.
With a key configured, an unsigned or wrongly signed manifest is refused: a changed
``.onnx`` with its hash rewritten in the manifest no longer passes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sellerlift.io import atomic_write_text, sha256_bytes, sha256_file

log = logging.getLogger("sellerlift.runtime")

FORMAT = "sellerlift-bundle/2"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
KEY_ENV = "SELLERLIFT_BUNDLE_KEY"
BUNDLE_TAG = "sellerlift.bundle_dir"  # model-version tag (set by sellerlift.champion) naming its bundle


class BundleError(ValueError):
    """A bundle that cannot be used: missing, incomplete, tampered, unsigned or inconsistent."""


def signing_key() -> bytes | None:
    """The bundle signing key from the environment (``SELLERLIFT_BUNDLE_KEY``), or None."""
    key = os.environ.get(KEY_ENV, "")
    return key.encode() if key else None


def _signature(manifest_bytes: bytes, key: bytes) -> str:
    return hmac.new(key, manifest_bytes, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- writing


def write_bundle(
    bundle_dir: str | Path,
    files: dict[str, Path],
    spec,
    metrics: dict,
    extra: dict | None = None,
    key: bytes | None = None,
) -> Path:
    """Write ``feature_spec.json``, the signature (when a key is set) and the manifest (last).

    ``files`` (name -> path) must already be inside ``bundle_dir``; ``spec`` is the fitted FeatureSpec.
    """
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(bundle_dir / "feature_spec.json", json.dumps(spec.to_json(), indent=2))
    entries = {"feature_spec": bundle_dir / "feature_spec.json", **files}
    manifest = {
        "format": FORMAT,
        "files": {name: {"path": Path(p).name, "sha256": sha256_file(p)} for name, p in entries.items()},
        "metrics": {k: float(v) for k, v in metrics.items()},
        **(extra or {}),
    }
    raw = json.dumps(manifest, indent=2, default=str).encode()
    key = signing_key() if key is None else key
    if key:
        atomic_write_text(bundle_dir / SIGNATURE, json.dumps({"alg": "hmac-sha256", "signature": _signature(raw, key)}))
    atomic_write_text(bundle_dir / MANIFEST, raw.decode())
    return bundle_dir / MANIFEST


# --------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class VerifiedBundle:
    path: Path
    manifest: dict
    blobs: dict[str, bytes]  # name -> the verified bytes of each listed file
    manifest_sha256: str
    signed: bool


def _check_signature(bundle_dir: Path, raw: bytes, key: bytes | None) -> bool:
    sig_path = bundle_dir / SIGNATURE
    if key is None:
        return False
    if not sig_path.is_file():
        raise BundleError(
            f"{bundle_dir}: unsigned bundle (no {SIGNATURE}) and a signing key is configured "
            f"({KEY_ENV}): refusing to load it"
        )
    try:
        given = str(json.loads(sig_path.read_bytes())["signature"])
    except (ValueError, KeyError, TypeError):
        raise BundleError(f"{sig_path}: unreadable signature file") from None
    if not hmac.compare_digest(given, _signature(raw, key)):
        raise BundleError(
            f"{bundle_dir}: the manifest's signature does not match the configured key ({KEY_ENV}): "
            "the bundle was modified or signed with another key; refusing to load it"
        )
    return True


def read_verified(
    bundle_dir: str | Path, required: tuple[str, ...] = (), key: bytes | None = None, check_signature: bool = True
) -> VerifiedBundle:
    """The manifest and the sha256-checked bytes of every listed file; raises :class:`BundleError`.

    ``key``: signing key (default: ``SELLERLIFT_BUNDLE_KEY``); with a key the signature must match.
    """
    bundle_dir = Path(bundle_dir)
    mpath = bundle_dir / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{bundle_dir}: no {MANIFEST}; not a (complete) sellerlift bundle")
    raw = mpath.read_bytes()
    signed = _check_signature(bundle_dir, raw, signing_key() if key is None else key) if check_signature else False
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
        actual = sha256_bytes(data)
        if actual != expected:
            raise BundleError(
                f"{p}: sha256 {actual[:12]}... does not match the manifest ({expected[:12]}...); "
                "the bundle was modified or corrupted: refusing to load it"
            )
        blobs[name] = data
    missing = [n for n in required if n not in blobs]
    if missing:
        raise BundleError(f"{mpath}: no {missing} file(s) in the manifest")
    return VerifiedBundle(bundle_dir, manifest, blobs, sha256_bytes(raw), signed)


def verify_bundle(bundle_dir: str | Path) -> dict:
    """Check every file's sha256 (and the signature, when a key is set); return the manifest."""
    return read_verified(bundle_dir).manifest


# --------------------------------------------------------------------------- which data set


def registered_model_name(base: str, data: str | None) -> str:
    """The registry name of ``base``'s models for one data set: ``sellerlift-sequence-cdnow``.

    The champion alias is per registered model, so a model per data set keeps a model trained
    on one data set from ever becoming (or being served as) the champion of another.
    """
    if not data:
        return base
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(data)).strip("-") or "data"
    return base if base.endswith(f"-{slug}") else f"{base}-{slug}"


def data_mismatch(manifest: dict, data: str | None, what: str = "this data") -> str | None:
    """Why a bundle must not score ``data`` (None when it may): it was trained on another data set.

    A bundle that does not record its data set cannot be checked and passes.
    """
    trained = manifest.get("data")
    if not data or not trained or str(trained) == str(data):
        return None
    fp = manifest.get("data_fingerprint")
    return (
        f"the bundle (run {manifest.get('run_id')}) was trained on data set '{trained}'"
        + (f" (fingerprint {fp})" if fp else "")
        + f", but {what} is data set '{data}': its scores would come "
        f"from a model of other customers. Train on '{data}' (python train.py data={data}) and use its "
        f"champion ({registered_model_name('sellerlift-sequence', data)}@champion)"
    )


def check_bundle_data(bundle_dir: str | Path, data: str | None, what: str = "this data") -> None:
    """Raise :class:`BundleError` when the bundle at ``bundle_dir`` was trained on a data set other than ``data``."""
    if not data:
        return
    try:
        manifest = json.loads((Path(bundle_dir) / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return  # Runtime.load reports a missing or unreadable manifest itself
    why = data_mismatch(manifest, data, what)
    if why:
        raise BundleError(f"{bundle_dir}: {why}")


# --------------------------------------------------------------------------- finding


def inside(path: str | Path, root: str | Path) -> Path:
    """``path`` resolved, if it lies inside ``root`` (a reload may not wander off through ``..``)."""
    try:
        p, r = Path(path).resolve(), Path(root).resolve()
    except (ValueError, UnicodeError, OSError) as err:  # a NUL byte or a lone surrogate cannot name a file
        raise BundleError(f"{path!r}: not a usable path ({err})") from None
    if p != r and r not in p.parents:
        raise BundleError(f"{path}: not inside the bundle root {r}; only bundles under it can be loaded")
    return p


def registry_bundle(db: Path, model: str, alias: str, bundles_dir: Path) -> tuple[Path, str] | None:
    """(bundle directory, run id) of ``model@alias`` read straight from MLflow's sqlite store (no mlflow import).

    The bundle is the version's ``sellerlift.bundle_dir`` tag, else ``bundles_dir/<run id>``.
    """
    if not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        try:
            row = con.execute(
                "SELECT mv.run_id, (SELECT t.value FROM model_version_tags t WHERE t.name = mv.name "
                "AND t.version = mv.version AND t.key = ?) FROM registered_model_aliases a JOIN model_versions mv "
                "ON a.name = mv.name AND a.version = mv.version WHERE a.name = ? AND a.alias = ? "
                "ORDER BY mv.version DESC LIMIT 1",
                (BUNDLE_TAG, model, alias),
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error as err:  # an older schema or a locked file: the caller falls back, and we say why
        log.warning("could not read the MLflow registry at %s: %s", db, err)
        return None
    if not row or not row[0]:
        return None
    return (Path(row[1]) if row[1] else Path(bundles_dir) / row[0]), row[0]


def _trained_on(bundle_dir: Path) -> str | None:
    try:
        return json.loads((bundle_dir / MANIFEST).read_bytes()).get("data")
    except (OSError, ValueError, AttributeError):
        return None


def newest_bundle(bundles_dir: Path, data: str | None = None) -> Path | None:
    """The complete bundle (one with a manifest) written last; with ``data``, the newest trained on that data set."""
    if not Path(bundles_dir).is_dir():
        return None
    cands = [p.parent for p in Path(bundles_dir).glob(f"*/{MANIFEST}")]
    if data:
        cands = [p for p in cands if _trained_on(p) == str(data)]
    return max(cands, key=lambda p: (p / MANIFEST).stat().st_mtime, default=None)


def default_registry_db(bundles_dir: Path) -> Path | None:
    """The sqlite store named by MLFLOW_TRACKING_URI, else ``mlruns/mlflow.db`` beside ``bundles_dir``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None  # a server: not readable here
    return Path(bundles_dir).resolve().parent / "mlruns" / "mlflow.db"


def find_bundle(
    bundle: str | None,
    bundles_dir: str | Path,
    registry_db: str | Path | None,
    model: str,
    alias: str,
    data: str | None = None,
) -> tuple[Path, str]:
    """(bundle directory, how it was chosen): the given one, else ``model@alias`` in the registry, else the newest.

    ``data``: the data set to serve (e.g. ``simulator``, ``myshop``). The registry is per data set
    (:func:`registered_model_name`: ``<model>-<data>@alias``), the newest-bundle fallback only considers
    bundles trained on it, and a bundle trained on another data set raises :class:`BundleError` naming both,
    a given one included. Without ``data`` nothing is checked (the behaviour before the registry was per
    data set; ``model`` is then used as is).
    """
    if bundle:
        check_bundle_data(bundle, data, "the server's data set (data)")
        return Path(bundle), "given (--bundle / SELLERLIFT_BUNDLE)"
    bundles_dir = Path(bundles_dir)
    name = registered_model_name(model, data)
    db = Path(registry_db) if registry_db else default_registry_db(bundles_dir)
    found = registry_bundle(db, name, alias, bundles_dir) if db is not None else None
    if found is not None:
        path, run_id = found
        if (path / MANIFEST).is_file():
            check_bundle_data(path, data, "the server's data set (data)")
            return path, f"registry alias {name}@{alias} (run {run_id})"
        log.warning("%s@%s points at run %s but %s has no bundle; using the newest bundle", name, alias, run_id, path)
    newest = newest_bundle(bundles_dir, data)
    if newest is None:
        of = f" trained on data set '{data}'" if data else ""
        raise BundleError(
            f"no bundle to serve: none given (--bundle DIR or SELLERLIFT_BUNDLE), no {name}@{alias} "
            f"alias, and no complete bundle{of} under {bundles_dir} (run `make train` first)"
        )
    return newest, f"newest under {bundles_dir}" + (f" trained on '{data}'" if data else "")
