"""Stage: the promotion engine: propensity -> DIPN -> budgeted allocation, measured against the truth.

``train_promotion(ctx)`` runs either as an extra after the sequence model (its
own MLflow run, nested under the main one) or as the main model (``model=dipn``,
logged into the main run). It

1. computes features as of each logged offer's time (training customers' offers
   for training, validation customers' for early stopping, test customers' for
   evaluation) and the DIPN inputs from them (:mod:`sellerlift.promotion_features`);
2. fits the propensity model of the logged policy and clipped IPW weights;
3. trains DIPN and the baselines (DIPN without IPW, an unconstrained MLP
   S-learner, LightGBM with the discount as a feature) on the same offers;
4. evaluates the curves of the held-out (test) customers at the cutoff against
   the simulator's true curves, and Qini/AUUC per level on the randomised slice
   (plus an IPW version on the logged offers);
5. allocates budgets with each model's curves and with the rules sellers use,
   and scores every policy with the *true* curves next to the oracle;
6. exports ``dipn.onnx`` (parity-checked) into the bundle and registers it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from sellerlift import allocate, export, tracking
from sellerlift.metrics import curve_metrics, ece, qini_auc_score, uplift_auc_score
from sellerlift.promotion_features import dipn_inputs, input_names, iter_offer_time_features, order_value
from sellerlift.schema import DISCOUNT_LEVELS
from sellerlift.stages.context import RunContext

STAGE = "sellerlift.stages.promotion.train_promotion"
LEVELS = np.asarray(DISCOUNT_LEVELS)
K = len(LEVELS)
CHUNK_OFFERS = 40_000
MODEL_NAMES = {"dipn": "DIPN", "dipn_no_ipw": "DIPN without IPW", "mlp": "MLP S-learner", "lightgbm": "LightGBM"}


# --------------------------------------------------------------------------- entry point
def train_promotion(ctx: RunContext) -> None:
    if "dipn" in ctx.bundle_files:  # model=dipn with the stage also listed in extras: train once
        return
    is_main = ctx.cfg.model.stage == STAGE
    if ctx.tables.promotions is None or len(ctx.tables.promotions) == 0:
        if not is_main:  # an extra on data without campaigns (CDNOW, most seller files): nothing to learn from
            ctx.summary_rows.append(("promotion engine", f"skipped: {ctx.tables.name} has no logged campaigns"))
            return
        raise ValueError(f"{ctx.tables.name}: no promotions table; the promotion engine needs logged campaigns")
    run_id, child = ctx.run_id, None
    if ctx.client is not None and not is_main:
        child = _start_child_run(ctx)
        run_id = child
    try:
        _train(ctx, ctx.cfg.promotion, run_id, is_main)
    except BaseException as err:
        if child is not None:
            tracking.mark_failed(ctx.client, child, err)
        raise
    if child is not None:
        ctx.client.set_terminated(child, "FINISHED")


def _start_child_run(ctx: RunContext) -> str:
    from mlflow.entities import Param

    client = ctx.client
    parent = client.get_run(ctx.run_id)
    run = client.create_run(parent.info.experiment_id, run_name=f"dipn-{ctx.tables.name}",
                            tags={"mlflow.parentRunId": ctx.run_id, "model.kind": "dipn",
                                  "data.fingerprint": ctx.tables.fingerprint, "data.name": ctx.tables.name,
                                  "data.cutoff": str(ctx.tables.cutoff), "git.commit": tracking.git_commit(ctx.root)})
    cfg = OmegaConf.to_container(ctx.cfg, resolve=True)
    cfg["model"] = {"name": "dipn", "stage": STAGE, "parent_model": ctx.cfg.model.name}
    params = [Param(k, v) for k, v in tracking.flatten(cfg).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[i:i + 100])
    return run.info.run_id


# --------------------------------------------------------------------------- data
def _offers(ctx: RunContext, pcfg: DictConfig) -> dict[str, pd.DataFrame]:
    """Logged offers per split (by customer), subsampled as configured."""
    promos = ctx.tables.promotions
    split_of = pd.Series(ctx.prep.split, index=pd.Index(ctx.prep.feats.customer_id))
    s = split_of.reindex(promos["customer_id"].to_numpy()).to_numpy()
    rng = np.random.default_rng(int(pcfg.seed))
    out = {}
    for code, name in enumerate(("train", "val", "test")):
        rows = np.flatnonzero(s == code)
        cap = int(pcfg.max_offers if name == "train" else pcfg.max_eval_offers)
        if len(rows) > cap:
            rows = np.sort(rng.choice(rows, cap, replace=False))
        if len(rows) == 0:
            raise ValueError(f"no logged offers for the {name} customers; simulate more customers")
        df = promos.iloc[rows].reset_index(drop=True)
        df["level"] = np.searchsorted(LEVELS, df["discount_pct"].to_numpy())
        out[name] = df
    return out


class _Timings(dict):
    """Phase timings that are also printed as they come (a long stage should say where it is)."""

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        from rich.console import Console

        Console().print(f"[dim]promotion: {key.removesuffix('_s')} {value:.1f} s[/]")


class _SequenceScorer:
    """The run's sequence.onnx through the runtime, as the server calls it."""

    def __init__(self, path: Path):
        from sellerlift.runtime import SequenceModel

        self.model = SequenceModel.from_file(path)

    def __call__(self, feats) -> dict[str, np.ndarray]:
        return self.model.predict(feats)


def _inputs_at_offers(ctx: RunContext, offers: pd.DataFrame, scorer) -> np.ndarray:
    xs = [dipn_inputs(feats, scorer(feats) if scorer else None)
          for _, feats in iter_offer_time_features(ctx.tables.events, offers["customer_id"].to_numpy(),
                                                   offers["ts"].to_numpy(), ctx.prep.spec,
                                                   chunk_offers=CHUNK_OFFERS)]
    return np.concatenate(xs)


# --------------------------------------------------------------------------- training
def _train(ctx: RunContext, pcfg: DictConfig, run_id: str | None, is_main: bool) -> None:
    import torch

    from sellerlift.models import dipn as D
    from sellerlift.models.propensity import effective_sample_size, fit_propensity, ipw_weights

    t_stage = time.perf_counter()
    seed = int(pcfg.seed)
    torch.manual_seed(seed)
    use_seq = pcfg.use_sequence_outputs
    use_seq = ("sequence" in ctx.bundle_files) if str(use_seq) == "auto" else bool(use_seq)
    if use_seq and "sequence" not in ctx.bundle_files:
        raise ValueError("promotion.use_sequence_outputs=true needs the sequence model in the same run "
                         "(model=gru/transformer); use auto or false with model=dipn")
    scorer = _SequenceScorer(ctx.bundle_files["sequence"]) if use_seq else None

    t0 = time.perf_counter()
    offers = _offers(ctx, pcfg)
    x = {name: _inputs_at_offers(ctx, df, scorer) for name, df in offers.items()}
    lv = {name: df["level"].to_numpy() for name, df in offers.items()}
    y = {name: df["converted"].to_numpy().astype(np.float32) for name, df in offers.items()}
    rnd = {name: (df["randomized"].to_numpy().astype(bool) if "randomized" in df else np.zeros(len(df), bool))
           for name, df in offers.items()}
    timings = _Timings()
    timings["offer_features_s"] = time.perf_counter() - t0
    n_inputs = x["train"].shape[1]

    # ---- propensity of the logged policy, clipped IPW weights
    t0 = time.perf_counter()
    pc = pcfg.propensity
    logged = ~rnd["train"]
    prop = fit_propensity(x["train"][logged], lv["train"][logged], x["val"][~rnd["val"]], lv["val"][~rnd["val"]],
                          K, candidates=tuple(pc.candidates), seed=seed, max_rows=int(pc.max_rows),
                          n_threads=int(pcfg.n_threads))
    e = {}
    for name, df in offers.items():
        if pc.source == "logged":
            if "propensity" not in df:
                raise ValueError("promotion.propensity.source=logged, but the promotions table has no propensity")
            e[name] = df["propensity"].to_numpy(dtype=np.float64)
        else:
            e[name] = prop.propensity(x[name], lv[name], rnd[name])
    w = {name: ipw_weights(e[name], float(pc.clip), K) for name in offers}
    metrics: dict[str, float] = {
        "propensity/ece": prop.report["candidates"][prop.report["chosen"]]["ece"],
        "propensity/log_loss": prop.report["candidates"][prop.report["chosen"]]["log_loss"],
        "propensity/clipped_frac": float(np.mean(e["train"] < float(pc.clip))),
        "propensity/weight_max": float(w["train"].max()),
        "propensity/ess_frac": effective_sample_size(w["train"]) / len(w["train"]),
    }
    for name, sc in prop.report["candidates"].items():
        metrics[f"propensity/{name}_ece"] = sc["ece"]
    if "propensity" in offers["val"]:  # the simulator logs the true policy: how close is the model?
        v = ~rnd["val"]
        metrics["propensity/mae_vs_logged"] = float(np.mean(np.abs(
            prop.propensity(x["val"][v], lv["val"][v]) - offers["val"]["propensity"].to_numpy()[v])))
    timings["propensity_s"] = time.perf_counter() - t0

    # ---- DIPN and baselines on the same offers
    dc = pcfg.dipn
    fit_kw = dict(max_epochs=int(dc.max_epochs), batch_size=int(dc.batch_size), patience=int(dc.patience),
                  seed=seed, limit_train_batches=dc.limit_train_batches)
    ones = {k: np.ones_like(v) for k, v in w.items()}
    w_main = w if dc.ipw else ones

    def train_net(net, weights):
        module = D.PromotionModule(net, lr=float(dc.lr), weight_decay=float(dc.weight_decay),
                                   smooth_weight=float(dc.smooth_weight))
        report = D.fit_module(module, D.OfferTensors(x["train"], lv["train"], y["train"], weights["train"]),
                              D.OfferTensors(x["val"], lv["val"], y["val"], weights["val"]), **fit_kw)
        return module.net.eval(), report

    def dipn_net():
        return D.DIPNNet(n_inputs, hidden=tuple(dc.hidden), dropout=float(dc.dropout))

    t0 = time.perf_counter()
    net, report = train_net(dipn_net(), w_main)
    timings["dipn_fit_s"] = time.perf_counter() - t0
    predictors = {"dipn": lambda xx: D.predict_curves(net, xx)}
    bc = pcfg.baselines
    t0 = time.perf_counter()
    if bc.dipn_no_ipw and dc.ipw:
        net_noipw, _ = train_net(dipn_net(), ones)
        predictors["dipn_no_ipw"] = lambda xx: D.predict_curves(net_noipw, xx)
    if bc.mlp:
        mlp, _ = train_net(D.SLearnerNet(n_inputs, hidden=tuple(dc.hidden), dropout=float(dc.dropout)), w_main)
        predictors["mlp"] = lambda xx: D.predict_curves(mlp, xx)
    if bc.lightgbm:
        gbm = _fit_lightgbm(x["train"], lv["train"], y["train"], w_main["train"], bc.lightgbm_params, seed,
                            int(pcfg.n_threads))
        predictors["lightgbm"] = lambda xx: _lightgbm_curves(gbm, xx)
    timings["baselines_fit_s"] = time.perf_counter() - t0

    # ---- curves of held-out customers at the cutoff vs the truth
    prep = ctx.prep
    test = np.flatnonzero(prep.split == 2)
    feats_test = prep.feats.take(test)
    x_cut = dipn_inputs(feats_test, scorer(feats_test) if scorer else None)
    curves = {name: np.clip(f(x_cut), 0.0, 1.0) for name, f in predictors.items()}
    truth = prep.truth.iloc[test].reset_index(drop=True) if prep.truth is not None else None
    true_curves = truth[[f"p_response_{d}" for d in DISCOUNT_LEVELS]].to_numpy() if truth is not None else None
    per_model = {}
    for name, f in predictors.items():
        m = {}
        if true_curves is not None:
            m.update(curve_metrics(curves[name], true_curves))
        p_off = np.clip(f(x["test"]), 0, 1)
        p_obs = p_off[np.arange(len(lv["test"])), lv["test"]]
        m["offer_ece"] = ece(y["test"], p_obs)
        m["offer_ece_ipw"] = ece(y["test"], p_obs, w["test"])
        m.update(_qini_metrics(p_off, lv["test"], y["test"], rnd["test"], w["test"]))
        per_model[name] = m
    for name, m in per_model.items():
        prefix = "test" if name == "dipn" else f"baseline/{name}"
        metrics.update({f"{prefix}/{k}": v for k, v in m.items()})
    if true_curves is not None:
        metrics["truth/offer_free_mean_p0"] = float(true_curves[:, 0].mean())
        if "mlp" in per_model:  # the isotonic constraint's noise reduction vs a plain network
            metrics["test/curve_rmse_reduction_vs_mlp"] = 1 - per_model["dipn"]["curve_rmse"] / per_model["mlp"][
                "curve_rmse"]

    # ---- ONNX into the bundle (parity on random and real inputs)
    t0 = time.perf_counter()
    onnx_path = export.export_dipn_onnx(net, ctx.bundle_dir / "dipn.onnx", n_inputs, dynamo=bool(pcfg.onnx_dynamo))
    parity = export.check_dipn_parity(net, onnx_path, n_inputs, extra=x_cut[:2048])
    timings["dipn_export_s"] = time.perf_counter() - t0
    metrics["export/dipn_onnx_parity_max_abs_diff"] = parity
    ctx.bundle_files["dipn"] = onnx_path

    # ---- allocation, evaluated with the true curves
    t0 = time.perf_counter()
    value_fallback = float(np.median(prep.feats.raw_aggregates["monetary"].to_numpy()[
        (prep.split == 0) & (prep.feats.raw_aggregates["has_purchase"].to_numpy() > 0)]))
    alloc_tables, alloc_metrics, curve_df, levels_df = {}, {}, None, None
    if truth is not None:
        alloc_tables, alloc_metrics, curve_df, levels_df = evaluate_allocation(
            curves, true_curves, truth["value"].to_numpy(), order_value(feats_test, value_fallback),
            feats_test.raw_aggregates, truth["archetype"].astype(str).to_numpy(), pcfg.allocation, seed)
        metrics.update(alloc_metrics)
    timings["allocation_eval_s"] = time.perf_counter() - t0
    timings["promotion_stage_s"] = time.perf_counter() - t_stage
    metrics.update({f"timing/{k}": v for k, v in timings.items()})
    metrics["train/offers"] = float(len(y["train"]))
    metrics["train/epochs"] = float(report["epochs"])

    # ---- bundle manifest, run metrics, plots, registry
    ctx.bundle_extra["dipn"] = {
        "inputs": input_names(use_seq), "n_inputs": n_inputs, "uses_sequence_outputs": bool(use_seq),
        "monotone": "by construction (softplus increments)",
        "onnx_parity_max_abs_diff": parity, "value_fallback": value_fallback,
        "margin": float(pcfg.allocation.margin),
    }
    for k in ("test/curve_rmse", "test/uplift_rmse", "test/non_monotone_frac", "test/offer_ece",
              "alloc/medium/share_of_oracle/dipn", "export/dipn_onnx_parity_max_abs_diff"):
        if k in metrics:
            ctx.metrics[f"dipn/{k}" if not is_main else k] = metrics[k]
    ctx.timings["promotion_s"] = timings["promotion_stage_s"]
    if ctx.client is not None and run_id is not None:
        _log_metrics(ctx.client, run_id, metrics, report["val_loss_history"])
        _log_artifacts(ctx, run_id, curves, true_curves, truth, per_model, alloc_tables, curve_df, levels_df, prop,
                       x["val"][~rnd["val"]], lv["val"][~rnd["val"]])
        if pcfg.register:
            tracking.register_onnx(ctx.cfg.logger.tracking_uri, run_id, onnx_path, pcfg.registered_model,
                                   artifact_name="dipn_onnx_model")
    ctx.summary_rows += _summary(metrics, per_model, alloc_tables, prop.report["chosen"], use_seq)
    ctx.promotion_result = {"metrics": metrics, "per_model": per_model, "allocation": alloc_tables,
                            "run_id": run_id}  # for benchmarks and tests


def _log_metrics(client, run_id, metrics, val_loss_history):
    """One batched write (a metric per call costs ~0.1 s on a busy SQLite store)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, 0) for k, v in metrics.items() if np.isfinite(v)]
    ms += [Metric("val/loss", float(v), now, i) for i, v in enumerate(val_loss_history)]
    for i in range(0, len(ms), 1000):
        client.log_batch(run_id, metrics=ms[i:i + 1000])


def _fit_lightgbm(x, level, y, w, params, seed, n_threads):
    from lightgbm import LGBMClassifier

    model = LGBMClassifier(**OmegaConf.to_container(params) if isinstance(params, DictConfig) else dict(params),
                           random_state=seed, n_jobs=n_threads, verbose=-1)
    model.fit(np.column_stack([x, LEVELS[level]]), y, sample_weight=w)
    return model


def _lightgbm_curves(model, x):
    n = len(x)
    xx = np.column_stack([np.repeat(x, K, axis=0), np.tile(LEVELS, n)])
    return model.predict_proba(xx)[:, 1].reshape(n, K)


def _qini_metrics(p, level, y, randomized, w) -> dict[str, float]:
    """Qini/AUUC for each level vs no discount: randomised slice, and IPW on the logged offers."""
    out = {}
    qs, qs_ipw = [], []
    for k in range(1, K):
        score = p[:, k] - p[:, 0]
        for tag, rows, weight in (("rct", randomized, None), ("ipw", ~randomized, w)):
            sel = rows & ((level == k) | (level == 0))
            t = level[sel] == k
            if t.sum() < 5 or (~t).sum() < 5:
                continue
            ww = None if weight is None else weight[sel]
            q = qini_auc_score(y[sel], t, score[sel], ww)
            out[f"qini_{tag}_{DISCOUNT_LEVELS[k]}"] = q
            out[f"auuc_{tag}_{DISCOUNT_LEVELS[k]}"] = uplift_auc_score(y[sel], t, score[sel], ww)
            (qs if tag == "rct" else qs_ipw).append(q)
    if qs:
        out["qini_rct_mean"] = float(np.mean(qs))
    if qs_ipw:
        out["qini_ipw_mean"] = float(np.mean(qs_ipw))
    return out


# --------------------------------------------------------------------------- allocation
def _true_outcome(level, p_true, v_true, margin):
    pr, sp = allocate.incremental_profit_and_spend(p_true, v_true, margin, DISCOUNT_LEVELS)
    r = np.arange(len(level))
    return float(pr[r, level].sum()), float(sp[r, level].sum())


def _rule_levels(p_true, v_true, margin, budget, ranking, level_pct, seed, eligible=None):
    """A flat discount down a ranked list; the budget is what is actually redeemed (true curves)."""
    n = len(v_true)
    rows = np.arange(n) if eligible is None else np.flatnonzero(eligible)
    level = np.zeros(n, dtype=np.int64)
    if not len(rows):
        return level
    kw = {"rule": "random", "seed": seed} if ranking is None else {"rule": "priority", "priority": ranking[rows]}
    a = allocate.allocate_rule_based(p_true[rows], v_true[rows], margin, DISCOUNT_LEVELS, budget,
                                     level_pct=level_pct, **kw)
    level[rows] = a.level_index
    return level


def evaluate_allocation(curves: dict[str, np.ndarray], p_true: np.ndarray, v_true: np.ndarray, v_hat: np.ndarray,
                        raw: pd.DataFrame, archetype: np.ndarray, acfg, seed: int = 0):
    """Every policy at every budget, scored with the true curves and true order values.

    Model policies plan with their own curves and the observed order values; the
    rules spend down a ranked list until the budget is redeemed. Returns (per-budget
    table, metrics, budget-curve table, level distribution per archetype).
    """
    margin = float(acfg.margin)
    _, sp_true = allocate.incremental_profit_and_spend(p_true, v_true, margin, DISCOUNT_LEVELS)
    full_spend = float(sp_true[:, -1].sum())  # everyone at the top level
    rule_level = int(acfg.rule.level_pct)
    rfm = acfg.rfm_rule
    at_risk = (raw["has_purchase"].to_numpy() > 0) & (raw["recency_days"].to_numpy() >= float(rfm.min_recency_days))
    value_rank = raw["monetary"].to_numpy(dtype=np.float64)

    def policies(budget):
        out = {}
        for name, p in curves.items():
            out[name] = allocate.allocate_lagrangian(p, v_hat, margin, DISCOUNT_LEVELS, budget).level_index
        out["oracle"] = allocate.allocate_lagrangian(p_true, v_true, margin, DISCOUNT_LEVELS, budget).level_index
        out["rule_top_value"] = _rule_levels(p_true, v_true, margin, budget, value_rank, rule_level, seed)
        out["rule_rfm_at_risk"] = _rule_levels(p_true, v_true, margin, budget, value_rank, int(rfm.level_pct), seed,
                                               eligible=at_risk)
        if "dipn" in curves:
            out["purchase_prob"] = _rule_levels(p_true, v_true, margin, budget, curves["dipn"][:, 0], rule_level,
                                                seed)
        out["random"] = _rule_levels(p_true, v_true, margin, budget, None, rule_level, seed)
        best = None  # blanket: one level for all (random order until the budget), best level in hindsight
        for k in range(1, K):
            lvl = _rule_levels(p_true, v_true, margin, budget, None, int(LEVELS[k]), seed)
            prof = _true_outcome(lvl, p_true, v_true, margin)[0]
            if best is None or prof > best[0]:
                best = (prof, lvl)
        out["blanket"] = best[1]
        return out

    rows, metrics, level_rows = [], {}, []
    for scen, frac in acfg.budgets.items():
        budget = None if frac is None else float(frac) * full_spend
        pols = policies(budget)
        oracle_profit = _true_outcome(pols["oracle"], p_true, v_true, margin)[0]
        for name, level in pols.items():
            profit, spend = _true_outcome(level, p_true, v_true, margin)
            share = profit / oracle_profit if oracle_profit > 0 else float("nan")
            rows.append({"budget": scen, "budget_frac": frac, "budget_amount": budget, "policy": name,
                         "profit": profit, "spend": spend, "roi": profit / spend if spend > 0 else 0.0,
                         "share_of_oracle": share, "treated_frac": float(np.mean(level > 0)),
                         "spend_over_budget": spend / budget if budget else float("nan")})
            metrics[f"alloc/{scen}/profit/{name}"] = profit
            metrics[f"alloc/{scen}/roi/{name}"] = rows[-1]["roi"]
            metrics[f"alloc/{scen}/share_of_oracle/{name}"] = share
            if scen == "medium":
                for arch in np.unique(archetype):
                    m = archetype == arch
                    cnt = np.bincount(level[m], minlength=K) / max(m.sum(), 1)
                    level_rows.append({"policy": name, "archetype": arch,
                                       **{f"{d}%": c for d, c in zip(DISCOUNT_LEVELS, cnt)}})
    table = pd.DataFrame(rows)

    # budget curves (multi-armed Qini): profit and ROI vs budget for each policy
    curve_rows = []
    for frac in acfg.curve_fractions:
        budget = float(frac) * full_spend
        for name, level in policies(budget).items():
            profit, spend = _true_outcome(level, p_true, v_true, margin)
            curve_rows.append({"budget_frac": float(frac), "policy": name, "profit": profit, "spend": spend,
                               "roi": profit / spend if spend > 0 else 0.0})
    curve_df = pd.DataFrame(curve_rows)

    # Lagrangian vs exact LP (HiGHS) on the DIPN curves at the medium budget
    if acfg.lp_check and "dipn" in curves and "medium" in acfg.budgets and acfg.budgets.medium is not None:
        budget = float(acfg.budgets.medium) * full_spend
        t0 = time.perf_counter()
        lag = allocate.allocate_lagrangian(curves["dipn"], v_hat, margin, DISCOUNT_LEVELS, budget)
        t_lag = time.perf_counter() - t0
        t0 = time.perf_counter()
        lp = allocate.allocate_exact_lp(curves["dipn"], v_hat, margin, DISCOUNT_LEVELS, budget)
        t_lp = time.perf_counter() - t0
        metrics["alloc/lp_gap_rel"] = max(0.0, (lp.bound - lag.profit) / lp.bound) if lp.bound > 0 else 0.0
        metrics["alloc/lagrangian_s"] = t_lag
        metrics["alloc/lp_s"] = t_lp
    metrics["alloc/full_spend"] = full_spend
    return table, metrics, curve_df, pd.DataFrame(level_rows)


# --------------------------------------------------------------------------- artifacts
def _log_artifacts(ctx, run_id, curves, true_curves, truth, per_model, alloc_table, curve_df, levels_df, prop,
                   x_val, lv_val):
    client = ctx.client
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plots_dir, tables_dir = tmp / "plots", tmp / "tables"
        plots_dir.mkdir()
        tables_dir.mkdir()
        if true_curves is not None:
            _plot_curves_by_archetype(curves, true_curves, truth["archetype"].astype(str).to_numpy(),
                                      plots_dir / "response_curves_by_archetype.png")
            _plot_uplift_by_level(curves, true_curves, plots_dir / "uplift_by_level.png")
        if curve_df is not None and len(curve_df):
            _plot_budget_curves(curve_df, plots_dir / "roi_and_profit_by_budget.png")
        if levels_df is not None and len(levels_df):
            _plot_levels(levels_df, plots_dir / "assigned_levels_by_archetype.png")
        _plot_propensity_calibration(prop.predict_proba(x_val), lv_val, plots_dir / "propensity_calibration.png")
        tables = {"model_comparison": pd.DataFrame([{"model": k, **v} for k, v in per_model.items()])}
        if alloc_table is not None and len(alloc_table):
            tables["allocation_by_budget"] = alloc_table
            tables["roi_table"] = alloc_table.pivot(index="budget", columns="policy", values="roi").reset_index()
            tables["share_of_oracle"] = alloc_table.pivot(index="budget", columns="policy",
                                                          values="share_of_oracle").reset_index()
            tables["budget_curve"] = curve_df
            tables["levels_by_archetype"] = levels_df
        for name, df in tables.items():
            df.to_csv(tables_dir / f"{name}.csv", index=False)
            (tables_dir / f"{name}.md").write_text(df.to_markdown(index=False, floatfmt=".4g"))
        client.log_artifacts(run_id, str(plots_dir), "plots")
        client.log_artifacts(run_id, str(tables_dir), "tables")


def _fig(path, fig, legend_axes=()):
    """Save and close ``fig``; the axes in ``legend_axes`` get a light grid and a small legend first."""
    import matplotlib.pyplot as plt

    for a in legend_axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.savefig(path, dpi=90)  # no tight_layout: it costs more than the drawing
    plt.close(fig)
    return path


def _plot_curves_by_archetype(curves, true_curves, archetype, path, per_arch: int = 2):
    """A few test customers of each archetype: true curve (black) vs each model's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = sorted(np.unique(archetype))
    fig, axes = plt.subplots(1, len(archs), figsize=(3.4 * len(archs), 3.4), squeeze=False)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.14, top=0.88, wspace=0.25)
    rng = np.random.default_rng(0)
    styles = ["-", ":"]
    for ax, arch in zip(axes[0], archs):
        rows = np.flatnonzero(archetype == arch)
        for j, r in enumerate(rng.choice(rows, min(per_arch, len(rows)), replace=False)):
            ls = styles[j % 2]
            ax.plot(LEVELS, true_curves[r], ls, c="k", lw=2, label="truth" if j == 0 else None)
            for i, (name, c) in enumerate(curves.items()):
                ax.plot(LEVELS, c[r], ls, c=f"C{i}", label=MODEL_NAMES.get(name, name) if j == 0 else None)
        ax.set_title(arch, fontsize=9)
        ax.set_xlabel("discount %", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("P(purchase in 7 days)")
    axes[0, 0].legend(fontsize=6)
    return _fig(path, fig)


def _plot_uplift_by_level(curves, true_curves, path):
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(LEVELS, (true_curves - true_curves[:, :1]).mean(0), "k-o", label="truth")
    for name, c in curves.items():
        a1.plot(LEVELS, (c - c[:, :1]).mean(0), "-o", ms=3, label=MODEL_NAMES.get(name, name))
        rmse = np.sqrt((((c - c[:, :1]) - (true_curves - true_curves[:, :1])) ** 2).mean(0))
        a2.plot(LEVELS[1:], rmse[1:], "-o", ms=3, label=MODEL_NAMES.get(name, name))
    a1.set(xlabel="discount %", ylabel="mean uplift vs no discount", title="uplift by level (test customers)")
    a2.set(xlabel="discount %", ylabel="uplift RMSE vs truth", title="uplift error by level")
    return _fig(path, fig, legend_axes=(a1, a2))


def _plot_budget_curves(curve_df, path):
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, g in curve_df.groupby("policy"):
        style = dict(lw=2.5, c="k") if name == "oracle" else {}
        a1.plot(g["budget_frac"], g["profit"], "-o", ms=3, label=name, **style)
        a2.plot(g["budget_frac"], 100 * g["roi"], "-o", ms=3, label=name, **style)
    a1.set(xlabel="budget (fraction of top-level-for-all spend)", ylabel="incremental profit (true curves)",
           title="budget curve (multi-armed Qini)")
    a2.set(xlabel="budget (fraction of top-level-for-all spend)", ylabel="ROI %", title="ROI by budget")
    return _fig(path, fig, legend_axes=(a1, a2))


def _plot_levels(levels_df, path):
    import matplotlib.pyplot as plt

    pols = [p for p in ("oracle", "dipn", "lightgbm", "rule_top_value") if p in set(levels_df["policy"])]
    fig, axes = plt.subplots(1, len(pols), figsize=(3.6 * len(pols), 3.6), squeeze=False)
    cols = [f"{d}%" for d in DISCOUNT_LEVELS]
    for ax, pol in zip(axes[0], pols):
        g = levels_df[levels_df["policy"] == pol].set_index("archetype")[cols]
        bottom = np.zeros(len(g))
        for c in cols:
            ax.bar(range(len(g)), g[c].to_numpy(), bottom=bottom, label=c)
            bottom += g[c].to_numpy()
        ax.set_xticks(range(len(g)), [a.replace("_", "\n") for a in g.index], fontsize=6)
        ax.set_title(f"{pol}: levels (medium budget)", fontsize=8)
    axes[0, -1].legend(fontsize=6, bbox_to_anchor=(1.0, 1.0))
    return _fig(path, fig)


def _plot_propensity_calibration(proba, level, path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    for k in range(K):
        p = proba[:, k]
        bins = np.quantile(p, np.linspace(0, 1, 11))
        idx = np.clip(np.searchsorted(bins, p, side="right") - 1, 0, 9)
        mp = np.bincount(idx, p, 10) / np.maximum(np.bincount(idx, minlength=10), 1)
        fr = np.bincount(idx, level == k, 10) / np.maximum(np.bincount(idx, minlength=10), 1)
        ax.plot(mp, fr, "-o", ms=2, label=f"{DISCOUNT_LEVELS[k]}%")
    ax.plot([0, 1], [0, 1], ":", c="grey")
    ax.set(xlabel="predicted propensity", ylabel="observed share", title="propensity calibration (val)")
    ax.legend(fontsize=6)
    return _fig(path, fig)


def _summary(metrics, per_model, alloc_table, chosen, use_seq) -> list[tuple[str, str]]:
    rows = []
    for name, m in per_model.items():
        if "curve_rmse" in m:
            rows.append((f"promo {MODEL_NAMES.get(name, name)}: curve / uplift RMSE, non-monotone, Qini(RCT)",
                         f"{m['curve_rmse']:.4f} / {m['uplift_rmse']:.4f}, {m['non_monotone_frac']:.1%}, "
                         f"{m.get('qini_rct_mean', float('nan')):.3f}"))
    rows.append(("promo propensity", f"{chosen}, ECE {metrics['propensity/ece']:.4f}; "
                 f"inputs: aggregates{' + sequence scores' if use_seq else ''}"))
    if alloc_table is not None and len(alloc_table):
        for scen in alloc_table["budget"].unique():
            t = alloc_table[alloc_table["budget"] == scen].set_index("policy")
            get = lambda p: t.loc[p] if p in t.index else None  # noqa: E731
            parts = []
            for p in ("dipn", "rule_top_value", "oracle"):
                r = get(p)
                if r is not None:
                    parts.append(f"{p} {100 * r['roi']:.0f}% ({r['share_of_oracle']:.0%})")
            rows.append((f"promo ROI ({scen} budget), share of oracle profit", ", ".join(parts)))
    if "alloc/lp_gap_rel" in metrics:
        rows.append(("promo Lagrangian vs HiGHS LP gap", f"{metrics['alloc/lp_gap_rel']:.2e}"))
    rows.append(("DIPN ONNX parity", f"{metrics['export/dipn_onnx_parity_max_abs_diff']:.1e}"))
    return rows
