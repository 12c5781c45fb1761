"""One training run: data -> features -> stages (model, extras) -> MLflow -> ONNX bundle.

``train.py`` composes the config with Hydra and calls :func:`run`; tests call it
with composed configs and tiny data. What a run trains is ``cfg.model.stage``;
``cfg.extras`` add to the same run and bundle (RFM segments by default).

Before any training the run counts the positives of each split and head; a split whose
rarer class has fewer than ``guards.min_positives`` customers is too small to measure:
``guards.on_small=warn`` (default) says so loudly, tags the run (it never becomes champion),
``refuse`` stops here (:class:`sellerlift.labels.SmallDataError`). ``data.rolling`` stacks
earlier cutoffs as more training rows (:func:`rolling_rows`).
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
from sellerlift.constants import SCORE_OUTPUTS, score_outputs
from sellerlift.data.sources import Tables
from sellerlift.features import FeatureSpec, SequenceFeatures, build_features
from sellerlift.labels import (
    SmallDataError,
    format_counts,
    label_counts,
    make_labels,
    rolling_cutoffs,
    small_splits,
    split_customers,
)
from sellerlift.stages.context import ExtraRows, Prepared, RunContext, is_global_zero

console = Console()


@dataclass
class RunResult:
    run_id: str | None
    bundle_dir: Path
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    bundle_extra: dict = field(default_factory=dict)


def prepare(tables: Tables, cfg: DictConfig) -> Prepared:
    """Features, labels and the split for every customer with history before the cutoff (+ rolling rows)."""
    spec = FeatureSpec(max_len=cfg.data.max_len)
    feats = build_features(tables.events, tables.cutoff, spec)
    labels = make_labels(
        tables.events,
        tables.cutoff,
        feats.customer_id,
        intent_days=cfg.data.horizons.intent_days,
        churn_days=cfg.data.horizons.churn_days,
    )
    split = split_customers(feats.customer_id, tuple(cfg.data.split), seed=cfg.data.split_seed)
    extra = rolling_rows(tables, cfg, feats.customer_id[split == 0])
    spec.fit(feats, np.flatnonzero(split == 0))  # scaling from training customers only (at the latest cutoff)
    feats = spec.transform(feats)
    if extra is not None:
        extra.feats = spec.transform(extra.feats)
    targets = labels[["intent", "churn"]].to_numpy(np.float32)
    truth = None
    if tables.truth is not None:
        truth = tables.truth.set_index("customer_id").loc[feats.customer_id].reset_index()
    return Prepared(feats, targets, split, spec, truth, extra)


def rolling_rows(tables: Tables, cfg: DictConfig, train_customers: np.ndarray) -> ExtraRows | None:
    """Training rows at earlier cutoffs (``data.rolling.cutoffs`` in all, ``step_days`` apart; None when 1).

    Only events before the evaluation cutoff are read, every earlier label window ends by it
    (:func:`sellerlift.labels.rolling_cutoffs`), and only training customers get rows: validation
    and test stay the latest cutoff's held-out customers, untouched.
    """
    rcfg = cfg.data.get("rolling") or {}
    n = rcfg.get("cutoffs", 1)
    if n == 1:
        return None
    horizons = {k: int(v) for k, v in cfg.data.horizons.items()}
    cuts = rolling_cutoffs(tables.cutoff, horizons, n, rcfg.get("step_days", 30))
    past = tables.events[tables.events["ts"].to_numpy() < np.datetime64(tables.cutoff)]
    parts, targets, when = [], [], []
    for c in cuts:
        f = build_features(past, c, FeatureSpec(max_len=cfg.data.max_len))
        f = f.take(np.flatnonzero(np.isin(f.customer_id, train_customers)))
        if len(f.customer_id) == 0:
            continue
        lab = make_labels(past, c, f.customer_id, horizons["intent_days"], horizons["churn_days"], check=False)
        parts.append(f)
        targets.append(lab[["intent", "churn"]].to_numpy(np.float32))
        when.append(np.full(len(f.customer_id), np.datetime64(c, "us")))
    if not parts:
        return ExtraRows(
            build_features(past.iloc[:0], tables.cutoff, FeatureSpec(max_len=cfg.data.max_len)),
            np.zeros((0, 2), np.float32),
            np.zeros(0, "datetime64[us]"),
        )
    return ExtraRows(SequenceFeatures.concat(parts), np.concatenate(targets), np.concatenate(when))


def check_guards(cfg: DictConfig, counts: dict) -> str | None:
    """The reason a run is too small to measure (None if it is not); raises under ``guards.on_small=refuse``."""
    g = cfg.get("guards") or {}
    min_pos, on_small = g.get("min_positives", 20), str(g.get("on_small", "warn"))
    if on_small not in ("warn", "refuse"):
        raise ValueError(f"guards.on_small={on_small!r}: expected 'warn' or 'refuse'")
    if not isinstance(min_pos, int) or isinstance(min_pos, bool) or min_pos < 0:
        raise ValueError(f"guards.min_positives={min_pos!r}: expected an integer >= 0")
    small = small_splits(counts, min_pos)
    if not small:
        return None
    reason = f"{'; '.join(small)} < guards.min_positives={min_pos}"
    if on_small == "refuse":
        raise SmallDataError(
            f"too few labels to train and measure a model: {reason}. Use more customers or a "
            "longer file, stack earlier cutoffs (data.rolling.cutoffs=3), choose other horizons "
            "(data.horizons.*), or set guards.on_small=warn to train anyway (such a run is "
            "never promoted to champion)"
        )
    return reason


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
    from sellerlift.data.mapping import fill_data_name

    fill_data_name(cfg)  # data.name null -> the file's name (as train.py does), before anything logs under it
    config_checks.check(cfg)  # a bad key fails here, naming it, before any work starts
    with reliability.sigterm_raises():  # SIGTERM -> exception -> the MLflow run is marked FAILED
        return _run(cfg)


def _run(cfg: DictConfig) -> RunResult:
    import lightning as L
    import torch

    _quiet_libraries()
    # Intra-op threads for training: on a small shared CPU box the default (all cores) spin-waits and runs
    # the GRU's small matrix products several times slower than one thread (docs/performance.md).
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # Resolve the stages first: a typo in the config fails before any work starts.
    stages = [get_method(cfg.model.stage), *(get_method(name) for name in cfg.get("extras") or [])]
    root = Path(cfg.paths.root_dir)

    t0 = time.perf_counter()
    source = instantiate(cfg.data.source)
    tables: Tables = source.load()
    prep = prepare(tables, cfg)
    counts = np.bincount(prep.split, minlength=3)
    labels = label_counts(prep.targets, prep.split)
    coverage = tables.coverage
    before = coverage.events_before if coverage is not None else int((tables.events["ts"] < tables.cutoff).sum())
    console.print(
        f"[bold]data[/] {tables.name}: {len(prep.split):,} customers "
        f"(train {counts[0]:,} / val {counts[1]:,} / test {counts[2]:,}), {before:,} events before the "
        f"cutoff {tables.cutoff.date()}; intent rate {prep.targets[:, 0].mean():.3f}, "
        f"churn rate {prep.targets[:, 1].mean():.3f}"
    )
    if coverage is not None and coverage.customers_excluded:
        console.print(
            f"[bold]data[/] {coverage.customers_excluded:,} customers have no event before the cutoff and "
            "are not in the training rows (see the coverage lines above)"
        )
    if prep.extra is not None:
        cuts = ", ".join(str(np.datetime_as_string(c, "D")) for c in np.unique(prep.extra.cutoff)[::-1]) or "none"
        console.print(
            f"[bold]rolling[/] {len(prep.extra.targets):,} more training rows of training customers at "
            f"earlier cutoffs ({cuts}); their label windows end by {tables.cutoff.date()}"
        )
    console.print(f"[bold]labels[/] {format_counts(labels)}")
    small = check_guards(cfg, labels)  # raises under guards.on_small=refuse, before any run is created
    if small:
        console.print(
            f"[bold red]WARNING: too few labels to measure[/] ({small}): test metrics are noise, read "
            "their intervals; this run will not become champion (guards.on_small=refuse to stop here)"
        )

    # Multi-process training (trainer=ddp_cpu, multi-node): only global rank 0 tracks, exports and writes.
    zero = is_global_zero()
    logger = instantiate(cfg.logger, **_logger_kwargs(cfg)) if cfg.get("logger") and zero else None
    run_id = logger.run_id if logger is not None else None
    bundle_dir = root / cfg.paths.bundles_dir / (run_id or time.strftime("%Y%m%d-%H%M%S"))
    if zero:
        bundle_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(cfg, root, tables, prep, bundle_dir, logger, run_id)
    ctx.timings["data_s"] = time.perf_counter() - t0
    ctx.bundle_extra["label_counts"] = labels
    ctx.bundle_extra["guards"] = {
        "min_positives": int((cfg.get("guards") or {}).get("min_positives", 20)),
        "small_data": bool(small),
        "reason": small,
    }
    if small:
        ctx.summary_rows.append(("WARNING", f"too few labels to measure: {small}; not a champion candidate"))
    try:
        _start_tracking(ctx, getattr(source, "path", None) or tables.world)
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


def data_profile(ctx: RunContext) -> dict:
    """Row and customer counts of the run's data (the MLflow dataset's profile)."""
    ev, cut = ctx.tables.events, np.datetime64(ctx.tables.cutoff)
    n = np.bincount(ctx.prep.split, minlength=3)
    return {
        "rows": int(len(ev)),
        "rows_before_cutoff": int((ev["ts"].to_numpy() < cut).sum()),
        "customers": int(ev["customer_id"].nunique()),
        "customers_with_history": int(len(ctx.prep.split)),
        "train_customers": int(n[0]),
        "val_customers": int(n[1]),
        "test_customers": int(n[2]),
        "extra_training_rows": int(len(ctx.prep.extra.targets)) if ctx.prep.extra is not None else 0,
        "cutoff": str(ctx.tables.cutoff.date()),
        "horizons": dict(ctx.cfg.data.horizons),
    }


def _start_tracking(ctx: RunContext, data_source=None) -> None:
    if ctx.logger is None:
        return
    from sellerlift.champion import SMALL_DATA_REASON_TAG, SMALL_DATA_TAG

    ctx.logger.log_hyperparams(tracking.flatten(OmegaConf.to_container(ctx.cfg, resolve=True)))
    guards = ctx.bundle_extra.get("guards") or {}
    for key, value in {
        "data.fingerprint": ctx.tables.fingerprint,
        "git.commit": tracking.git_commit(ctx.root),
        "model.kind": ctx.cfg.model.name,
        "data.name": ctx.tables.name,
        "data.cutoff": str(ctx.tables.cutoff),
        "data.horizons": "/".join(score_outputs(ctx.cfg.data.horizons)),
        SMALL_DATA_TAG: str(bool(guards.get("small_data"))).lower(),
        **({SMALL_DATA_REASON_TAG: guards["reason"]} if guards.get("reason") else {}),
    }.items():
        ctx.client.set_tag(ctx.run_id, key, value)
    tracking.mark_model_training(ctx.client, ctx.client.get_run(ctx.run_id).info.experiment_id)
    tracking.log_dataset(
        ctx.client, ctx.run_id, ctx.tables.name, ctx.tables.fingerprint, data_source, data_profile(ctx)
    )
    counts = ctx.bundle_extra.get("label_counts") or {}
    ctx.log_metrics(
        {f"data/{s}_{h}_positives": c["positives"] for s, heads in counts.items() for h, c in heads.items()}
    )


def cold_start_prior(prep: Prepared, newest: float = 0.1, outputs: tuple[str, ...] = SCORE_OUTPUTS) -> dict:
    """Label rates of the newest training customers (lowest ``newest`` share of tenure): what a customer with
    no history gets instead of the model's output on an empty sequence, which it never saw in training.
    Keyed by the bundle's output names (``outputs``: :func:`sellerlift.constants.score_outputs`)."""
    train = prep.split == 0
    tenure = prep.feats.raw_columns(["tenure_days"])[train, 0]
    cut = float(np.quantile(tenure, newest)) if len(tenure) else 0.0
    new = tenure <= cut
    rates = prep.targets[train][new].mean(axis=0) if new.any() else prep.targets[train].mean(axis=0)
    return {
        **{name: float(r) for name, r in zip(outputs, rates)},
        "customers": int(new.sum()),
        "max_tenure_days": cut,
        "basis": f"label rates of the newest {newest:.0%} of training customers",
    }


def _finish(ctx: RunContext) -> None:
    from sellerlift.runtime import write_bundle
    from sellerlift.schema import DISCOUNT_LEVELS

    cfg = ctx.cfg
    write_bundle(
        ctx.bundle_dir,
        ctx.bundle_files,
        ctx.prep.spec,
        ctx.metrics,
        extra={
            "run_id": ctx.run_id,
            "model": cfg.model.name,
            "data": ctx.tables.name,
            "data_fingerprint": ctx.tables.fingerprint,
            "cutoff": str(ctx.tables.cutoff),
            "horizons": OmegaConf.to_container(cfg.data.horizons, resolve=True),
            "discount_levels": list(DISCOUNT_LEVELS),
            "cold_start": cold_start_prior(ctx.prep, outputs=score_outputs(cfg.data.horizons)),
            **ctx.bundle_extra,
        },
    )
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
        decision = champion.check_run(ctx.client, ctx.run_id, ctx.cfg, bundle_dir=ctx.bundle_dir, data=ctx.tables.name)
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
