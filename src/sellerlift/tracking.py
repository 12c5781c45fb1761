"""MLflow helpers: where the store is, flattened params, tags, artifacts, registry.

Default store: ``sqlite:///<repo>/mlruns/mlflow.db`` with artifacts under
``<repo>/mlruns/artifacts``; ``MLFLOW_TRACKING_URI`` points elsewhere (a server).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

MLRUNS = "mlruns"


def flatten(d: Mapping, prefix: str = "", sep: str = ".") -> dict[str, str]:
    """Nested config -> {"model.net.d_model": "64", ...}; MLflow params are strings (<= 6000 chars)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key, sep))
        else:
            out[key] = str(v)[:6000]
    return out


def git_commit(root: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        sha = out.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def register_onnx(tracking_uri: str, run_id: str, onnx_path: str | Path, registered_name: str,
                  artifact_name: str = "onnx_model"):
    """Log an ONNX file as an MLflow model of the run and register a new version of it."""
    import mlflow
    import onnx

    # mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in os.environ: put it back afterwards.
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(run_id=run_id):
            # Explicit requirements: inferring them imports half the environment (seconds per call).
            info = mlflow.onnx.log_model(onnx.load(str(onnx_path)), name=artifact_name,
                                         registered_model_name=registered_name,
                                         pip_requirements=["onnxruntime", "numpy"])
    finally:
        mlflow.set_tracking_uri(previous_uri)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env
    return info.registered_model_version


def mark_failed(client, run_id: str, error: BaseException) -> None:
    """A crashed run is marked FAILED with its error, never left RUNNING."""
    client.set_tag(run_id, "error", f"{type(error).__name__}: {error}"[:5000])
    client.set_terminated(run_id, status="FAILED")
