"""Stage: the direct and enduring response per level (CDEE-style), trained on logged offers with a 90-day follow-up.

Runs after the promotion stage (it reuses its offers, their offer-time inputs and the propensity
model). Offers whose 90-day follow-up ends before the cutoff are labelled from the events
(:mod:`sellerlift.offer_outcomes`): converted in the window, retained after it, 90-day revenue
before discount. :class:`~sellerlift.models.enduring.EnduringNet` (monotone conversion, free
retention and revenue) and its unconstrained baseline are trained with IPW weights; on the
simulator both are measured against the 90-day truth of every level at the cutoff (RMSE of the
predicted *effect* of each level over no offer, noise-corrected for the truth's Monte Carlo error;
rank correlation), next to the observable ceiling and an EconML DR-learner when configured.
``enduring.onnx`` goes into the bundle (parity-checked).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sellerlift import export, tracking
from sellerlift.models import enduring as E
from sellerlift.offer_outcomes import follow_up_mask, offer_outcomes
from sellerlift.schema import DISCOUNT_LEVELS
from sellerlift.stages.context import RunContext

LEVELS = np.asarray(DISCOUNT_LEVELS)


def train_enduring(ctx: RunContext) -> dict | None:
    ecfg = (ctx.cfg.get("promotion") or {}).get("enduring")
    if ecfg is None or not ecfg.get("enabled", True):
        return None
    if ctx.promotion is None:
        ctx.summary_rows.append(("enduring response", "skipped: the promotion stage did not run (no campaigns)"))
        return None
    H, margin = int(ecfg.horizon_days), float(ctx.cfg.promotion.allocation.margin)
    splits = {name: _labelled(ctx, o, H) for name, o in ctx.promotion["offers"].items()}
    if min(len(s[0]) for s in splits.values()) < 200:
        ctx.summary_rows.append(("enduring response", f"skipped: too few offers with a {H}-day follow-up"))
        return None
    fitted = {"enduring": _fit(ctx, ecfg, splits, monotone=True), "unconstrained": _fit(ctx, ecfg, splits, False)}
    held = ctx.promotion["held_out"]
    preds = {name: E.predict(net, held.x, float(ecfg.module.revenue_scale)) for name, net in fitted.items()}
    if ctx.ceiling is not None and held.truth is not None:
        preds["observable_ceiling"] = _ceiling_prediction(ctx, held)
    if ecfg.get("econml") and held.truth is not None:
        preds["econml_dr"] = _econml(ecfg, splits, held.x, margin, int(ctx.cfg.seed))
    metrics, table = {}, None
    if held.truth is not None:
        from sellerlift.promotion_features import order_value

        table = effect_table(preds, held.truth, margin, H, order_value(held.feats, ctx.promotion["fallback"]))
        for row in table.to_dict("records"):
            for k, v in row.items():
                if k != "model":
                    metrics[f"enduring/{row['model']}/{k}"] = v
    path = ctx.bundle_dir / "enduring.onnx"
    export.export_enduring_onnx(fitted["enduring"], path, held.x.shape[1])
    parity = export.check_enduring_parity(fitted["enduring"], path, held.x.shape[1], extra=held.x[:2048])
    ctx.bundle_files["enduring"] = path
    ctx.enduring = {"net": fitted["enduring"], "revenue_scale": float(ecfg.module.revenue_scale)}
    ctx.bundle_extra["enduring"] = {
        "horizon_days": H,
        "revenue_scale": float(ecfg.module.revenue_scale),
        "outputs": list(E.OUTPUTS),
        "monotone": {"conversion": True, "retention": False, "revenue": False},
        "uses_sequence_outputs": bool(ctx.promotion["scorer"] is not None),
        "onnx_parity_max_abs_diff": parity,
    }
    metrics["export/enduring_onnx_parity_max_abs_diff"] = parity
    metrics["train/enduring_offers"] = float(len(splits["train"][0]))
    ctx.metrics.update({k: v for k, v in metrics.items() if k.startswith("enduring/enduring/")})
    _log(ctx, metrics, table)
    if table is not None:
        best = table.set_index("model")
        ctx.summary_rows.append(
            (
                "enduring effect RMSE of 90-day profit (noise-corrected), rank corr",
                ", ".join(
                    f"{m} {best.loc[m, 'profit_effect_rmse']:.2f} / {best.loc[m, 'profit_effect_spearman']:.2f}"
                    for m in best.index
                ),
            )
        )
    return {"metrics": metrics, "table": table, "nets": fitted}


def _labelled(ctx: RunContext, o, H: int):
    keep = follow_up_mask(o.frame, ctx.tables.cutoff, H)
    frame = o.frame[keep].reset_index(drop=True)
    out = offer_outcomes(ctx.tables.events, frame, H, all_offers=ctx.tables.promotions)
    return (
        o.x[keep],
        o.level[keep],
        o.converted[keep],
        out[f"retained_{H}d"].to_numpy().astype(np.float32),
        out[f"gross_{H}d"].to_numpy(np.float32),
        o.weight[keep],
        frame,
    )


def _fit(ctx: RunContext, ecfg, splits: dict, monotone: bool) -> E.EnduringNet:
    import torch

    torch.manual_seed(int(ctx.cfg.seed))
    net = instantiate(ecfg.net, n_inputs=splits["train"][0].shape[1], monotone=monotone)
    module = instantiate(ecfg.module, _partial_=True)(net=net)
    callbacks = [instantiate(c) for c in (ctx.cfg.promotion.dipn.get("callbacks") or {}).values() if c is not None]
    trainer = instantiate(ctx.cfg.promotion.dipn.trainer, _partial_=True)(
        callbacks=callbacks, max_epochs=int(ecfg.max_epochs)
    )
    data = {k: E.EnduringOffers(*v[:6]) for k, v in splits.items()}
    E.fit(
        trainer,
        module,
        data["train"],
        data["val"],
        batch_size=int(ctx.cfg.promotion.dipn.batch_size),
        seed=int(ctx.cfg.seed),
    )
    return module.net.eval()


def _ceiling_prediction(ctx: RunContext, held) -> dict[str, np.ndarray]:
    e = ctx.ceiling["model"].enduring(held.feats.raw)
    return {"revenue": e["gross"], "cost": e["cost"]}


def _econml(ecfg, splits: dict, x_cut: np.ndarray, margin: float, seed: int) -> dict[str, np.ndarray]:
    """A multi-treatment DR-learner (EconML) on the 90-day profit of the same offers: what a user would pick."""
    from econml.dr import DRLearner
    from lightgbm import LGBMClassifier, LGBMRegressor

    x, level, _, _, gross, _, frame = splits["train"]
    y = margin * gross - frame["cost"].to_numpy()
    lgb = {
        "n_estimators": 150,
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_child_samples": 100,
        "verbose": -1,
        "n_jobs": 1,
        "random_state": seed,
    }
    est = DRLearner(
        model_propensity=LGBMClassifier(**lgb),
        model_regression=LGBMRegressor(**lgb),
        model_final=LGBMRegressor(**lgb),
        cv=2,
        random_state=seed,
    )
    est.fit(y, level, X=x)
    effect = np.column_stack([np.zeros(len(x_cut))] + [est.effect(x_cut, T0=0, T1=k) for k in range(1, len(LEVELS))])
    return {"profit_effect": effect}


def profit_effects(pred: dict, margin: float, basket: np.ndarray) -> np.ndarray:
    """[n, K] incremental 90-day profit of each level over no offer, from a model's outputs: the margin on the
    extra gross revenue minus the expected coupon (P(redeem) x d x the customer's basket), or given directly."""
    if "profit_effect" in pred:
        return pred["profit_effect"]
    rev = pred["revenue"]
    cost = pred["cost"] if "cost" in pred else pred["conversion"] * (LEVELS / 100.0)[None, :] * basket[:, None]
    return margin * (rev - rev[:, :1]) - cost


def effect_table(preds: dict, truth: pd.DataFrame, margin: float, H: int, basket: np.ndarray) -> pd.DataFrame:
    """Per model: RMSE and rank correlation of the predicted incremental 90-day profit (and retention) per level
    against the Monte Carlo truth; RMSE noise-corrected: sqrt(max(MSE - mean truth SE^2, 0))."""
    from scipy.stats import spearmanr

    g = np.column_stack([truth[f"gross_{H}d_{d}"] for d in LEVELS])
    c = np.column_stack([truth[f"cost_{H}d_{d}"] for d in LEVELS])
    true_profit = margin * (g - g[:, :1]) - c
    se = np.column_stack([np.zeros(len(truth))] + [truth[f"gross_{H}d_{d}_diff_se"] for d in LEVELS[1:]]) * margin
    r = np.column_stack([truth[f"p_retain_{d}"] for d in LEVELS])
    r_se = np.column_stack([np.zeros(len(truth))] + [truth[f"p_retain_{d}_diff_se"] for d in LEVELS[1:]])
    alive = truth["alive_at_cutoff"].to_numpy()
    rows = []
    for name, pred in preds.items():
        pe = profit_effects(pred, margin, basket)
        mse = ((pe - true_profit)[alive, 1:] ** 2).mean()
        row = {
            "model": name,
            "profit_effect_rmse": float(np.sqrt(max(mse - (se[alive, 1:] ** 2).mean(), 0.0))),
            "profit_effect_rmse_raw": float(np.sqrt(mse)),
            "profit_effect_spearman": float(spearmanr(pe[alive, -1], true_profit[alive, -1]).statistic),
        }
        if "retention" in pred:
            rd = pred["retention"] - pred["retention"][:, :1]
            rmse = ((rd - (r - r[:, :1]))[alive, 1:] ** 2).mean()
            row["retention_effect_rmse"] = float(np.sqrt(max(rmse - (r_se[alive, 1:] ** 2).mean(), 0.0)))
        rows.append(row)
    return pd.DataFrame(rows)


def _log(ctx: RunContext, metrics: dict, table) -> None:
    if ctx.client is None:
        return
    tags = {"model.kind": "enduring", "data.name": ctx.tables.name, "data.fingerprint": ctx.tables.fingerprint}
    params = {"promotion": {"enduring": OmegaConf.to_container(ctx.cfg.promotion.enduring, resolve=True)}}
    with tracking.child_run(ctx.client, ctx.run_id, f"enduring-{ctx.tables.name}", tags, params) as run_id:
        tracking.log_metrics(ctx.client, run_id, metrics)
        if table is not None:
            tracking.log_table(ctx.client, run_id, table, "enduring_effects")
