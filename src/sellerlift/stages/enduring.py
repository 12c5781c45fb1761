"""Stage: the direct and enduring response per level (CDEE-style), trained on logged offers with a 90-day follow-up.

Runs after the promotion stage (it reuses its propensity model and the held-out customers). Its training
data are *all* the split's logged offers whose 90-day follow-up ends before the cutoff (up to
``max_offers``), not only the DIPN's sample: the enduring effect is a small difference of noisy 90-day
outcomes and needs every offer there is. Each offer is labelled from the events
(:mod:`sellerlift.offer_outcomes`): converted in the window, retained after it, the window's and the later
revenue before discount. Offers carry IPW weights, the randomised slice ``randomized_weight`` times its
own: it alone is free of confounding by the logged policy, whose fitted propensities leave a bias that a
model of the small enduring effect picks up (docs/enduring.md compares 1 and 5).
With ``later_coupons`` each offer also carries the coupons the customer was sent after it within the
follow-up: the network conditions on them in training and predicts with none (the offer's effect alone).

:class:`~sellerlift.models.enduring.EnduringNet` (``structure``: redemption, the default, or free) is
trained ``ensemble`` times from different seeds and averaged; the free structure is the unconstrained
baseline. On the simulator both are measured against the 90-day truth of every level at the cutoff (RMSE
of the predicted *effect* of each level over no offer, noise-corrected for the truth's Monte Carlo error;
rank correlation) next to the observable ceiling and an EconML DR-learner when configured, and by the
90-day profit on the truth of one campaign allocated with each model at the run's budgets.
``enduring.onnx`` (the ensemble) goes into the bundle (parity-checked).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sellerlift import export, tracking
from sellerlift.models import enduring as E
from sellerlift.offer_outcomes import follow_up_mask, later_coupons, offer_outcomes
from sellerlift.schema import DISCOUNT_LEVELS
from sellerlift.stages.context import RunContext
from sellerlift.stages.promotion_offers import split_offers, with_ipw_weights

LEVELS = np.asarray(DISCOUNT_LEVELS)
WINDOW_DAYS = 7  # the offer's own window (the simulator's campaign window; offer_outcomes' retention split)


def train_enduring(ctx: RunContext) -> dict | None:
    ecfg = (ctx.cfg.get("promotion") or {}).get("enduring")
    if ecfg is None or not ecfg.get("enabled", True):
        return None
    if ctx.promotion is None:
        ctx.summary_rows.append(("enduring response", "skipped: the promotion stage did not run (no campaigns)"))
        return None
    H, margin = int(ecfg.horizon_days), float(ctx.cfg.promotion.allocation.margin)
    splits = _labelled_offers(ctx, ecfg, H)
    if splits is None or min(len(s[0]) for s in splits.values()) < 200:
        ctx.summary_rows.append(("enduring response", f"skipped: too few offers with a {H}-day follow-up"))
        return None
    fitted = {
        "enduring": _fit(ctx, ecfg, splits, str(ecfg.net.get("structure", "redemption"))),
        "unconstrained": _fit(ctx, ecfg, splits, "free"),
    }
    held = ctx.promotion["held_out"]
    scale = float(ecfg.module.revenue_scale)
    preds = {name: E.predict(net, held.x, scale) for name, net in fitted.items()}
    if ctx.ceiling is not None and held.truth is not None:
        preds["observable_ceiling"] = _ceiling_prediction(ctx, held)
    if ecfg.get("econml") and held.truth is not None:
        preds["econml_dr"] = _econml(splits, held.x, margin, int(ctx.cfg.seed))
    metrics, table = {}, None
    if held.truth is not None:
        from sellerlift.promotion_features import order_value

        basket = order_value(held.feats, ctx.promotion["fallback"])
        table = effect_table(preds, held.truth, margin, H, basket)
        table = table.merge(_allocation_table(ctx, preds, held, basket, margin, H), on="model", how="outer")
        for row in table.to_dict("records"):
            for k, v in row.items():
                if k != "model" and pd.notna(v):
                    metrics[f"enduring/{row['model']}/{k}"] = v
    path = ctx.bundle_dir / "enduring.onnx"
    export.export_enduring_onnx(fitted["enduring"], path, held.x.shape[1])
    parity = export.check_enduring_parity(fitted["enduring"], path, held.x.shape[1], extra=held.x[:2048])
    ctx.bundle_files["enduring"] = path
    ctx.enduring = {"net": fitted["enduring"], "revenue_scale": scale}
    ctx.bundle_extra["enduring"] = {
        "horizon_days": H,
        "window_days": WINDOW_DAYS,
        "revenue_scale": scale,
        "outputs": list(E.OUTPUTS),
        "structure": str(ecfg.net.get("structure", "redemption")),
        "ensemble": int(ecfg.ensemble),
        "later_coupons": bool(splits["train"][7].shape[1]),  # trained on them, predicts with none
        "monotone": {"conversion": True, "retention": False, "revenue": False, "later_revenue": False},
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
                    if pd.notna(best.loc[m, "profit_effect_rmse"])
                ),
            )
        )
    return {"metrics": metrics, "table": table, "nets": fitted}


def _labelled_offers(ctx: RunContext, ecfg, H: int) -> dict | None:
    """Per split: (inputs, level, converted, retained, window revenue, later revenue, IPW weight, later coupons,
    frame) of the offers with a whole ``H``-day follow-up; None when there are none. The later coupons are
    [n, 0] unless ``later_coupons`` is on."""
    promos = ctx.tables.promotions
    promos = promos[follow_up_mask(promos, ctx.tables.cutoff, H)].reset_index(drop=True)
    if len(promos) == 0:
        return None
    pcfg = ctx.cfg.promotion
    try:
        offers = split_offers(
            ctx, promos, ctx.promotion["scorer"], int(ecfg.max_offers), int(ecfg.max_eval_offers), int(pcfg.seed)
        )
    except ValueError:  # a split without such offers: too little history for a 90-day follow-up
        return None
    offers = with_ipw_weights(pcfg, offers, ctx.promotion["policy"])
    rct_weight = float(ecfg.get("randomized_weight", 1.0))
    if rct_weight <= 0:
        raise ValueError(f"promotion.enduring.randomized_weight={rct_weight}: expected a number > 0")
    out, with_later = {}, bool(ecfg.get("later_coupons", False))
    for name, o in offers.items():
        got = offer_outcomes(ctx.tables.events, o.frame, H, WINDOW_DAYS, all_offers=ctx.tables.promotions)
        coupons = later_coupons(o.frame, ctx.tables.promotions, H) if with_later else np.zeros((len(o.x), 0))
        gross, in_window = got[f"gross_{H}d"].to_numpy(), got[f"gross_{WINDOW_DAYS}d"].to_numpy()
        out[name] = (
            o.x,
            o.level,
            o.converted,
            got[f"retained_{H}d"].to_numpy().astype(np.float32),
            in_window.astype(np.float32),
            (gross - in_window).astype(np.float32),
            np.where(o.randomized, rct_weight * o.weight, o.weight).astype(np.float32),
            coupons.astype(np.float32),
            o.frame,
        )
    return out


def _fit(ctx: RunContext, ecfg, splits: dict, structure: str):
    """``ecfg.ensemble`` networks of ``structure``, each from its own seed, averaged."""
    import torch

    data = {k: E.EnduringOffers(*v[:8]) for k, v in splits.items()}
    n_later = splits["train"][7].shape[1]
    members = []
    for i in range(int(ecfg.ensemble)):
        seed = int(ctx.cfg.seed) + i
        torch.manual_seed(seed)
        net = instantiate(ecfg.net, n_inputs=splits["train"][0].shape[1], structure=structure, n_later=n_later)
        module = instantiate(ecfg.module, _partial_=True)(net=net)
        callbacks = [instantiate(c) for c in (ctx.cfg.promotion.dipn.get("callbacks") or {}).values() if c is not None]
        trainer = instantiate(ctx.cfg.promotion.dipn.trainer, _partial_=True)(
            callbacks=callbacks, max_epochs=int(ecfg.max_epochs)
        )
        E.fit(trainer, module, data["train"], data["val"], batch_size=int(ctx.cfg.promotion.dipn.batch_size), seed=seed)
        members.append(module.net.eval())
    return E.EnduringEnsemble(members).eval()


def _ceiling_prediction(ctx: RunContext, held) -> dict[str, np.ndarray]:
    e = ctx.ceiling["model"].enduring(held.feats.raw)
    return {"revenue": e["gross"], "cost": e["cost"]}


def _econml(splits: dict, x_cut: np.ndarray, margin: float, seed: int) -> dict[str, np.ndarray]:
    """A multi-treatment DR-learner (EconML) on the 90-day profit of the same offers: what a user would pick."""
    from econml.dr import DRLearner
    from lightgbm import LGBMClassifier, LGBMRegressor

    x, level, _, _, window, later, _, _, frame = splits["train"]
    y = margin * (window + later) - frame["cost"].to_numpy()
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


def _allocation_table(ctx: RunContext, preds: dict, held, basket: np.ndarray, margin: float, H: int) -> pd.DataFrame:
    """Per model and budget: the true 90-day incremental profit per customer of one campaign allocated at the
    cutoff with that model, and its share of the enduring oracle's. The enduring models add their enduring value
    (weight 1) to the DIPN's week (what the retention-aware policy does); the observable ceiling and EconML
    allocate on their own 90-day profit; ``next_week_dipn`` is the week alone. Budgets are the run's fractions of
    the true expected coupon cost of giving every customer the top level."""
    from sellerlift.allocate import allocate_values
    from sellerlift.runtime.enduring import retention_aware_objective

    truth, levels = held.truth, [int(v) for v in LEVELS]
    g = np.column_stack([truth[f"gross_{H}d_{d}"] for d in LEVELS])
    c = np.column_stack([truth[f"cost_{H}d_{d}"] for d in LEVELS])
    true_profit = margin * (g - g[:, :1]) - c
    curves = np.clip(ctx.promotion["dipn"](held.x), 0.0, 1.0)
    week, spend = retention_aware_objective(curves, {}, basket, margin, levels, 0.0)
    plans = {"oracle_enduring": (true_profit, c), "next_week_dipn": (week, spend)}
    for name, pred in preds.items():
        if "later_revenue" in pred:
            plans[name] = retention_aware_objective(curves, pred, basket, margin, levels, 1.0)
        else:
            plans[name] = (profit_effects(pred, margin, basket), pred.get("cost", spend))
    rows = {name: {"model": name} for name in plans}
    for scen, frac in ctx.cfg.promotion.allocation.budgets.items():
        if frac is None:
            continue
        budget = float(frac) * float(c[:, -1].sum())
        oracle = None
        for name, (obj, sp) in plans.items():
            obj, sp = obj.copy(), np.maximum(sp, 0.0)
            obj[:, 0], sp[:, 0] = 0.0, 0.0
            level = allocate_values(obj, sp, levels, budget=budget).level_index
            profit = float(true_profit[np.arange(len(level)), level].mean())
            oracle = profit if oracle is None else oracle
            rows[name][f"alloc_{scen}_profit"] = profit
            rows[name][f"alloc_{scen}_share_of_oracle"] = profit / oracle if oracle > 0 else float("nan")
    return pd.DataFrame(list(rows.values()))


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
