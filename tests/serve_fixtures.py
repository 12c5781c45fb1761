"""Shared helpers for the serving reliability tests (fuzz, soak, security): a real server, load, memory.

Not a test module. The real-process pieces (``Server``, ``free_port``, ``serve_env``, the tokens) live
in test_serve_process.py and the bundle/request helpers in test_serve.py; they are re-exported here
unchanged so the owners' tests stay as they are. What is added:

* ``Load``: bounded client load on loopback (closed loop at full speed, or open loop at a target
  rate), every request's start time, latency and outcome recorded; it stops by itself after
  ``duration`` seconds or ``max_requests`` requests, whichever comes first.
* ``rss_bytes(pid)``: resident memory of the server process, from /proc.
* ``pct``: a percentile without numpy's interpolation surprises.
* ``raw_request``: an HTTP/1.1 request on a plain socket (for slow / malformed clients).
"""

from __future__ import annotations

import json
import math
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_serve import AS_OF, VALID, build_test_bundle, bundle_root, request_for, scratch, tampered_copy  # noqa: F401
from test_serve_process import ADMIN, API, AUTH, REPO, Server, free_port, serve_env  # noqa: F401

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    """The session's tiny real bundle (one training run per session, shared between xdist workers)."""
    return build_test_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def events(info):
    import pandas as pd

    return pd.read_parquet(Path(info["bundle"]).parents[2] / "events.parquet")


def body_of(events, n_customers: int, start: int = 0) -> dict:
    """A realistic /v1/score body: ``n_customers`` simulated customers with all their events."""
    import numpy as np

    ids = np.sort(events["customer_id"].unique())[start : start + n_customers].tolist()
    return request_for(events, ids)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def pct(values, q: float) -> float:
    """The q-th percentile (0..100), nearest rank; nan for no values."""
    v = sorted(values)
    if not v:
        return math.nan
    return v[min(len(v) - 1, max(0, math.ceil(q / 100 * len(v)) - 1))]


@dataclass
class Load:
    """Bounded load against ``url + path``: ``clients`` threads, each with its own keep-alive connection.

    ``rate=None``: closed loop, each client sends as fast as it gets answers (for saturation).
    ``rate=r``: open loop, requests scheduled at ``r`` per second in total (spread over the clients);
    latency is measured from the scheduled time, so queueing shows up in it (no coordinated omission),
    and a client that falls behind does not send a burst to catch up beyond the schedule.
    """

    url: str
    path: str = "/v1/score"
    body: dict | bytes = field(default_factory=lambda: VALID)
    headers: dict = field(default_factory=lambda: dict(AUTH))
    clients: int = 2
    rate: float | None = None
    duration: float = 5.0
    max_requests: int = 100_000
    timeout: float = 30.0
    expect: int = 200
    # results, in completion order: (t_start relative to start(), latency s, status code or error name)
    records: list = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = 0
        self._threads: list[threading.Thread] = []
        self._content = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()

    def _take(self) -> bool:
        with self._lock:
            if self._sent >= self.max_requests:
                return False
            self._sent += 1
            return True

    def _client(self, k: int) -> None:
        interval = self.clients / self.rate if self.rate else 0.0
        next_t = self.t0 + (k / self.rate if self.rate else 0.0)
        headers = {**self.headers, "content-type": "application/json"}
        with httpx.Client(base_url=self.url, timeout=self.timeout) as c:
            while not self._stop.is_set() and time.monotonic() - self.t0 < self.duration and self._take():
                if self.rate:
                    delay = next_t - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    sched = next_t
                    next_t += interval
                else:
                    sched = time.monotonic()
                try:
                    r = c.post(self.path, content=self._content, headers=headers)
                    outcome = r.status_code
                    if outcome == self.expect and r.headers.get("content-type", "").startswith("application/json"):
                        r.json()  # a complete, parseable answer
                except Exception as err:
                    outcome = type(err).__name__
                done = time.monotonic()
                with self._lock:
                    self.records.append((sched - self.t0, done - sched, outcome))

    def start(self) -> Load:
        self.t0 = time.monotonic()
        self._threads = [threading.Thread(target=self._client, args=(k,), daemon=True) for k in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> Load:
        self._stop.set()
        return self.join()

    def join(self) -> Load:
        for t in self._threads:
            t.join(self.duration + self.timeout + 5)
        self.elapsed = time.monotonic() - self.t0
        return self

    def run(self) -> Load:
        return self.start().join()

    # ------------------------------------------------------------- figures
    @property
    def ok(self) -> list[tuple]:
        return [r for r in self.records if r[2] == self.expect]

    @property
    def failures(self) -> list[tuple]:
        return [r for r in self.records if r[2] != self.expect]

    def latencies(self, t_from: float = 0.0, t_to: float = math.inf) -> list[float]:
        return [lat for t, lat, o in self.records if o == self.expect and t_from <= t < t_to]

    def throughput(self) -> float:
        return len(self.ok) / self.elapsed if self.records else 0.0

    def summary(self) -> dict:
        lat = self.latencies()
        return {
            "requests": len(self.records),
            "ok": len(lat),
            "failures": len(self.failures),
            "elapsed_s": round(self.elapsed, 2),
            "rps": round(self.throughput(), 1),
            "p50_ms": round(pct(lat, 50) * 1e3, 1),
            "p99_ms": round(pct(lat, 99) * 1e3, 1),
            "max_ms": round(max(lat, default=math.nan) * 1e3, 1),
        }


def raw_request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a plain socket (Connection: close); returns (status, body)."""
    head = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Connection: close",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        data = read_all(s, timeout)
    return parse_status(data)


def read_all(s: socket.socket, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    chunks = []
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse_status(data: bytes) -> tuple[int, bytes]:
    if not data.startswith(b"HTTP/1.1 "):
        return 0, data
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


def trickle(port: int, data: bytes, interval: float, max_s: float) -> dict:
    """A slowloris client: send ``data`` one byte every ``interval`` s, for at most ``max_s`` s.

    Stops early when the server answers or closes the connection. Returns the status the server sent
    (0: none), ``cut_after_s`` (when the server answered/closed, None if it never did) and bytes sent.
    """
    t0 = time.monotonic()
    out = {"status": 0, "cut_after_s": None, "sent": 0, "body": b""}
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        while time.monotonic() - t0 < max_s:
            readable, _, _ = select.select([s], [], [], interval)
            if readable:  # the server answered or closed: read what it said
                out["status"], out["body"] = parse_status(read_all(s, 2))
                out["cut_after_s"] = time.monotonic() - t0
                break
            if out["sent"] < len(data):
                try:
                    s.sendall(data[out["sent"] : out["sent"] + 1])
                except OSError:
                    out["cut_after_s"] = time.monotonic() - t0
                    break
                out["sent"] += 1
    return out


def request_head(port: int, path: str, length: int, headers: dict | None = None) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
