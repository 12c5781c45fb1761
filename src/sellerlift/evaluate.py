"""``python -m sellerlift.evaluate closed-loop --bundle <dir | @champion> [--days 90] [--quick]``

Runs every policy forward in the simulated world the bundle was trained on (its held-out
customers), with common random numbers, and writes the policy table, the A/B, DiD and
off-policy studies next to the truth: plots and tables under ``--out-dir`` (default
``outputs/closed_loop/<bundle>``), ``benchmarks/results/closed_loop.json`` (``--json``), and an
MLflow run nested under the bundle's run. ``--quick``: a small population for tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
QUICK = {"max_customers": 1500, "ceiling_customers": 6000, "did_months": 8, "adopt_month": 4}


def held_out_customers(sim_path: Path, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> np.ndarray:
    """The test customers of a run on this simulation (the pipeline's customer-level split)."""
    import pandas as pd

    from sellerlift.labels import split_customers

    meta = json.loads((sim_path / "config.json").read_text())
    cutoff = pd.Timestamp(meta["cutoff"])
    ids = []
    for part in sorted((sim_path / "events").glob("part-*.parquet")):
        ev = pd.read_parquet(part, columns=["customer_id", "ts"])
        ids.append(np.unique(ev.loc[ev["ts"] < cutoff, "customer_id"].to_numpy()))
    ids = np.unique(np.concatenate(ids))
    return ids[split_customers(ids, tuple(fractions), seed=seed) == 2]


def newest_simulator_bundle(bundles: Path) -> Path | None:
    """The newest complete bundle whose model was trained on the simulator."""
    found = []
    for m in bundles.glob("*/manifest.json") if bundles.is_dir() else []:
        try:
            if str(json.loads(m.read_text()).get("data_fingerprint", "")).startswith("sim-"):
                found.append(m)
        except (OSError, ValueError):
            continue
    return max(found, key=lambda m: m.stat().st_mtime).parent if found else None


def sim_of_bundle(bundle: Path, data_root: Path) -> Path:
    manifest = json.loads((bundle / "manifest.json").read_text())
    fp = str(manifest.get("data_fingerprint", ""))
    if not fp.startswith("sim-"):
        raise SystemExit(
            f"{bundle}: trained on {manifest.get('data')!r} ({fp}), not on the simulator: the closed loop "
            "needs the simulated world the model was trained on"
        )
    path = data_root / "sim" / fp[len("sim-") :]
    if not (path / "state").is_dir():
        raise SystemExit(f"{path}: no simulator v2 output with the state at the cutoff; train again (`make train`)")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sellerlift.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("command", choices=["closed-loop"])
    ap.add_argument("--bundle", help="bundle directory or @alias (default: the newest bundle trained on the simulator)")
    ap.add_argument("--sim", help="simulator output directory (default: the one the bundle was trained on)")
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--budget", type=float, default=0.15, help="campaign budget as a fraction of the top-level spend")
    ap.add_argument("--per-seller", action="store_true", help="split every campaign's budget over sellers")
    ap.add_argument("--margin", type=float, default=0.4)
    ap.add_argument("--customers", type=int, help="at most this many held-out customers")
    ap.add_argument("--quick", action="store_true", help="a small population and ceiling (for tests)")
    ap.add_argument("--no-ab", action="store_true")
    ap.add_argument("--no-did", action="store_true")
    ap.add_argument("--no-ope", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="evaluate these seeds, one task each (with --engine ray: on "
        "the Ray cluster); writes {seed: JSON} to --json",
    )
    ap.add_argument("--engine", choices=["local", "ray"], help="where --seeds run (default SELLERLIFT_ENGINE or local)")
    ap.add_argument("--address", help="Ray cluster address (default RAY_ADDRESS; none: a local Ray started now)")
    ap.add_argument("--out-dir", help="plots and tables (default outputs/closed_loop/<bundle or sim>)")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "closed_loop.json"))
    ap.add_argument("--tracking-uri", help="MLflow store (default MLFLOW_TRACKING_URI or ./mlruns); 'none' to skip")
    args = ap.parse_args(argv)

    from sellerlift.closed_loop import report
    from sellerlift.closed_loop.evaluate import Settings, run

    bundle = None
    if args.bundle:
        from sellerlift.score import ScoreError, resolve_bundle

        try:
            bundle = resolve_bundle(args.bundle, None if args.tracking_uri == "none" else args.tracking_uri)
        except ScoreError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.sim:
        sim_path = Path(args.sim)
    else:
        bundle = bundle or newest_simulator_bundle(REPO / "bundles")
        if bundle is None:
            print(
                "error: no bundle trained on the simulator under bundles/ (run `make train`), and no --bundle or "
                "--sim given",
                file=sys.stderr,
            )
            return 2
        sim_path = sim_of_bundle(Path(bundle), REPO / "data")
    s = Settings(
        days=args.days,
        budget_fraction=args.budget,
        per_seller=args.per_seller,
        margin=args.margin,
        max_customers=args.customers,
        ab=not args.no_ab,
        did=not args.no_did,
        ope=not args.no_ope,
        seed=args.seed,
        horizons=tuple(h for h in (30, 90) if h <= args.days) or (args.days,),
    )
    if args.quick:
        for k, v in QUICK.items():
            setattr(s, k, v)
    if args.seeds:
        return _seeds(args, sim_path, bundle, s)
    result = run(sim_path, bundle, s, held_out_customers(sim_path))
    meta = {"bundle": str(bundle) if bundle else None, "simulator": str(sim_path)}
    out_dir = Path(args.out_dir or REPO / "outputs" / "closed_loop" / (Path(bundle).name if bundle else sim_path.name))
    files = report.write(result, s, out_dir, meta)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(files["json"].read_text())
    print(report.policy_markdown(result.table))
    if args.tracking_uri != "none":
        _log(files, json.loads(files["json"].read_text()), s, bundle, args.tracking_uri)
    print(f"wrote {out_dir} and {args.json}")
    return 0


def _seeds(args, sim_path: Path, bundle, s) -> int:
    """Every seed's evaluation as an independent unit on the engine; {seed: the JSON summary} into --json."""
    from sellerlift.closed_loop.seeds import evaluate_seeds
    from sellerlift.engine import get_engine

    with get_engine(args.engine, address=args.address) as engine:
        docs = evaluate_seeds(sim_path, bundle, s, args.seeds, held_out_customers(sim_path), engine)
    out = Path(args.json)
    out = out.with_name(out.stem + ".seeds.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({str(k): v for k, v in docs.items()}, indent=2, sort_keys=True))
    h = f"{s.horizons[-1]}d"
    for seed, doc in docs.items():
        best = max(doc["policies"].items(), key=lambda kv: (kv[1].get(h) or {}).get("incremental_profit") or -1e18)
        print(f"seed {seed}: {doc['customers']:,} customers; best at {h}: {best[0]}")
    print(f"wrote {out}")
    return 0


def _log(files, doc, s, bundle, tracking_uri) -> None:
    from mlflow.tracking import MlflowClient

    from sellerlift.champion import default_tracking_uri
    from sellerlift.closed_loop import report

    client = MlflowClient(tracking_uri or default_tracking_uri(REPO))
    parent = None
    if bundle is not None:
        parent = json.loads((Path(bundle) / "manifest.json").read_text()).get("run_id")
    exp = client.get_experiment_by_name("sellerlift-closed-loop")
    exp_id = exp.experiment_id if exp else client.create_experiment("sellerlift-closed-loop")
    try:
        run_id = report.log_mlflow(client, parent, exp_id, files, doc, s)
        print(f"MLflow run {run_id}")
    except Exception as err:  # the evaluation is written already: say why the run could not be logged
        print(f"warning: MLflow logging failed ({type(err).__name__}: {err}); the files are written", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
