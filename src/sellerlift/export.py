"""ONNX export of the sequence model and the DIPN, each checked against PyTorch (or the export fails).

The runtime (:mod:`sellerlift.runtime`, torch-free) writes, verifies and runs what is exported here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from sellerlift.constants import DIPN_INPUT, DIPN_OUTPUT, SCORE_OUTPUTS
from sellerlift.constants import SEQUENCE_INPUTS as INPUT_NAMES
from sellerlift.constants import SEQUENCE_OUTPUTS as OUTPUT_NAMES
from sellerlift.models.dipn import DIPNNet
from sellerlift.models.networks import ExportWrapper, SequenceNet
from sellerlift.runtime.onnx import session

PARITY_TOL = 1e-5


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


_exports_in_this_process = 0


def export_sequence_onnx(net: SequenceNet, path: str | Path, n_numeric: int, n_aggregates: int) -> Path:
    """Export with dynamic batch and sequence length (written via temp file + rename).

    torch 2.13's exporter freezes the sequence length of an ``nn.GRU`` exported
    after any earlier export in the same process (the ONNX file then rejects other
    lengths), so every export after the first runs in a fresh interpreter.
    """
    global _exports_in_this_process
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    if _exports_in_this_process == 0:
        _export(net, path, n_numeric, n_aggregates)
    else:
        _export_in_subprocess(net, path, n_numeric, n_aggregates)
    _exports_in_this_process += 1
    return path


def _export_in_subprocess(net: SequenceNet, path: Path, n_numeric: int, n_aggregates: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pickled = Path(tmp) / "net.pt"
        torch.save(net, pickled)
        proc = subprocess.run([sys.executable, "-m", "sellerlift.export", str(pickled), str(path), str(n_numeric),
                               str(n_aggregates)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ONNX export in a fresh process failed:\n{proc.stderr[-4000:]}")


def _export(net: SequenceNet, path: Path, n_numeric: int, n_aggregates: int) -> None:
    import logging

    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
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


def check_parity(net: SequenceNet, onnx_path: str | Path, n_numeric: int, n_aggregates: int,
                 shapes=((1, 1), (1, 37), (7, 5), (32, 64), (256, 128)), tol: float = PARITY_TOL) -> float:
    """Max abs difference of probabilities between PyTorch and onnxruntime; raises if above ``tol``."""
    sess = session(onnx_path)
    wrapper = ExportWrapper(net).eval()
    worst = 0.0
    for i, (b, length) in enumerate(shapes):
        ex = example_inputs(b, length, n_numeric, n_aggregates, seed=100 + i)
        with torch.no_grad():
            ref = wrapper(*(torch.from_numpy(ex[k]) for k in INPUT_NAMES))
        got = sess.run(list(SCORE_OUTPUTS), ex)
        diff = max(float(np.abs(r.numpy() - g).max()) for r, g in zip(ref[:2], got))
        worst = max(worst, diff)
        if not diff <= tol:
            raise ParityError(f"ONNX parity failed at batch={b}, length={length}: max |torch - onnx| = {diff:.2e} "
                              f"> {tol:.0e}; refusing to write a bundle")
    return worst


# --------------------------------------------------------------------------- DIPN
def export_dipn_onnx(net: DIPNNet, path: str | Path, n_inputs: int, dynamo: bool = True) -> Path:
    """``features`` float32 [batch, F] -> ``curve`` float32 [batch, K]; dynamic batch.

    ``dynamo=False`` uses the TorchScript exporter: same graph for this plain MLP, and
    seconds instead of ~30 s of exporter start-up in a process that has not exported yet.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    x = torch.randn(4, n_inputs)
    tmp = path.with_suffix(".onnx.tmp")
    with torch.no_grad():
        if dynamo:
            program = torch.onnx.export(net, (x,), dynamo=True, input_names=[DIPN_INPUT],
                                        output_names=[DIPN_OUTPUT], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                        verbose=False)
            program.save(str(tmp))
        else:
            torch.onnx.export(net, (x,), str(tmp), dynamo=False, input_names=[DIPN_INPUT], output_names=[DIPN_OUTPUT],
                              dynamic_axes={DIPN_INPUT: {0: "batch"}, DIPN_OUTPUT: {0: "batch"}})
    os.replace(tmp, path)
    return path


def check_dipn_parity(net: DIPNNet, onnx_path: str | Path, n_inputs: int, batches=(1, 7, 256, 4096),
                      tol: float | None = None, extra: np.ndarray | None = None) -> float:
    """Max |torch - onnxruntime| over random inputs (and ``extra`` real ones); raises above ``tol``."""
    tol = PARITY_TOL if tol is None else tol
    sess = session(onnx_path)
    rng = np.random.default_rng(0)
    inputs = [(rng.normal(size=(b, n_inputs)) * 2).astype(np.float32) for b in batches]
    if extra is not None and len(extra):
        inputs.append(np.ascontiguousarray(extra, dtype=np.float32))
    worst = 0.0
    net = net.eval()
    for x in inputs:
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        got = sess.run([DIPN_OUTPUT], {DIPN_INPUT: x})[0]
        diff = float(np.abs(ref - got).max())
        worst = max(worst, diff)
        if not diff <= tol:
            raise ParityError(f"DIPN ONNX parity failed at batch={len(x)}: max |torch - onnx| = {diff:.2e} > {tol:.0e}")
        if (np.diff(got, axis=1) < 0).any():
            raise ParityError("DIPN ONNX output is not monotone in the discount")
    return worst


if __name__ == "__main__":  # python -m sellerlift.export NET.pt OUT.onnx N_NUMERIC N_AGGREGATES
    _net = torch.load(sys.argv[1], weights_only=False)  # our own file, written a moment ago
    _export(_net, Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
