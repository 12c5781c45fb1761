"""Run every benchmark and write the results table into docs/benchmarks.md.

    python benchmarks/run_all.py            # full sizes (tens of minutes on 2 cores)
    python benchmarks/run_all.py --quick    # tiny sizes, about a minute: what the test suite runs
    python benchmarks/run_all.py --only features inference
    python benchmarks/run_all.py --render   # the doc from the JSON results already there

Each benchmark runs in its own process and writes benchmarks/results/<name>.json
(``<name>.quick.json`` for --quick); the markdown goes to docs/benchmarks.md
(``benchmarks/results/benchmarks.quick.md`` for --quick).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, markdown_table

DOCS = HERE.parent / "docs" / "benchmarks.md"


def _allocate_args(quick: bool) -> list[str]:
    return ["--quick", "--out", str(RESULTS / "allocate.quick.json")] if quick else []


# name -> (script, extra args for --quick/full)
BENCHMARKS = {
    "simulator": ("bench_simulator.py", lambda q: ["--quick"] if q else []),
    "features": ("bench_features.py", lambda q: ["--quick"] if q else []),
    "training": ("bench_training.py", lambda q: ["--quick"] if q else []),
    "inference": ("bench_inference.py", lambda q: ["--quick"] if q else []),
    "allocate": ("bench_allocate.py", _allocate_args),
    "serve": ("bench_serve.py", lambda q: ["--quick"] if q else []),
    "score": ("bench_score.py", lambda q: ["--quick"] if q else []),
    "promotion": ("bench_promotion.py", lambda q: ["--quick", "--customers", "3000"] if q else []),
    "ray": ("bench_ray.py", lambda q: ["--quick"] if q else []),
}


def result_path(name: str, quick: bool) -> Path:
    return RESULTS / (f"{name}.quick.json" if quick else f"{name}.json")


def render(name: str, data: dict) -> str:
    """One markdown section per benchmark; the columns are the figures that matter."""
    if name == "simulator":
        return markdown_table(
            data["rows"],
            ["customers", "events", "wall_s", "customers_per_s", "events_per_s", "peak_rss_mib", "disk_mib"],
        )
    if name == "features":
        return markdown_table(
            [data],
            [
                "customers",
                "events_before_cutoff",
                "numpy_events_per_s",
                "pandas_events_per_s",
                "speedup_numpy_over_pandas",
                "numpy_peak_traced_mib",
            ],
        )
    if name == "training":
        return markdown_table(data["rows"], ["model", "batch_size", "max_len", "sequences_per_s", "data_wait_share"])
    if name == "inference":
        table = markdown_table(
            data["rows"],
            [
                "model",
                "batch",
                "torch_eager_ms",
                "ort_2threads_all_ms",
                "ort_1thread_all_ms",
                "ort_2threads_basic_ms",
                "ort_1thread_basic_ms",
                "ort_2threads_extended_ms",
                "speedup_ort_over_torch",
                "best_ort",
                "speedup_best_ort_over_torch",
            ],
        )
        loads = "; ".join(
            f"{r['model']} {r['session_load_ms']:.0f} ms from the export, "
            f"{r['session_load_saved_optimised_ms']:.0f} ms from the saved optimised model"
            for r in data["rows"]
            if "session_load_ms" in r
        )
        q = data.get("int8_transformer", {})
        return (
            table
            + "\n\nSession creation: "
            + (loads or "not measured")
            + "\n\nint8 dynamic quantisation (Transformer): "
            + ", ".join(f"{k} {v:.4g}" for k, v in q.items() if isinstance(v, float))
        )
    if name == "allocate":
        return render_allocate(data)
    if name == "ray":
        return render_ray(data)
    if name == "serve":
        return render_serve(data)
    if name == "score":
        return (
            markdown_table(
                data["rows"],
                [
                    "customers",
                    "events",
                    "wall_s",
                    "wall_spread_s",
                    "customers_per_s",
                    "events_per_s",
                    "peak_rss_mib",
                    "partitions",
                ],
            )
            + f"\n\n`{data.get('command')}`, one fresh process per run. Peak RSS at the largest size over the "
            f"smallest: {data.get('peak_rss_ratio_largest_over_smallest', float('nan')):.2f} "
            "(1.00: memory independent of the file's size; see docs/performance.md). "
            f"Bundle: {data.get('bundle')}."
        )
    if name == "promotion":
        models = [{"model": k, **v} for k, v in data["models"].items()]
        share = {}  # budget -> {policy: share of the oracle's profit}
        for r in data.get("allocation", []):
            share.setdefault(r["budget"], {"budget": r["budget"]})[r["policy"]] = r["share_of_oracle"]
        return (
            markdown_table(
                models, ["model", "curve_rmse", "uplift_rmse", "non_monotone_frac", "offer_ece", "qini_rct_mean"]
            )
            + "\n\nShare of the oracle's incremental profit (true curves):\n\n"
            + markdown_table(
                list(share.values()),
                ["budget", "dipn", "dipn_no_ipw", "lightgbm", "rule_top_value", "blanket", "random"],
            )
            + f"\n\n{data['config']['customers']:,} customers; Lagrangian vs HiGHS LP gap "
            f"{data.get('lp_gap_rel') or float('nan'):.2e}. Tables: benchmarks/results/promotion*.md."
        )
    rows = data.get("rows") or [data]
    cols = [k for k, v in rows[0].items() if isinstance(v, (int, float, str))][:10]
    return markdown_table(rows, cols)


def render_allocate(data: dict) -> str:
    rows = [
        {
            "n": r["n"],
            "mode": r.get("mode", "total"),
            "lagrangian_s": r["lagrangian"]["median_s"],
            "lp_highs_s": r["lp_highs"]["median_s"],
            "lp_over_lagrangian": r["time_ratio_lp_over_lagrangian"],
            "gap_vs_lp_bound_rel": r.get("gap_vs_lp_bound_rel", r.get("gap_rel")),
        }
        for r in data.get("vs_lp", [])
    ]
    scale = [
        {
            "n": r["n"],
            "mode": r.get("mode", "sellers" if r["per_seller"] else "total"),
            "median_s": r["median_s"],
            "peak_traced_mb": r["peak_traced_mb"],
            "input_mb": r["input_mb"],
            "gap_to_bound_rel": r.get("gap_to_bound_rel", r.get("gap_vs_dual_bound_rel")),
        }
        for r in data.get("scale", [])
    ]
    out = (
        markdown_table(rows, ["n", "mode", "lagrangian_s", "lp_highs_s", "lp_over_lagrangian", "gap_vs_lp_bound_rel"])
        + "\n\n"
        + markdown_table(scale, ["n", "mode", "median_s", "peak_traced_mb", "input_mb", "gap_to_bound_rel"])
    )
    if data.get("vs_milp"):
        out += "\n\n" + markdown_table(
            data["vs_milp"],
            ["n", "mode", "lagrangian_s", "milp_s", "milp_status", "gap_vs_milp_rel", "milp_gap_vs_lp_bound_rel"],
        )
    if data.get("objective_spread"):
        out += "\n\n" + markdown_table(
            data["objective_spread"],
            [
                "budget_frac",
                "weight",
                "spread_penalty",
                "direct",
                "enduring",
                "spread",
                "spread_rule_top_value",
                "spread_vs_rule",
            ],
        )
    return out + (
        "\n\nModes: total budget only; + per-seller budgets; all = + tiers, enduring value (weight 0.5), "
        "discount caps, spread penalty, incentive cap (benchmarks/bench_allocate.py)."
    )


def render_ray(data: dict) -> str:
    """Ray vs single process on the same cores, two nodes vs one, the projection (docs/scale.md has the story)."""
    out = (
        "Allocation (one actor per core, shards of whole sellers; wall = load + solve):\n\n"
        + markdown_table(
            data.get("allocation", []),
            [
                "n",
                "mode",
                "single_wall_s",
                "ray_wall_s",
                "ray_over_single_throughput",
                "levels_equal",
                "profit_rel_diff",
                "rounds",
                "bytes_per_round",
                "actor_peak_rss_mib",
                "single_peak_rss_mib",
            ],
        )
        + "\n\nScoring (one Ray Data actor per core, 1 onnxruntime thread each; single process: 2 threads):\n\n"
        + markdown_table(
            data.get("scoring", []),
            [
                "customers",
                "events",
                "single_customers_per_s",
                "ray_customers_per_s",
                "ray_over_single_throughput",
                "rows_equal",
                "actor_peak_rss_mib",
                "single_peak_rss_mib",
                "max_partition_events",
            ],
        )
    )
    if data.get("nodes"):
        out += "\n\nTwo local nodes x 1 CPU vs one node x 2 CPUs (same job, same cores):\n\n" + markdown_table(
            data["nodes"], ["job", "size", "1_nodes_x_2_cpu_s", "2_nodes_x_1_cpu_s", "two_over_one_wall"]
        )
    proj = data.get("projection", {})
    if proj.get("rows"):
        out += "\n\nProjection (assumptions in benchmarks/results/ray.json and docs/scale.md):\n\n" + markdown_table(
            proj["rows"],
            [
                "customers",
                "nodes",
                "cores",
                "score_hours",
                "alloc_rounds",
                "alloc_round_ms",
                "alloc_total_s",
                "alloc_bytes_per_round",
            ],
        )
    return out + f"\n\n`{data.get('command')}`; bundle: {data.get('bundle')}."


def render_serve(data: dict) -> str:
    rows = data.get("rows", [])
    gen = rows[0]["generator"] if rows else "?"
    conns = rows[0]["connections"] if rows else "?"
    out = (
        markdown_table(
            rows,
            [
                "customers_per_request",
                "workers",
                "p50_ms",
                "p99_ms",
                "throughput_rps",
                "customers_per_s",
                "inprocess_p50_ms",
                "ratio_server_over_inprocess",
            ],
        )
        + f"\n\nPOST /v1/score over loopback ({gen}): p50/p99 one request at a time, throughput with {conns} "
        "concurrent connections; in-process = the same requests' arrays through features + sequence.onnx + "
        f"segments, timed side by side (the ratio is the figure). Bundle: {data.get('bundle')}."
    )
    candidates = [
        "pydantic model_validate_json",
        "pydantic TypeAdapter.validate_json",
        "msgspec: types + limits",
        "msgspec: the server's whole parse (+ timestamps, arrays)",
    ]
    if data.get("validation"):
        table = [
            {"body": r["body"], **{c: r.get(c + " ms") for c in candidates}, "fastest": r["fastest"]}
            for r in data["validation"]
        ]
        out += (
            "\n\n### The validation path: pydantic vs msgspec (ms per body, same bodies)\n\n"
            + markdown_table(table, ["body", *candidates, "fastest"])
            + "\n\nOn the invalid bodies: "
            + "; ".join(
                f"{r['body']}: pydantic {r.get(candidates[0] + ' outcome')}, the server's parse "
                f"{r.get(candidates[3] + ' outcome')}"
                for r in data["validation"]
                if "invalid" in r["body"]
            )
            + "."
        )
    bad = data.get("bad_body")
    if bad:
        names = list(dict.fromkeys(r["body"] for r in bad["rejections"]))
        out += (
            "\n\n### Large invalid bodies while /healthz is polled\n\n"
            + markdown_table(
                [bad],
                [
                    "healthz_max_ms",
                    "healthz_p99_ms",
                    "healthz_p50_ms",
                    "healthz_probes",
                    "reject_max_s",
                    "rss_before_mib",
                    "rss_after_mib",
                    "rss_peak_mib",
                    "rss_growth_mib",
                ],
            )
            + f"\n\nGET /healthz every 2 ms on its own connection while each of ({'; '.join(names)}) is sent "
            f"{bad['repeats']} time(s) to a 1-worker server; statuses {bad['statuses']}; RSS of the server in MiB."
        )
    return out


def render_before_after(data: dict, title: str) -> str:
    return (
        f"## {title}\n\n"
        f"{markdown_table(data['rows'], ['figure', 'before', 'after', 'after_over_before', 'better'])}"
        f"\n\nBefore: commit {data['before_commit'][:10]}; after: commit "
        f"{str(data['machine'].get('git_commit'))[:10]} (and the working tree); `{data['command'].strip()}`, "
        f"load {data['machine'].get('loadavg_at_start')}.\n"
    )


# results of before_after.py (they need an older checkout) -> their section title
BEFORE_AFTER = {
    "before_after": "before / after the performance pass",
    "before_after_serve": "before / after the server restructuring (issue 12)",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS))
    ap.add_argument("--render", action="store_true", help="run nothing: rewrite the doc from the JSON results")
    args = ap.parse_args(argv)
    names = [] if args.render else args.only or list(BENCHMARKS)
    sections, failed = [], []
    for name in names:
        script, extra = BENCHMARKS[name]
        if not (HERE / script).exists():
            print(f"[skip] {name}: {script} not present")
            continue
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / script), *extra(args.quick)], capture_output=True, text=True)
        took = time.perf_counter() - t0
        if proc.returncode != 0:
            failed.append(name)
            print(f"[FAIL] {name} ({took:.0f} s)\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
            continue
        print(f"[ok] {name} ({took:.0f} s)")
    # The document shows every benchmark with a result, so `--only` refreshes some without losing the rest.
    for name in BENCHMARKS:
        path = result_path(name, args.quick)
        if name in failed or not path.exists():
            continue
        data = json.loads(path.read_text())
        machine = data.get("machine", {})
        load = machine.get("loadavg_at_start") or machine.get("loadavg")
        sections.append(
            f"## {name}\n\n{render(name, data)}\n\n"
            f"<sub>{machine.get('cores')} cores, load {load}, "
            f"commit {str(machine.get('git_commit'))[:10]}</sub>\n"
        )
    for result, title in BEFORE_AFTER.items():
        path = RESULTS / f"{result}.json"
        if not args.quick and path.exists():
            sections.append(render_before_after(json.loads(path.read_text()), title))
    out = RESULTS / "benchmarks.quick.md" if args.quick else DOCS
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Benchmarks\n\nGenerated by `make bench` (`python benchmarks/run_all.py`); medians of repeated runs, "
        "ratios measured side by side in one process. Absolute times drift on shared machines: "
        "compare the ratios.\n\n"
    )
    out.write_text(header + "\n".join(sections))
    print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
