"""Stage: the promotion engine: propensity -> DIPN -> budgeted allocation, measured against the truth.

``train_promotion(ctx)`` runs either as an extra after the sequence model (its own
MLflow run, nested under the main one) or as the main model (``model=dipn``, logged
into the main run). The recipe (:func:`_train`):

1. the logged offers of each split with their DIPN inputs as of each offer's time
   (:mod:`sellerlift.stages.promotion_offers`; the run's sequence.onnx scores through
   the runtime when DIPN reads them);
2. the propensity model of the logged policy, and clipped IPW weights;
3. DIPN and the baselines (DIPN without IPW, an unconstrained MLP S-learner, LightGBM
   with the discount as a feature) on the same offers, built from the ``promotion``
   config's ``_target_`` blocks (:mod:`sellerlift.stages.promotion_models`);
4. each model's curves of the held-out (test) customers at the cutoff against the
   simulator's true curves, and Qini/AUUC per level on the randomised slice (plus an
   IPW version on the logged offers);
5. ``dipn.onnx`` (parity-checked) into the bundle;
6. budgets allocated with each model's curves and with the rules sellers use, every
   policy scored with the *true* curves next to the oracle (:mod:`sellerlift.policy_eval`);
7. the manifest's ``dipn`` section, the run's metrics, plots and tables, the registry.

It returns a :class:`PromotionResult` (what benchmarks read); everything in it is also
in the MLflow run.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from sellerlift import export, plots, policy_eval, tracking
from sellerlift.promotion_features import input_names, order_value
from sellerlift.stages.context import RunContext
from sellerlift.stages.promotion_models import evaluate, fit_baselines, fit_dipn
from sellerlift.stages.promotion_offers import (
    HeldOut,
    Offers,
    SequenceScorer,
    fit_logged_policy,
    held_out_at_cutoff,
    load_offers,
    propensity_metrics,
    value_fallback,
    with_ipw_weights,
)

STAGE = "sellerlift.stages.promotion.train_promotion"
MODEL_NAMES = {"dipn": "DIPN", "dipn_no_ipw": "DIPN without IPW", "mlp": "MLP S-learner", "lightgbm": "LightGBM"}
HEADLINE = (
    "test/curve_rmse",
    "test/uplift_rmse",
    "test/non_monotone_frac",
    "test/offer_ece",
    "alloc/medium/share_of_oracle/dipn",
    "export/dipn_onnx_parity_max_abs_diff",
)  # into the manifest


@dataclass
class PromotionResult:
    """What one run of the stage measured (also in its MLflow run: metrics and ``tables/*.csv``)."""

    metrics: dict[str, float]  # every metric the run logs
    per_model: dict[str, dict[str, float]]  # model -> its test metrics (table model_comparison)
    allocation: pd.DataFrame | None  # policy x budget on the true curves (table allocation_by_budget)
    run_id: str | None  # the MLflow run logged into (child run, or the main run with model=dipn)


# --------------------------------------------------------------------------- entry point
def train_promotion(ctx: RunContext) -> PromotionResult | None:
    if "dipn" in ctx.bundle_files:  # model=dipn with the stage also listed in extras: train once
        return None
    is_main = ctx.cfg.model.stage == STAGE
    if ctx.tables.promotions is None or len(ctx.tables.promotions) == 0:
        if not is_main:  # an extra on data without campaigns (CDNOW, most seller files): nothing to learn from
            ctx.summary_rows.append(("promotion engine", f"skipped: {ctx.tables.name} has no logged campaigns"))
            return None
        raise ValueError(f"{ctx.tables.name}: no promotions table; the promotion engine needs logged campaigns")
    with _mlflow_run(ctx, is_main) as run_id:
        return _train(ctx, ctx.cfg.promotion, run_id, is_main)


def _mlflow_run(ctx: RunContext, is_main: bool):
    """The run to log into: the main run (model=dipn), else a child run of it; none without tracking."""
    if ctx.client is None or is_main:
        return contextlib.nullcontext(ctx.run_id)
    params = OmegaConf.to_container(ctx.cfg, resolve=True)
    params["model"] = {"name": "dipn", "stage": STAGE, "parent_model": ctx.cfg.model.name}
    tags = {
        "model.kind": "dipn",
        "data.fingerprint": ctx.tables.fingerprint,
        "data.name": ctx.tables.name,
        "data.cutoff": str(ctx.tables.cutoff),
        "git.commit": tracking.git_commit(ctx.root),
    }
    return tracking.child_run(ctx.client, ctx.run_id, f"dipn-{ctx.tables.name}", tags, params)


# --------------------------------------------------------------------------- the recipe
def _train(ctx: RunContext, pcfg: DictConfig, run_id: str | None, is_main: bool) -> PromotionResult:
    timings = _Timings()
    scorer = _sequence_scorer(ctx, pcfg)
    with timings("offer_features"):
        offers = load_offers(ctx, pcfg, scorer)
    with timings("propensity"):
        policy = fit_logged_policy(pcfg, offers)
        offers = with_ipw_weights(pcfg, offers, policy)
    with timings("dipn_fit"):
        dipn = fit_dipn(pcfg, offers)
    with timings("baselines_fit"):
        models = {"dipn": dipn, **fit_baselines(pcfg, offers)}
    held_out = held_out_at_cutoff(ctx, scorer)
    scored = {name: evaluate(predict, held_out, offers.test) for name, predict in models.items()}
    curves = {name: c for name, (c, _) in scored.items()}
    per_model = {name: m for name, (_, m) in scored.items()}
    with timings("dipn_export"):
        onnx_path, parity = _export_dipn(ctx, pcfg, dipn.net, held_out)
    with timings("allocation_eval"):
        fallback = value_fallback(ctx.prep)
        ceiling = {"observable_ceiling": ctx.ceiling["test_curves"]} if ctx.ceiling else {}
        alloc = _evaluate_allocation(pcfg, {**curves, **ceiling}, held_out, fallback)
    timings.stop()
    ctx.promotion = {
        "offers": offers,
        "policy": policy,
        "scorer": scorer,
        "held_out": held_out,
        "fallback": fallback,
        "dipn": dipn,
    }  # what later stages (stages.enduring) build on

    metrics = {
        **propensity_metrics(pcfg, policy, offers),
        **_model_metrics(per_model, held_out),
        "export/dipn_onnx_parity_max_abs_diff": parity,
        **(alloc.metrics if alloc else {}),
        **{f"timing/{k}": v for k, v in timings.items()},
        "train/offers": float(len(offers.train)),
        "train/epochs": float(dipn.report["epochs"]),
    }
    ctx.bundle_extra["dipn"] = _manifest_entry(pcfg, offers.n_inputs, scorer is not None, parity, fallback)
    ctx.metrics.update({k if is_main else f"dipn/{k}": metrics[k] for k in HEADLINE if k in metrics})
    ctx.timings["promotion_s"] = timings["promotion_stage_s"]
    if ctx.client is not None and run_id is not None:
        _log_plots(ctx.client, run_id, curves, held_out, alloc, policy, offers.val)
        _log_run(ctx, pcfg, run_id, metrics, dipn.report, _tables(per_model, alloc), onnx_path)
    ctx.summary_rows += _summary(metrics, per_model, alloc, policy.report["chosen"], scorer is not None)
    return PromotionResult(metrics, per_model, alloc.table if alloc else None, run_id)


# --------------------------------------------------------------------------- steps
class _Timings(dict):
    """Phase timings (``<phase>_s``), printed as they come: a long stage should say where it is."""

    def __init__(self):
        super().__init__()
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        yield
        self[f"{phase}_s"] = time.perf_counter() - t0
        from rich.console import Console

        Console().print(f"[dim]promotion: {phase} {self[f'{phase}_s']:.1f} s[/]")

    def stop(self) -> None:
        from rich.console import Console

        self["promotion_stage_s"] = time.perf_counter() - self._start
        Console().print(f"[dim]promotion: stage {self['promotion_stage_s']:.1f} s[/]")


def _sequence_scorer(ctx: RunContext, pcfg: DictConfig) -> SequenceScorer:
    """The run's sequence.onnx through the runtime, as the server scores it, when DIPN reads its outputs."""
    have = "sequence" in ctx.bundle_files
    use = have if str(pcfg.use_sequence_outputs) == "auto" else bool(pcfg.use_sequence_outputs)
    if use and not have:
        raise ValueError(
            "promotion.use_sequence_outputs=true needs the sequence model in the same run "
            "(model=gru/transformer); use auto or false with model=dipn"
        )
    if not use:
        return None
    from sellerlift.runtime import SequenceModel

    return SequenceModel.from_file(ctx.bundle_files["sequence"]).predict


def _model_metrics(per_model: dict[str, dict], held_out: HeldOut) -> dict[str, float]:
    """``test/<metric>`` for DIPN, ``baseline/<model>/<metric>`` for the others."""
    out = {
        f"{'test' if name == 'dipn' else f'baseline/{name}'}/{k}": v
        for name, m in per_model.items()
        for k, v in m.items()
    }
    if held_out.truth is not None:
        out["truth/offer_free_mean_p0"] = float(held_out.true_curves[:, 0].mean())
        if "mlp" in per_model:  # the isotonic constraint's noise reduction vs a plain network
            out["test/curve_rmse_reduction_vs_mlp"] = (
                1 - per_model["dipn"]["curve_rmse"] / per_model["mlp"]["curve_rmse"]
            )
    return out


def _export_dipn(ctx: RunContext, pcfg: DictConfig, net, held_out: HeldOut) -> tuple[Path, float]:
    """dipn.onnx into the bundle; parity with PyTorch on random inputs and on real ones."""
    n_inputs = held_out.x.shape[1]
    path = export.export_dipn_onnx(net, ctx.bundle_dir / "dipn.onnx", n_inputs, dynamo=bool(pcfg.onnx_dynamo))
    parity = export.check_dipn_parity(net, path, n_inputs, extra=held_out.x[:2048])
    ctx.bundle_files["dipn"] = path
    return path, parity


def _evaluate_allocation(pcfg, curves, held_out: HeldOut, fallback: float) -> policy_eval.AllocationEval | None:
    """Every policy at every budget on the true curves (simulator only: real data has no truth)."""
    truth = held_out.truth
    if truth is None:
        return None
    return policy_eval.evaluate_allocation(
        curves,
        held_out.true_curves,
        truth["value"].to_numpy(),
        order_value(held_out.feats, fallback),
        held_out.feats.raw_aggregates,
        truth["archetype"].astype(str).to_numpy(),
        pcfg.allocation,
        int(pcfg.seed),
    )


# --------------------------------------------------------------------------- what the run records
def _manifest_entry(pcfg: DictConfig, n_inputs: int, use_seq: bool, parity: float, fallback: float) -> dict:
    """The bundle manifest's ``dipn`` section: what the runtime needs to build DIPN's inputs and decide."""
    return {
        "inputs": input_names(use_seq),
        "n_inputs": n_inputs,
        "uses_sequence_outputs": use_seq,
        "monotone": "by construction (softplus increments)",
        "onnx_parity_max_abs_diff": parity,
        "value_fallback": fallback,
        "margin": float(pcfg.allocation.margin),
    }


def _log_run(
    ctx: RunContext,
    pcfg: DictConfig,
    run_id: str,
    metrics: dict,
    fit_report: dict,
    tables: dict[str, pd.DataFrame],
    onnx_path: Path,
) -> None:
    """Metrics (val/loss per epoch as steps), ``tables/*``, then dipn.onnx registered as a model version
    (last: registering goes through ``mlflow.start_run``, which ends the run when it is done)."""
    tracking.log_metrics(ctx.client, run_id, metrics, history={"val/loss": fit_report["val_loss_history"]})
    for name, table in tables.items():
        tracking.log_table(ctx.client, run_id, table, name)
    if pcfg.register:  # per data set (sellerlift-dipn-<data>), with a signature and descriptions
        from sellerlift.stages.registry import register_dipn

        register_dipn(ctx, run_id, onnx_path, pcfg.registered_model, metrics)


def _log_plots(client, run_id, curves, held_out: HeldOut, alloc, policy, val: Offers) -> None:
    labelled = {MODEL_NAMES.get(name, name): c for name, c in curves.items()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if held_out.truth is not None:
            plots.response_curves_by_archetype(
                labelled,
                held_out.true_curves,
                held_out.truth["archetype"].astype(str).to_numpy(),
                tmp / "response_curves_by_archetype.png",
            )
            plots.uplift_by_level(labelled, held_out.true_curves, tmp / "uplift_by_level.png")
        if alloc is not None and len(alloc.budget_curve):
            plots.budget_curves(alloc.budget_curve, tmp / "roi_and_profit_by_budget.png")
        if alloc is not None and len(alloc.levels):
            plots.levels_by_archetype(alloc.levels, tmp / "assigned_levels_by_archetype.png")
        plots.propensity_calibration(
            policy.predict_proba(val.x[val.logged]), val.level[val.logged], tmp / "propensity_calibration.png"
        )
        client.log_artifacts(run_id, str(tmp), "plots")


def _tables(per_model: dict, alloc) -> dict[str, pd.DataFrame]:
    tables = {"model_comparison": pd.DataFrame([{"model": k, **v} for k, v in per_model.items()])}
    if alloc is not None and len(alloc.table):
        t = alloc.table
        tables["allocation_by_budget"] = t
        tables["roi_table"] = t.pivot(index="budget", columns="policy", values="roi").reset_index()
        tables["share_of_oracle"] = t.pivot(index="budget", columns="policy", values="share_of_oracle").reset_index()
        tables["budget_curve"] = alloc.budget_curve
        tables["levels_by_archetype"] = alloc.levels
    return tables


def _summary(metrics, per_model, alloc, chosen, use_seq) -> list[tuple[str, str]]:
    rows = []
    for name, m in per_model.items():
        if "curve_rmse" in m:
            rows.append(
                (
                    f"promo {MODEL_NAMES.get(name, name)}: curve / uplift RMSE, non-monotone, Qini(RCT)",
                    f"{m['curve_rmse']:.4f} / {m['uplift_rmse']:.4f}, {m['non_monotone_frac']:.1%}, "
                    f"{m.get('qini_rct_mean', float('nan')):.3f}",
                )
            )
    rows.append(
        (
            "promo propensity",
            f"{chosen}, ECE {metrics['propensity/ece']:.4f}; "
            f"inputs: aggregates{' + sequence scores' if use_seq else ''}",
        )
    )
    if alloc is not None and len(alloc.table):
        for scen, t in alloc.table.groupby("budget", sort=False):
            t = t.set_index("policy")
            parts = [
                f"{p} {100 * t.loc[p, 'roi']:.0f}% ({t.loc[p, 'share_of_oracle']:.0%})"
                for p in ("dipn", "rule_top_value", "oracle")
                if p in t.index
            ]
            rows.append((f"promo ROI ({scen} budget), share of oracle profit", ", ".join(parts)))
    if "alloc/lp_gap_rel" in metrics:
        rows.append(("promo Lagrangian vs HiGHS LP gap", f"{metrics['alloc/lp_gap_rel']:.2e}"))
    rows.append(("DIPN ONNX parity", f"{metrics['export/dipn_onnx_parity_max_abs_diff']:.1e}"))
    return rows
