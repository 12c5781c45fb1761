"""The one place an onnxruntime session is created (CPU, no busy-waiting threads)."""

from __future__ import annotations

from pathlib import Path


def session(model: bytes | str | Path, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` for a model given as bytes or a file path.

    ``threads``: intra-op threads per call. Spinning is off: on a small shared box a
    spinning pool steals the core another request (or worker) needs.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=so, providers=["CPUExecutionProvider"])
