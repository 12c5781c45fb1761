"""Batch scoring: customers per second through ``sellerlift.score`` at 100k and 1M customers, peak memory.

    python benchmarks/bench_score.py [--quick] [--sizes 100000 1000000] [--bundle bundles/<run id>]
    python benchmarks/bench_score.py --src-root /tmp/before/src --sizes 100000   # an older checkout: before/after

For each size the simulator writes an ``events`` Parquet directory, then the batch
scorer (``score_file``: read in row chunks, partition by customer, score partition
by partition through onnxruntime) scores it in a fresh process, so the peak RSS
is the scorer's alone. The scorer's memory is bounded by its partition size
(``--partition-rows``), not by the file: ``peak_rss_ratio`` (largest size over
smallest) near 1 is the "constant memory" figure.

The bundle: --bundle, else the newest simulator bundle under bundles/, else a synthetic one (the
default GRU with random weights; speed does not depend on the weights).
Writes benchmarks/results/score.json (score.quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import markdown_table, write_result

COLUMNS = [
    "customers",
    "events",
    "wall_s",
    "wall_spread_s",
    "customers_per_s",
    "events_per_s",
    "peak_rss_mib",
    "partitions",
    "repeats",
]


def score_once(bundle: str, events: str, as_of: str, out: str) -> dict:
    """In a fresh process (``--one``): load the bundle, score the file, report time and this process's peak RSS."""
    from sellerlift.score import load_bundle, score_file

    t0 = time.perf_counter()
    summary = score_file(load_bundle(bundle, threads=2), events, out, as_of=as_of, progress=False)
    wall = time.perf_counter() - t0
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(out).metadata.num_rows
    if rows != summary["customers"]:
        raise SystemExit(f"{out}: {rows} rows written for {summary['customers']} customers scored")
    return {
        "wall_s": wall,
        "customers": summary["customers"],
        "events": summary["events"],
        "partitions": summary["partitions"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_size(n: int, bundle: Path, repeats: int, src_root: str | None, work: Path) -> dict:
    from sellerlift.sim import SimulatorConfig, simulate

    cfg = SimulatorConfig(n_customers=n)
    data = work / f"sim-{n}"
    simulate(cfg, data, progress=False)
    env = dict(os.environ)
    if src_root:  # the scorer from another checkout ahead of the installed one
        env["PYTHONPATH"] = os.pathsep.join([src_root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    runs = []
    for r in range(repeats):
        out = work / f"scores-{n}-{r}.parquet"
        proc = subprocess.run(
            [sys.executable, __file__, "--one", str(bundle), str(data / "events"), str(cfg.cutoff), str(out)],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            raise SystemExit(f"scoring {n:,} customers failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        out.unlink(missing_ok=True)
    shutil.rmtree(data, ignore_errors=True)
    walls = np.array([r["wall_s"] for r in runs])
    wall = float(np.median(walls))
    first = runs[0]
    return {
        "customers": first["customers"],
        "events": first["events"],
        "wall_s": wall,
        "wall_spread_s": float(walls.max() - walls.min()),
        "customers_per_s": first["customers"] / wall,
        "events_per_s": first["events"] / wall,
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "partitions": first["partitions"],
        "repeats": repeats,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 customers, one run (the test suite's mode)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3, help="runs per size up to 200k customers (larger: one)")
    ap.add_argument("--bundle", help="bundle directory (default: newest under bundles/, else a synthetic one)")
    ap.add_argument("--src-root", help="import sellerlift from this directory (an older checkout's src/)")
    ap.add_argument("--out", type=Path, help="write the result JSON here instead of benchmarks/results/")
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(score_once(*args.one)))
        return {}
    from bench_serve import pick_bundle

    sizes = [2_000] if args.quick else args.sizes
    with tempfile.TemporaryDirectory(prefix="scorebench-") as tmp:
        work = Path(tmp)
        bundle, how = pick_bundle(args.bundle, work)
        rows = []
        for n in sizes:
            reps = 1 if args.quick or n > 200_000 else args.repeats
            rows.append(run_size(n, bundle, reps, args.src_root, work))
            print(
                f"[score] {n:,} customers: {rows[-1]['customers_per_s']:,.0f} customers/s, "
                f"peak {rows[-1]['peak_rss_mib']:,.0f} MiB",
                flush=True,
            )
    result = {
        "rows": rows,
        "bundle": how,
        "src_root": args.src_root,
        "peak_rss_ratio_largest_over_smallest": rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"],
        "command": "python -m sellerlift.score --bundle B --events <events dir> --as-of <cutoff> --out X "
        "(defaults: --chunk-rows 1e6, --partition-rows 2e6, --chunk-customers 5e4, --threads 2)",
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    else:
        write_result("score", result, args.quick)
    return result


if __name__ == "__main__":
    r = main()
    if r:
        print(markdown_table(r["rows"], COLUMNS))
