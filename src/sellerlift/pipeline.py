"""One training run: data -> features -> stages (model, extras) -> MLflow -> ONNX bundle.

``train.py`` composes the config with Hydra and calls :func:`run`; tests call it
with composed configs and tiny data. What a run trains is ``cfg.model.stage``;
``cfg.extras`` add to the same run and bundle (RFM segments by default).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from sellerlift import tracking
from sellerlift.data.sources import Tables
from sellerlift.features import FeatureSpec, build_features
from sellerlift.labels import make_labels, split_customers
from sellerlift.stages.context import Prepared, RunContext, is_global_zero

console = Console()


@dataclass
class RunResult:
    run_id: str | None
    bundle_dir: Path
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    bundle_extra: dict = field(default_factory=dict)


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


def _quiet_libraries() -> None:
    """Keep the console for our progress and results: libraries' chatter goes to WARNING+."""
    import mlflow  # noqa: F401  (configures its logger on import; set levels after that)

    for name in ("torch.onnx", "torch._export", "torch.export", "onnxscript", "onnx_ir", "alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", module="torch.onnx")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*axis name.*")


def run(cfg: DictConfig) -> RunResult:
    """Train, evaluate, export and track one model as configured."""
    from sellerlift import config_checks, reliability

    config_checks.check(cfg)  # a bad key fails here, naming it, before any work starts
    with reliability.sigterm_raises():  # SIGTERM -> exception -> the MLflow run is marked FAILED
        return _run(cfg)


def _run(cfg: DictConfig) -> RunResult:
    import lightning as L

    _quiet_libraries()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # Resolve the stages first: a typo in the config fails before any work starts.
    stages = [get_method(cfg.model.stage), *(get_method(name) for name in cfg.get("extras") or [])]
    root = Path(cfg.paths.root_dir)

    t0 = time.perf_counter()
    tables: Tables = instantiate(cfg.data.source).load()
    prep = prepare(tables, cfg)
    counts = np.bincount(prep.split, minlength=3)
    console.print(f"[bold]data[/] {tables.name}: {len(prep.split):,} customers "
                  f"(train {counts[0]:,} / val {counts[1]:,} / test {counts[2]:,}), {len(tables.events):,} events, "
                  f"cutoff {tables.cutoff.date()}; intent rate {prep.targets[:, 0].mean():.3f}, "
                  f"churn rate {prep.targets[:, 1].mean():.3f}")

    # Multi-process training (trainer=ddp_cpu, multi-node): only global rank 0 tracks, exports and writes.
    zero = is_global_zero()
    logger = instantiate(cfg.logger, **_logger_kwargs(cfg)) if cfg.get("logger") and zero else None
    run_id = logger.run_id if logger is not None else None
    bundle_dir = root / cfg.paths.bundles_dir / (run_id or time.strftime("%Y%m%d-%H%M%S"))
    if zero:
        bundle_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(cfg, root, tables, prep, bundle_dir, logger, run_id)
    ctx.timings["data_s"] = time.perf_counter() - t0
    try:
        _start_tracking(ctx)
        for stage in stages:
            stage(ctx)
            if not zero:  # other ranks only help train the model stage
                break
        if zero:
            _finish(ctx)
    except BaseException as err:
        if ctx.client is not None:
            tracking.mark_failed(ctx.client, run_id, err)
        raise
    return RunResult(run_id, bundle_dir, dict(ctx.metrics), dict(ctx.timings), dict(ctx.bundle_extra))


def _logger_kwargs(cfg: DictConfig) -> dict:
    """Run tags known at creation: the parent run of a sweep trial (``tracking.parent_run_id``)."""
    parent = (cfg.get("tracking") or {}).get("parent_run_id")
    if not parent:
        return {}
    import os

    tags = {"mlflow.parentRunId": str(parent)}
    for key, env in (("sweep.trial", "SELLERLIFT_SWEEP_TRIAL"), ("sweep.overrides", "SELLERLIFT_SWEEP_OVERRIDES")):
        if os.environ.get(env):  # a sweep trial (sellerlift.sweep.run_isolated): which one, with which overrides
            tags[key] = os.environ[env]
    return {"tags": tags}


def _start_tracking(ctx: RunContext) -> None:
    if ctx.logger is None:
        return
    ctx.logger.log_hyperparams(tracking.flatten(OmegaConf.to_container(ctx.cfg, resolve=True)))
    for key, value in {
        "data.fingerprint": ctx.tables.fingerprint, "git.commit": tracking.git_commit(ctx.root),
        "model.kind": ctx.cfg.model.name, "data.name": ctx.tables.name, "data.cutoff": str(ctx.tables.cutoff),
    }.items():
        ctx.client.set_tag(ctx.run_id, key, value)


def cold_start_prior(prep: Prepared, newest: float = 0.1) -> dict:
    """Label rates of the newest training customers (lowest ``newest`` share of tenure): what a customer with
    no history gets instead of the model's output on an empty sequence, which it never saw in training."""
    from sellerlift.constants import SCORE_OUTPUTS

    train = prep.split == 0
    tenure = prep.feats.raw_columns(["tenure_days"])[train, 0]
    cut = float(np.quantile(tenure, newest)) if len(tenure) else 0.0
    new = tenure <= cut
    rates = prep.targets[train][new].mean(axis=0) if new.any() else prep.targets[train].mean(axis=0)
    return {**{name: float(r) for name, r in zip(SCORE_OUTPUTS, rates)}, "customers": int(new.sum()),
            "max_tenure_days": cut, "basis": f"label rates of the newest {newest:.0%} of training customers"}


def _finish(ctx: RunContext) -> None:
    from sellerlift.runtime import write_bundle
    from sellerlift.schema import DISCOUNT_LEVELS

    cfg = ctx.cfg
    write_bundle(ctx.bundle_dir, ctx.bundle_files, ctx.prep.spec, ctx.metrics,
                 extra={"run_id": ctx.run_id, "model": cfg.model.name, "data": ctx.tables.name,
                        "data_fingerprint": ctx.tables.fingerprint, "cutoff": str(ctx.tables.cutoff),
                        "horizons": OmegaConf.to_container(cfg.data.horizons, resolve=True),
                        "discount_levels": list(DISCOUNT_LEVELS), "cold_start": cold_start_prior(ctx.prep),
                        **ctx.bundle_extra})
    if ctx.client is not None:
        ctx.log_metrics({f"timing/{k}": v for k, v in ctx.timings.items()})
        ctx.client.log_artifacts(ctx.run_id, str(ctx.bundle_dir), "bundle")
        _after_run(ctx)
        ctx.client.set_terminated(ctx.run_id, "FINISHED")
    _print_summary(ctx)


def _after_run(ctx: RunContext) -> None:
    """Champion check (registry alias) and the run report, once the bundle is logged."""
    from sellerlift import champion, report

    if (ctx.cfg.get("champion") or {}).get("enabled", False):
        decision = champion.check_run(ctx.client, ctx.run_id, ctx.cfg, bundle_dir=ctx.bundle_dir)
        if decision is not None:
            ctx.summary_rows.append(("champion", decision.summary()))
    if (ctx.cfg.get("report") or {}).get("enabled", False):
        ctx.summary_rows.append(("report", report.log_report(ctx.client, ctx.run_id)))


def _print_summary(ctx: RunContext) -> None:
    rows = list(ctx.summary_rows)
    if ctx.run_id:
        rows.append(("MLflow run", f"{ctx.run_id}  ({ctx.cfg.logger.tracking_uri}; `make ui` to browse)"))
    rows.append(("bundle", str(ctx.bundle_dir)))
    title = f"{ctx.cfg.model.name} on {ctx.tables.name}: test set"
    if console.width < 120:  # narrow terminals and log files: one "name: value" line each
        console.print(f"[bold]{title}[/]")
        for name, value in rows:
            console.print(f"  [bold]{name}[/]: {value}", soft_wrap=True)
        return
    table = Table(title=title, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
