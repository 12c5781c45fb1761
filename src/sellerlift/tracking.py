"""MLflow helpers: flattened params, batched metrics, tables, child runs, data sets, the registry.

Default store: ``sqlite:///<repo>/mlruns/mlflow.db`` with artifacts under
``<repo>/mlruns/artifacts``; ``MLFLOW_TRACKING_URI`` points elsewhere (a server).

MLflow 3's UI opens an experiment without a kind in its GenAI view: :func:`mark_model_training`
tags it ``mlflow.experimentKind=custom_model_development`` (the UI's "Machine learning" kind, runs
table first). :func:`log_dataset` logs a run's data as a dataset input (name, source, the data
fingerprint as digest, row and customer counts as its profile), so the runs table's Dataset
column and its ``dataset.name`` / ``dataset.digest`` filters work.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

MLRUNS = "mlruns"
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
DIGEST_MAX = 36  # MLflow's dataset digest column


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
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def mark_model_training(client, experiment_id: str) -> None:
    """Tag the experiment as model training, so MLflow 3's UI opens its runs (not the GenAI traces view)."""
    exp = client.get_experiment(experiment_id)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)


def dataset_entity(name: str, fingerprint: str, source: str | Path | None, profile: dict | None = None):
    """An MLflow dataset (metadata only) for a run's data: the fingerprint is its digest, counts its profile."""
    import json

    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import Dataset

    src = LocalArtifactDatasetSource(str(Path(source).resolve()) if source else f"sellerlift:{name}")
    return Dataset(
        name=str(name),
        digest=str(fingerprint)[:DIGEST_MAX],
        source_type=src._get_source_type(),
        source=src.to_json(),
        profile=json.dumps({"fingerprint": str(fingerprint), **(profile or {})}, default=str),
    )


def log_dataset(
    client,
    run_id: str,
    name: str,
    fingerprint: str,
    source: str | Path | None = None,
    profile: dict | None = None,
    context: str = "training",
) -> None:
    """Log the run's data as an MLflow dataset input (``mlflow.data.context`` = ``context``)."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    ds = dataset_entity(name, fingerprint, source, profile)
    client.log_inputs(run_id, datasets=[DatasetInput(ds, [InputTag(MLFLOW_DATASET_CONTEXT, context)])])


def sequence_signature(score_names, n_numeric: int, n_aggregates: int, embedding_dim: int | None = None):
    """The ONNX sequence model's MLflow signature: its four input tensors -> the probabilities and the embedding."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    inputs = Schema(
        [
            TensorSpec(np.dtype(np.int64), (-1, -1), "event_type"),
            TensorSpec(np.dtype(np.float32), (-1, -1, n_numeric), "numeric"),
            TensorSpec(np.dtype(np.int64), (-1,), "length"),
            TensorSpec(np.dtype(np.float32), (-1, n_aggregates), "aggregates"),
        ]
    )
    outputs = Schema(
        [
            *(TensorSpec(np.dtype(np.float32), (-1,), n) for n in score_names),
            TensorSpec(np.dtype(np.float32), (-1, embedding_dim or -1), "customer_embedding"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def dipn_signature(n_inputs: int, n_levels: int):
    """dipn.onnx's MLflow signature: ``features`` [batch, n_inputs] -> ``curve`` [batch, n_levels]."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_inputs), "features")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_levels), "curve")]),
    )


def enduring_signature(n_inputs: int, n_levels: int):
    """enduring.onnx's MLflow signature: ``features`` [batch, n_inputs] -> ``conversion``, ``retention``,
    ``revenue`` [batch, n_levels] each."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_inputs), "features")]),
        outputs=Schema(
            [TensorSpec(np.dtype(np.float32), (-1, n_levels), name) for name in ("conversion", "retention", "revenue")]
        ),
    )


def describe_registered(
    client, name: str, version: str | None, model_description: str, version_description: str | None = None
) -> None:
    """Descriptions of a registered model (what it is) and of one of its versions (this run)."""
    client.update_registered_model(name, description=model_description)
    if version is not None and version_description:
        client.update_model_version(name, str(version), description=version_description)


def register_onnx(
    tracking_uri: str,
    run_id: str,
    onnx_path: str | Path,
    registered_name: str,
    artifact_name: str = "onnx_model",
    signature=None,
):
    """Log an ONNX file as an MLflow model of the run and register a new version of it (with ``signature``)."""
    import mlflow
    import onnx

    # mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in os.environ: put it back afterwards.
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(run_id=run_id):
            # Explicit requirements: inferring them imports half the environment (seconds per call).
            info = mlflow.onnx.log_model(
                onnx.load(str(onnx_path)),
                name=artifact_name,
                registered_model_name=registered_name,
                signature=signature,
                pip_requirements=["onnxruntime", "numpy"],
            )
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


def log_metrics(client, run_id: str, metrics: dict[str, float], step: int = 0, history: dict | None = None) -> None:
    """Finite metrics in batched writes (a metric per call costs ~0.1 s on a busy SQLite store).

    ``history``: ``{name: [v0, v1, ...]}`` logged as steps 0, 1, ... (e.g. a validation loss per epoch).
    """
    import math
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
    for name, values in (history or {}).items():
        ms += [Metric(name, float(v), now, i) for i, v in enumerate(values)]
    for i in range(0, len(ms), 1000):
        client.log_batch(run_id, metrics=ms[i : i + 1000])


def log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    plist = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(plist), 100):  # MLflow's per-request limit
        client.log_batch(run_id, params=plist[i : i + 100])


def log_table(client, run_id: str, df, name: str, artifact_path: str = "tables") -> None:
    """A table as CSV and markdown artifacts (readable in the MLflow UI)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        df.to_csv(Path(tmp) / f"{name}.csv", index=False)
        (Path(tmp) / f"{name}.md").write_text(df.to_markdown(index=False, floatfmt=".4g"))
        client.log_artifacts(run_id, tmp, artifact_path)


@contextlib.contextmanager
def child_run(client, parent_run_id: str, run_name: str, tags: dict[str, str], params: dict | None = None):
    """A run nested under ``parent_run_id`` (same experiment): yields its id, FINISHED or FAILED at the end."""
    parent = client.get_run(parent_run_id)
    run = client.create_run(
        parent.info.experiment_id, run_name=run_name, tags={"mlflow.parentRunId": parent_run_id, **tags}
    )
    run_id = run.info.run_id
    try:
        if params:
            log_params(client, run_id, flatten(params))
        yield run_id
    except BaseException as err:
        mark_failed(client, run_id, err)
        raise
    client.set_terminated(run_id, "FINISHED")
