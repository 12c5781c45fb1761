"""Multi-node training: Lightning's own multi-node launch (``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``,
``trainer.num_nodes``), one ``train.py`` process per node, started here or on the nodes of a Ray cluster.

Lightning DDP (gloo on CPU, NCCL on GPUs) does the training; Ray only places the processes: one task per node,
pinned to distinct nodes by a ``STRICT_SPREAD`` placement group, each running ``train.py`` with the node's rank.
Only global rank 0 creates the MLflow run, exports and writes the bundle (``stages.context.is_global_zero``), so
a job is one MLflow run. Every node must see the same code and config, and rank 0's address must be reachable
from the others (``MASTER_ADDR``: rank 0's node IP on Ray, 127.0.0.1 for processes on this machine)::

    python -m sellerlift.engine train --nodes 2 -- trainer=ddp_cpu trainer.max_epochs=1      # 2 local processes
    RAY_ADDRESS=head:6379 python -m sellerlift.engine train --nodes 4 --ray -- trainer=ddp_cpu
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def node_overrides(overrides: list[str], nodes: int, devices: int = 1) -> list[str]:
    """The job's Hydra overrides for ``nodes`` nodes of ``devices`` processes each (DDP on CPU unless given)."""
    out = list(overrides)
    if not any(o.startswith("trainer=") for o in out):
        out.append("trainer=ddp_cpu")
    out = [o for o in out if not o.startswith(("trainer.num_nodes=", "trainer.devices="))]
    return out + [f"trainer.num_nodes={nodes}", f"trainer.devices={devices}"]


def node_env(rank: int, master_addr: str, master_port: int, nodes: int, devices: int = 1) -> dict:
    return {
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "NODE_RANK": str(rank),
        "WORLD_SIZE": str(nodes * devices),
        "LOCAL_RANK": "0",
    }


def run_node(train_py: str, overrides: list[str], env: dict, cwd: str, timeout: float | None = None) -> dict:
    """One node's ``train.py`` process; returns its exit code and the tail of its output."""
    full = {**os.environ, **env}
    proc = subprocess.run(
        [sys.executable, train_py, *overrides], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout
    )
    return {
        "rank": int(env["NODE_RANK"]),
        "returncode": proc.returncode,
        "stdout": proc.stdout[-4000:],
        "stderr": proc.stderr[-4000:],
    }


def launch_local(
    overrides: list[str],
    nodes: int = 2,
    *,
    master_port: int | None = None,
    cwd: str | Path = REPO,
    per_node: dict[int, list[str]] | None = None,
    timeout: float | None = None,
) -> list[dict]:
    """``nodes`` node processes on this machine (rank 0 first), as Lightning's multi-node launch would run them."""
    from sellerlift.engine.cluster import free_port

    port = master_port or free_port()
    args = node_overrides(overrides, nodes)
    procs = []
    for rank in range(nodes):
        env = {**os.environ, **node_env(rank, "127.0.0.1", port, nodes)}
        procs.append(
            subprocess.Popen(
                [sys.executable, str(REPO / "train.py"), *args, *(per_node or {}).get(rank, [])],
                cwd=str(cwd),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    out = []
    for rank, p in enumerate(procs):
        so, se = p.communicate(timeout=timeout)
        out.append({"rank": rank, "returncode": p.returncode, "stdout": so[-4000:], "stderr": se[-4000:]})
    return out


def launch_ray(
    overrides: list[str],
    nodes: int = 2,
    *,
    cpus_per_node: float = 1,
    master_port: int = 29531,
    cwd: str | Path = REPO,
    per_node: dict[int, list[str]] | None = None,
    timeout: float | None = None,
) -> list[dict]:
    """One node process per Ray node (a STRICT_SPREAD placement group), rank 0 on the first bundle's node."""
    import ray
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": cpus_per_node}] * nodes, strategy="STRICT_SPREAD")
    ray.get(pg.ready(), timeout=300)
    try:
        where = placement_group_table(pg)["bundles_to_node_id"]
        ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
        master = ips[where[0]]
        args = node_overrides(overrides, nodes)
        task = ray.remote(num_cpus=cpus_per_node, max_retries=0)(run_node)
        refs = [
            task.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=rank
                )
            ).remote(
                str(Path(cwd) / "train.py"),
                args + (per_node or {}).get(rank, []),
                node_env(rank, master, master_port, nodes),
                str(cwd),
                timeout,
            )
            for rank in range(nodes)
        ]
        out = ray.get(refs)
        for r, rank in zip(out, range(nodes)):
            r["node_id"] = where[rank]
        return out
    finally:
        remove_placement_group(pg)
