"""The benchmark harness runs end to end at tiny sizes, so it never rots (no timing thresholds here)."""

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def numbers(obj):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k not in ("machine",):
                yield from numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers(v)


def test_quick_benchmarks_write_finite_positive_figures():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--quick"], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ran = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("[ok]")]
    assert {"simulator", "features", "training", "inference", "allocate", "serve", "score"} <= set(ran)
    for name in ran:
        data = json.loads((BENCH / "results" / f"{name}.quick.json").read_text())
        assert data["machine"]["cores"] >= 1 and "git_commit" in data["machine"]
        values = list(numbers({k: v for k, v in data.items() if k != "machine"}))
        assert values, name
        # Figures are finite; times, rates and sizes are positive (gaps and deltas may be 0 or negative).
        assert all(math.isfinite(v) for v in values), name
    md = (BENCH / "results" / "benchmarks.quick.md").read_text()
    assert "## features" in md and "| model |" in md and "## score" in md
