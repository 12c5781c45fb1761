"""Before/after the performance pass: the same benchmarks on an older commit and on this tree, back to back.

    python benchmarks/before_after.py                       # before = BEFORE_DEFAULT
    python benchmarks/before_after.py --before <git rev> --score-customers 100000

The older commit is extracted with ``git archive`` into a temp dir and put ahead
of the installed package (``PYTHONPATH``), so the same benchmark scripts, the
same bundle and the same machine measure both, back to back. Measured: the request path in process and over HTTP
(``bench_serve.py``: features + sequence.onnx + segments, and ``POST /v1/score``
through uvicorn), and batch scoring (``bench_score.py``).
Writes benchmarks/results/before_after.json; ``run_all.py`` puts the table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import RESULTS, machine_info, markdown_table  # noqa: E402

# The last commit before the performance pass of issue #6 (features without DataFrames, event-name mapping per
# distinct name, categorical event types through the scorer).
BEFORE_DEFAULT = "6af08d6"
COLUMNS = ["figure", "before", "after", "after_over_before", "better"]


def extract(rev: str, dest: Path) -> str:
    sha = subprocess.run(["git", "rev-parse", rev], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    archive = subprocess.run(["git", "archive", sha], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return sha


def run(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=BEFORE_DEFAULT, help="git revision to compare against")
    ap.add_argument("--score-customers", type=int, default=100_000)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per server load run")
    ap.add_argument("--bundle", help="bundle for both (default: the benchmarks' own choice)")
    args = ap.parse_args(argv)
    bundle = ["--bundle", args.bundle] if args.bundle else []
    rows = []
    with tempfile.TemporaryDirectory(prefix="before-after-") as tmp:
        tmp = Path(tmp)
        old = tmp / "before"
        old.mkdir()
        sha = extract(args.before, old)
        out = {}
        for label, serve_root, src_root in (("before", old, old / "src"), ("after", REPO, None)):
            print(f"[{label}] serve ...", flush=True)
            run([str(HERE / "bench_serve.py"), "--server-root", str(serve_root), "--workers", "1",
                 "--duration", str(args.duration), "--out", str(tmp / f"serve-{label}.json"), *bundle])
            print(f"[{label}] score ...", flush=True)
            run([str(HERE / "bench_score.py"), "--sizes", str(args.score_customers), "--out",
                 str(tmp / f"score-{label}.json"), *bundle, *(["--src-root", str(src_root)] if src_root else [])])
            out[label] = {name: json.loads((tmp / f"{name}-{label}.json").read_text()) for name in ("serve", "score")}

    def add(figure: str, key, lower_is_better: bool) -> None:
        before, after = key(out["before"]), key(out["after"])
        rows.append({"figure": figure, "before": before, "after": after, "after_over_before": after / before,
                     "better": (after < before) == lower_is_better})

    serve = lambda n: lambda d: next(r for r in d["serve"]["rows"] if r["customers_per_request"] == n)  # noqa: E731
    for n in (1, 100):
        add(f"in-process p50 ms, {n} customer(s)/request", lambda d, n=n: serve(n)(d)["inprocess_p50_ms"], True)
        add(f"server p50 ms, {n} customer(s)/request", lambda d, n=n: serve(n)(d)["p50_ms"], True)
        add(f"server throughput req/s, {n} customer(s)/request", lambda d, n=n: serve(n)(d)["throughput_rps"], False)
    add(f"batch scoring customers/s, {args.score_customers:,} customers",
        lambda d: d["score"]["rows"][0]["customers_per_s"], False)
    add(f"batch scoring peak RSS MiB, {args.score_customers:,} customers",
        lambda d: d["score"]["rows"][0]["peak_rss_mib"], True)
    result = {"benchmark": "before_after", "before_commit": sha, "machine": machine_info(), "rows": rows,
              "command": "python benchmarks/before_after.py " + " ".join(argv or sys.argv[1:])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "before_after.json").write_text(json.dumps(result, indent=2, default=float))
    print(markdown_table(rows, COLUMNS))
    return result


if __name__ == "__main__":
    main()
