"""Regression tests for the defects an outside client found in the server (issue 12), one or more per defect.

D1  one bad request stalled the server: limits before any full parse, work off the event loop, memory back
D2  a lone-surrogate key gave a 500 with two tracebacks and reset the keep-alive connection
D3  /metrics grew without bound (any method token became a label)
D4  deep nesting / a 5,000-digit integer were "not UTF-8"; gzip and non-JSON bodies were a vague 422
D5  the 16 KB header limit did not hold for a head that arrived in one packet
D6  reload loaded any directory that verifies (``..``); unsigned bundles with a signing key configured
and: the cold-start prior, the allocation's bound and gap, readiness that can say "not ready", HEAD probes.

The in-process tests use the session's tiny bundle (tests/test_serve.py); the real-process ones start
``python -m serve`` on a free loopback port. Every loop is bounded in count and time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_fixtures import REPO, Server, free_port, info, parse_status, read_all, rss_bytes, serve_env  # noqa: F401
from test_serve import AS_OF, VALID, bundle_info, dipn_model, model, scratch, settings  # noqa: F401

from sellerlift.runtime import BundleError
from serve.app import create_app

REPRODUCER = (
    b'{"as_of":"2026-11-30T00:00:00Z","customers":[' + b'{"customer_id":1.5},' * 700000 + b'{"customer_id":1.5}]}'
)


def _many(event: bytes, customers: int = 1000, events: int = 500) -> bytes:
    """A ~14 MB body within the default limits (1000 customers x 500 events), every event as given."""
    one = b'{"customer_id":%d,"events":[' + b",".join([event] * events) + b"]}"
    return b'{"as_of":"2026-11-30T00:00:00Z","customers":[' + b",".join(one % i for i in range(customers)) + b"]}"


BAD_TIMESTAMPS = _many(b'{"type":"visit","ts":"bad"}')  # 500,000 bad timestamps, 14 MB
EXTRA_FIELDS = _many(b'{"type":"visit","ts":"2025-01-01","x":1}', events=350)  # 350,000 extra fields, 13 MB


@pytest.fixture()
def client(bundle_info, model):  # noqa: F811
    from fastapi.testclient import TestClient

    return TestClient(create_app(settings(bundle_info["bundle"]), model=model))


@pytest.fixture()
def dipn_client(bundle_info, dipn_model):  # noqa: F811
    from fastapi.testclient import TestClient

    return TestClient(create_app(settings(bundle_info["bundle_dipn"], admin_token="adm"), model=dipn_model))


# ----------------------------------------------------------------------------- D1


def test_d1_reproducer_is_413_before_any_full_parse(client):
    t0 = time.monotonic()
    r = client.post("/v1/score", content=REPRODUCER, headers={"content-type": "application/json"})
    took = time.monotonic() - t0
    assert r.status_code == 413, r.text[:300]
    d = r.json()["detail"][0]
    assert d["field"] == "customers" and d["type"] == "too_many_customers" and "max_customers" in d["msg"]
    assert took < 3, took  # was 22 s of pydantic validation before the limit


def test_d1_too_many_events_is_413_before_decoding_the_customer(client):
    one = b'{"as_of":"2026-01-01","customers":[{"customer_id":1,"events":[' + b"0," * 300_000 + b"0]}]}"
    r = client.post("/v1/score", content=one, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "customers[0].events", r.text[:300]


def test_d1_large_invalid_bodies_are_rejected_with_a_capped_list(client):
    for body, field, kind in (
        (BAD_TIMESTAMPS, "customers[0].events[0].ts", "timestamp"),
        (EXTRA_FIELDS, "customers[0].events[0].x", "extra_forbidden"),
    ):
        r = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text[:300]
        detail = r.json()["detail"]
        assert detail[0]["field"] == field and detail[0]["type"] == kind, detail[0]
        assert len(detail) == 21 and detail[-1]["type"] == "more_errors" and "more error(s)" in detail[-1]["msg"]


@pytest.fixture(scope="module")
def server(info, tmp_path_factory):  # noqa: F811
    s = Server(info["bundle_dipn"], tmp_path_factory.mktemp("serve-defects"))
    yield s
    s.stop()


def _healthz_during(url: str, fn) -> tuple[object, list[float]]:
    """Run ``fn()`` while another connection polls /healthz; (fn's result, every /healthz latency in s)."""
    lat, stop = [], threading.Event()

    def poll():
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set() and len(lat) < 20_000:
                t0 = time.perf_counter()
                assert c.get("/healthz").status_code == 200
                lat.append(time.perf_counter() - t0)
                time.sleep(0.002)

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.3)
    try:
        out = fn()
    finally:
        time.sleep(0.1)
        stop.set()
        t.join(30)
    return out, lat


def test_d1_healthz_answers_within_50ms_and_memory_returns(server):
    """A real uvicorn process: the reproducer and the two 14 MB variants, back to back, three times."""
    bodies = [(REPRODUCER, 413), (BAD_TIMESTAMPS, 422), (EXTRA_FIELDS, 422)]
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for body, status in bodies:  # warm-up: first-time allocations (arenas, NumPy) are not growth
            assert c.post("/v1/score", content=body, headers=headers).status_code == status
        time.sleep(0.5)
        base = rss_bytes(server.proc.pid)

        def send_all():
            took = []
            for _ in range(3):
                for body, status in bodies:
                    t0 = time.perf_counter()
                    r = c.post("/v1/score", content=body, headers=headers)
                    took.append(time.perf_counter() - t0)
                    assert r.status_code == status, r.text[:300]
            return took

        tries = []
        for _attempt in range(3):  # a shared box can stall any process now and then: the best of 3 tries
            _, quiet = _healthz_during(server.url, lambda: time.sleep(1.0))  # the same probes, nothing else
            took, lat = _healthz_during(server.url, send_all)
            tries.append((max(lat), max(quiet), max(took)))
            if max(lat) < 0.05:
                break
        time.sleep(0.5)
        after = rss_bytes(server.proc.pid)
    print(
        f"/healthz: {len(lat)} probes, max {max(lat) * 1e3:.1f} ms, p99 {np.percentile(lat, 99) * 1e3:.1f} ms; "
        f"tries (max during, max quiet) {[(round(a * 1e3), round(b * 1e3)) for a, b, _ in tries]} ms; "
        f"bad requests {[round(t, 2) for t in took]} s; RSS {base / 2**20:.0f} -> {after / 2**20:.0f} MiB"
    )
    worst, quiet, slowest = min(tries)
    # The defect: /healthz waited for each rejection (22 s, as long as the rejection itself). It must not wait:
    # within 50 ms, or 3x its quiet latency, or a quarter of the longest rejection, whichever is larger, so a
    # slow, busy box (two test workers on two cores) does not fail it. The 50 ms figure itself is measured
    # by benchmarks/bench_serve.py (healthz_max_ms).
    limit = max(0.05, 3 * quiet, 0.25 * slowest)
    assert worst < limit, f"/healthz took {worst * 1e3:.0f} ms (limit {limit * 1e3:.0f}) while bad bodies were rejected"
    assert max(took) < 5, took  # was 22 s for the reproducer
    assert after - base < 96 * 2**20, (base, after)  # was +900 MiB after one reproducer (here: +10..50 MiB, once)


# ----------------------------------------------------------------------------- D2


def test_d2_lone_surrogate_key_is_422_and_the_connection_survives(server):
    body = b'{"as_of": "2026-01-01", "budget": 1.0, "seller_budgets": {"\\udc80": 1.0}, "customers": []}'
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for _ in range(3):
            r = c.post("/v1/promotions/allocate", content=body, headers=headers)
            assert r.status_code == 422, r.text
            d = r.json()["detail"][0]
            assert "in seller_budgets" in d["msg"] and "surrogate" in d["msg"], d
            assert c.post("/v1/score", json=VALID).status_code == 200  # same keep-alive connection
    log = server.log.read_text()
    assert "Traceback" not in log and "internal error" not in log, log[-2000:]


def test_d2_error_text_is_always_encodable():
    from serve.errors import encode, error_body, safe_text, show

    assert safe_text("a\udc80b") == "a\\udc80b"
    body = error_body([(("seller_budgets", "\udc80"), f"no customer of seller {show(chr(0xDC80))}", "x")])
    assert json.loads(encode(body))["detail"][0]["field"] == "seller_budgets.\\udc80"
    assert encode({"detail": "\ud800"}) == b'{"detail": "\\ud800"}'


def test_d2_a_bug_is_one_logged_500_and_the_next_request_is_served(client, monkeypatch, caplog):
    from serve import jobs

    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(jobs, "score", broken)
    with caplog.at_level("ERROR"):
        r = client.post("/v1/score", json=VALID)
    assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
    assert sum("internal error" in rec.getMessage() for rec in caplog.records) == 1  # one traceback, not two
    monkeypatch.undo()
    assert client.post("/v1/score", json=VALID).status_code == 200


# ----------------------------------------------------------------------------- D3


def test_d3_metrics_labels_are_bounded(client):
    import random

    rnd = random.Random(0)

    def methods(n):
        for i in range(n):
            method = "".join(rnd.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(8))
            client.request(method, "/v1/score" if i % 2 else f"/random/{i}")
        client.request("X" * 8192, "/v1/score")

    assert client.post("/v1/score", json=VALID).status_code == 200
    methods(10)  # the "other" series exist from here on
    client.get("/metrics")
    before = client.get("/metrics").text
    methods(300)
    text = client.get("/metrics").text

    def series(t):
        return {line.rsplit(" ", 1)[0] for line in t.splitlines() if not line.startswith("#")}

    assert series(text) == series(before), series(text) ^ series(before)
    assert len(text) - len(before) < 3000, len(text) - len(before)  # digits only; was 21 KB -> 92 KB (0.9 MB)
    assert 'method="other"' in text and 'endpoint="other"' in text and "XXXX" not in text


# ----------------------------------------------------------------------------- D4


@pytest.mark.parametrize(
    "body, words",
    [
        (b'{"customers": ' + b"[" * 5000 + b"]" * 5000 + b"}", ["nested too deeply"]),
        (b'{"as_of": "2026-01-01", "customers": [{"customer_id": 1' + b"0" * 5000 + b"}]}", ["out of range"]),
        (
            b'{"as_of": "2026-01-01", "customers": [{"customer_id": 1, "events": [{"type": "visit", "ts": "2025-01-01",'
            b' "amount": 1' + b"0" * 5000 + b"}]}]}",
            ["out of range"],
        ),
    ],
)
def test_d4_deep_nesting_and_huge_numbers_say_what_is_wrong(client, body, words):
    r = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    msg = r.json()["detail"][0]["msg"]
    assert all(w in msg for w in words) and "UTF-8" not in msg, msg


def test_d4_compressed_and_non_json_bodies_are_415_naming_the_cause(client):
    import gzip

    raw = json.dumps(VALID).encode()
    cases = [
        (
            {"content-type": "application/json", "content-encoding": "gzip"},
            gzip.compress(raw),
            "Content-Encoding 'gzip'",
        ),
        ({"content-type": "text/plain"}, raw, "Content-Type 'text/plain'"),
        ({"content-type": "application/x-www-form-urlencoded"}, b"a=1", "Content-Type"),
        ({"content-type": "application/xml"}, b"<a/>", "application/json"),
    ]
    for headers, body, words in cases:
        for path in ("/v1/score", "/v1/promotions/curves", "/v1/promotions/allocate"):
            r = client.post(path, content=body, headers=headers)
            assert r.status_code == 415, (path, headers, r.status_code, r.text)
            assert words in r.json()["detail"][0]["msg"], r.text
    ok = client.post("/v1/score", content=raw, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200
    assert client.post("/v1/score", content=raw, headers={"content-encoding": "identity"}).status_code == 200


# ----------------------------------------------------------------------------- D5


def test_d5_header_limit_holds_for_a_head_in_one_piece(client):
    r = client.get("/healthz", headers={"x-pad": "a" * 70_000})
    assert r.status_code == 431 and "16384" in r.json()["detail"], r.text[:300]
    assert client.get("/healthz", headers={"x-pad": "a" * 8_000}).status_code == 200


def test_d5_header_limit_over_a_real_socket(server):
    head = f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {'a' * 70_000}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head)
        status, body = parse_status(read_all(s, 5))
    assert status in (431, 400), (status, body[:200])  # 431: the gate; 400: h11 if the head came in pieces
    assert status != 200


# ----------------------------------------------------------------------------- D6


def test_d6_reload_is_confined_to_the_bundle_root(dipn_client, bundle_info, tmp_path):  # noqa: F811
    auth = {"Authorization": "Bearer adm"}
    root = Path(bundle_info["root"]) if "root" in bundle_info else Path(bundle_info["bundle_dipn"]).parent
    outside = tmp_path / "outside"
    shutil.copytree(bundle_info["bundle"], outside)  # verifies fine, but is not under the root
    inner = scratch(bundle_info["bundle"])
    try:
        (inner / "link").symlink_to(outside)
        dotdot = os.path.relpath(outside, root)
        for target in (
            str(outside),
            str(root / dotdot),
            str(root / "scratch" / ".." / ".." / dotdot),
            str(inner / "link"),
        ):
            r = dipn_client.post("/v1/admin/reload", json={"bundle": target}, headers=auth)
            assert r.status_code == 409, (target, r.text)
            assert "not inside the bundle root" in r.json()["detail"], r.text
        ok = dipn_client.post("/v1/admin/reload", json={"bundle": bundle_info["bundle"]}, headers=auth)
        assert ok.status_code == 200, ok.text
        assert dipn_client.post("/v1/admin/reload", json={}, headers=auth).status_code == 200  # the configured one
    finally:
        shutil.rmtree(inner, ignore_errors=True)


def test_reload_of_a_path_no_file_can_have_is_a_client_error(dipn_client):
    """The slow schema fuzz's finding: a NUL byte in the bundle path was a 500 (ValueError: embedded null byte)."""
    auth = {"Authorization": "Bearer adm"}
    for target in (rb"\u0000\ud879\udc72Z", rb"bundles/\u0000", rb"a\u0000b"):  # JSON escapes, as the fuzzer sent
        body = b'{"bundle": "' + target + b'"}'
        r = dipn_client.post("/v1/admin/reload", content=body, headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 409, (target, r.text)
        assert "not a usable path" in r.json()["detail"], r.text


def _sign(bundle: Path, key: bytes) -> None:
    sig = hmac.new(key, (bundle / "manifest.json").read_bytes(), hashlib.sha256).hexdigest()
    (bundle / "manifest.sig").write_text(json.dumps({"alg": "hmac-sha256", "signature": sig}))


def test_d6_signing_key_refuses_unsigned_bundles_at_start_and_reload(bundle_info, monkeypatch):  # noqa: F811
    from fastapi.testclient import TestClient

    inner = scratch(bundle_info["bundle"])
    try:
        signed, other, unsigned = inner / "signed", inner / "other", inner / "unsigned"
        for d in (signed, other, unsigned):
            shutil.copytree(bundle_info["bundle"], d)
            (d / "manifest.sig").unlink(missing_ok=True)
        _sign(signed, b"k-123")
        _sign(other, b"another key")
        monkeypatch.setenv("SELLERLIFT_BUNDLE_KEY", "k-123")
        with pytest.raises(BundleError, match="unsigned bundle"):
            create_app(settings(str(unsigned)))
        with pytest.raises(BundleError, match="signature does not match"):
            create_app(settings(str(other)))
        app = create_app(settings(str(signed), admin_token="adm"))
        c = TestClient(app)
        assert c.get("/v1/models").json()["model"]["signed"] is True
        auth = {"Authorization": "Bearer adm"}
        for target, words in ((unsigned, "unsigned bundle"), (other, "signature does not match")):
            r = c.post("/v1/admin/reload", json={"bundle": str(target)}, headers=auth)
            assert r.status_code == 409 and words in r.json()["detail"], r.text
        assert c.post("/v1/admin/reload", json={"bundle": str(signed)}, headers=auth).status_code == 200
        out = subprocess.run(
            [sys.executable, "-m", "serve", "--bundle", str(unsigned), "--port", str(free_port())],
            cwd=REPO,
            env=serve_env(SELLERLIFT_BUNDLE_KEY="k-123"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 2, out.stderr
        assert "refusing to start" in out.stderr and "unsigned bundle" in out.stderr, out.stderr
    finally:
        shutil.rmtree(inner, ignore_errors=True)


# ----------------------------------------------------------------------------- the rest


def test_cold_start_customer_gets_the_calibrated_prior(client, model):  # noqa: F811
    assert model.prior, "the test bundle has a cold-start prior"
    body = {
        "as_of": AS_OF,
        "customers": [
            {"customer_id": "new"},
            VALID["customers"][0],
            {"customer_id": "later", "events": [{"type": "visit", "ts": AS_OF}]},
        ],
    }
    res = client.post("/v1/score", json=body).json()["results"]
    assert res[0]["prior"] and res[0]["cold_start"] and res[2]["prior"]  # an event at as_of is not history
    assert res[0]["intent_7d"] == pytest.approx(model.prior["intent_7d"], abs=1e-7)
    assert res[0]["churn_90d"] == pytest.approx(model.prior["churn_90d"], abs=1e-7)
    assert not res[1]["prior"] and not res[1]["cold_start"]


def test_allocation_reports_an_upper_bound_not_a_misleading_gap(dipn_client):
    body = {
        "as_of": AS_OF,
        "budget": 2.0,
        "customers": [
            {"customer_id": i, "value": 40.0 + i, "margin": 0.4, "events": VALID["customers"][0]["events"]}
            for i in range(6)
        ],
    }
    for budget in (0.0, 0.5, 2.0, 1e9):
        t = dipn_client.post("/v1/promotions/allocate", json={**body, "budget": budget}).json()["totals"]
        assert "gap" not in t and "bound" not in t
        assert t["upper_bound"] >= t["incremental_profit"] - 1e-9
        assert t["status"] in ("optimal", "feasible")
        if t["status"] == "optimal":
            assert t["gap_to_upper_bound"] <= 1e-6, t
        else:
            assert t["gap_to_upper_bound"] > 0, t
    spec = dipn_client.get("/openapi.json").json()["components"]["schemas"]["AllocationTotals"]["properties"]
    assert "LP relaxation" in spec["upper_bound"]["description"]


def test_readyz_says_not_ready_when_draining_or_queue_is_full(bundle_info, model):  # noqa: F811
    from fastapi.testclient import TestClient

    app = create_app(settings(bundle_info["bundle"], max_queue_depth=1, inference_threads=1), model=model)
    st = app.state.serve
    c = TestClient(app)
    assert c.get("/readyz").json() == {"ready": True, "version": model.version}
    gate, started = threading.Event(), threading.Event()

    def block():
        started.set()
        gate.wait(10)

    import asyncio

    loop = asyncio.new_event_loop()
    try:
        futs = [loop.create_task(st.run(block)) for _ in range(4)]  # 1 running, 3 waiting
        loop.run_until_complete(asyncio.sleep(0.05))
        started.wait(5)
        r = c.get("/readyz")
        assert r.status_code == 503 and "max_queue_depth 1" in r.json()["reason"], r.text
        assert c.head("/readyz").status_code == 503
        gate.set()
        loop.run_until_complete(asyncio.gather(*futs))
    finally:
        gate.set()
        loop.close()
    assert c.get("/readyz").status_code == 200
    st.draining = True
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json() == {"ready": False, "reason": "draining: the server is shutting down"}


def test_head_probes_are_not_405(client):
    for path in ("/healthz", "/readyz"):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"", (path, r.status_code)


def test_sigterm_marks_the_process_draining():
    from serve import state

    calls = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: calls.append(s))
    try:
        assert state.install_drain_signal()
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert state.DRAINING.is_set() and calls == [signal.SIGTERM]
    finally:
        state.DRAINING.clear()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
