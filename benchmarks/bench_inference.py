"""Inference: onnxruntime vs PyTorch eager for the sequence model, session options, int8 quantisation.

    python benchmarks/bench_inference.py [--quick] [--bundle bundles/<run id>]

Ratios are measured side by side in one process. With a Transformer bundle
(--bundle, or the newest under bundles/), the int8 dynamic quantisation of its
trained model is scored on unseen simulator customers and its AUROC change
reported next to the speed-up (GRU is not covered by onnxruntime's dynamic
quantisation); without one, an untrained Transformer gives speed and size only.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, newest_bundle, timed, write_result

from sellerlift.export import INPUT_NAMES, example_inputs, export_sequence_onnx
from sellerlift.features import AGGREGATES, EVENT_NUMERIC
from sellerlift.models.networks import ExportWrapper, GRUEncoder, SequenceNet, TransformerEncoder

F, A = len(EVENT_NUMERIC), len(AGGREGATES)
# Graph optimisation levels compared (EXTENDED adds the fusions, e.g. SkipLayerNormalization; ALL adds layouts).
LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session(path, threads: int, level) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = level
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def build(kind: str):
    torch.manual_seed(0)
    enc = GRUEncoder(64, 64) if kind == "gru" else TransformerEncoder(64, 4, 2, 128, 0.1)
    return SequenceNet(enc, d_model=64, head_hidden=64).eval()


def bench_model(kind: str, batches, length: int, repeats: int, tmp: Path) -> list[dict]:
    net = build(kind)
    path = export_sequence_onnx(net, tmp / f"{kind}.onnx", F, A)
    wrapper = ExportWrapper(net).eval()
    torch.set_num_threads(2)
    inputs = {}
    torch_ms = {}
    for b in batches:  # PyTorch first: idle onnxruntime threads spin and would steal its cores
        ex = example_inputs(b, length, F, A, seed=b)
        ex["length"][:] = length  # full sequences: the worst case
        inputs[b] = ex
        tensors = [torch.from_numpy(ex[k]) for k in INPUT_NAMES]
        with torch.inference_mode():
            _, t_torch = timed(lambda t=tensors: wrapper(*t), repeats)
        torch_ms[b] = 1e3 * t_torch["median_s"]
    rows = [{"model": kind, "batch": b, "length": length, "torch_eager_ms": torch_ms[b]} for b in batches]
    names = []
    for level_name, level in LEVELS.items():
        for threads in (2, 1):
            name = f"ort_{threads}thread{'s' * (threads > 1)}_{level_name}"
            sess = session(path, threads, level)  # one at a time: a spinning idle pool would steal the next's cores
            for row in rows:
                _, t = timed(lambda s=sess, x=inputs[row["batch"]]: s.run(None, x), repeats)
                row[f"{name}_ms"] = 1e3 * t["median_s"]
            names.append(name)
            del sess
            gc.collect()
    for row in rows:
        row["speedup_ort_over_torch"] = row["torch_eager_ms"] / row["ort_2threads_all_ms"]
        best = min(names, key=lambda name: row[f"{name}_ms"])
        row["best_ort"], row["speedup_best_ort_over_torch"] = best, row["torch_eager_ms"] / row[f"{best}_ms"]
    rows[0].update(load_times(path, tmp, repeats))
    return rows


def load_times(path: Path, tmp: Path, repeats: int) -> dict:
    """Session creation from the exported model vs from a saved, already optimised one (BASIC: portable)."""

    def make(src, level, save=None):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        if save:
            opts.optimized_model_filepath = str(save)
        return ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])

    saved = tmp / f"{path.stem}.basic-optimised.onnx"
    make(path, LEVELS["basic"], save=saved)
    _, raw = timed(lambda: make(path, LEVELS["basic"]), repeats)
    _, pre = timed(lambda: make(saved, ort.GraphOptimizationLevel.ORT_DISABLE_ALL), repeats)
    return {"session_load_ms": 1e3 * raw["median_s"], "session_load_saved_optimised_ms": 1e3 * pre["median_s"]}


def quantised_transformer(bundle: Path | None, tmp: Path, repeats: int) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = (bundle / "sequence.onnx") if bundle else tmp / "transformer.onnx"
    dst = tmp / "transformer.int8.onnx"
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    s32, s8 = (
        session(src, 2, ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        session(dst, 2, ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
    )
    ex = example_inputs(256, 64, F, A, seed=7)
    _, t32 = timed(lambda: s32.run(None, ex), repeats)
    _, t8 = timed(lambda: s8.run(None, ex), repeats)
    p32, p8 = s32.run(["intent_7d", "churn_90d"], ex), s8.run(["intent_7d", "churn_90d"], ex)
    out = {
        "source": str(src),
        "fp32_ms_batch256": 1e3 * t32["median_s"],
        "int8_ms_batch256": 1e3 * t8["median_s"],
        "speedup_int8": t32["median_s"] / t8["median_s"],
        "max_abs_prob_diff": float(max(np.abs(a - b).max() for a, b in zip(p32, p8))),
        "size_fp32_kib": src.stat().st_size / 1024,
        "size_int8_kib": dst.stat().st_size / 1024,
    }
    if bundle:
        out.update(_auroc_delta(bundle, s32, s8))
    return out


def _auroc_delta(bundle: Path, s32, s8) -> dict:
    """Score the bundle's own simulator test customers with both models."""
    import json

    from sklearn.metrics import roc_auc_score

    from sellerlift.features import FeatureSpec, build_features
    from sellerlift.labels import make_labels
    from sellerlift.sim import SimulatorConfig, simulate

    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = FeatureSpec.from_json(manifest["feature_spec"])
    sim = simulate(SimulatorConfig(n_customers=5000, seed=123), None, progress=False)  # unseen customers
    feats = build_features(sim.events, sim.cutoff, spec)
    labels = make_labels(sim.events, sim.cutoff, feats.customer_id)
    inputs = {
        "event_type": feats.event_type,
        "numeric": feats.numeric,
        "length": feats.length,
        "aggregates": feats.aggregates,
    }
    out = {}
    for head, col in (("intent_7d", "intent"), ("churn_90d", "churn")):
        a32 = roc_auc_score(labels[col], s32.run([head], inputs)[0])
        a8 = roc_auc_score(labels[col], s8.run([head], inputs)[0])
        out[f"{col}_auroc_fp32"], out[f"{col}_auroc_int8"], out[f"{col}_auroc_delta"] = a32, a8, a8 - a32
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--bundle",
        type=Path,
        help="a Transformer bundle for the int8 AUROC check "
        "(default: the newest Transformer bundle under bundles/, if any)",
    )
    args = ap.parse_args(argv)
    if args.bundle is None and not args.quick:
        args.bundle = newest_bundle("transformer")
    batches = (1, 32) if args.quick else (1, 32, 1024)
    repeats = 3 if args.quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for kind in ("gru", "transformer"):
            rows += bench_model(kind, batches, 16 if args.quick else 64, repeats, Path(tmp))
        quant = quantised_transformer(args.bundle, Path(tmp), repeats)
    result = {"rows": rows, "int8_transformer": quant}
    write_result("inference", result, args.quick)
    return result


if __name__ == "__main__":
    r = main()
    print(
        markdown_table(
            r["rows"],
            [
                "model",
                "batch",
                "torch_eager_ms",
                "ort_2threads_all_ms",
                "ort_1thread_all_ms",
                "ort_2threads_basic_ms",
                "ort_1thread_basic_ms",
                "best_ort",
                "speedup_best_ort_over_torch",
                "session_load_ms",
                "session_load_saved_optimised_ms",
            ],
        )
    )
    print(r["int8_transformer"])
