"""``python -m sellerlift.engine <command>``: the scale-out jobs and a local Ray cluster (docs/scale.md).

    python -m sellerlift.engine cluster up --nodes 2 --cpus 1     # a 2-node Ray cluster on this machine
    eval "$(python -m sellerlift.engine cluster env)"              # RAY_ADDRESS & token for the jobs below
    python -m sellerlift.engine info --engine ray                  # nodes, CPUs, the dashboard URL if any
    python -m sellerlift.engine simulate --customers 1000000 --out data/sim-1m --engine ray
    python -m sellerlift.engine train --nodes 2 [--ray] -- trainer.max_epochs=1
    python -m sellerlift.engine cluster down

Scoring and the budget: ``python -m sellerlift.score --engine ray ...``; the closed loop over seeds:
``python -m sellerlift.evaluate closed-loop --seeds 0 1 2 --engine ray``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cluster(args) -> int:
    from sellerlift.engine.cluster import DEFAULT_DIR, LocalCluster

    root = Path(args.dir or DEFAULT_DIR)
    state = root / "cluster.json"
    if args.action == "up":
        if state.exists():
            print(
                f"a cluster is already up in {root} ({json.loads(state.read_text())['address']}); `cluster down` first",
                file=sys.stderr,
            )
            return 2
        c = LocalCluster(args.nodes, args.cpus, root, object_store_mb=args.object_store_mb, dashboard=args.dashboard)
        c.start()
        print(f"Ray cluster up: {args.nodes} nodes x {args.cpus} CPUs at {c.address} (temp dirs under {root})")
        if args.dashboard and not c.dashboard:
            print("no dashboard: it needs `pip install 'ray[default]'` (docs/scale.md)", file=sys.stderr)
        print(_exports(c.env))
        return 0
    if not state.exists():
        print(f"no cluster in {root}", file=sys.stderr)
        return 2 if args.action != "down" else 0
    meta = json.loads(state.read_text())
    c = LocalCluster(meta["nodes"], meta["cpus"], root)
    c.address = meta["address"]
    if args.action == "env":
        print(_exports(c.env))
    elif args.action == "status":
        print(json.dumps({**meta, "processes": len(c.pids())}))
    else:
        c.stop()
        print(f"stopped the cluster in {root}")
    return 0


def _exports(env: dict) -> str:
    return "\n".join(f"export {k}={v}" for k, v in env.items())


def _engine(args):
    from sellerlift.engine import get_engine

    return get_engine(args.engine, address=args.address, num_cpus=args.num_cpus, progress=not args.no_progress)


def _info(args) -> int:
    with _engine(args) as e:
        print(json.dumps(e.describe(), indent=2, default=str))
        if e.name == "ray" and not e.describe().get("dashboard"):
            print("no dashboard: `pip install 'ray[default]'` and start the cluster again (docs/scale.md)")
    return 0


def _simulate(args) -> int:
    from sellerlift.engine.jobs import log_job, simulate
    from sellerlift.sim import SimulatorConfig

    cfg = SimulatorConfig(
        n_customers=args.customers,
        n_sellers=args.sellers,
        seed=args.seed,
        chunk_size=args.chunk_size,
        truth_replications=args.truth_replications,
    )
    with _engine(args) as e:
        s = simulate(cfg, args.out, e)
    print(json.dumps(s, default=str))
    if args.track:
        print(f"MLflow run {log_job(s)}")
    return 0


def _train(args) -> int:
    from sellerlift.engine import train

    overrides = [a for a in args.overrides if a != "--"]
    if args.ray:
        from sellerlift.engine.cluster import connect

        connect(args.address)
        out = train.launch_ray(overrides, args.nodes, cpus_per_node=args.cpus_per_node)
    else:
        out = train.launch_local(overrides, args.nodes)
    for r in out:
        print(f"node {r['rank']}: exit {r['returncode']}\n{r['stdout'][-1500:]}\n{r['stderr'][-1500:]}")
    return max(r["returncode"] for r in out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sellerlift.engine", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cluster", help="a Ray cluster of several nodes on this machine")
    c.add_argument("action", choices=["up", "down", "env", "status"])
    c.add_argument("--nodes", type=int, default=2)
    c.add_argument("--cpus", type=int, default=1, help="CPUs per node")
    c.add_argument("--object-store-mb", type=int, default=512)
    c.add_argument("--dir", help="temp dirs and state (default: $TMPDIR/sellerlift-ray)")
    c.add_argument("--dashboard", action="store_true", help="start the Ray dashboard on 127.0.0.1 (ray[default])")

    def engine_args(p):
        p.add_argument("--engine", choices=["local", "ray"], help="default SELLERLIFT_ENGINE or local")
        p.add_argument("--address", help="Ray cluster (default RAY_ADDRESS; none: a local Ray started now)")
        p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started now (default: all)")
        p.add_argument("--no-progress", action="store_true")

    i = sub.add_parser("info", help="the engine: nodes, CPUs, dashboard")
    engine_args(i)
    s = sub.add_parser("simulate", help="the simulator, one task per chunk (the same files as sim.simulate)")
    engine_args(s)
    s.add_argument("--customers", type=int, required=True)
    s.add_argument("--sellers", type=int, default=50)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--chunk-size", type=int, default=50_000)
    s.add_argument("--truth-replications", type=int, default=4)
    s.add_argument("--out", required=True)
    s.add_argument("--track", action="store_true", help="an MLflow run for the job (experiment sellerlift-jobs)")
    t = sub.add_parser("train", help="Lightning multi-node DDP: one train.py process per node")
    t.add_argument("--nodes", type=int, default=2)
    t.add_argument("--ray", action="store_true", help="one process per node of the Ray cluster (RAY_ADDRESS)")
    t.add_argument("--address")
    t.add_argument("--cpus-per-node", type=float, default=1)
    t.add_argument("overrides", nargs=argparse.REMAINDER, help="-- then Hydra overrides for train.py")
    args = ap.parse_args(argv)
    return {"cluster": _cluster, "info": _info, "simulate": _simulate, "train": _train}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
