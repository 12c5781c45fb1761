"""A lost node: SIGKILL of the second node's raylet while the simulator's chunks run on both nodes of a real
two-node localhost cluster. Its tasks are retried on the node that is left and the output is byte for byte the
single-process simulator's. Its own cluster: the node does not come back."""

import threading
import time

import pytest
from test_engine import files_of
from test_ray_cluster import two_node_cluster

ray = pytest.importorskip("ray")

from sellerlift.engine import get_engine, jobs, partial_outputs
from sellerlift.sim import SimulatorConfig, simulate

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    with two_node_cluster() as c:
        yield c


def test_lost_node_mid_simulation_is_retried_with_the_same_bytes(cluster, tmp_path):
    cfg = SimulatorConfig(n_customers=16_000, n_sellers=10, chunk_size=1000, truth_replications=0)
    simulate(cfg, tmp_path / "single", progress=False)
    out = tmp_path / "ray"
    killed = []

    def killer():
        t0 = time.time()
        while time.time() - t0 < 120:
            stage = partial_outputs(out)
            if stage and len(list((stage[0] / "events").glob("part-*.parquet"))) >= 2:
                killed.extend(cluster.kill_node(1))
                return
            time.sleep(0.05)

    with get_engine("ray", progress=False) as engine:
        assert engine.describe()["nodes"] == 2
        th = threading.Thread(target=killer)
        th.start()
        s = jobs.simulate(cfg, out, engine)
        th.join()
        assert killed, "the raylet was not killed mid-job"
        assert not cluster.pids(1, "raylet/raylet")
    assert s["chunks"] == 16
    assert files_of(out) == files_of(tmp_path / "single")
