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

from sellerlift.constants import (
    DIPN_INPUT,
    DIPN_OUTPUT,
    SCORE_OUTPUTS,
    horizons_of_outputs,
    is_value_output,
    value_days_of_outputs,
    value_outputs,
)
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


def _output_names(score_names, value_names=None, net=None) -> tuple[str, ...]:
    """The ONNX output names: the two probabilities (named after the horizons), the value head's two means
    (a net with the value head; default names: the churn horizon of ``score_names``), then the embedding."""
    names = tuple(SCORE_OUTPUTS if score_names is None else score_names)
    horizons = horizons_of_outputs(names)  # raises, naming the expected form, on anything else
    has_value = net is not None and getattr(net, "value_head", None) is not None
    if not has_value:
        if value_names:
            raise ValueError(f"value_names {list(value_names)} given, but the net has no value head")
        return (*names, OUTPUT_NAMES[-1])
    values = tuple(value_outputs(horizons) if value_names is None else value_names)
    value_days_of_outputs(values)
    return (*names, *values, OUTPUT_NAMES[-1])


def export_sequence_onnx(
    net: SequenceNet,
    path: str | Path,
    n_numeric: int,
    n_aggregates: int,
    score_names: tuple[str, ...] | None = None,
    value_names: tuple[str, ...] | None = None,
) -> Path:
    """Export with dynamic batch and sequence length (written via temp file + rename).

    ``score_names``: the probability outputs, e.g. ``("intent_7d", "churn_30d")``
    (:func:`sellerlift.constants.score_outputs` of the run's horizons; default 7 / 90 days).
    ``value_names``: a net with the value head also exports these two means (default ``value_<churn>d``,
    ``purchases_<churn>d``: :func:`sellerlift.constants.value_outputs`).

    torch 2.13's exporter freezes the sequence length of an ``nn.GRU`` exported
    after any earlier export in the same process (the ONNX file then rejects other
    lengths), so every export after the first runs in a fresh interpreter.
    """
    global _exports_in_this_process
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    names = _output_names(score_names, value_names, net)
    if _exports_in_this_process == 0:
        _export(net, path, n_numeric, n_aggregates, names)
    else:
        _export_in_subprocess(net, path, n_numeric, n_aggregates, names)
    _exports_in_this_process += 1
    return path


def _export_in_subprocess(
    net: SequenceNet, path: Path, n_numeric: int, n_aggregates: int, names: tuple[str, ...]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pickled = Path(tmp) / "net.pt"
        torch.save(net, pickled)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "sellerlift.export",
                str(pickled),
                str(path),
                str(n_numeric),
                str(n_aggregates),
                ",".join(names),
            ],
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"ONNX export in a fresh process failed:\n{proc.stderr[-4000:]}")


def _export(
    net: SequenceNet, path: Path, n_numeric: int, n_aggregates: int, names: tuple[str, ...] = OUTPUT_NAMES
) -> None:
    import logging

    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    wrapper = ExportWrapper(net).eval()
    ex = example_inputs(4, 6, n_numeric, n_aggregates)
    args = tuple(torch.from_numpy(ex[k]) for k in INPUT_NAMES)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    dynamic_shapes = ({0: batch, 1: seq}, {0: batch, 1: seq}, {0: batch}, {0: batch})
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            args,
            dynamo=True,
            input_names=INPUT_NAMES,
            output_names=list(names),
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    tmp = path.with_suffix(".onnx.tmp")
    program.save(str(tmp))
    os.replace(tmp, path)


def check_parity(
    net: SequenceNet,
    onnx_path: str | Path,
    n_numeric: int,
    n_aggregates: int,
    shapes=((1, 1), (1, 37), (7, 5), (32, 64), (256, 128)),
    tol: float = PARITY_TOL,
) -> float:
    """Max difference between PyTorch and onnxruntime of the probabilities (absolute) and of the value head's
    means (relative to max(1, |value|): they are in currency / counts); raises if above ``tol``."""
    sess = session(onnx_path)
    out_names = [o.name for o in sess.get_outputs()]
    score_names = out_names[:2]  # the file's own names (they follow the horizons)
    value_names = [n for n in out_names if is_value_output(n)]
    has_value = getattr(net, "value_head", None) is not None
    if has_value != bool(value_names):
        raise ParityError(f"sequence.onnx outputs {out_names} do not match the net (value head: {has_value})")
    wrapper = ExportWrapper(net).eval()
    worst = 0.0
    for i, (b, length) in enumerate(shapes):
        ex = example_inputs(b, length, n_numeric, n_aggregates, seed=100 + i)
        with torch.no_grad():
            ref = wrapper(*(torch.from_numpy(ex[k]) for k in INPUT_NAMES))
        got = sess.run(score_names + value_names, ex)
        diff = max(float(np.abs(r.numpy() - g).max()) for r, g in zip(ref[:2], got[:2]))
        for r, g in zip(ref[2 : 2 + len(value_names)], got[2:]):
            r = r.numpy()
            diff = max(diff, float((np.abs(r - g) / np.maximum(1.0, np.abs(r))).max()))
        worst = max(worst, diff)
        if not diff <= tol:
            raise ParityError(
                f"ONNX parity failed at batch={b}, length={length}: max |torch - onnx| = {diff:.2e} "
                f"> {tol:.0e}; refusing to write a bundle"
            )
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
            program = torch.onnx.export(
                net,
                (x,),
                dynamo=True,
                input_names=[DIPN_INPUT],
                output_names=[DIPN_OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
            program.save(str(tmp))
        else:
            torch.onnx.export(
                net,
                (x,),
                str(tmp),
                dynamo=False,
                input_names=[DIPN_INPUT],
                output_names=[DIPN_OUTPUT],
                dynamic_axes={DIPN_INPUT: {0: "batch"}, DIPN_OUTPUT: {0: "batch"}},
            )
    os.replace(tmp, path)
    return path


def check_dipn_parity(
    net: DIPNNet,
    onnx_path: str | Path,
    n_inputs: int,
    batches=(1, 7, 256, 4096),
    tol: float | None = None,
    extra: np.ndarray | None = None,
) -> float:
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


# --------------------------------------------------------------------------- the enduring response
def export_enduring_onnx(net, path: str | Path, n_inputs: int) -> Path:
    """``features`` float32 [batch, F] -> ``conversion``, ``retention``, ``revenue`` float32 [batch, K]; dynamic batch
    (the TorchScript exporter: the same graph for this MLP, in seconds)."""
    from sellerlift.models.enduring import OUTPUTS

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    tmp = path.with_suffix(".onnx.tmp")
    axes = {name: {0: "batch"} for name in (DIPN_INPUT, *OUTPUTS)}
    with torch.no_grad():
        torch.onnx.export(
            net,
            (torch.randn(4, n_inputs),),
            str(tmp),
            dynamo=False,
            input_names=[DIPN_INPUT],
            output_names=list(OUTPUTS),
            dynamic_axes=axes,
        )
    os.replace(tmp, path)
    return path


def check_enduring_parity(
    net,
    onnx_path: str | Path,
    n_inputs: int,
    batches=(1, 7, 256),
    tol: float | None = None,
    extra: np.ndarray | None = None,
) -> float:
    """Max |torch - onnxruntime| of the three outputs (revenue relative to its size); raises above ``tol``;
    the conversion output must stay monotone in the level."""
    from sellerlift.models.enduring import OUTPUTS

    tol = PARITY_TOL if tol is None else tol
    sess = session(onnx_path)
    rng = np.random.default_rng(1)
    inputs = [(rng.normal(size=(b, n_inputs)) * 2).astype(np.float32) for b in batches]
    if extra is not None and len(extra):
        inputs.append(np.ascontiguousarray(extra, dtype=np.float32))
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            ref = [t.numpy() for t in net.eval()(torch.from_numpy(x))]
        got = sess.run(list(OUTPUTS), {DIPN_INPUT: x})
        diff = max(float((np.abs(r - g) / np.maximum(1.0, np.abs(r))).max()) for r, g in zip(ref, got))
        worst = max(worst, diff)
        if not diff <= tol:
            raise ParityError(f"enduring ONNX parity failed at batch={len(x)}: {diff:.2e} > {tol:.0e}")
        if (np.diff(got[0], axis=1) < 0).any():
            raise ParityError("enduring ONNX conversion output is not monotone in the discount")
    return worst


if __name__ == "__main__":  # python -m sellerlift.export NET.pt OUT.onnx N_NUMERIC N_AGGREGATES [NAMES]
    _net = torch.load(sys.argv[1], weights_only=False)  # our own file, written a moment ago
    _names = tuple(sys.argv[5].split(",")) if len(sys.argv) > 5 else OUTPUT_NAMES
    _export(_net, Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), _names)
