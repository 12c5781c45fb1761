"""Sequence models vs classic baselines on the simulator and on CDNOW, same customers, split and labels.

For each dataset and seed this runs the training pipeline (``sellerlift.pipeline.run``)
with the GRU, then with the Transformer; the GRU run also trains the baselines
(logistic regression, random forest, LightGBM, BG/NBD) and the RFM segments, so
every model is scored on the same test customers. Every run is tracked in MLflow
as usual. From the test-set predictions it writes

* ``benchmarks/results/model_comparison.json``: per dataset, per model, per seed
  the test metrics (AUROC, AP, ECE, precision in the top 20 %) of both heads and
  the training time; mean and spread over seeds; a paired bootstrap interval for
  "sequence model minus best baseline"; calibration by score band; the segment
  tables (and ARI vs the latent archetypes on the simulator);
* ``docs/model_comparison.md``: the same as markdown tables.

    .venv/bin/python benchmarks/compare_models.py                # simulator 50k + CDNOW, seed 0
    .venv/bin/python benchmarks/compare_models.py --seeds 0 1 2  # spread over seeds
    .venv/bin/python benchmarks/compare_models.py --quick        # minutes: small data, one debug epoch
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from sellerlift import metrics as M
from sellerlift.constants import HEADS

METRICS = ("auroc", "ap", "ece", "precision_top20")
SEQUENCE_MODELS = ("gru", "transformer")
BASELINES = ("logreg", "random_forest", "lightgbm", "bgnbd")
LABELS = {"logreg": "logistic regression", "random_forest": "random forest", "lightgbm": "LightGBM",
          "bgnbd": "BG/NBD", "gru": "sequence model: GRU", "transformer": "sequence model: Transformer",
          "ceiling": "ceiling (true probabilities)"}
EXTRAS_FIRST = ["sellerlift.stages.segments.fit_segments_stage", "sellerlift.stages.baselines.train_baselines"]
EXTRAS_OTHER = ["sellerlift.stages.baselines.train_baselines"]  # with no baseline models: writes predictions only

QUICK = {
    "simulator": ["data.source.n_customers=3000", "data.source.n_sellers=10", "data.max_len=32"],
    "cdnow": ["data.source.which=sample", "data.max_len=16"],
    "common": ["trainer=debug", "model.module.net.d_model=16", "model.module.net.head_hidden=16",
               "data.datamodule.batch_size=128", "baselines.models.random_forest.n_estimators=30"],
}


def compose(overrides: list[str], root: Path):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return hcompose(config_name="train", overrides=[*overrides, f"paths.root_dir={root}"])


def run_one(dataset: str, model: str, seed: int, args, pred_dir: Path, work: Path) -> dict:
    from sellerlift.pipeline import run

    first = model == args.models[0]
    extras = EXTRAS_FIRST if first else EXTRAS_OTHER
    ov = [f"data={dataset}", f"model={model}", f"seed={seed}", "tracking.register=false",
          "trainer.enable_progress_bar=false", "~callbacks.progress_bar", "report.enabled=false",
          f"extras=[{','.join(extras)}]", f"baselines.predictions_dir={pred_dir}",
          f"paths.output_dir={work}/{dataset}-{model}-{seed}"]
    if dataset == "simulator":
        ov.append("data.source.progress=false")
    if args.quick:
        ov += QUICK[dataset] + QUICK["common"]
    if not first:  # after the quick settings, which tune a baseline model: Hydra applies overrides in order
        ov.append("~baselines.models")  # no baseline models: only the test predictions are written
    minutes = args.max_minutes.get(dataset) if args.max_minutes else None
    if minutes:  # a wall-clock budget per sequence model (early stopping and the best checkpoint still apply)
        total = int(round(minutes * 60))
        ov.append(f"++trainer.max_time='00:{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}'")
    ov += args.override
    cfg = compose(ov, args.root)
    t0 = time.perf_counter()
    result = run(cfg)
    wall = time.perf_counter() - t0
    preds = pd.read_parquet(pred_dir / f"{cfg.data.name}-{model}-{result.run_id or 'norun'}.parquet")
    comp = pd.read_csv(pred_dir / f"{cfg.data.name}-{model}-{result.run_id or 'norun'}.comparison.csv")
    n_train = int((preds.shape[0] / max(cfg.data.split[2], 1e-9)) * cfg.data.split[0])
    epochs = result.timings.get("train_sequences_per_s", 0) * result.timings.get("fit_s", 0) / max(n_train, 1)
    return {"dataset": dataset, "model": model, "seed": seed, "run_id": result.run_id, "wall_s": wall,
            "fit_s": result.timings.get("fit_s"), "epochs": round(epochs, 1), "max_minutes": minutes,
            "logged": {k: v for k, v in result.metrics.items() if k.startswith("test/")},
            "preds": preds, "comparison": comp, "cfg": cfg}


# --------------------------------------------------------------------------- statistics


def metrics_of(preds: pd.DataFrame, name: str) -> dict[str, float]:
    out = {}
    for h in HEADS:
        for k, v in M.binary_metrics(preds[f"y_{h}"], preds[f"{name}__{h}"]).items():
            out[f"{h}_{k}"] = v
    return out


def paired_bootstrap(preds: pd.DataFrame, a: str, b: str, head: str, metric: str, n_boot: int, seed: int = 0) -> dict:
    """Difference a - b of ``metric`` on the same resampled test customers: estimate and 95 % interval."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    fn = {"auroc": roc_auc_score, "ap": average_precision_score}[metric]
    y = preds[f"y_{head}"].to_numpy()
    pa, pb = preds[f"{a}__{head}"].to_numpy(), preds[f"{b}__{head}"].to_numpy()
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].mean() < 1:
            diffs.append(fn(y[i], pa[i]) - fn(y[i], pb[i]))
    diffs = np.asarray(diffs)
    est = fn(y, pa) - fn(y, pb)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return {"a": a, "b": b, "head": head, "metric": metric, "diff": float(est), "ci95": [float(lo), float(hi)],
            "p_a_not_better": float((diffs <= 0).mean()), "n_boot": int(len(diffs))}


def summarise(rows: list[dict], models: list[str]) -> dict:
    """Mean and sd over seeds per model and metric."""
    out = {}
    for m in models:
        per_seed = [r["metrics"][m] for r in rows if m in r["metrics"]]
        if not per_seed:
            continue
        keys = per_seed[0].keys()
        out[m] = {k: {"mean": float(np.nanmean([s[k] for s in per_seed])),
                      "sd": float(np.nanstd([s[k] for s in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0,
                      "n": len(per_seed)} for k in keys}
    return out


# --------------------------------------------------------------------------- segments


def segment_tables(first: dict, args) -> dict:
    """Segment summary and k selection of the GRU run (MLflow artifacts), plus archetypes on the simulator."""
    from mlflow.tracking import MlflowClient

    from sellerlift.segment import SegmentModel

    cfg, run_id = first["cfg"], first["run_id"]
    out = {}
    if run_id is None:
        return out
    client = MlflowClient(cfg.logger.tracking_uri)
    run = client.get_run(run_id)
    out["k"] = run.data.metrics.get("segments/k")
    out["archetype_ari"] = run.data.metrics.get("segments/archetype_ari")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("segment_summary", "segment_k_selection"):
            p = client.download_artifacts(run_id, f"tables/{name}.csv", tmp)
            out[name] = pd.read_csv(p).to_dict(orient="records")
    # Which latent archetypes each segment holds (simulator only).
    from hydra.utils import instantiate

    from sellerlift.pipeline import prepare

    tables = instantiate(cfg.data.source).load()
    if tables.truth is not None and "archetype" in tables.truth:
        prep = prepare(tables, cfg)
        bundle = Path(cfg.paths.root_dir) / cfg.paths.bundles_dir / run_id / "segments.json"
        model = SegmentModel.from_json(json.loads(bundle.read_text()))
        seg = model.assign_names(prep.feats.rfm())
        ct = pd.crosstab(pd.Series(seg, name="segment"), prep.truth["archetype"].astype(str).to_numpy(),
                         normalize="index")
        out["segment_by_archetype"] = ct.reset_index().to_dict(orient="records")
        arch = prep.truth["archetype"].astype(str).to_numpy()
        rfm = prep.feats.rfm().reset_index(drop=True)
        ref = rfm.assign(archetype=arch).groupby("archetype").agg(
            recency_days=("recency_days", "mean"), frequency=("frequency", "mean"),
            monetary=("monetary", "mean"), share=("recency_days", lambda s: len(s) / len(rfm)))
        out["archetype_rfm"] = ref.reset_index().to_dict(orient="records")
    return out


# --------------------------------------------------------------------------- markdown


def _fmt(stat: dict | None, digits: int = 3) -> str:
    if stat is None or not np.isfinite(stat["mean"]):
        return "—"
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def markdown(report: dict) -> str:
    lines = ["# Sequence models vs classic baselines", "",
             "Generated by `benchmarks/compare_models.py` "
             f"({'quick mode: small data, one debug epoch — not a measurement' if report['quick'] else 'full run'}); "
             f"raw numbers in `benchmarks/results/model_comparison.json`. {report['machine']}.", "",
             "Every model sees the same customers, the same customer-level 70/15/15 split and the same labels "
             "(intent = purchase within 7 days of the cutoff, churn = no purchase within 90 days). Baselines read "
             "the per-customer aggregates of `sellerlift.features` (RFM, tenure, recent-window counts and spend, "
             "event-type counts); BG/NBD reads the purchase history only. Metrics are on the test customers, "
             "computed by `sellerlift.metrics.binary_metrics` (equal to the torchmetrics values the runs log): "
             "ECE uses 15 equal-width bins; P@20 % is the share of positives among the 20 % highest scores. "
             f"Seeds: {report['seeds']} (mean ± sd over seeds where more than one). Training time is wall-clock "
             "on a shared 2-core CPU machine: read it as a ratio."
             + (f" Sequence models trained under a wall-clock budget of {report['max_minutes']} minutes per model "
                "(early stopping and the best checkpoint still apply; epochs reached are in the table): "
                "their numbers are a lower bound." if report.get("max_minutes") else ""), ""]
    for d in report["datasets"].values():
        lines += [f"## {d['title']}", "", d["description"], ""]
        head = "| model | " + " | ".join(f"{h} {m}" for h in HEADS for m in ("AUROC", "AP", "ECE", "P@20 %")) + \
               " | train s |"
        lines += [head, "|" + "---|" * (2 + 4 * len(HEADS))]
        for m in [*SEQUENCE_MODELS, *BASELINES, "ceiling"]:
            s = d["summary"].get(m)
            if s is None:
                continue
            cells = [_fmt(s.get(f"{h}_{k}")) for h in HEADS for k in METRICS]
            fit, ep = s.get("fit_s"), s.get("epochs")
            fit_cell = _fmt(fit, 1) if fit else "—"
            if ep is not None:
                fit_cell += f" ({ep['mean']:.1f} epochs)"
            lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + f" | {fit_cell} |")
        lines += ["", "**Sequence model minus best baseline** (paired bootstrap over test customers, "
                  f"{d['bootstrap'][0]['n_boot'] if d['bootstrap'] else 0} resamples, seed {report['seeds'][0]}; "
                  "best = highest mean test value among the baselines, the hardest comparison):", "",
                  "| head | metric | sequence | best baseline | difference | 95 % interval | P(no gain) |",
                  "|---|---|---|---|---|---|---|"]
        for b in d["bootstrap"]:
            lines.append(f"| {b['head']} | {b['metric'].upper() if b['metric'] == 'ap' else 'AUROC'} | "
                         f"{LABELS[b['a']]} | {LABELS[b['b']]} | {b['diff']:+.4f} | "
                         f"[{b['ci95'][0]:+.4f}, {b['ci95'][1]:+.4f}] | {b['p_a_not_better']:.3f} |")
        lines += ["", "**Calibration by score band** (test customers, seed "
                  f"{report['seeds'][0]}): observed rate among customers scored below 0.25 / above 0.75, "
                  "and their share of customers.", "",
                  "| model | head | rate < 0.25 | share < 0.25 | rate > 0.75 | share > 0.75 |",
                  "|---|---|---|---|---|---|"]
        for r in d["calibration_bands"]:
            def f(v):
                return "—" if v is None or not np.isfinite(v) else f"{v:.3f}"
            lines.append(f"| {LABELS.get(r['model'], r['model'])} | {r['head']} | {f(r['rate_below_0.25'])} | "
                         f"{f(r['share_below_0.25'])} | {f(r['rate_above_0.75'])} | {f(r['share_above_0.75'])} |")
        lines += ["", "**Verdict** (the issue's goal: at least as good as the best baseline on every metric):", ""]
        lines += [f"- {v}" for v in d["verdict"]]
        seg = d.get("segments") or {}
        if seg.get("segment_summary"):
            ari = seg.get("archetype_ari")
            lines += ["", f"### RFM segments ({d['title']})", "",
                      f"k = {int(seg['k']) if seg.get('k') is not None else '?'} by silhouette over k = 3..10"
                      + (f"; adjusted Rand index vs the latent archetypes: **{ari:.3f}**" if ari is not None else "")
                      + ". Means over all customers with history (recency in days since the last purchase, "
                        "frequency = purchases, monetary = mean order value); churn / intent rates from the labels.",
                      "", pd.DataFrame(seg["segment_summary"]).to_markdown(index=False, floatfmt=".3g"), ""]
            if seg.get("segment_by_archetype"):
                lines += ["Share of each latent archetype within each segment (rows sum to 1):", "",
                          pd.DataFrame(seg["segment_by_archetype"]).to_markdown(index=False, floatfmt=".2f"), "",
                          "The archetypes' own RFM means (what the segments try to recover):", "",
                          pd.DataFrame(seg["archetype_rfm"]).to_markdown(index=False, floatfmt=".3g"), ""]
            lines += ["k selection:", "", pd.DataFrame(seg["segment_k_selection"]).to_markdown(
                index=False, floatfmt=".4g"), ""]
        lines.append("")
    return "\n".join(lines)


def verdict(summary: dict, baselines: list[str], seq_models: list[str]) -> list[str]:
    out = []
    for sm in seq_models:
        if sm not in summary:
            continue
        worse = []
        for h in HEADS:
            for k in METRICS:
                key = f"{h}_{k}"
                vals = {b: summary[b][key]["mean"] for b in baselines if b in summary}
                if not vals:
                    continue
                best_b = (min if k == "ece" else max)(vals, key=vals.get)
                s = summary[sm][key]["mean"]
                behind = s > vals[best_b] if k == "ece" else s < vals[best_b]
                if behind:
                    worse.append(f"{h} {k.upper() if k != 'precision_top20' else 'P@20 %'} "
                                 f"({s:.3f} vs {LABELS[best_b]} {vals[best_b]:.3f})")
        if worse:
            out.append(f"{LABELS[sm]} is **behind** the best baseline on {len(worse)} of "
                       f"{len(HEADS) * len(METRICS)} metrics: " + "; ".join(worse) + ".")
        else:
            out.append(f"{LABELS[sm]} is at least as good as the best baseline on every metric.")
    return out


# --------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small data and one debug epoch (for tests)")
    ap.add_argument("--datasets", nargs="+", default=["simulator", "cdnow"])
    ap.add_argument("--models", nargs="+", default=list(SEQUENCE_MODELS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples")
    ap.add_argument("--root", type=Path, default=REPO, help="repository root for mlruns/, bundles/, data/")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/model_comparison.json")
    ap.add_argument("--doc", type=Path, default=REPO / "docs/model_comparison.md")
    ap.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    ap.add_argument("--max-minutes", nargs="*", default=[], metavar="DATASET=MIN",
                    help="wall-clock training budget per sequence model, e.g. simulator=8 cdnow=5")
    args = ap.parse_args(argv)
    args.max_minutes = {k: float(v) for k, v in (kv.split("=", 1) for kv in args.max_minutes)}
    args.root = args.root.resolve()

    import os

    os.environ.setdefault("SELLERLIFT_ROOT", str(args.root))
    report = {"quick": args.quick, "seeds": args.seeds, "max_minutes": args.max_minutes, "models": args.models,
              "datasets": {},
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for ds in args.datasets:
            rows, first_runs, preds0 = [], {}, None
            for seed in args.seeds:
                metrics, runs = {}, {}
                pred_dir = work / f"preds-{ds}-{seed}"
                preds = None
                for model in args.models:
                    print(f"[compare] {ds} seed {seed}: {model} ...", flush=True)
                    r = run_one(ds, model, seed, args, pred_dir, work)
                    runs[model] = r["run_id"]
                    p = r["preds"]
                    preds = p if preds is None else preds.merge(
                        p[["customer_id", f"{model}__intent", f"{model}__churn"]], on="customer_id")
                    metrics[model] = metrics_of(p, model)
                    metrics[model]["fit_s"] = r["fit_s"]
                    metrics[model]["epochs"] = r["epochs"]
                    # The numbers MLflow shows (torchmetrics) agree with ours on the same scores.
                    for k, v in r["logged"].items():
                        ours = metrics[model][k.removeprefix("test/")]
                        if np.isfinite(v) and abs(ours - v) > 2e-3:
                            print(f"[compare] warning: {model} {k}: logged {v:.4f} vs recomputed {ours:.4f}")
                    if model == args.models[0]:
                        comp = r["comparison"].set_index("model")
                        for b in BASELINES:
                            if b in comp.index:
                                metrics[b] = metrics_of(p, b)
                                metrics[b]["fit_s"] = float(comp.loc[b, "fit_s"])
                        if "truth__intent" in p:
                            metrics["ceiling"] = metrics_of(p, "truth")
                        if seed == args.seeds[0]:
                            first_runs = r
                rows.append({"seed": seed, "metrics": metrics, "runs": runs})
                if seed == args.seeds[0]:
                    preds0 = preds
            allm = [*args.models, *BASELINES, "ceiling"]
            summary = summarise(rows, allm)
            present_b = [b for b in BASELINES if b in summary]
            boot = []
            for h in HEADS:
                for k in ("auroc", "ap"):
                    key = f"{h}_{k}"
                    best_seq = max(args.models, key=lambda m: summary[m][key]["mean"])
                    best_b = max(present_b, key=lambda b: summary[b][key]["mean"])
                    boot.append(paired_bootstrap(preds0, best_seq, best_b, h, k, args.bootstrap))
            bands = []
            for m in [*args.models, *present_b, *(["truth"] if "truth__intent" in preds0 else [])]:
                for h in HEADS:
                    bands.append({"model": "ceiling" if m == "truth" else m, "head": h,
                                  **M.calibration_bands(preds0[f"y_{h}"], preds0[f"{m}__{h}"])})
            cfg = first_runs["cfg"]
            n_test = len(preds0)
            if ds == "cdnow":
                where = (f"CDNOW ({cfg.data.source.which} file), history before {cfg.data.source.cutoff} "
                         "(exclusive), labels from the purchases after it")
            else:
                where = (f"simulator, {cfg.data.source.n_customers:,} customers of {cfg.data.source.n_sellers} "
                         "sellers, one simulated year of events before the cutoff")
            desc = (f"{where}; {n_test:,} test customers; test intent rate {preds0['y_intent'].mean():.3f}, "
                    f"churn rate {preds0['y_churn'].mean():.3f}.")
            report["datasets"][ds] = {
                "title": "Simulator" if ds == "simulator" else "CDNOW (real transactions)",
                "description": desc, "n_test": n_test,
                "per_seed": rows, "summary": summary, "bootstrap": boot, "calibration_bands": bands,
                "verdict": verdict(summary, present_b, args.models),
                "segments": segment_tables(first_runs, args),
                "overrides_quick": QUICK[ds] + QUICK["common"] if args.quick else [],
            }
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=_json_default))
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(markdown(report))
    print(f"[compare] wrote {args.out} and {args.doc}")
    return report


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    main()
