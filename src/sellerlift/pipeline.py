"""One training run: data -> features -> sequence model -> MLflow -> ONNX bundle.

``train.py`` composes the config with Hydra and calls :func:`run`; tests call it
with composed configs and tiny data.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from sellerlift import tracking
from sellerlift.data.sources import Tables
from sellerlift.features import EVENT_NUMERIC, AGGREGATES, FeatureSpec, SequenceFeatures, build_features
from sellerlift.labels import make_labels, split_customers

log = logging.getLogger(__name__)
console = Console()
TARGETS = ("intent", "churn")
TRUTH_COLUMNS = {"intent": "p_intent_7d", "churn": "p_churn_90d"}


@dataclass
class Prepared:
    feats: SequenceFeatures
    targets: np.ndarray  # [n, 2] intent, churn
    split: np.ndarray  # 0 train, 1 val, 2 test
    spec: FeatureSpec
    truth: pd.DataFrame | None


@dataclass
class RunResult:
    run_id: str | None
    bundle_dir: Path
    test_metrics: dict[str, float]
    ceiling: dict[str, float] = field(default_factory=dict)
    parity: float = float("nan")
    timings: dict[str, float] = field(default_factory=dict)


def prepare(tables: Tables, cfg: DictConfig) -> Prepared:
    """Features, labels and the split for every customer with history before the cutoff."""
    spec = FeatureSpec(max_len=cfg.data.max_len)
    feats = build_features(tables.events, tables.cutoff, spec)
    labels = make_labels(tables.events, tables.cutoff, feats.customer_id,
                         intent_days=cfg.data.horizons.intent_days, churn_days=cfg.data.horizons.churn_days)
    split = split_customers(feats.customer_id, tuple(cfg.data.split), seed=cfg.data.split_seed)
    spec.fit(feats, np.flatnonzero(split == 0))  # scaling from training customers only
    feats = spec.transform(feats)
    targets = labels[["intent", "churn"]].to_numpy(np.float32)
    truth = None
    if tables.truth is not None:
        truth = tables.truth.set_index("customer_id").loc[feats.customer_id].reset_index()
    return Prepared(feats, targets, split, spec, truth)


def ceiling_metrics(prep: Prepared) -> dict[str, float]:
    """AUROC/AP of the simulator's true probabilities on the test customers: the best any model can do."""
    from sklearn.metrics import average_precision_score, roc_auc_score

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
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(feats.length), batch_size):
            sl = slice(s, s + batch_size)
            logits, _ = net(torch.from_numpy(feats.event_type[sl]), torch.from_numpy(feats.numeric[sl]),
                            torch.from_numpy(feats.length[sl]), torch.from_numpy(feats.aggregates[sl]))
            out.append(torch.sigmoid(logits).numpy())
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


def _callbacks(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c]


def _quiet_libraries() -> None:
    for name in ("torch.onnx", "torch._export", "torch.export", "onnxscript", "alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="torch.onnx")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*axis name.*")


def run(cfg: DictConfig) -> RunResult:
    """Train, evaluate, export and track one model as configured."""
    import lightning as L

    _quiet_libraries()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    root = Path(cfg.paths.root_dir)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    source = instantiate(cfg.data.source)
    tables: Tables = source.load()
    timings["data_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prep = prepare(tables, cfg)
    timings["features_s"] = time.perf_counter() - t0
    counts = np.bincount(prep.split, minlength=3)
    console.print(f"[bold]data[/] {tables.name}: {len(prep.split):,} customers "
                  f"(train {counts[0]:,} / val {counts[1]:,} / test {counts[2]:,}), {len(tables.events):,} events, "
                  f"cutoff {tables.cutoff.date()}; intent rate {prep.targets[:, 0].mean():.3f}, "
                  f"churn rate {prep.targets[:, 1].mean():.3f}")

    # Built as partials and then called, so Hydra never converts the arrays into config nodes.
    datamodule = instantiate(cfg.data.datamodule, _partial_=True)(feats=prep.feats, targets=prep.targets,
                                                                  split=prep.split)
    model = instantiate(cfg.model.module)
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    trainer = instantiate(cfg.trainer, _partial_=True)(logger=logger or False, callbacks=_callbacks(cfg))
    run_id = logger.run_id if logger is not None else None
    try:
        result = _train_export_track(cfg, root, tables, prep, datamodule, model, trainer, logger, timings)
    except BaseException as err:
        if logger is not None:
            tracking.mark_failed(logger.experiment, run_id, err)
        raise
    return result


def _train_export_track(cfg, root, tables, prep, datamodule, model, trainer, logger, timings) -> RunResult:
    import torch

    from sellerlift import export, plots

    run_id = logger.run_id if logger is not None else None
    if logger is not None:
        logger.log_hyperparams(tracking.flatten(OmegaConf.to_container(cfg, resolve=True)))
        client = logger.experiment
        for key, value in {
            "data.fingerprint": tables.fingerprint, "git.commit": tracking.git_commit(root),
            "model.kind": cfg.model.name, "data.name": tables.name, "data.cutoff": str(tables.cutoff),
        }.items():
            client.set_tag(run_id, key, value)

    t0 = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    timings["fit_s"] = time.perf_counter() - t0
    n_train = int((prep.split == 0).sum())
    epochs = max(trainer.current_epoch, 1)
    timings["train_sequences_per_s"] = n_train * epochs / max(timings["fit_s"], 1e-9)

    best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
    ckpt = "best" if best else None
    test_out = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)[0]
    if best:  # trainer.test loaded the best weights into `model`
        model.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    test_metrics = {k: float(v) for k, v in test_out.items() if k.startswith("test/") and k != "test/loss"}
    ceiling = ceiling_metrics(prep)

    net = model.net.eval()
    bundle_dir = root / cfg.paths.bundles_dir / (run_id or time.strftime("%Y%m%d-%H%M%S"))
    t0 = time.perf_counter()
    onnx_path = export.export_sequence_onnx(net, bundle_dir / "sequence.onnx", len(EVENT_NUMERIC), len(AGGREGATES))
    parity = export.check_parity(net, onnx_path, len(EVENT_NUMERIC), len(AGGREGATES))
    timings["export_s"] = time.perf_counter() - t0
    export.write_bundle(bundle_dir, {"sequence": onnx_path}, prep.spec, test_metrics,
                        extra={"run_id": run_id, "model": cfg.model.name, "data": tables.name,
                               "data_fingerprint": tables.fingerprint, "cutoff": str(tables.cutoff),
                               "onnx_parity_max_abs_diff": parity})

    if logger is not None:
        client = logger.experiment
        for key, value in {**ceiling, "export/onnx_parity_max_abs_diff": parity,
                           **{f"timing/{k}": v for k, v in timings.items()}}.items():
            client.log_metric(run_id, key, float(value))
        test = prep.split == 2
        probs = predict_probs(net, prep.feats.take(np.flatnonzero(test)))
        with tempfile.TemporaryDirectory() as tmp:
            for i, head in enumerate(TARGETS):
                scores = {f"{cfg.model.name}": probs[:, i]}
                if prep.truth is not None:
                    scores["truth (ceiling)"] = prep.truth[TRUTH_COLUMNS[head]].to_numpy()[test]
                y = prep.targets[test, i]
                if 0 < y.mean() < 1:
                    p = plots.roc_and_calibration(y, scores, head, Path(tmp) / f"{head}_roc_calibration.png")
                    client.log_artifact(run_id, str(p), "plots")
        client.log_artifacts(run_id, str(bundle_dir), "bundle")
        if cfg.tracking.register:
            tracking.register_onnx(cfg.logger.tracking_uri, run_id, onnx_path, cfg.tracking.registered_model)
        client.set_terminated(run_id, "FINISHED")

    result = RunResult(run_id, bundle_dir, test_metrics, ceiling, parity, timings)
    print_summary(result, cfg)
    return result


def print_summary(result: RunResult, cfg: DictConfig) -> None:
    table = Table(title=f"test metrics — {cfg.model.name} on {cfg.data.name}")
    table.add_column("head")
    for col in ("AUROC", "ceiling AUROC", "AP", "ceiling AP", "ECE", "precision@top20%"):
        table.add_column(col, justify="right")
    m, c = result.test_metrics, result.ceiling

    def fmt(d, k):
        return f"{d[k]:.4f}" if k in d else "—"

    for head in TARGETS:
        table.add_row(head, fmt(m, f"test/{head}_auroc"), fmt(c, f"ceiling/{head}_auroc"), fmt(m, f"test/{head}_ap"),
                      fmt(c, f"ceiling/{head}_ap"), fmt(m, f"test/{head}_ece"), fmt(m, f"test/{head}_precision_top20"))
    console.print(table)
    console.print(f"training throughput: {result.timings.get('train_sequences_per_s', float('nan')):,.0f} "
                  f"sequences/s; ONNX parity max |diff| {result.parity:.1e}")
    if result.run_id:
        console.print(f"MLflow run: [bold]{result.run_id}[/] (store {cfg.logger.tracking_uri}; `make ui` to browse)")
    console.print(f"bundle: [bold]{result.bundle_dir}[/]")
