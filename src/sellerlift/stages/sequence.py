"""Stage: train the intent/churn sequence model, export ONNX into the bundle, measure the exported model.

The test numbers are those of the exported ONNX model as the runtime serves it
(:class:`sellerlift.runtime.SequenceModel`), computed by :mod:`sellerlift.metrics`
like every baseline's, each with a bootstrap interval (``evaluation.*``); Lightning's
torchmetrics give the validation numbers during training (what early stopping, sweeps
and the champion check select on). The ONNX outputs are named after the horizons
(``intent_<d>d``, ``churn_<d>d``). With ``pretrain=coles`` (:mod:`sellerlift.models.coles`)
the encoder is first pre-trained self-supervised on every customer's history. A net with the
customer-value head (``model.module.net.value=true``, the default) is trained on the spend and
purchase days after the cutoff too and exports ``value_<d>d`` / ``purchases_<d>d``
(:mod:`sellerlift.stages.value`: targets, metrics, the manifest's ``value`` section).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from sellerlift import bootstrap, export, metrics, plots, reliability
from sellerlift.constants import HEADS, head_description, score_outputs, truth_columns, value_outputs
from sellerlift.features import AGGREGATES, EVENT_NUMERIC
from sellerlift.stages.context import RunContext, is_global_zero


def evaluation_intervals(ctx: RunContext, targets: np.ndarray, probs: np.ndarray, prefix: str) -> dict[str, float]:
    """Bootstrap intervals of every test metric (``evaluation.bootstrap`` resamples; {} when 0)."""
    e = ctx.cfg.get("evaluation") or {}
    n_boot = int(e.get("bootstrap", 1000))
    if n_boot <= 0 or len(targets) == 0:
        return {}
    top = float(ctx.cfg.model.module.get("top_fraction", 0.2))
    return bootstrap.head_metric_intervals(
        targets, probs, prefix, top, n_boot, float(e.get("level", 0.95)), int(e.get("seed", 0))
    )


def train_sequence(ctx: RunContext) -> None:
    cfg, prep = ctx.cfg, ctx.prep
    feats, targets, split = prep.training_rows()  # + earlier cutoffs' rows (data.rolling) in the training split
    model = instantiate(cfg.model.module)
    has_value = getattr(model.net, "value_head", None) is not None
    if has_value:  # spend and purchase days after each row's cutoff: targets [intent, churn, spend, purchases]
        from sellerlift.stages.value import training_value_targets

        vt = training_value_targets(ctx)
        targets = np.concatenate([targets, vt], axis=1)
        model.net.set_value_scale(vt[split == 0].mean(axis=0) if (split == 0).any() else (1.0, 1.0))
    datamodule = instantiate(cfg.data.datamodule, _partial_=True)(feats=feats, targets=targets, split=split)
    if cfg.get("pretrain"):  # self-supervised encoder pre-training on every customer's history (pretrain=coles)
        from sellerlift.models.coles import pretrain_encoder

        t0 = time.perf_counter()
        ctx.bundle_extra["pretrain"] = pretrain_encoder(model.net, prep, cfg.pretrain, cfg.seed)
        ctx.timings["pretrain_s"] = time.perf_counter() - t0
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
    ctx.timings["train_sequences_per_s"] = int((split == 0).sum()) * epochs / max(ctx.timings["fit_s"], 1e-9)
    ctx.timings["optimizer_steps"] = int(trainer.global_step)

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:  # validate, export and measure the same (best) weights
        model.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    val_out = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    ctx.metrics.update({k: float(v) for k, v in val_out.items() if k.startswith("val/") and k != "val/loss"})
    if not trainer.is_global_zero:  # DDP: the other ranks only help train and validate; rank 0 exports
        return

    net = model.net.eval()
    t0 = time.perf_counter()
    names = score_outputs(cfg.data.horizons)
    vnames = value_outputs(cfg.data.horizons) if has_value else None
    onnx_path = export.export_sequence_onnx(
        net,
        ctx.bundle_dir / "sequence.onnx",
        len(EVENT_NUMERIC),
        len(AGGREGATES),
        score_names=names,
        value_names=vnames,
    )
    parity = export.check_parity(net, onnx_path, len(EVENT_NUMERIC), len(AGGREGATES))
    ctx.timings["export_s"] = time.perf_counter() - t0
    ctx.bundle_files["sequence"] = onnx_path
    ctx.bundle_extra["onnx_parity_max_abs_diff"] = parity

    test = np.flatnonzero(prep.split == 2)
    probs = exported_probabilities(ctx, onnx_path, test)
    top = float(cfg.model.module.get("top_fraction", 0.2))
    test_metrics = metrics.head_metrics(prep.targets[test], probs, "test/", top)
    intervals = evaluation_intervals(ctx, prep.targets[test], probs, "test/")
    ceiling = ceiling_metrics(ctx, top)
    ctx.metrics.update(test_metrics)
    ctx.log_metrics(
        {
            **test_metrics,
            **intervals,
            **ceiling,
            "export/onnx_parity_max_abs_diff": parity,
            "train/optimizer_steps": ctx.timings["optimizer_steps"],
        }
    )
    ctx.bundle_extra["test_intervals"] = intervals
    _log_plots(ctx, test, probs)
    ctx.summary_rows += _summary({**test_metrics, **intervals}, ceiling, ctx.timings, parity)
    if has_value:
        from sellerlift.stages import value

        value.measure(ctx, onnx_path, net)
    if ctx.logger is not None and cfg.tracking.register:
        _register(ctx, onnx_path, (*names, *(vnames or ())), net, {**test_metrics, **ctx.metrics})
    reliability.finish(resume, ctx.run_id)  # trained and exported: the next resume=auto starts afresh


def _register(ctx: RunContext, onnx_path: Path, names: tuple[str, ...], net, m: dict) -> None:
    """Register the ONNX model in the data set's registered model, with a signature and descriptions."""
    from sellerlift import champion, tracking

    cfg, h = ctx.cfg, cfg_horizons(ctx)
    name = champion.registry_name(cfg, ctx.tables.name)
    signature = tracking.sequence_signature(names, len(EVENT_NUMERIC), len(AGGREGATES), net.embedding_dim)
    mv = tracking.register_onnx(cfg.logger.tracking_uri, ctx.run_id, onnx_path, name, signature=signature)
    what = "; ".join(f"{n} = P(customer {head_description(hd, h)})" for n, hd in zip(names, HEADS))
    if len(names) > len(HEADS):
        what += "; " + "; ".join(f"{n} = {d}" for n, d in (ctx.bundle_extra.get("value") or {}).get("what", {}).items())
    model_doc = (
        f"sellerlift sequence models (GRU / Transformer over event histories + aggregates) trained on data "
        f"set '{ctx.tables.name}' only. Outputs: {what}; customer_embedding. Inputs: event_type, numeric, "
        "length, aggregates (the bundle's feature_spec.json builds them; see sellerlift.runtime)."
    )

    def fmt(k):
        return f"{m[k]:.4f}" if k in m and np.isfinite(m[k]) else "—"

    version_doc = (
        f"{cfg.model.name} on {ctx.tables.name} (fingerprint {ctx.tables.fingerprint}, cutoff "
        f"{ctx.tables.cutoff.date()}), run {ctx.run_id}: val/churn_auroc {fmt('val/churn_auroc')}, "
        f"test/churn_auroc {fmt('test/churn_auroc')}, test/intent_auroc {fmt('test/intent_auroc')}"
        + ("; WARNING: too few labels to measure" if (ctx.bundle_extra.get("guards") or {}).get("small_data") else "")
    )
    tracking.describe_registered(ctx.client, name, getattr(mv, "version", mv), model_doc, version_doc)


def cfg_horizons(ctx: RunContext) -> dict[str, int]:
    return {k: int(v) for k, v in ctx.cfg.data.horizons.items()}


def exported_probabilities(ctx: RunContext, onnx_path: Path, rows: np.ndarray) -> np.ndarray:
    """[n, 2] probabilities of the exported model for the customers ``rows``, through the runtime."""
    from sellerlift.runtime import SequenceModel

    return SequenceModel.from_file(onnx_path).probabilities(ctx.prep.feats.take(rows))


def truth_probabilities(ctx: RunContext, rows) -> np.ndarray | None:
    """[n, 2] simulator truth of ``rows`` for the run's horizons (None: no truth, or none for these horizons)."""
    truth, cols = ctx.prep.truth, truth_columns(cfg_horizons(ctx))
    if truth is None or not all(c in truth for c in cols.values()):
        return None
    return np.stack([truth[cols[h]].to_numpy()[rows] for h in HEADS], axis=1)


def ceiling_metrics(ctx: RunContext, top_fraction: float = 0.2) -> dict[str, float]:
    """The simulator's true probabilities on the test customers, scored like a model: the best any model can do."""
    prep = ctx.prep
    test = np.flatnonzero(prep.split == 2)
    truth = truth_probabilities(ctx, test)
    if truth is None:
        return {}
    return {
        **metrics.head_metrics(prep.targets[test], truth, "ceiling/", top_fraction),
        **evaluation_intervals(ctx, prep.targets[test], truth, "ceiling/"),
    }


def _callbacks(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c]


def _log_plots(ctx: RunContext, test: np.ndarray, probs: np.ndarray) -> None:
    if ctx.client is None:
        return
    prep = ctx.prep
    truth = truth_probabilities(ctx, test)
    with tempfile.TemporaryDirectory() as tmp:
        for i, head in enumerate(HEADS):
            y = prep.targets[test, i]
            if not 0 < y.mean() < 1:
                continue
            scores = {ctx.cfg.model.name: probs[:, i]}
            if truth is not None:
                scores["truth (ceiling)"] = truth[:, i]
            ctx.log_artifact(
                plots.roc_and_calibration(y, scores, head, Path(tmp) / f"{head}_roc_calibration.png"), "plots"
            )


def fmt_ci(d: dict, key: str) -> str:
    """``0.812 [0.790, 0.833]`` (the value and its bootstrap interval, when there is one)."""
    v = d.get(key)
    if v is None or not np.isfinite(v):
        return "—"
    lo, hi = d.get(f"{key}_ci_low"), d.get(f"{key}_ci_high")
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and np.isfinite(lo) else "")


def _summary(m: dict, c: dict, timings: dict, parity: float) -> list[tuple[str, str]]:
    def fmt(d, k):
        return f"{d[k]:.3f}" if k in d and np.isfinite(d[k]) else "—"

    rows = []
    for head in HEADS:
        rows.append(
            (
                f"{head}: AUROC [95% CI] (ceiling)",
                f"{fmt_ci(m, f'test/{head}_auroc')} ({fmt(c, f'ceiling/{head}_auroc')})",
            )
        )
        rows.append(
            (
                f"{head}: AP (ceiling) · ECE · precision@top20%",
                f"{fmt_ci(m, f'test/{head}_ap')} ({fmt(c, f'ceiling/{head}_ap')}) · {fmt(m, f'test/{head}_ece')}"
                f" · {fmt(m, f'test/{head}_precision_top20')}",
            )
        )
    rows.append(
        (
            "training",
            f"{timings.get('train_sequences_per_s', float('nan')):,.0f} sequences/s, "
            f"{timings.get('optimizer_steps', 0):,} optimizer steps",
        )
    )
    rows.append(("ONNX parity max |torch - onnx|", f"{parity:.1e}"))
    return rows
