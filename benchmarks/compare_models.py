"""Sequence models vs classic baselines, same customers, split and labels, with paired bootstrap intervals.

A *setting* is a data set at a cutoff (``cdnow@1997-07-01``, ``simulator``); a *variant* is a sequence
model with its levers (``gru``, ``gru+wide``, ``gru+coles``, ...; :data:`VARIANTS`). For every setting
and seed the first variant's run also trains the baselines (logistic regression, random forest,
LightGBM, BG/NBD) and the segments; every run writes its validation and test predictions, so

* every model (variants, baselines, the ceiling on the simulator) gets its test metrics with a 95 %
  percentile bootstrap interval over test customers (``sellerlift.metrics``, vectorised);
* every variant, and two ensembles fitted on the validation customers only (``mean``: the average
  of the GRU and the best baseline; ``stack``: a logistic regression on the logits of the GRU and
  every baseline), is compared with the best baseline (highest test value: the hardest comparison)
  by a paired bootstrap on the same resampled test customers.

Results: ``benchmarks/results/model_comparison.json`` and ``docs/model_comparison.md``. Settings not
run this time are kept from the previous JSON (each setting says when and on which code it was measured).

    .venv/bin/python benchmarks/compare_models.py --settings cdnow@1997-07-01 cdnow@1997-10-01 cdnow@1998-01-01 \\
        --variants gru gru+wide gru+coles
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
sys.path.insert(0, str(REPO / "benchmarks"))

from compare_models_md import markdown  # benchmarks/, beside this file

from sellerlift import bootstrap as B
from sellerlift import metrics as M
from sellerlift.constants import HEADS

METRICS = ("auroc", "ap", "ece", "precision_top20")
BASELINES = ("logreg", "random_forest", "lightgbm", "bgnbd")
ENSEMBLES = ("mean", "stack")
VARIANTS = {  # name -> Hydra overrides (levers are options of the default GRU run)
    "gru": [],
    "gru+wide": ["++model.module.net.wide=true"],  # wide & deep: a linear path from the aggregates to the logits
    "gru+coles": ["pretrain=coles"],  # CoLES self-supervised pre-training of the encoder
    "gru+wide+iw": ["++model.module.net.wide=true", "model.module.loss_weights=[3.0,1.0]"],  # + intent loss x3
    "gru+rolling": ["data.rolling.cutoffs=3", "data.rolling.step_days=30"],  # earlier cutoffs as training rows
    "transformer": ["model=transformer"],
}
EXTRAS_FIRST = ["sellerlift.stages.segments.fit_segments_stage", "sellerlift.stages.baselines.train_baselines"]
EXTRAS_OTHER = ["sellerlift.stages.baselines.train_baselines"]  # with no baseline models: writes predictions only
QUICK = {
    "simulator": ["data.source.n_customers=3000", "data.source.n_sellers=10", "data.max_len=32"],
    "cdnow": ["data.source.which=sample", "data.max_len=16"],
    "common": [
        "trainer=debug",
        "model.module.net.d_model=16",
        "model.module.net.head_hidden=16",
        "data.datamodule.batch_size=128",
        "baselines.models.random_forest.n_estimators=30",
        "guards.on_small=warn",
    ],
}


def compose(overrides: list[str], root: Path):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return hcompose(config_name="train", overrides=[*overrides, f"paths.root_dir={root}"])


def setting_overrides(setting: str) -> tuple[str, list[str]]:
    dataset, _, cutoff = setting.partition("@")
    return dataset, [f"data={dataset}", *([f"data.source.cutoff={cutoff}"] if cutoff else [])]


def rolling(variant: str) -> bool:
    return any(o.startswith("data.rolling") for o in VARIANTS[variant])


def run_one(setting: str, variant: str, seed: int, args, pred_dir: Path, work: Path) -> dict:
    from sellerlift.pipeline import run

    dataset, ov = setting_overrides(setting)
    first = variant == args.variants[0]
    ov += [
        f"seed={seed}",
        "tracking.register=false",
        "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar",
        "report.enabled=false",
        f"extras=[{','.join(EXTRAS_FIRST if first else EXTRAS_OTHER)}]",
        f"baselines.predictions_dir={pred_dir}",
        f"paths.output_dir={work}/{setting}-{variant}-{seed}",
    ]
    if dataset == "simulator":
        ov.append("data.source.progress=false")
    if args.quick:
        ov += QUICK[dataset] + QUICK["common"]
    ov += VARIANTS[variant]
    if args.quick and "pretrain=coles" in VARIANTS[variant]:
        ov.append("pretrain.trainer.max_epochs=1")
    if not first and not rolling(variant):  # after the quick settings (they tune a baseline): overrides apply in order
        ov.append("~baselines.models")  # a rolling variant trains the baselines on its extra rows too (fair lever)
    ov += args.override
    cfg = compose(ov, args.root)
    t0 = time.perf_counter()
    result = run(cfg)
    wall = time.perf_counter() - t0
    stem = pred_dir / f"{cfg.data.name}-{cfg.model.name}-{result.run_id or 'norun'}"
    preds = pd.read_parquet(stem.with_suffix(".parquet"))
    preds = preds.rename(columns={f"{cfg.model.name}__{h}": f"{variant}__{h}" for h in HEADS})
    comp = pd.read_csv(stem.with_suffix(".comparison.csv"))
    epochs = (
        result.timings.get("train_sequences_per_s", 0)
        * result.timings.get("fit_s", 0)
        / max(int((preds["split"] == "test").sum() / cfg.data.split[2] * cfg.data.split[0]), 1)
    )
    return {
        "run_id": result.run_id,
        "wall_s": wall,
        "fit_s": result.timings.get("fit_s"),
        "pretrain_s": result.timings.get("pretrain_s"),
        "epochs": round(epochs, 1),
        "preds": preds,
        "comparison": comp,
        "cfg": cfg,
        "command": "python train.py " + " ".join(ov),
    }


# --------------------------------------------------------------------------- statistics


def paired_bootstrap(preds: pd.DataFrame, a: str, b: str, head: str, metric: str, n_boot: int, seed: int = 0) -> dict:
    """Difference a - b of ``metric`` on the same resampled test customers: estimate and 95 % interval."""
    d = B.paired_difference(preds[f"y_{head}"], preds[f"{a}__{head}"], preds[f"{b}__{head}"], metric, n_boot, seed=seed)
    return {
        "a": a,
        "b": b,
        "head": head,
        "metric": metric,
        "diff": d["diff"],
        "ci95": [d["ci_low"], d["ci_high"]],
        "p_a_not_better": d["p_not_better"],
        "n_boot": d["n_boot"],
    }


def metrics_of(test: pd.DataFrame, name: str, n_boot: int) -> dict:
    """Test metrics of ``name`` with their bootstrap intervals: ``{head_metric: v, head_metric_ci: [lo, hi]}``."""
    y = test[[f"y_{h}" for h in HEADS]].to_numpy()
    p = test[[f"{name}__{h}" for h in HEADS]].to_numpy(np.float64)
    out = M.head_metrics(y, p, "")
    ci = B.head_metric_intervals(y, p, "", n_boot=n_boot) if n_boot else {}
    for k in list(out):
        if f"{k}_ci_low" in ci:
            out[f"{k}_ci"] = [ci[f"{k}_ci_low"], ci[f"{k}_ci_high"]]
    return out


def _logit(p):
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def add_ensembles(preds: pd.DataFrame, seq: str, baselines: list[str]) -> dict:
    """Columns ``mean__<head>`` and ``stack__<head>``, fitted on the validation rows only; returns what was chosen."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    val = (preds["split"] == "val").to_numpy()
    chosen = {}
    for h in HEADS:
        y = preds[f"y_{h}"].to_numpy()
        best = max(baselines, key=lambda b: roc_auc_score(y[val], preds.loc[val, f"{b}__{h}"]))
        preds[f"mean__{h}"] = (preds[f"{seq}__{h}"] + preds[f"{best}__{h}"]) / 2
        X = np.stack([_logit(preds[f"{m}__{h}"]) for m in (seq, *baselines)], axis=1)
        stack = LogisticRegression(C=1.0, max_iter=1000).fit(X[val], y[val])
        preds[f"stack__{h}"] = stack.predict_proba(X)[:, 1]
        chosen[h] = {
            "mean_with": best,
            "stack_weights": {m: round(float(w), 3) for m, w in zip((seq, *baselines), stack.coef_[0])},
        }
    return chosen


def summarise(rows: list[dict]) -> dict:
    """Mean and sd over seeds of every model's test metrics."""
    out = {}
    for m in rows[0]["models"]:
        per_seed = [r["models"][m] for r in rows if m in r["models"]]
        keys = [k for k in per_seed[0] if not k.endswith("_ci") and isinstance(per_seed[0][k], (int, float))]
        out[m] = {
            k: {
                "mean": float(np.nanmean([s[k] for s in per_seed])),
                "n": len(per_seed),
                "sd": float(np.nanstd([s[k] for s in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0,
            }
            for k in keys
        }
    return out


def segment_tables(first: dict) -> dict:
    """Segment summary and k selection of the setting's first run (MLflow artifacts)."""
    from mlflow.tracking import MlflowClient

    cfg, run_id = first["cfg"], first["run_id"]
    if run_id is None:
        return {}
    client = MlflowClient(cfg.logger.tracking_uri)
    out = {
        "k": client.get_run(run_id).data.metrics.get("segments/k"),
        "archetype_ari": client.get_run(run_id).data.metrics.get("segments/archetype_ari"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("segment_summary", "segment_k_selection"):
            out[name] = pd.read_csv(client.download_artifacts(run_id, f"tables/{name}.csv", tmp)).to_dict("records")
    return out


def input_ablation(first: dict, n_boot: int) -> dict:
    """Does the GRU read both inputs? Test AUROC of its exported model with the aggregates set to the training mean
    (0 after standardisation) and with the event sequence emptied (length 0: the encoder outputs zeros)."""
    from hydra.utils import instantiate

    from sellerlift.pipeline import prepare
    from sellerlift.runtime import SequenceModel

    cfg = first["cfg"]
    prep = prepare(instantiate(cfg.data.source).load(), cfg)
    test = np.flatnonzero(prep.split == 2)
    feats = prep.feats.take(test)
    bundle = Path(cfg.paths.root_dir) / cfg.paths.bundles_dir / first["run_id"]
    model = SequenceModel.from_file(bundle / "sequence.onnx")
    no_agg = type(feats)(
        feats.customer_id, feats.event_type, feats.numeric, feats.length, np.zeros_like(feats.aggregates), feats.raw
    )
    no_seq = type(feats)(
        feats.customer_id,
        np.zeros_like(feats.event_type),
        np.zeros_like(feats.numeric),
        np.zeros_like(feats.length),
        feats.aggregates,
        feats.raw,
    )
    out = {}
    for name, f in (("full", feats), ("no_aggregates", no_agg), ("no_events", no_seq)):
        p = model.probabilities(f)
        m = M.head_metrics(prep.targets[test], p, "")
        ci = B.head_metric_intervals(prep.targets[test], p, "", n_boot=n_boot) if n_boot else {}
        out[name] = {f"{h}_auroc": m[f"{h}_auroc"] for h in HEADS}
        out[name].update({f"{h}_auroc_ci": [ci.get(f"{h}_auroc_ci_low"), ci.get(f"{h}_auroc_ci_high")] for h in HEADS})
    return out


def compare_setting(setting: str, args, work: Path) -> dict:
    per_seed, first, started = [], None, time.strftime("%Y-%m-%d %H:%M")
    for seed in args.seeds:
        pred_dir, preds, runs = work / f"preds-{setting}-{seed}", None, {}
        for variant in args.variants:
            print(f"[compare] {setting} seed {seed}: {variant} ...", flush=True)
            r = run_one(setting, variant, seed, args, pred_dir, work)
            runs[variant] = {k: r[k] for k in ("run_id", "wall_s", "fit_s", "pretrain_s", "epochs", "command")}
            cols = ["customer_id", "split", *(f"{variant}__{h}" for h in HEADS)]
            if preds is not None and rolling(variant):  # its baselines saw the same extra rows: "<b>+rolling"
                r["preds"] = r["preds"].rename(
                    columns={f"{b}__{h}": f"{b}+rolling__{h}" for b in BASELINES for h in HEADS}
                )
                cols += [c for c in r["preds"] if "+rolling__" in c and c not in cols]
            preds = r["preds"] if preds is None else preds.merge(r["preds"][cols], on=["customer_id", "split"])
            if first is None:
                first = r
        base = [b for b in BASELINES if f"{b}__intent" in preds]
        chosen = add_ensembles(preds, args.variants[0], base) if base else {}
        test = preds[preds["split"] == "test"].reset_index(drop=True)
        n_boot = args.bootstrap if seed == args.seeds[0] else 0
        rolled = [f"{b}+rolling" for b in BASELINES if f"{b}+rolling__intent" in preds]
        names = [
            *args.variants,
            *base,
            *rolled,
            *(ENSEMBLES if base else ()),
            *(["truth"] if "truth__intent" in test else []),
        ]
        models = {("ceiling" if n == "truth" else n): metrics_of(test, n, n_boot) for n in names}
        for v in args.variants:
            models[v].update(runs[v])
        models.update(
            {b: {**models[b], "fit_s": float(first["comparison"].set_index("model").loc[b, "fit_s"])} for b in base}
        )
        per_seed.append({"seed": seed, "models": models, "ensembles": chosen})
        if seed == args.seeds[0]:
            test0 = test.rename(columns={f"truth__{h}": f"ceiling__{h}" for h in HEADS})
    summary = summarise(per_seed)
    paired = []
    for h in HEADS:
        for k in ("auroc", "ap"):
            best = max(base, key=lambda b: summary[b][f"{h}_{k}"]["mean"])
            paired += [paired_bootstrap(test0, a, best, h, k, args.bootstrap) for a in (*args.variants, *ENSEMBLES)]
            if rolled:  # the rolling variants against baselines trained on the same extra rows
                best_r = max(rolled, key=lambda b: summary[b][f"{h}_{k}"]["mean"])
                paired += [
                    paired_bootstrap(test0, a, best_r, h, k, args.bootstrap) for a in args.variants if rolling(a)
                ]
    cfg = first["cfg"]
    dataset, _, cutoff = setting.partition("@")
    pos = {h: {s: int(preds.loc[preds["split"] == s, f"y_{h}"].sum()) for s in ("val", "test")} for h in HEADS}
    where = (
        f"CDNOW ({cfg.data.source.get('which', 'master')} file), history before {cutoff} (exclusive)"
        if dataset == "cdnow"
        else f"simulator, {cfg.data.source.n_customers:,} customers of "
        f"{cfg.data.source.n_sellers} sellers, one simulated year before the cutoff"
    )
    from sellerlift.tracking import git_commit

    return {
        "title": f"CDNOW at {cutoff}" if dataset == "cdnow" else "Simulator",
        "dataset": dataset,
        "measured": started,
        "commit": git_commit(REPO),
        "cutoff": cutoff or str(cfg.data.source.get("cutoff", "")),
        "description": f"{where}; {len(test0):,} test customers; test intent rate {test0['y_intent'].mean():.3f} "
        f"({pos['intent']['test']} positives), churn rate {test0['y_churn'].mean():.3f}; "
        f"validation intent positives {pos['intent']['val']}.",
        "n_test": len(test0),
        "positives": pos,
        "per_seed": per_seed,
        "summary": summary,
        "paired": paired,
        "segments": segment_tables(first) if dataset != "cdnow" or cutoff == "1997-10-01" else {},
        "ablation": input_ablation(first, args.bootstrap) if first["run_id"] else {},
        "commands": {v: runs[v]["command"] for v in args.variants},
    }


# --------------------------------------------------------------------------- main


def from_old(entry: dict, when: str, cap_minutes: float | None = None) -> dict:
    """A data set of the previous JSON layout (summary / bootstrap per data set) in this layout."""
    models = {m: {k: v["mean"] for k, v in stats.items()} for m, stats in entry["summary"].items()}
    cap = (
        f" The sequence models were trained under a wall-clock cap of {cap_minutes:g} minutes on a loaded machine "
        "(epochs in the table): their rows are a lower bound."
        if cap_minutes
        else ""
    )
    return {
        "title": entry["title"],
        "dataset": "simulator" if "Simulator" in entry["title"] else "cdnow",
        "cutoff": "",
        "description": entry["description"] + cap,
        "measured": when,
        "per_seed": [{"seed": 0, "models": models}],
        "summary": entry["summary"],
        "segments": entry.get("segments"),
        "paired": [b for b in entry.get("bootstrap", [])],
    }


def previous_settings(path: Path) -> dict:
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if "settings" in old:
        return {k: {"measured": old.get("started"), **v} for k, v in old["settings"].items()}
    return {
        ("simulator" if ds == "simulator" else "cdnow@1997-10-01"): from_old(
            e, old.get("started", "?"), (old.get("max_minutes") or {}).get(ds)
        )
        for ds, e in old.get("datasets", {}).items()
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small data and one debug epoch (for tests)")
    ap.add_argument(
        "--settings",
        nargs="+",
        default=["simulator", "cdnow@1997-10-01"],
        help="data set[@cutoff], e.g. cdnow@1997-07-01",
    )
    ap.add_argument("--variants", nargs="+", default=["gru"], choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--root", type=Path, default=REPO, help="repository root for mlruns/, bundles/, data/")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/model_comparison.json")
    ap.add_argument("--doc", type=Path, default=REPO / "docs/model_comparison.md")
    ap.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    ap.add_argument("--fresh", action="store_true", help="do not carry over settings of the previous JSON")
    args = ap.parse_args(argv)
    args.root = args.root.resolve()

    import os

    os.environ.setdefault("SELLERLIFT_ROOT", str(args.root))
    report = {
        "quick": args.quick,
        "seeds": args.seeds,
        "variants": args.variants,
        "bootstrap": args.bootstrap,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": {} if args.fresh or args.quick else previous_settings(args.out),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings:
            report["settings"][setting] = compare_setting(setting, args, Path(tmp))
            args.out.parent.mkdir(parents=True, exist_ok=True)  # after each setting: a crash keeps what ran
            args.out.write_text(json.dumps(report, indent=2, default=_json_default))
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
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
