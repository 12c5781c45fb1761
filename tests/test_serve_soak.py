"""Sustained load and reload under load, against a real uvicorn process on loopback.

* ``test_reload_during_load_loses_nothing`` (fast): steady open-loop load while the server swaps
  bundles five times and is asked to load four bad ones (tampered file, edited manifest, missing file,
  no bundle at all): zero failed requests, each refusal is a 409 that names the problem, and the old
  model keeps serving (every response after a refusal carries the previous version).
* ``test_soak`` (slow): measures saturation throughput first (closed loop, a few seconds per client
  count), then holds ~70 % of it, open loop, for a few minutes (SELLERLIFT_SOAK_SECONDS, default 180):
  zero errors, RSS growth below a stated bound and flat at the end, p99 of the last third within a
  stated factor of the first third.

Every load is bounded in requests and time; the server is stopped by its fixture.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time

import httpx
import pytest
from serve_fixtures import (  # noqa: F401
    ADMIN_AUTH,
    API,
    AUTH,
    Load,
    Server,
    body_of,
    events,
    info,
    pct,
    rss_bytes,
    scratch,
    tampered_copy,
)

SOAK_S = float(os.environ.get("SELLERLIFT_SOAK_SECONDS", 180))
RSS_GROWTH_MAX = 64 * 2**20  # bytes over the whole soak, after warm-up and the saturation phase
RSS_TAIL_GROWTH_MAX = 16 * 2**20  # bytes over the last third: memory is flat by then, not climbing
P99_FACTOR, P99_SLACK_S = 2.0, 0.05  # p99(last third) <= 2 x p99(first third) + 50 ms


@pytest.fixture(scope="module")
def server(info, tmp_path_factory):  # noqa: F811
    s = Server(info["bundle"], tmp_path_factory.mktemp("serve-soak"), SELLERLIFT_API_TOKEN=API)
    yield s
    s.stop()


def _bad_bundles(info, tmp) -> dict[str, tuple[str, str]]:  # noqa: F811
    """name -> (bundle dir, a word the refusal must contain)."""
    tampered = tampered_copy(info["bundle"], tmp / "tampered")
    edited = tmp / "edited_manifest"
    shutil.copytree(info["bundle"], edited)
    m = json.loads((edited / "manifest.json").read_text())
    m["files"]["sequence"]["sha256"] = "0" * 64
    (edited / "manifest.json").write_text(json.dumps(m))
    missing = tmp / "missing_file"
    shutil.copytree(info["bundle"], missing)
    (missing / "sequence.onnx").unlink()
    return {
        "tampered": (str(tampered), "sha256"),
        "edited manifest": (str(edited), "sha256"),
        "missing file": (str(missing), "sequence.onnx"),
        "no bundle": (str(tmp / "nowhere"), "manifest"),
    }


def test_reload_during_load_loses_nothing(server, info, events):  # noqa: F811
    tmp_path = scratch(info["bundle"])  # inside the server's bundle root: a reload may not reach outside it
    load = Load(server.url, body=body_of(events, 5), clients=3, rate=15, duration=60, max_requests=2000).start()
    steps = []
    try:
        with httpx.Client(base_url=server.url, timeout=60, headers=ADMIN_AUTH) as c:
            time.sleep(1.0)
            bad = _bad_bundles(info, tmp_path)
            targets = [
                info["bundle_dipn"],
                "tampered",
                info["bundle"],
                "edited manifest",
                info["bundle_dipn"],
                "missing file",
                info["bundle"],
                "no bundle",
                info["bundle_dipn"],
            ]
            for target in targets:
                before = c.get("/v1/models").json()["model"]["version"]
                if target in bad:
                    path, word = bad[target]
                    r = c.post("/v1/admin/reload", json={"bundle": path})
                    assert r.status_code == 409, (target, r.status_code, r.text)
                    detail = r.json()["detail"]
                    assert detail.startswith("bundle refused:") and word in detail, (target, detail)
                    assert r.json()["serving"]["version"] == before
                    t_done = time.monotonic() - load.t0
                    time.sleep(0.7)
                    # the old model keeps serving: every answer since the refusal carries its version
                    assert c.get("/v1/models").json()["model"]["version"] == before
                    steps.append(("refused", target, before, t_done))
                else:
                    r = c.post("/v1/admin/reload", json={"bundle": target})
                    assert r.status_code == 200, r.text
                    steps.append(("ok", target, r.json()["model"]["version"], time.monotonic() - load.t0))
                    time.sleep(0.7)
            metrics = c.get("/metrics").text
    finally:
        load.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)
    s = load.summary()
    print(f"load during {len(targets)} reloads: {s}")
    assert not load.failures, load.failures[:5]
    assert s["ok"] >= 50, s
    versions = {v for kind, _, v, _ in steps}
    assert len(versions) == 2, steps  # bundle and bundle_dipn alternate; refusals change nothing
    assert re.search(r'sellerlift_reloads_total\{result="refused"\} 4\.0', metrics), metrics
    assert re.search(r'sellerlift_reloads_total\{result="ok"\} 5\.0', metrics), metrics
    assert 'status="5' not in metrics  # no 5xx counted by the server either


def _rss_sampler(pid: int, out: list, stop: threading.Event, every: float = 2.0) -> threading.Thread:
    def run():
        t0 = time.monotonic()
        while not stop.is_set() and time.monotonic() - t0 < SOAK_S + 600:
            out.append((time.monotonic() - t0, rss_bytes(pid)))
            stop.wait(every)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.slow
def test_soak(server, events):  # noqa: F811
    body = body_of(events, 10)  # 10 simulated customers with their full histories (~40 kB)
    Load(server.url, body=body, clients=2, duration=3).run()  # warm-up
    # 1. saturation: closed loop with 2 and 4 clients, 3 rounds; the median over rounds of the better of the
    #    two (one round alone swings by 2x on a shared box)
    sat: dict = {}
    for _ in range(3):
        for clients in (2, 4):
            probe = Load(server.url, body=body, clients=clients, duration=4).run()
            assert not probe.failures, probe.failures[:5]
            sat.setdefault(clients, []).append(probe.throughput())
    rounds = sorted(max(a, b) for a, b in zip(sat[2], sat[4]))
    saturation = rounds[1]
    target = 0.7 * saturation
    # 2. soak at ~70 % of it, open loop
    rss: list = []
    stop = threading.Event()
    sampler = _rss_sampler(server.proc.pid, rss, stop)
    soak = Load(
        server.url, body=body, clients=4, rate=target, duration=SOAK_S, max_requests=int(target * SOAK_S) + 10
    ).run()
    stop.set()
    sampler.join(10)
    s = soak.summary()
    third = SOAK_S / 3
    first, last = soak.latencies(0, third), soak.latencies(2 * third, SOAK_S + 1)
    p99_first, p99_last = pct(first, 99), pct(last, 99)
    growth = rss[-1][1] - rss[0][1]
    tail = [b for t, b in rss if t >= 2 * third]
    tail_growth = tail[-1] - tail[0] if len(tail) > 1 else 0
    report = {
        "saturation_rps": round(saturation, 1),
        "saturation_probes_rps": {k: [round(x, 1) for x in v] for k, v in sat.items()},
        "target_rps": round(target, 1),
        "soak": s,
        "p99_first_third_ms": round(p99_first * 1e3, 1),
        "p99_last_third_ms": round(p99_last * 1e3, 1),
        "rss_start_mb": round(rss[0][1] / 2**20, 1),
        "rss_end_mb": round(rss[-1][1] / 2**20, 1),
        "rss_max_mb": round(max(b for _, b in rss) / 2**20, 1),
        "rss_growth_mb": round(growth / 2**20, 2),
        "rss_last_third_growth_mb": round(tail_growth / 2**20, 2),
    }
    print("soak:", json.dumps(report))
    assert not soak.failures, soak.failures[:5]
    assert s["rps"] >= 0.9 * target, report  # the server kept up with the offered load
    assert growth < RSS_GROWTH_MAX and tail_growth < RSS_TAIL_GROWTH_MAX, report
    assert p99_last <= P99_FACTOR * p99_first + P99_SLACK_S, report
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as c:
        metrics = c.get("/metrics").text
    assert 'status="5' not in metrics
