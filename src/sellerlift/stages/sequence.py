"""Stage: train the intent/churn sequence model, export ONNX into the bundle, measure the exported model.

The test numbers are those of the exported ONNX model as the runtime serves it
(:class:`sellerlift.runtime.SequenceModel`), computed by :mod:`sellerlift.metrics`
like every baseline's; Lightning's torchmetrics give the validation numbers during
training (what early stopping, sweeps and the champion check select on).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from sellerlift import export, metrics, plots, reliability
from sellerlift.constants import HEADS, SCORE_OUTPUTS, TRUTH_COLUMNS
from sellerlift.features import AGGREGATES, EVENT_NUMERIC
from sellerlift.stages.context import RunContext, is_global_zero


def train_sequence(ctx: RunContext) -> None:
    cfg, prep = ctx.cfg, ctx.prep
    datamodule = instantiate(cfg.data.datamodule, _partial_=True)(feats=prep.feats, targets=prep.targets,
                                                                  split=prep.split)
    model = instantiate(cfg.model.module)
    # resume=auto|<path>: checkpoints in a stable folder, continue from its last.ckpt (sellerlift.reliability)
    resume = reliability.plan(cfg, ctx.root)
    callbacks = reliability.use_checkpoint_dir(_callbacks(cfg), resume)
    trainer = instantiate(cfg.trainer, _partial_=True)(logger=ctx.logger or False, callbacks=callbacks)
    if resume.enabled and is_global_zero():
        reliability.begin_attempt(resume, ctx.client, ctx.run_id)
        if resume.ckpt_path:
            ctx.summary_rows.append(("resumed from", resume.ckpt_path))

    t0 = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume.ckpt_path)
    ctx.timings["fit_s"] = time.perf_counter() - t0
    epochs = max(trainer.current_epoch, 1)
    ctx.timings["train_sequences_per_s"] = int((prep.split == 0).sum()) * epochs / max(ctx.timings["fit_s"], 1e-9)

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:  # validate, export and measure the same (best) weights
        model.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    val_out = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    ctx.metrics.update({k: float(v) for k, v in val_out.items() if k.startswith("val/") and k != "val/loss"})
    if not trainer.is_global_zero:  # DDP: the other ranks only help train and validate; rank 0 exports
        return

    net = model.net.eval()
    t0 = time.perf_counter()
    onnx_path = export.export_sequence_onnx(net, ctx.bundle_dir / "sequence.onnx", len(EVENT_NUMERIC),
                                            len(AGGREGATES))
    parity = export.check_parity(net, onnx_path, len(EVENT_NUMERIC), len(AGGREGATES))
    ctx.timings["export_s"] = time.perf_counter() - t0
    ctx.bundle_files["sequence"] = onnx_path
    ctx.bundle_extra["onnx_parity_max_abs_diff"] = parity

    test = np.flatnonzero(prep.split == 2)
    probs = exported_probabilities(ctx, onnx_path, test)
    top = float(cfg.model.module.get("top_fraction", 0.2))
    test_metrics = metrics.head_metrics(prep.targets[test], probs, "test/", top)
    ceiling = ceiling_metrics(ctx, top)
    ctx.metrics.update(test_metrics)
    ctx.log_metrics({**test_metrics, **ceiling, "export/onnx_parity_max_abs_diff": parity})
    _log_plots(ctx, test, probs)
    if ctx.logger is not None and cfg.tracking.register:
        from sellerlift import tracking

        tracking.register_onnx(cfg.logger.tracking_uri, ctx.run_id, onnx_path, cfg.tracking.registered_model)
    ctx.summary_rows += _summary(test_metrics, ceiling, ctx.timings, parity)
    reliability.finish(resume, ctx.run_id)  # trained and exported: the next resume=auto starts afresh


def exported_probabilities(ctx: RunContext, onnx_path: Path, rows: np.ndarray) -> np.ndarray:
    """[n, 2] probabilities of the exported model for the customers ``rows``, through the runtime."""
    from sellerlift.runtime import SequenceModel

    out = SequenceModel.from_file(onnx_path).predict(ctx.prep.feats.take(rows))
    return np.stack([out[k] for k in SCORE_OUTPUTS], axis=1).astype(np.float64)


def ceiling_metrics(ctx: RunContext, top_fraction: float = 0.2) -> dict[str, float]:
    """The simulator's true probabilities on the test customers, scored like a model: the best any model can do."""
    prep = ctx.prep
    if prep.truth is None:
        return {}
    test = prep.split == 2
    truth = np.stack([prep.truth[TRUTH_COLUMNS[h]].to_numpy()[test] for h in HEADS], axis=1)
    return metrics.head_metrics(prep.targets[test], truth, "ceiling/", top_fraction)


def _callbacks(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c]


def _log_plots(ctx: RunContext, test: np.ndarray, probs: np.ndarray) -> None:
    if ctx.client is None:
        return
    prep = ctx.prep
    with tempfile.TemporaryDirectory() as tmp:
        for i, head in enumerate(HEADS):
            y = prep.targets[test, i]
            if not 0 < y.mean() < 1:
                continue
            scores = {ctx.cfg.model.name: probs[:, i]}
            if prep.truth is not None:
                scores["truth (ceiling)"] = prep.truth[TRUTH_COLUMNS[head]].to_numpy()[test]
            ctx.log_artifact(plots.roc_and_calibration(y, scores, head, Path(tmp) / f"{head}_roc_calibration.png"),
                             "plots")


def _summary(m: dict, c: dict, timings: dict, parity: float) -> list[tuple[str, str]]:
    def fmt(d, k):
        return f"{d[k]:.3f}" if k in d and np.isfinite(d[k]) else "—"

    rows = []
    for head in HEADS:
        rows.append((f"{head}: AUROC (ceiling)", f"{fmt(m, f'test/{head}_auroc')} ({fmt(c, f'ceiling/{head}_auroc')})"))
        rows.append((f"{head}: AP (ceiling) · ECE · precision@top20%",
                     f"{fmt(m, f'test/{head}_ap')} ({fmt(c, f'ceiling/{head}_ap')}) · {fmt(m, f'test/{head}_ece')}"
                     f" · {fmt(m, f'test/{head}_precision_top20')}"))
    rows.append(("training throughput", f"{timings.get('train_sequences_per_s', float('nan')):,.0f} sequences/s"))
    rows.append(("ONNX parity max |torch - onnx|", f"{parity:.1e}"))
    return rows
