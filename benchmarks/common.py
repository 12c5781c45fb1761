"""Shared helpers for benchmarks: machine info, repeated timing, JSON + markdown output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import time
from importlib import metadata
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {}
    for pkg in ("numpy", "pandas", "torch", "onnxruntime", "lightning", "scipy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": commit,
        "loadavg_at_start": list(os.getloadavg()),
    }


def timed(fn, repeats: int = 5, warmup: int = 1) -> tuple[object, dict]:
    """Median and spread of ``repeats`` calls after ``warmup`` untimed ones."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    t = np.asarray(times)
    return out, {
        "median_s": float(np.median(t)),
        "min_s": float(t.min()),
        "max_s": float(t.max()),
        "iqr_s": float(np.subtract(*np.percentile(t, [75, 25]))),
        "repeats": repeats,
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(name: str, payload: dict, quick: bool) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / (f"{name}.quick.json" if quick else f"{name}.json")
    path.write_text(
        json.dumps({"benchmark": name, "quick": quick, "machine": machine_info(), **payload}, indent=2, default=float)
    )
    return path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def newest_bundle(model: str | None = None, data: str | None = "simulator") -> Path | None:
    """The newest complete bundle under bundles/ trained on ``data`` (default: the simulator, which every benchmark
    measures on; bundles that do not record their data set count) and of ``model`` (e.g. "gru") when given."""
    root = Path(__file__).resolve().parents[1] / "bundles"
    found = []
    for manifest in root.glob("*/manifest.json") if root.is_dir() else []:
        try:
            m = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if (model is None or m.get("model") == model) and (data is None or m.get("data", data) == data):
            found.append(manifest)
    return max(found, key=lambda m: m.stat().st_mtime).parent if found else None
