"""Simulator: customers and events per second, peak memory, at 100k and 1M customers.

    python benchmarks/bench_simulator.py [--quick] [--sizes 100000 1000000]

Each size runs in its own process writing Parquet to a temp dir, so peak RSS
belongs to that run alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, peak_rss_mib, write_result


def run_one(n: int) -> dict:
    import pyarrow.parquet as pq

    from sellerlift.sim import SimulatorConfig, simulate

    cfg = SimulatorConfig(n_customers=n)
    out = Path(tempfile.mkdtemp(prefix="simbench-"))
    try:
        t0 = time.perf_counter()
        simulate(cfg, out, progress=False)
        wall = time.perf_counter() - t0
        n_events = sum(pq.ParquetFile(p).metadata.num_rows for p in (out / "events").glob("*.parquet"))
        disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "customers": n,
        "events": n_events,
        "wall_s": wall,
        "customers_per_s": n / wall,
        "events_per_s": n_events / wall,
        "peak_rss_mib": peak_rss_mib(),
        "disk_mib": disk / 2**20,
        "chunk_size": cfg.chunk_size,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one)))
        return {}
    sizes = [3_000] if args.quick else args.sizes
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {"rows": rows}
    write_result("simulator", result, args.quick)
    return result


if __name__ == "__main__":
    r = main()
    if r:
        print(
            markdown_table(
                r["rows"],
                ["customers", "events", "wall_s", "customers_per_s", "events_per_s", "peak_rss_mib", "disk_mib"],
            )
        )
