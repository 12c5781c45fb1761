"""The inference server as a real process: uvicorn on a free loopback port, no torch, reload under load.

The bundle comes from test_serve.build_test_bundle (one tiny training run per session).
"""

from __future__ import annotations

import ast
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_serve import AS_OF, VALID, build_test_bundle, bundle_root, request_for, scratch, tampered_copy

FORBIDDEN = ("torch", "lightning", "pytorch_lightning", "hydra", "omegaconf", "mlflow", "sklearn")
ADMIN = "admin-token-for-tests"
API = "api-token-for-tests"
AUTH = {"Authorization": f"Bearer {API}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELLERLIFT_")}
    env.update(PYTHONPATH=str(REPO), SELLERLIFT_ADMIN_TOKEN=ADMIN, **extra)
    return env


class Server:
    """``python -m serve`` on a free loopback port; its bundle root (reloads stay inside) is the test bundles'."""

    def __init__(self, bundle: str, tmp: Path, *args: str, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"serve-{self.port}.log"
        if "--bundles-dir" not in args:
            args = ("--bundles-dir", str(bundle_root(bundle)), *args)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serve", "--bundle", bundle, "--port", str(self.port), *args],
            cwd=REPO,
            env=serve_env(**env),
            stdout=open(self.log, "w"),  # noqa: SIM115 (the server process owns the handle)
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code in (200, 401):  # 401: token on
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready in 60 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    return build_test_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def server(info, tmp_path_factory):
    s = Server(info["bundle"], tmp_path_factory.mktemp("serve"), SELLERLIFT_API_TOKEN=API)
    yield s
    s.stop()


def test_real_server_on_loopback_scores_without_torch(server, info):
    import pandas as pd

    events = pd.read_parquet(Path(info["bundle"]).parents[2] / "events.parquet")
    ids = np.sort(events["customer_id"].unique())[:100].tolist()
    body = request_for(events, ids)
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as c:
        r = c.post("/v1/score", json=body)
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        models = c.get("/v1/models").json()
        assert models["server"]["heavy_modules_loaded"] == []
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.post("/v1/score", json={**VALID, "as_of": "bad"}).status_code == 422
        metrics = c.get("/metrics").text
    assert 'sellerlift_requests_total{endpoint="/v1/score",method="POST",status="200"} 1.0' in metrics
    # same numbers as in process (the in-process path is checked against the pipeline in test_serve.py)
    import json

    from sellerlift.runtime import Runtime
    from serve import parsing

    rt = Runtime.load(info["bundle"])
    batch = parsing.parse(json.dumps(body).encode(), parsing.SCORE, 1000, 10_000).batch
    out = rt.score(rt.features(batch))
    assert [x["intent_7d"] for x in res] == out["intent_7d"].tolist()
    assert [x["churn_90d"] for x in res] == out["churn_90d"].tolist()
    log = server.log.read_text()
    assert "heavy modules loaded: none" in log and "binding 127.0.0.1:" in log
    assert ADMIN not in log and API not in log


def test_server_binds_loopback_only(server):
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True) if Path("/usr/bin/ss").exists() else None
    if out is None or out.returncode != 0:
        pytest.skip("ss not available")
    lines = [ln for ln in out.stdout.splitlines() if f":{server.port} " in ln]
    assert lines and all("127.0.0.1:" in ln for ln in lines), lines


def test_import_graph_has_no_training_stack():
    # 1. statically: no module in serve/ imports a forbidden package, or sellerlift.export (which imports torch)
    for path in (REPO / "serve").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
                assert not name.startswith(
                    (
                        "sellerlift.export",
                        "sellerlift.pipeline",
                        "sellerlift.models",
                        "sellerlift.stages",
                        "sellerlift.tracking",
                    )
                ), f"{path.name}: {name}"
    # 2. dynamically: importing every serve module (and building the app's pieces) loads none of them
    modules = sorted(f"serve.{p.stem}" for p in (REPO / "serve").glob("*.py") if p.stem != "__init__")
    assert {"serve.app", "serve.gate", "serve.routes", "serve.parsing", "serve.errors", "serve.metrics"} <= set(modules)
    code = (
        f"import sys, serve, {', '.join(modules)}\nprint([m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=serve_env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_tampered_bundle_refuses_to_start(info, tmp_path):
    bad = tampered_copy(info["bundle"], tmp_path / "bad")
    out = subprocess.run(
        [sys.executable, "-m", "serve", "--bundle", str(bad), "--port", str(free_port())],
        cwd=REPO,
        env=serve_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "refusing to start" in out.stderr and "sha256" in out.stderr and "sequence.onnx" in out.stderr


def test_reload_under_concurrent_requests_loses_nothing(server, info):
    stop = threading.Event()
    failures, versions, count = [], set(), [0]

    def hammer():
        with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/score", json=VALID)
                    if r.status_code != 200:
                        failures.append((r.status_code, r.text))
                    else:
                        versions.add(r.json()["model"]["version"])
                        count[0] += 1
                except httpx.HTTPError as err:
                    failures.append(repr(err))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    seen = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            time.sleep(0.3)
            for target in (info["bundle_dipn"], info["bundle"]):
                r = c.post("/v1/admin/reload", json={"bundle": target}, headers=admin)
                assert r.status_code == 200, r.text
                seen.append(r.json()["model"]["version"])
                time.sleep(0.3)
            assert c.post("/v1/admin/reload", json={"bundle": target}, headers=AUTH).status_code == 401
            bad = tampered_copy(info["bundle"], scratch(info["bundle"]) / "bad")
            r = c.post("/v1/admin/reload", json={"bundle": str(bad)}, headers=admin)
            assert r.status_code == 409 and r.json()["serving"]["version"] == seen[-1]
            assert "sha256" in r.json()["detail"]
            shutil.rmtree(bad.parent, ignore_errors=True)
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures, failures[:3]
    assert count[0] > 10 and len(set(seen)) == 2
    assert set(seen) <= versions, (versions, seen)


def test_api_token_over_http(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/v1/score", json=VALID).status_code == 401
        assert c.get("/metrics").status_code == 401
        assert c.get("/readyz").status_code == 401
        r = c.post("/v1/score", json={**VALID, "as_of": AS_OF}, headers={"Authorization": f"Bearer {API}x"})
        assert r.status_code == 401 and r.json() == {"detail": "unauthorized"}
        assert c.post("/v1/score", json=VALID, headers=AUTH).status_code == 200
    assert API not in server.log.read_text()
