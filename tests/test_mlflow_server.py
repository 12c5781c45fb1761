"""A second tracking backend: the same training logs to a real `mlflow server` on loopback.

The test starts the server on a free port with its own sqlite backend and artifact
folder in tmp, waits (bounded) for /health, points MLFLOW_TRACKING_URI at it, runs a
tiny training and reads the run back through the MlflowClient. The local default
store (mlruns/ under the run's root) is never created. The server is killed at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from sellerlift.pipeline import run

MLFLOW = Path(sys.executable).with_name("mlflow")
READY_TIMEOUT_S = 180  # generous: a loaded 2-core machine needs ~1 min


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(home / "server.log", "w")  # noqa: SIM115 - the server process writes it until teardown
    proc = subprocess.Popen(
        [
            str(MLFLOW),
            "server",
            "--backend-store-uri",
            f"sqlite:///{home}/server.db",
            "--artifacts-destination",
            f"{home}/artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server not ready after {READY_TIMEOUT_S} s "
                    f"(exit {proc.poll()}):\n{(home / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield url, home
    finally:
        try:  # the whole session: the server runs its workers as child processes
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        log.close()


@pytest.mark.slow
def test_training_logs_to_a_real_mlflow_server_and_reads_back(mlflow_server, tiny_config, tmp_path, monkeypatch):
    url, home = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    cfg = tiny_config(
        "model=transformer", "extras=[]", "tracking.register=true", "++champion.enabled=false", "++report.enabled=false"
    )
    assert cfg.logger.tracking_uri == url
    result = run(cfg)

    client = MlflowClient(url)
    r = client.get_run(result.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["model.name"] == "transformer"
    for head in ("intent", "churn"):
        assert np.isfinite(r.data.metrics[f"test/{head}_auroc"])
    assert r.data.tags["data.fingerprint"].startswith("sim-")
    exp = client.get_experiment_by_name(cfg.logger.experiment_name)
    assert [x.info.run_id for x in client.search_runs([exp.experiment_id])] == [result.run_id]
    assert {a.path for a in client.list_artifacts(result.run_id)} >= {"bundle", "plots"}
    versions = client.search_model_versions("name='sellerlift-sequence-simulator'")
    assert versions and versions[0].run_id == result.run_id
    # the server's own store holds the run; the local default store was never created
    assert (home / "server.db").stat().st_size > 0
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
