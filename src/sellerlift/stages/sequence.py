"""Stage: train the intent/churn sequence model, evaluate, export ONNX into the bundle."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from sellerlift import export, plots, reliability
from sellerlift.features import AGGREGATES, EVENT_NUMERIC, SequenceFeatures
from sellerlift.stages.context import RunContext

TARGETS = ("intent", "churn")
TRUTH_COLUMNS = {"intent": "p_intent_7d", "churn": "p_churn_90d"}


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
    test_out = trainer.test(model, datamodule=datamodule, ckpt_path="best" if best else None, verbose=False)[0]
    if best:  # evaluate and export the same (best) weights
        model.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    test_metrics = {k: float(v) for k, v in test_out.items() if k.startswith("test/") and k != "test/loss"}
    ctx.metrics.update(test_metrics)
    # Validation metrics of the same (best) weights: what sweeps and the champion check select on.
    val_out = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    ctx.metrics.update({k: float(v) for k, v in val_out.items() if k.startswith("val/") and k != "val/loss"})
    if not trainer.is_global_zero:  # DDP: the other ranks only help train and evaluate; rank 0 exports
        return
    ceiling = ceiling_metrics(ctx)
    ctx.log_metrics(ceiling)

    net = model.net.eval()
    t0 = time.perf_counter()
    onnx_path = export.export_sequence_onnx(net, ctx.bundle_dir / "sequence.onnx", len(EVENT_NUMERIC),
                                            len(AGGREGATES))
    parity = export.check_parity(net, onnx_path, len(EVENT_NUMERIC), len(AGGREGATES))
    ctx.timings["export_s"] = time.perf_counter() - t0
    ctx.bundle_files["sequence"] = onnx_path
    ctx.bundle_extra["onnx_parity_max_abs_diff"] = parity
    ctx.log_metrics({"export/onnx_parity_max_abs_diff": parity})
    _log_plots(ctx, net)
    if ctx.logger is not None and cfg.tracking.register:
        from sellerlift import tracking

        tracking.register_onnx(cfg.logger.tracking_uri, ctx.run_id, onnx_path, cfg.tracking.registered_model)
    ctx.summary_rows += _summary(test_metrics, ceiling, ctx.timings, parity)
    reliability.finish(resume, ctx.run_id)  # trained and exported: the next resume=auto starts afresh


def ceiling_metrics(ctx: RunContext) -> dict[str, float]:
    """AUROC/AP of the simulator's true probabilities on the test customers: the best any model can do."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    prep = ctx.prep
    if prep.truth is None:
        return {}
    test = prep.split == 2
    out = {}
    for i, head in enumerate(TARGETS):
        y, p = prep.targets[test, i], prep.truth[TRUTH_COLUMNS[head]].to_numpy()[test]
        if 0 < y.mean() < 1:
            out[f"ceiling/{head}_auroc"] = float(roc_auc_score(y, p))
            out[f"ceiling/{head}_ap"] = float(average_precision_score(y, p))
    return out


def predict_probs(net, feats: SequenceFeatures, batch_size: int = 1024) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(feats.length), batch_size):
            sl = slice(s, s + batch_size)
            logits, _ = net(torch.from_numpy(feats.event_type[sl]), torch.from_numpy(feats.numeric[sl]),
                            torch.from_numpy(feats.length[sl]), torch.from_numpy(feats.aggregates[sl]))
            out.append(torch.sigmoid(logits).numpy())
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


def is_global_zero() -> bool:
    from sellerlift.pipeline import is_global_zero as zero

    return zero()


def _callbacks(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c]


def _log_plots(ctx: RunContext, net) -> None:
    if ctx.client is None:
        return
    prep = ctx.prep
    test = np.flatnonzero(prep.split == 2)
    probs = predict_probs(net, prep.feats.take(test))
    with tempfile.TemporaryDirectory() as tmp:
        for i, head in enumerate(TARGETS):
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
        return f"{d[k]:.3f}" if k in d else "—"

    rows = []
    for head in TARGETS:
        rows.append((f"{head}: AUROC (ceiling)", f"{fmt(m, f'test/{head}_auroc')} ({fmt(c, f'ceiling/{head}_auroc')})"))
        rows.append((f"{head}: AP (ceiling) · ECE · precision@top20%",
                     f"{fmt(m, f'test/{head}_ap')} ({fmt(c, f'ceiling/{head}_ap')}) · {fmt(m, f'test/{head}_ece')}"
                     f" · {fmt(m, f'test/{head}_precision_top20')}"))
    rows.append(("training throughput", f"{timings.get('train_sequences_per_s', float('nan')):,.0f} sequences/s"))
    rows.append(("ONNX parity max |torch - onnx|", f"{parity:.1e}"))
    return rows
