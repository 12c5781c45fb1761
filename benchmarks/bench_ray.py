"""Ray vs the single-process path on the same machine, two local nodes vs one, and a projection to 100M / 1B.

    python benchmarks/bench_ray.py                      # allocation at 1M and 10M, scoring at 1M and 10M, nodes
    python benchmarks/bench_ray.py --quick              # tiny sizes, a local Ray only (the test suite's mode)
    python benchmarks/bench_ray.py --alloc-sizes 1000000 --score-sizes 200000 --node-customers 100000

Every measurement runs in a fresh process (its peak RSS is its own):

* **allocation**: a :func:`random_instance` of n customers and 1,000 sellers, split by seller into one shard per
  core and saved as ``.npz``; the single-process solver (``allocate_lagrangian``, all shards loaded) against the
  sharded one on a local Ray with one actor per shard (each loads its own file); modes ``total`` (one budget) and
  ``sellers`` (+ per-seller budgets). Same levels and profit are checked, the rounds and the floats the shards sent
  are counted; the actors' peak RSS is read inside them.
* **scoring**: the simulator's events (n customers; 10M = the 1M simulation replicated with new ids) scored by
  ``sellerlift.score.score_file`` (2 onnxruntime threads) against ``--engine ray`` (local Ray, one Ray Data actor
  per core, 1 thread each); the outputs are compared row for row; per-actor peak RSS from the actors.
* **nodes**: the same jobs (scoring, allocation, simulation) on a local cluster of two nodes x 1 CPU and of one
  node x 2 CPUs (``LocalCluster``): the wall times side by side.
* **projection**: 100M and 1B customers on N nodes from the measured per-core scoring rate, the per-shard hull
  time per customer, the rounds, the per-round time and the bytes per round (assumptions in the JSON and
  docs/scale.md).

Writes benchmarks/results/ray.json (ray.quick.json with --quick).
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

N_SELLERS = 1000


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(args: list[str], env: dict | None = None, timeout: float = 7200) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--one", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise SystemExit(f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- allocation


def make_instance(n: int, shards: int, work: Path) -> Path:
    """``shards`` .npz files of whole sellers (+ the problem's budgets) for an instance of n customers."""
    from sellerlift.allocate import random_instance
    from sellerlift.allocate.sharded import split_by_seller

    folder = work / f"alloc-{n}-{shards}"
    if (folder / "budgets.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    inst = random_instance(n, seed=7, n_sellers=N_SELLERS)
    d = np.asarray(inst["levels"]) / 100.0
    top = inst["p"][:, -1] * inst["value"] * d[-1]  # spend of everyone at the top level
    per = np.bincount(inst["seller"], top, minlength=N_SELLERS)
    budgets = {
        "budget": 0.1 * float(top.sum()),
        "seller_budgets": {int(s): 0.15 * float(per[s]) for s in np.unique(inst["seller"])},
        "levels": list(inst["levels"]),
    }
    for i, sh in enumerate(split_by_seller({k: inst[k] for k in ("p", "value", "margin", "seller")}, shards)):
        np.savez(folder / f"shard-{i}.npz", **{k: np.asarray(v) for k, v in sh.items()})
    (folder / "budgets.json").write_text(json.dumps(budgets))
    return folder


def load_shard(path: str) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _options(folder: Path, mode: str) -> tuple[list, dict]:
    b = json.loads((folder / "budgets.json").read_text())
    kw = {"budget": b["budget"]}
    if mode == "sellers":
        kw["seller_budgets"] = {int(k): v for k, v in b["seller_budgets"].items()}
    return b["levels"], kw


def one_alloc(kind: str, folder: str, mode: str) -> dict:
    from functools import partial

    from sellerlift.allocate import allocate_lagrangian

    folder = Path(folder)
    levels, kw = _options(folder, mode)
    files = sorted(folder.glob("shard-*.npz"))
    if kind == "single":
        t0 = time.perf_counter()
        parts = [load_shard(str(f)) for f in files]
        idx = np.concatenate([p["index"] for p in parts])
        order = np.argsort(idx)
        cat = {k: np.concatenate([p[k] for p in parts])[order] for k in ("p", "value", "margin", "seller")}
        del parts
        load = time.perf_counter() - t0
        t1 = time.perf_counter()
        a = allocate_lagrangian(
            cat["p"], cat["value"], cat["margin"], levels, seller=cat["seller"] if mode == "sellers" else None, **kw
        )
        solve = time.perf_counter() - t1
        np.save(folder / f"levels-{mode}.npy", a.level_index.astype(np.int8))
        return {
            "n": len(idx),
            "load_s": load,
            "solve_s": solve,
            "wall_s": load + solve,
            "profit": a.profit,
            "spend": a.spend,
            "n_iter": a.n_iter,
            "peak_rss_mib": rss_mib(),
        }
    from sellerlift.engine import get_engine
    from sellerlift.engine.jobs import allocate

    t0 = time.perf_counter()
    engine = get_engine("ray", num_cpus=int(os.environ.get("BENCH_RAY_CPUS", "2")), progress=False)
    start = time.perf_counter() - t0
    sources = [partial(load_shard, str(f)) for f in files]  # each actor loads its own shard

    def after(res):
        got = res.gather()
        ref = np.load(folder / f"levels-{mode}.npy")
        return {
            "levels_equal": bool(np.array_equal(got.level_index.astype(np.int8), ref)),
            "actor_peak_rss_mib": [float(x) for x in res._call("peak_rss_mib")],
        }

    res, extra = allocate(engine, sources, levels, after=after, **kw)
    wall = res.info["solve_s"]  # actors started, shards loaded, hulls, every round, the result; not the check
    peaks = extra.pop("actor_peak_rss_mib")
    engine.close()
    return {
        "n": res.n,
        "ray_start_s": start,
        "wall_s": wall,
        "load_and_hull_s": res.info["setup_s"],
        "rounds_s": res.info["rounds_s"],
        "rounds": res.rounds,
        "solve_rounds": res.info["solve_rounds"],
        "floats_sent": res.sent_floats,
        "bytes_per_round": 8 * res.sent_floats / max(res.rounds, 1),
        "profit": res.profit,
        "spend": res.spend,
        "n_iter": res.n_iter,
        "shards": len(files),
        "actor_peak_rss_mib": peaks,
        "driver_peak_rss_mib": rss_mib(),
        **extra,
    }


def bench_alloc(n: int, work: Path, shards: int, repeats: int, modes=("total", "sellers")) -> list[dict]:
    folder = make_instance(n, shards, work)
    shard_mb = max(f.stat().st_size for f in folder.glob("shard-*.npz")) / 2**20
    total_mb = sum(f.stat().st_size for f in folder.glob("shard-*.npz")) / 2**20
    rows = []
    for mode in modes:
        singles = [run_one(["alloc", "single", str(folder), mode]) for _ in range(repeats)]
        rays = [run_one(["alloc", "ray", str(folder), mode]) for _ in range(repeats)]
        s = min(singles, key=lambda r: r["wall_s"])
        r = min(rays, key=lambda r: r["wall_s"])
        rows.append(
            {
                "n": n,
                "mode": mode,
                "shards": shards,
                "single_wall_s": s["wall_s"],
                "single_solve_s": s["solve_s"],
                "single_load_s": s["load_s"],
                "ray_wall_s": r["wall_s"],
                "ray_start_s": r["ray_start_s"],
                "ray_load_and_hull_s": r["load_and_hull_s"],
                "ray_rounds_s": r["rounds_s"],
                "ray_over_single_throughput": s["wall_s"] / r["wall_s"],
                "rounds": r["rounds"],
                "solve_rounds": r["solve_rounds"],
                "bytes_per_round": r["bytes_per_round"],
                "per_round_ms": 1e3 * r["rounds_s"] / max(r["solve_rounds"], 1),
                "profit_rel_diff": abs(r["profit"] - s["profit"]) / abs(s["profit"]),
                "levels_equal": r["levels_equal"],
                "single_peak_rss_mib": s["peak_rss_mib"],
                "actor_peak_rss_mib": max(r["actor_peak_rss_mib"]),
                "driver_peak_rss_mib": r["driver_peak_rss_mib"],
                "shard_file_mib": shard_mb,
                "input_mib": total_mb,
                "repeats": repeats,
            }
        )
        print(
            f"[alloc] {n:,} {mode}: single {s['wall_s']:.2f} s, ray {r['wall_s']:.2f} s "
            f"({rows[-1]['ray_over_single_throughput']:.2f}x), equal {r['levels_equal']}",
            flush=True,
        )
    return rows


# --------------------------------------------------------------------------- scoring


def make_events(n: int, work: Path, base: int = 1_000_000) -> tuple[Path, str]:
    """The simulator's events of n customers (n > base: the base simulation replicated with new customer ids)."""
    from sellerlift.sim import SimulatorConfig, simulate

    small = min(n, base)
    cfg = SimulatorConfig(n_customers=small, truth_replications=0)
    sim = work / f"sim-{small}"
    if not (sim / "_SUCCESS").exists():
        simulate(cfg, sim, progress=False)
    if n <= base:
        return sim / "events", str(cfg.cutoff)
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = work / f"events-{n}"
    if not (out / "_SUCCESS").exists():
        out.mkdir(parents=True, exist_ok=True)
        parts = sorted((sim / "events").glob("part-*.parquet"))
        k = 0
        for r in range(-(-n // base)):
            for p in parts:
                t = pq.read_table(p)
                if r:
                    t = t.set_column(
                        t.schema.get_field_index("customer_id"), "customer_id", pc.add(t["customer_id"], r * base)
                    )
                pq.write_table(t, out / f"part-{k:05d}.parquet")
                k += 1
        (out / "_SUCCESS").write_text("")
    return out, str(cfg.cutoff)


def one_score(kind: str, bundle: str, events: str, cutoff: str, out: str) -> dict:
    from sellerlift.score import load_bundle, score_file

    t0 = time.perf_counter()
    if kind == "single":
        s = score_file(load_bundle(bundle, threads=2), events, out, as_of=cutoff, progress=False)
        return {
            "wall_s": time.perf_counter() - t0,
            "customers": s["customers"],
            "events": s["events"],
            "partitions": s["partitions"],
            "timings": s["timings"],
            "peak_rss_mib": rss_mib(),
        }
    from sellerlift.engine import get_engine
    from sellerlift.engine.scoring import score_file as score_on

    engine = get_engine("ray", num_cpus=int(os.environ.get("BENCH_RAY_CPUS", "2")), progress=False)
    start = time.perf_counter() - t0
    t1 = time.perf_counter()
    s = score_on(load_bundle(bundle, threads=1), events, out, engine=engine, as_of=cutoff, threads=1, progress=False)
    wall = time.perf_counter() - t1
    engine.close()
    sec = np.array(s["partition_seconds"])
    ev = np.array(s["partition_events"])
    return {
        "wall_s": wall,
        "ray_start_s": start,
        "customers": s["customers"],
        "events": s["events"],
        "partitions": s["partitions"],
        "timings": s["timings"],
        "nodes_used": s["nodes_used"],
        "actor_peak_rss_mib": s["worker_peak_rss_mib"],
        "driver_peak_rss_mib": rss_mib(),
        "events_per_actor_s": float(ev.sum() / sec.sum()),
        "max_partition_events": int(ev.max()),
    }


def same_rows(single: Path, ray_dir: Path) -> dict:
    """Bit-identical tables, else how far apart: differing cells and the largest difference of a float column
    (the single-process run uses 2 onnxruntime threads, the actors 1: reductions may differ in the last bit)."""
    import pyarrow.parquet as pq

    a = pq.read_table(single)
    b = pq.read_table(ray_dir)
    if a.num_rows != b.num_rows or a.schema.names != b.schema.names:
        return {"rows_equal": False, "differing_cells": None, "max_abs_diff": None}
    b = b.cast(a.schema)
    if a.equals(b):
        return {"rows_equal": True, "differing_cells": 0, "max_abs_diff": 0.0}
    cells, worst = 0, 0.0
    for name in a.schema.names:
        x, y = a[name].to_numpy(zero_copy_only=False), b[name].to_numpy(zero_copy_only=False)
        diff = x != y
        cells += int(diff.sum())
        if diff.any() and x.dtype.kind == "f":
            worst = max(worst, float(np.nanmax(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
    return {"rows_equal": False, "differing_cells": cells, "max_abs_diff": worst}


def bench_score(n: int, bundle: Path, work: Path, compare: bool = True) -> dict:
    events, cutoff = make_events(n, work)
    out1, out2 = work / f"scores-{n}.parquet", work / f"scores-{n}-ray"
    s = run_one(["score", "single", str(bundle), str(events), cutoff, str(out1)])
    r = run_one(["score", "ray", str(bundle), str(events), cutoff, str(out2)])
    equal = same_rows(out1, out2) if compare else {"rows_equal": None}
    shutil.rmtree(out2, ignore_errors=True)
    out1.unlink(missing_ok=True)
    row = {
        "customers": s["customers"],
        "events": s["events"],
        "partitions": s["partitions"],
        "single_wall_s": s["wall_s"],
        "single_customers_per_s": s["customers"] / s["wall_s"],
        "ray_wall_s": r["wall_s"],
        "ray_start_s": r["ray_start_s"],
        "ray_customers_per_s": r["customers"] / r["wall_s"],
        "ray_over_single_throughput": s["wall_s"] / r["wall_s"],
        "single_partition_s": s["timings"]["partition_s"],
        "single_score_s": s["timings"]["score_s"],
        "ray_partition_s": r["timings"]["partition_s"],
        "ray_score_s": r["timings"]["score_s"],
        **equal,
        "single_peak_rss_mib": s["peak_rss_mib"],
        "actor_peak_rss_mib": r["actor_peak_rss_mib"],
        "driver_peak_rss_mib": r["driver_peak_rss_mib"],
        "events_per_actor_s": r["events_per_actor_s"],
        "max_partition_events": r["max_partition_events"],
    }
    print(
        f"[score] {n:,}: single {row['single_customers_per_s']:,.0f}/s, ray {row['ray_customers_per_s']:,.0f}/s "
        f"({row['ray_over_single_throughput']:.2f}x), rows equal {equal['rows_equal']}",
        flush=True,
    )
    return row


# --------------------------------------------------------------------------- two nodes vs one


def one_nodes_job(job: str, arg: str, *rest: str) -> dict:
    """A job on the cluster at RAY_ADDRESS (started by the parent)."""
    from sellerlift.engine import get_engine

    engine = get_engine("ray", progress=False)
    info = engine.describe()
    t0 = time.perf_counter()
    if job == "score":
        from sellerlift.engine.scoring import score_file as score_on
        from sellerlift.score import load_bundle

        bundle, cutoff, out = rest
        s = score_on(
            load_bundle(bundle, threads=1),
            arg,
            out,
            engine=engine,
            as_of=cutoff,
            threads=1,
            partition_rows=500_000,
            progress=False,
        )
        extra = {"nodes_used": s["nodes_used"]}
    elif job == "simulate":
        from sellerlift.engine.jobs import simulate
        from sellerlift.sim import SimulatorConfig

        simulate(SimulatorConfig(n_customers=int(arg), chunk_size=10_000, truth_replications=0), rest[0], engine)
        extra = {}
    else:
        from functools import partial

        from sellerlift.engine.jobs import allocate

        folder = Path(arg)
        levels, kw = _options(folder, "sellers")
        res, _ = allocate(
            engine, [partial(load_shard, str(f)) for f in sorted(folder.glob("shard-*.npz"))], levels, **kw
        )
        extra = {"rounds": res.rounds}
    return {"wall_s": time.perf_counter() - t0, "nodes": info["nodes"], **extra}


def bench_nodes(customers: int, alloc_n: int, bundle: Path, work: Path) -> list[dict]:
    from sellerlift.engine.cluster import LocalCluster

    events, cutoff = make_events(customers, work)
    folder = make_instance(alloc_n, 2, work)
    rows = {}
    for nodes, cpus in ((1, 2), (2, 1)):
        c = LocalCluster(nodes, cpus, root=Path(tempfile.mkdtemp(prefix="slr-bench-")) / "ray", object_store_mb=1024)
        c.start()
        try:
            for job, args in (
                ("simulate", [str(customers), str(work / f"nodes-sim-{nodes}")]),
                ("score", [str(events), str(bundle), cutoff, str(work / f"nodes-score-{nodes}")]),
                ("allocate", [str(folder)]),
            ):
                r = run_one(["nodes", job, *args], env=c.env)
                rows.setdefault(job, {"job": job})[f"{nodes}_nodes_x_{cpus}_cpu_s"] = r["wall_s"]
                shutil.rmtree(work / f"nodes-sim-{nodes}", ignore_errors=True)
                shutil.rmtree(work / f"nodes-score-{nodes}", ignore_errors=True)
                print(f"[nodes] {nodes}x{cpus} {job}: {r['wall_s']:.1f} s", flush=True)
        finally:
            c.stop()
    out = []
    for job, r in rows.items():
        r["two_over_one_wall"] = r["2_nodes_x_1_cpu_s"] / r["1_nodes_x_2_cpu_s"]
        r["size"] = alloc_n if job == "allocate" else customers
        out.append(r)
    return out


# --------------------------------------------------------------------------- projection


def projection(
    alloc_rows: list[dict],
    score_rows: list[dict],
    cores_per_node: int = 16,
    node_counts=(10, 100),
    net_round_ms: float = 2.0,
) -> dict:
    """100M and 1B customers on N nodes, from the largest measured sizes (see ``assumptions``)."""
    big_a = max((r for r in alloc_rows if r["mode"] == "sellers"), key=lambda r: r["n"])
    big_s = max(score_rows, key=lambda r: r["customers"])
    score_core = big_s["ray_customers_per_s"] / 2  # per core (2 actors on 2 cores)
    hull_per_cust = big_a["ray_load_and_hull_s"] * big_a["shards"] / big_a["n"]  # core-seconds per customer
    round_per_cust = (big_a["per_round_ms"] / 1e3) * big_a["shards"] / big_a["n"]  # per round, per customer
    rounds = big_a["solve_rounds"]
    out = []
    for n in (100_000_000, 1_000_000_000):
        for nodes in node_counts:
            cores = nodes * cores_per_node
            per_core = n / cores
            score_h = n / (score_core * cores * 0.9) / 3600  # 90 % scaling efficiency (measured two-node ratio aside)
            hull_s = hull_per_cust * per_core
            round_s = round_per_cust * per_core + net_round_ms / 1e3
            out.append(
                {
                    "customers": n,
                    "nodes": nodes,
                    "cores": cores,
                    "score_hours": score_h,
                    "alloc_hull_s": hull_s,
                    "alloc_rounds": rounds,
                    "alloc_round_ms": round_s * 1e3,
                    "alloc_total_s": hull_s + rounds * round_s,
                    "alloc_bytes_per_round_per_shard": big_a["bytes_per_round"] / big_a["shards"],
                    "alloc_bytes_per_round": big_a["bytes_per_round"] / big_a["shards"] * cores,
                }
            )
    return {
        "rows": out,
        "assumptions": {
            "cores_per_node": cores_per_node,
            "scoring_customers_per_core_s": score_core,
            "scoring_scaling_efficiency": 0.9,
            "events_per_customer": big_s["events"] / big_s["customers"],
            "alloc_hull_core_s_per_customer": hull_per_cust,
            "alloc_round_core_s_per_customer": round_per_cust,
            "alloc_rounds": rounds,
            "network_round_trip_ms": net_round_ms,
            "notes": "one shard (actor) per core; rounds do not grow with n (bisection to 1e-6 relative); per-round "
            "work is the shard's bisection band, measured at the largest size and scaled linearly by shard "
            "size (an upper bound: the band shrinks as the bracket narrows); the network adds one round trip "
            "per round; the input is read from shared storage at the measured per-core rate; per-seller "
            "budgets are solved inside the shards, so sellers add no rounds",
        },
    }


# --------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, local Ray only, one run each")
    ap.add_argument("--alloc-sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--score-sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--node-customers", type=int, default=200_000, help="scoring/simulation size of the nodes runs")
    ap.add_argument("--node-alloc", type=int, default=2_000_000, help="allocation size of the nodes runs")
    ap.add_argument("--no-nodes", action="store_true")
    ap.add_argument(
        "--only",
        nargs="+",
        choices=["allocation", "scoring", "nodes"],
        help="measure these sections again and keep the others from the existing result file",
    )
    ap.add_argument("--repeats", type=int, default=3, help="runs per allocation size up to 1M (larger: one)")
    ap.add_argument("--bundle")
    ap.add_argument("--work", help="keep inputs here between runs (default: a temp dir)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--one", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        kind, *rest = args.one
        fn = {"alloc": one_alloc, "score": one_score, "nodes": one_nodes_job}[kind]
        print(json.dumps(fn(*rest), default=float))
        return {}
    from bench_serve import pick_bundle

    alloc_sizes = [20_000] if args.quick else args.alloc_sizes
    score_sizes = [2_000] if args.quick else args.score_sizes
    tmp = tempfile.mkdtemp(prefix="raybench-") if not args.work else None
    work = Path(args.work or tmp)
    work.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ["allocation", "scoring", "nodes"])
    old = {}
    target = args.out or HERE / "results" / ("ray.quick.json" if args.quick else "ray.json")
    if args.only and target.exists():
        old = json.loads(target.read_text())
    try:
        bundle, how = pick_bundle(args.bundle, work)
        modes = ("sellers",) if args.quick else ("total", "sellers")
        alloc = (
            old.get("allocation", [])
            if "allocation" not in only
            else [
                row
                for n in alloc_sizes
                for row in bench_alloc(n, work, 2, 1 if args.quick or n > 1_000_000 else args.repeats, modes)
            ]
        )
        scoring = (
            old.get("scoring", []) if "scoring" not in only else [bench_score(n, bundle, work) for n in score_sizes]
        )
        nodes = (
            old.get("nodes", [])
            if "nodes" not in only
            else (
                [] if args.quick or args.no_nodes else bench_nodes(args.node_customers, args.node_alloc, bundle, work)
            )
        )
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "allocation": alloc,
        "scoring": scoring,
        "nodes": nodes,
        "bundle": old.get("bundle", how),
        "projection": projection(alloc, scoring),
        "command": "python benchmarks/bench_ray.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commands": {
            **old.get("commands", {}),
            **{
                k: "python benchmarks/bench_ray.py " + " ".join(argv if argv is not None else sys.argv[1:])
                for k in only
            },
        },
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=float))
    else:
        write_result("ray", result, args.quick)
    return result


if __name__ == "__main__":
    r = main()
    if r:
        print(
            markdown_table(
                r["allocation"],
                [
                    "n",
                    "mode",
                    "single_wall_s",
                    "ray_wall_s",
                    "ray_over_single_throughput",
                    "levels_equal",
                    "actor_peak_rss_mib",
                    "single_peak_rss_mib",
                ],
            )
        )
        print(
            markdown_table(
                r["scoring"],
                [
                    "customers",
                    "single_customers_per_s",
                    "ray_customers_per_s",
                    "ray_over_single_throughput",
                    "rows_equal",
                    "actor_peak_rss_mib",
                ],
            )
        )
