"""Wall time and peak memory of the chunked simulator writing to a temp dir.

Usage: python benchmarks/simulator_timing.py 100000 [1000000 ...]
Each size runs in its own process so peak RSS (ru_maxrss) belongs to that run alone.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_one(n_customers: int) -> dict:
    from sellerlift.data.simulator import SimulatorConfig, simulate

    cfg = SimulatorConfig(n_customers=n_customers)
    out = Path(tempfile.mkdtemp(prefix="simbench-"))
    try:
        t0 = time.perf_counter()
        simulate(cfg, out, progress=False)
        wall = time.perf_counter() - t0
        size = _disk_bytes(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"n_customers": n_customers, "chunk_size": cfg.chunk_size, "wall_s": round(wall, 1),
            "peak_rss_mib": round(peak_mib), "disk_mib": round(size / 2**20)}


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--one":
        print(json.dumps(run_one(int(argv[1]))))
        return
    for n in [int(a) for a in argv] or [100_000]:
        res = subprocess.run([sys.executable, __file__, "--one", str(n)], check=True, capture_output=True, text=True)
        print(res.stdout.strip(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
