"""Before/after: the same benchmarks on an older commit and on this tree, back to back, in one run.

    python benchmarks/before_after.py                       # the performance pass: before = BEFORE_DEFAULT
    python benchmarks/before_after.py --before <git rev> --score-customers 100000
    python benchmarks/before_after.py --before f474cbe --only serve --name before_after_serve
                                                            # the server restructuring (issue 12)

The older commit is extracted with ``git archive`` into a temp dir and put ahead
of the installed package (``PYTHONPATH``), so the same benchmark scripts, the
same bundle and the same machine measure both, back to back. Measured: the request path in process and over HTTP
(``bench_serve.py``: features + sequence.onnx + segments, ``POST /v1/score`` through uvicorn, and a
14 MB invalid body while /healthz is polled), and batch scoring (``bench_score.py``).
Without --bundle, one synthetic bundle (made by this tree) serves both.
Writes benchmarks/results/<name>.json; ``run_all.py`` puts the tables in docs/benchmarks.md.
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
from common import RESULTS, machine_info, markdown_table

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
    ap.add_argument("--bundle", help="bundle for both (default: a synthetic one made here)")
    ap.add_argument("--only", nargs="+", choices=["serve", "score"], default=["serve", "score"])
    ap.add_argument("--bad-repeats", type=int, default=2, help="times each 14 MB invalid body is sent (server)")
    ap.add_argument("--name", default="before_after", help="results file: benchmarks/results/<name>.json")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="before-after-") as tmp:
        tmp = Path(tmp)
        old = tmp / "before"
        old.mkdir()
        sha = extract(args.before, old)
        bundle_dir = args.bundle
        if bundle_dir is None:
            from bench_serve import synth_bundle

            bundle_dir = str(synth_bundle(tmp / "bundle"))
        bundle = ["--bundle", bundle_dir]
        out = {}
        for label, serve_root, src_root in (("before", old, old / "src"), ("after", REPO, None)):
            out[label] = {}
            if "serve" in args.only:
                print(f"[{label}] serve ...", flush=True)
                run(
                    [
                        str(HERE / "bench_serve.py"),
                        "--server-root",
                        str(serve_root),
                        "--workers",
                        "1",
                        "--duration",
                        str(args.duration),
                        "--skip",
                        "validation",
                        "--bad-repeats",
                        str(args.bad_repeats),
                        "--out",
                        str(tmp / f"serve-{label}.json"),
                        *bundle,
                    ]
                )
                out[label]["serve"] = json.loads((tmp / f"serve-{label}.json").read_text())
            if "score" in args.only:
                print(f"[{label}] score ...", flush=True)
                run(
                    [
                        str(HERE / "bench_score.py"),
                        "--sizes",
                        str(args.score_customers),
                        "--out",
                        str(tmp / f"score-{label}.json"),
                        *bundle,
                        *(["--src-root", str(src_root)] if src_root else []),
                    ]
                )
                out[label]["score"] = json.loads((tmp / f"score-{label}.json").read_text())

    def add(figure: str, key, lower_is_better: bool) -> None:
        before, after = key(out["before"]), key(out["after"])
        rows.append(
            {
                "figure": figure,
                "before": before,
                "after": after,
                "after_over_before": after / before if before else float("nan"),
                "better": (after < before) == lower_is_better,
            }
        )

    serve = lambda n: lambda d: next(r for r in d["serve"]["rows"] if r["customers_per_request"] == n)
    bad = lambda d: d["serve"]["bad_body"]
    if "serve" in args.only:
        for n in (1, 100):
            add(f"in-process p50 ms, {n} customer(s)/request", lambda d, n=n: serve(n)(d)["inprocess_p50_ms"], True)
            add(f"server p50 ms, {n} customer(s)/request", lambda d, n=n: serve(n)(d)["p50_ms"], True)
            add(f"server p99 ms, {n} customer(s)/request", lambda d, n=n: serve(n)(d)["p99_ms"], True)
            add(
                f"server throughput req/s, {n} customer(s)/request", lambda d, n=n: serve(n)(d)["throughput_rps"], False
            )
        add(
            "server / in-process p50, 100 customers/request",
            lambda d: serve(100)(d)["ratio_server_over_inprocess"],
            True,
        )
        add("longest /healthz ms while 14 MB invalid bodies are rejected", lambda d: bad(d)["healthz_max_ms"], True)
        add("longest rejection of a 14 MB invalid body, s", lambda d: bad(d)["reject_max_s"], True)
        add("server RSS MiB after the invalid bodies minus before", lambda d: bad(d)["rss_growth_mib"], True)
        add("server peak RSS MiB", lambda d: bad(d)["rss_peak_mib"], True)
    if "score" in args.only:
        add(
            f"batch scoring customers/s, {args.score_customers:,} customers",
            lambda d: d["score"]["rows"][0]["customers_per_s"],
            False,
        )
        add(
            f"batch scoring peak RSS MiB, {args.score_customers:,} customers",
            lambda d: d["score"]["rows"][0]["peak_rss_mib"],
            True,
        )
    result = {
        "benchmark": args.name,
        "before_commit": sha,
        "machine": machine_info(),
        "rows": rows,
        "statuses": {k: v["serve"]["bad_body"]["statuses"] for k, v in out.items() if "serve" in v},
        "command": "python benchmarks/before_after.py " + " ".join(argv or sys.argv[1:]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2, default=float))
    print(markdown_table(rows, COLUMNS))
    return result


if __name__ == "__main__":
    main()
