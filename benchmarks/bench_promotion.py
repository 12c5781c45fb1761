"""Benchmark the promotion engine on the simulator: DIPN vs baselines vs truth, and allocation vs the oracle.

    python benchmarks/bench_promotion.py                       # 50k customers, default promotion config
    python benchmarks/bench_promotion.py --customers 5000 --quick
    python benchmarks/bench_promotion.py --sequence-onnx bundles/<run>/sequence.onnx   # DIPN reads its scores
    python benchmarks/bench_promotion.py --set promotion.dipn.module.smooth_weight=0   # any config override

Runs the promotion stage exactly as `python train.py model=dipn` does (same config,
same code), without MLflow, reads what it measured from the stage's return value
(`sellerlift.stages.promotion.PromotionResult`: the run's metrics, the per-model
table and the allocation table, as an MLflow run would hold them), and writes
benchmarks/results/promotion[.quick].json and a markdown table next to it: curve /
uplift RMSE and non-monotone share per model, Qini per level, the ROI table (budget
scenario x policy, all scored with the true curves) with each policy's share of the
oracle's incremental profit, and the Lagrangian vs HiGHS LP gap.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info

RESULTS = ROOT / "benchmarks" / "results"


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=[f"paths.root_dir={ROOT}", *overrides])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--quick", action="store_true", help="few epochs, small baselines (seconds to a minute)")
    ap.add_argument("--sequence-onnx", type=Path, help="a sequence.onnx trained on the same data and config")
    ap.add_argument("--set", action="append", default=[], help="extra Hydra override (repeatable)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import tempfile

    from hydra.utils import instantiate

    from sellerlift.pipeline import prepare
    from sellerlift.stages.context import RunContext
    from sellerlift.stages.promotion import train_promotion

    overrides = [
        "model=dipn",
        "extras=[]",
        f"data.source.n_customers={args.customers}",
        "data.source.progress=false",
        *args.set,
    ]
    if args.quick:
        overrides += [
            "promotion.dipn.trainer.max_epochs=3",
            "promotion.baselines.lightgbm_params.n_estimators=50",
            "promotion.max_offers=30000",
        ]
    cfg = compose(overrides)
    import lightning as L

    L.seed_everything(cfg.seed, verbose=False)
    t0 = time.perf_counter()
    tables = instantiate(cfg.data.source).load()
    prep = prepare(tables, cfg)
    t_data = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(cfg, ROOT, tables, prep, Path(tmp), None, None)
        if args.sequence_onnx:
            ctx.bundle_files["sequence"] = args.sequence_onnx.resolve()
        t0 = time.perf_counter()
        result = train_promotion(ctx)
        t_stage = time.perf_counter() - t0
    m = result.metrics
    alloc = result.allocation
    out = {
        "machine": machine_info(),
        "config": {
            "customers": args.customers,
            "quick": args.quick,
            "overrides": overrides,
            "uses_sequence_outputs": bool(args.sequence_onnx),
        },
        "timing_s": {
            "data": t_data,
            "promotion_stage": t_stage,
            **{k.removeprefix("timing/"): v for k, v in m.items() if k.startswith("timing/")},
        },
        "models": result.per_model,
        "propensity": {k.removeprefix("propensity/"): v for k, v in m.items() if k.startswith("propensity/")},
        # The unrestricted scenario has no budget: null in JSON, not NaN.
        "allocation": (
            alloc.astype(object).where(alloc.notna(), None).to_dict(orient="records")
            if alloc is not None and len(alloc)
            else []
        ),
        "lp_gap_rel": m.get("alloc/lp_gap_rel"),
        "lagrangian_s": m.get("alloc/lagrangian_s"),
        "lp_s": m.get("alloc/lp_s"),
        "curve_rmse_reduction_vs_mlp": m.get("test/curve_rmse_reduction_vs_mlp"),
    }
    path = args.out or RESULTS / ("promotion.quick.json" if args.quick else "promotion.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float))
    md = markdown(out)
    path.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {path}")
    return out


def markdown(out: dict) -> str:
    import pandas as pd

    lines = [
        f"# Promotion engine benchmark ({out['config']['customers']:,} customers"
        f"{', quick' if out['config']['quick'] else ''})",
        "",
    ]
    rows = []
    for name, m in out["models"].items():
        rows.append(
            {
                "model": name,
                "curve RMSE": m.get("curve_rmse"),
                "uplift RMSE": m.get("uplift_rmse"),
                "non-monotone": m.get("non_monotone_frac"),
                "offer ECE": m.get("offer_ece"),
                "Qini (RCT, mean over levels)": m.get("qini_rct_mean"),
                "Qini (IPW, logged)": m.get("qini_ipw_mean"),
            }
        )
    lines += [
        "## Response curves vs the truth (test customers at the cutoff)",
        "",
        pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"),
        "",
    ]
    if out["allocation"]:
        a = pd.DataFrame(out["allocation"])
        order = [
            p
            for p in (
                "oracle",
                "dipn",
                "dipn_no_ipw",
                "mlp",
                "lightgbm",
                "rule_top_value",
                "rule_rfm_at_risk",
                "purchase_prob",
                "blanket",
                "random",
            )
            if p in set(a["policy"])
        ]
        budgets = list(dict.fromkeys(a["budget"]))
        roi = a.pivot(index="budget", columns="policy", values="roi").loc[budgets, order] * 100
        share = a.pivot(index="budget", columns="policy", values="share_of_oracle").loc[budgets, order] * 100
        spend = a.pivot(index="budget", columns="policy", values="spend_over_budget").loc[budgets, order] * 100
        lines += [
            "## ROI % by budget (true curves)",
            "",
            roi.reset_index().to_markdown(index=False, floatfmt=".1f"),
            "",
            "## Share of the oracle's incremental profit, %",
            "",
            share.reset_index().to_markdown(index=False, floatfmt=".1f"),
            "",
            "## Realised spend as % of the budget (model policies plan with their own curves)",
            "",
            spend.reset_index().to_markdown(index=False, floatfmt=".0f"),
            "",
        ]
    if out.get("lp_gap_rel") is not None:
        lines += [
            f"Lagrangian vs exact LP (HiGHS), medium budget, DIPN curves: relative gap "
            f"{out['lp_gap_rel']:.2e} (Lagrangian {out['lagrangian_s']:.3f} s, LP {out['lp_s']:.3f} s)",
            "",
        ]
    t = out["timing_s"]
    lines += ["Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
