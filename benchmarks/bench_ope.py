"""Off-policy evaluation checked against the truth over many simulator seeds: coverage and bias of IPW, SNIPW, DR.

    python benchmarks/bench_ope.py                 # 20 seeds x 20k customers, the DIPN as DR's outcome model
    python benchmarks/bench_ope.py --quick         # 3 seeds x 4k customers, LightGBM outcome model

Per seed: simulate a world; split its customers in two halves; on the first half's logged offers fit
the outcome model (the DIPN, IPW-weighted, built from the promotion config) and the propensity model
of the logging policy; on the second half, the target policy (the DIPN's curves + the budgeted
allocation on each campaign day) is evaluated from the logged offers alone (randomised slice; all
logged offers with the fitted propensity model; with the simulator's exact propensity), and its true
value is the mean of the recorded true conversion probability at the level it would have chosen.
Writes benchmarks/results/ope.json (coverage of the nominal 95 % intervals and mean bias, per
estimator and slice).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import machine_info, markdown_table, write_result

from sellerlift.closed_loop.evaluate import Settings, _target_levels
from sellerlift.closed_loop.forward import Population
from sellerlift.closed_loop.studies import logged_offers, ope_study
from sellerlift.features import FeatureSpec, build_features
from sellerlift.promotion_features import dipn_inputs, iter_offer_time_features
from sellerlift.sim import SimulatorConfig, simulate
from sellerlift.sim.config import LEVELS, N_LEVELS


def offer_inputs(pop: Population, offers, spec):
    events = __import__("pandas").concat([ch.history for ch in pop.chunks], ignore_index=True)
    xs, baskets = [], []
    for _, f in iter_offer_time_features(events, offers["customer_id"].to_numpy(), offers["ts"].to_numpy(), spec):
        xs.append(dipn_inputs(f))
        has, monetary = f.raw_columns(["has_purchase", "monetary"]).T
        baskets.append(np.where(has > 0, monetary, np.nan))
    b = np.concatenate(baskets)
    return np.concatenate(xs), np.where(np.isfinite(b), b, np.nanmedian(b))


def outcome_model(kind: str, x, level, y, w, seed: int):
    """A conversion model at every level, fitted on the first half's logged offers; returns x -> [n, K]."""
    if kind == "lightgbm":
        from lightgbm import LGBMClassifier

        m = LGBMClassifier(
            n_estimators=200,
            learning_rate=0.05,
            num_leaves=31,
            min_child_samples=100,
            verbose=-1,
            random_state=seed,
            n_jobs=1,
        ).fit(np.column_stack([x, LEVELS[level]]), y, sample_weight=w)
        return lambda xx: m.predict_proba(np.column_stack([np.repeat(xx, N_LEVELS, axis=0), np.tile(LEVELS, len(xx))]))[
            :, 1
        ].reshape(len(xx), -1)
    import torch
    from hydra import compose, initialize_config_dir

    from sellerlift.models import dipn as D
    from sellerlift.stages.promotion_models import build_module, build_net, build_trainer

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        pcfg = compose(config_name="train", overrides=[f"seed={seed}", "trainer.enable_progress_bar=false"]).promotion
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    val = rng.random(len(y)) < 0.15
    module = build_module(pcfg, build_net(pcfg.dipn.net, x.shape[1]))
    D.fit(
        build_trainer(pcfg),
        module,
        D.OfferTensors(x[~val], level[~val], y[~val], w[~val]),
        D.OfferTensors(x[val], level[val], y[val], w[val]),
        batch_size=int(pcfg.dipn.batch_size),
        seed=seed,
    )
    net = module.net.eval()
    return lambda xx: D.predict_curves(net, xx)


def one_seed(seed: int, n: int, kind: str, tmp: Path) -> dict:
    from sellerlift.models.propensity import fit_propensity, ipw_weights

    cfg = SimulatorConfig(n_customers=n, seed=seed, truth_replications=0)
    path = simulate(cfg, tmp / f"sim{seed}", progress=False)
    pop = Population.load(path)
    offers = logged_offers(pop)
    first = np.random.default_rng([seed, 1]).random(pop.n) < 0.5
    first_ids = pop.customer_id[first]
    spec = FeatureSpec(max_len=1)
    hist = pop.chunks[0].history
    spec.fit(build_features(hist, cfg.cutoff, spec))
    x, basket = offer_inputs(pop, offers, spec)
    level = np.searchsorted(LEVELS, offers["discount_pct"].to_numpy())
    y = offers["converted"].to_numpy().astype(np.float32)
    rct = offers["randomized"].to_numpy().astype(bool)
    fit_rows = offers["customer_id"].isin(first_ids).to_numpy()
    logged = fit_rows & ~rct
    prop = fit_propensity(
        x[logged], level[logged], x[logged], level[logged], N_LEVELS, candidates=("logistic",), seed=seed
    )
    e_model = prop.propensity(x, level, rct)
    w = ipw_weights(e_model, 0.02, N_LEVELS)
    predict = outcome_model(kind, x[fit_rows], level[fit_rows], y[fit_rows], w[fit_rows], seed)
    ev = ~fit_rows
    q = np.clip(predict(x[ev]), 1e-6, 1 - 1e-6)
    offers_ev = offers[ev].reset_index(drop=True)
    target = _target_levels(offers_ev, q, basket[ev], pop, Settings())
    return ope_study(offers_ev, q, target, propensity_model=e_model[ev], n_boot=400, seed=seed)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--customers", type=int)
    ap.add_argument("--outcome", choices=("dipn", "lightgbm"))
    args = ap.parse_args(argv)
    seeds = args.seeds or (3 if args.quick else 20)
    n = args.customers or (4000 if args.quick else 20_000)
    kind = args.outcome or ("lightgbm" if args.quick else "dipn")
    per_seed, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(seeds):
            per_seed.append(one_seed(100 + s, n, kind, Path(tmp)))
            print(f"seed {s + 1}/{seeds} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    for sl in per_seed[0]:
        for est in ("ipw", "snipw", "dr"):
            got = [r[sl][est] for r in per_seed if sl in r and est in r[sl]]
            cov = np.mean([g["covers_truth"] for g in got])
            bias = np.array([g["bias"] for g in got])
            rows.append(
                {
                    "slice": sl,
                    "estimator": est,
                    "seeds": len(got),
                    "coverage": float(cov),
                    "coverage_se": float(np.sqrt(max(cov * (1 - cov), 1e-9) / len(got))),
                    "mean_bias": float(bias.mean()),
                    "bias_se": float(bias.std(ddof=1) / np.sqrt(len(bias))),
                    "mean_ci_width": float(np.mean([g["ci"][1] - g["ci"][0] for g in got])),
                    "mean_true_value": float(np.mean([r[sl]["true_value"] for r in per_seed if sl in r])),
                }
            )
    payload = {
        "customers_per_seed": n,
        "outcome_model": kind,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
        "per_seed": per_seed,
        "machine": machine_info(),
    }
    write_result("ope", payload, quick=args.quick)
    print(markdown_table(rows, ["slice", "estimator", "seeds", "coverage", "mean_bias", "bias_se", "mean_ci_width"]))
    return payload


if __name__ == "__main__":
    main()
