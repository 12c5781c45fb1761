"""The inference server under a real load generator vs the same work in process.

    python benchmarks/bench_serve.py                 # wrk, 1 and 100 customers/request, 1 and 2 workers
    python benchmarks/bench_serve.py --quick         # seconds; in-Python load loop (no wrk needed)
    python benchmarks/bench_serve.py --bundle bundles/<run id> --duration 20

For each number of uvicorn workers it starts ``python -m serve`` on a free
127.0.0.1 port (a real process) and, for each request size, drives
``POST /v1/score`` with

* **latency**: one connection, one request at a time -> p50 / p99;
* **throughput**: ``--connections`` concurrent keep-alive connections (saturation on a
  2-core box) -> requests per second (and the p50 under that load);

with ``wrk`` (Debian package ``wrk``; a Lua script rotates 8 different request
bodies) or, without wrk or with --quick, a bounded asyncio + httpx loop.
Every response must be 200 (counted otherwise, and the run fails).

In process: the same requests' arrays through ``Model.features`` (the shared
features module) + ``sequence.onnx`` + segments, in this process: what a Python
service embedding onnxruntime would pay. It is timed right before and right
after each latency run, so the ratio ``server p50 / in-process p50`` is taken
side by side (absolute times drift on a shared machine; the ratio is the figure).

The bundle: --bundle, else the newest complete one under bundles/ (a GRU one first), else a
bundle made here in seconds (the default GRU, random weights, exported to ONNX;
a fitted feature spec): latency does not depend on the weights.
``--server-root DIR`` benchmarks the ``serve`` package found under DIR, and the
``sellerlift`` package under DIR/src when there is one (an older checkout), in
the server and in process: before/after numbers.
Writes benchmarks/results/serve.json (serve.quick.json with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import machine_info, markdown_table, newest_bundle, write_result  # noqa: E402

AS_OF = np.datetime64("2026-01-01T00:00:00", "s")
EVENT_TYPES = ("visit", "view", "add_to_cart", "purchase", "email_open", "support_contact", "coupon_redeem")
N_BODIES = 8

WRK_LUA = r"""
local bodies, i = {}, 0
function init(args)
  for _, path in ipairs(args) do
    local f = assert(io.open(path, "rb")); table.insert(bodies, f:read("*a")); f:close()
  end
end
function request()
  i = i % #bodies + 1
  return wrk.format("POST", "/v1/score", {["Content-Type"] = "application/json"}, bodies[i])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, '
    .. '"p50_us": %.1f, "p99_us": %.1f, "mean_us": %.1f, "max_us": %.1f}\n', summary.requests,
    summary.duration, e.status, e.connect + e.read + e.write + e.timeout, latency:percentile(50),
    latency:percentile(99), latency.mean, latency.max))
end
"""


# ----------------------------------------------------------------------------- requests


def make_request(n: int, seed: int, events_per_customer: int = 60) -> dict:
    """n customers with ~60 events each over the last year (simulator-like mix of types, purchases with amounts)."""
    rng = np.random.default_rng(seed)
    customers = []
    for i in range(n):
        k = int(rng.poisson(events_per_customer))
        ages = np.sort(rng.uniform(0, 365 * 86400, size=k))[::-1].astype(np.int64)
        types = rng.choice(len(EVENT_TYPES), size=k, p=[.35, .3, .1, .08, .1, .03, .04])
        evs = []
        for a, t in zip(ages, types):
            e = {"type": EVENT_TYPES[t], "ts": str(AS_OF - np.timedelta64(int(a), "s")) + "Z"}
            if EVENT_TYPES[t] == "purchase":
                e["amount"] = round(float(rng.lognormal(3.5, 0.6)), 2)
            evs.append(e)
        customers.append({"customer_id": f"c{seed}-{i}", "events": evs})
    return {"as_of": str(AS_OF) + "Z", "customers": customers}


# ----------------------------------------------------------------------------- bundle


def synth_bundle(out: Path) -> Path:
    """A bundle with the default GRU (random weights) and a feature spec fitted on synthetic customers."""
    import pandas as pd
    import torch

    from sellerlift.bundle import write_bundle
    from sellerlift.export import export_sequence_onnx
    from sellerlift.features import AGGREGATES, EVENT_NUMERIC, FeatureSpec, build_features
    from sellerlift.models.networks import GRUEncoder, SequenceNet

    torch.manual_seed(0)
    net = SequenceNet(GRUEncoder(64, 64), d_model=64, head_hidden=64).eval()
    out.mkdir(parents=True, exist_ok=True)
    export_sequence_onnx(net, out / "sequence.onnx", len(EVENT_NUMERIC), len(AGGREGATES))
    rows = [(i, pd.Timestamp(e["ts"]).tz_localize(None), e["type"], e.get("amount", 0.0))
            for i, c in enumerate(make_request(200, 99)["customers"]) for e in c["events"]]
    events = pd.DataFrame(rows, columns=["customer_id", "ts", "event_type", "amount"])
    spec = FeatureSpec(max_len=64)
    spec.fit(build_features(events, pd.Timestamp(str(AS_OF)), spec))
    write_bundle(out, {"sequence": out / "sequence.onnx"}, spec, {"note": 0.0}, {"run_id": "bench-synthetic"})
    return out


def pick_bundle(arg: str | None, tmp: Path) -> tuple[Path, str]:
    if arg:
        return Path(arg), "given"
    newest = newest_bundle("gru") or newest_bundle()  # the default model first
    if newest is not None:
        copy = tmp / "bundle"  # a private copy: another run may rewrite bundles/ meanwhile
        shutil.copytree(newest, copy)
        return copy, f"newest under bundles/ ({newest.name})"
    return synth_bundle(tmp / "bundle"), "synthetic (default GRU, random weights)"


# ----------------------------------------------------------------------------- load generators


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_wrk(url: str, body_files: list[Path], connections: int, duration: float, script: Path) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "30s", "-s", str(script),
           url, "--", *map(str, body_files)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = json.loads(line[len("WRKJSON "):])
    return {"requests": r["requests"], "errors": r["non_2xx"] + r["socket_errors"], "p50_ms": r["p50_us"] / 1e3,
            "p99_ms": r["p99_us"] / 1e3, "throughput_rps": r["requests"] / (r["duration_us"] / 1e6)}


def run_python(url: str, bodies: list[bytes], connections: int, duration: float) -> dict:
    """A bounded closed loop: ``connections`` tasks, each one request at a time, for ``duration`` seconds."""
    import httpx

    async def main():
        lat, errors = [], [0]
        deadline = time.perf_counter() + duration
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            async def worker(k):
                i = k
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    r = await client.post("/v1/score", content=bodies[i % len(bodies)],
                                          headers={"content-type": "application/json"})
                    lat.append(time.perf_counter() - t0)
                    errors[0] += r.status_code != 200
                    i += 1

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(connections)))
            took = time.perf_counter() - t0
        return lat, errors[0], took

    lat, errors, took = asyncio.run(main())
    ms = np.asarray(lat) * 1e3
    return {"requests": len(lat), "errors": errors, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "throughput_rps": len(lat) / took}


# ----------------------------------------------------------------------------- server


class Server:
    def __init__(self, root: Path, src: Path, bundle: Path, workers: int, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SELLERLIFT_")}
        env["PYTHONPATH"] = os.pathsep.join([str(root), str(src)])
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "serve", "--bundle", str(bundle), "--port",
                                      str(self.port), "--workers", str(workers), "--log-level", "warning"],
                                     cwd=root, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError(f"server not ready in 180 s:\n{log.read_text()[-3000:]}")

    def warm(self, bodies: list[bytes], workers: int) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=60) as c:
            for i in range(4 * workers):
                r = c.post("/v1/score", content=bodies[i % len(bodies)], headers={"content-type": "application/json"})
                assert r.status_code == 200, r.text[:500]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# ----------------------------------------------------------------------------- in process


class InProcess:
    """The same requests' arrays -> features -> sequence.onnx -> segments, in this process."""

    def __init__(self, bundle: Path):
        from serve.app import build_batch
        from serve.bundle import Model
        from serve.config import Settings
        from serve.schemas import ScoreRequest

        self.model = Model.load(bundle, ort_threads=Settings().ort_intra_op_threads)
        self._build = lambda req: build_batch(ScoreRequest.model_validate(req), Settings(bundle=str(bundle)))

    def prepare(self, reqs: list[dict]) -> list:
        return [self._build(r) for r in reqs]

    def time(self, batches: list, repeats: int) -> list[float]:
        m, out = self.model, []
        for i in range(repeats):
            t0 = time.perf_counter()
            feats = m.features(batches[i % len(batches)])
            m.run_sequence(feats)
            m.assign_segments(feats)
            out.append(time.perf_counter() - t0)
        return out


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="seconds, in-Python load loop (the test suite's mode)")
    ap.add_argument("--bundle", help="bundle dir (default: newest under bundles/, else a synthetic one)")
    ap.add_argument("--sizes", type=int, nargs="+", help="customers per request (default 1 100)")
    ap.add_argument("--workers", type=int, nargs="+", help="uvicorn worker counts (default 1 2)")
    ap.add_argument("--duration", type=float, help="seconds per load run (default 10; --quick 1)")
    ap.add_argument("--connections", type=int, default=8, help="concurrent connections for throughput (default 8)")
    ap.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto",
                    help="auto: wrk when installed (never with --quick), else the in-Python loop")
    ap.add_argument("--server-root", default=str(REPO), help="directory holding the serve package to benchmark")
    ap.add_argument("--label", default="current", help="a name for this run, kept in the JSON")
    ap.add_argument("--out", help="output JSON (default benchmarks/results/serve[.quick].json)")
    args = ap.parse_args()
    root = Path(args.server_root).resolve()
    src = root / "src" if (root / "src" / "sellerlift").is_dir() else REPO / "src"
    sys.path[:0] = [str(root), str(src)]
    sizes = args.sizes or [1, 100]
    worker_counts = args.workers or [1, 2]
    duration = args.duration or (1.0 if args.quick else 10.0)
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if (shutil.which("wrk") and not args.quick) else "python"
    if generator == "wrk" and not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk); use --generator python")
    gen_name = "wrk" if generator == "wrk" else "python-httpx"
    repeats = 20 if args.quick else 60

    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    rows = []
    try:
        t0 = time.perf_counter()
        bundle, bundle_source = pick_bundle(args.bundle, tmp)
        print(f"bundle: {bundle_source} ({time.perf_counter() - t0:.1f} s)", flush=True)
        reqs = {n: [make_request(n, seed) for seed in range(N_BODIES)] for n in sizes}
        bodies = {n: [json.dumps(r).encode() for r in reqs[n]] for n in sizes}
        files = {}
        for n in sizes:
            files[n] = []
            for k, b in enumerate(bodies[n]):
                p = tmp / f"body_{n}_{k}.json"
                p.write_bytes(b)
                files[n].append(p)
        script = tmp / "post.lua"
        script.write_text(WRK_LUA)
        inproc = InProcess(bundle)
        batches = {n: inproc.prepare(reqs[n]) for n in sizes}
        for n in sizes:
            inproc.time(batches[n], 5)  # warm up
        for workers in worker_counts:
            server = Server(root, src, bundle, workers, tmp / f"server_{workers}.log")
            try:
                for n in sizes:
                    server.warm(bodies[n], workers)
                    t_in = inproc.time(batches[n], repeats // 2)
                    if generator == "wrk":
                        lat = run_wrk(server.url, files[n], 1, duration, script)
                    else:
                        lat = run_python(server.url, bodies[n], 1, duration)
                    t_in += inproc.time(batches[n], repeats - repeats // 2)
                    if generator == "wrk":
                        thr = run_wrk(server.url, files[n], args.connections, duration, script)
                    else:
                        thr = run_python(server.url, bodies[n], args.connections, duration)
                    if lat["errors"] or thr["errors"]:
                        raise RuntimeError(f"non-200 responses under load: {lat['errors']} + {thr['errors']}\n"
                                           f"{server.log.read_text()[-2000:]}")
                    ms = np.asarray(t_in) * 1e3
                    row = {"customers_per_request": n, "workers": workers, "generator": gen_name,
                           "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"],
                           "throughput_rps": thr["throughput_rps"],
                           "inprocess_p50_ms": float(np.percentile(ms, 50)),
                           "inprocess_p99_ms": float(np.percentile(ms, 99)),
                           "ratio_server_over_inprocess": lat["p50_ms"] / float(np.percentile(ms, 50)),
                           "saturated_p50_ms": thr["p50_ms"], "saturated_p99_ms": thr["p99_ms"],
                           "connections": args.connections,
                           "customers_per_s": thr["throughput_rps"] * n,
                           "requests_latency_run": lat["requests"], "requests_throughput_run": thr["requests"],
                           "events_per_request": int(np.mean([sum(len(c["events"]) for c in r["customers"])
                                                              for r in reqs[n]])),
                           "request_bytes": int(np.mean([len(b) for b in bodies[n]]))}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    payload = {"label": args.label, "bundle": bundle_source, "server_root": str(root),
               "duration_s": duration, "rows": rows,
               "settings": {"inference_threads": 2, "ort_intra_op_threads": 1},
               "definitions": {"p50_ms/p99_ms": "one connection, one request at a time (latency)",
                               "throughput_rps": f"{args.connections} concurrent keep-alive connections",
                               "inprocess": "features + sequence.onnx + segments on the same requests' arrays, "
                                            "timed right before and after the latency run"}}
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"benchmark": "serve", "quick": args.quick, "machine": machine_info(), **payload},
                                   indent=2))
    else:
        path = write_result("serve", payload, args.quick)
    print(markdown_table(rows, ["customers_per_request", "workers", "generator", "p50_ms", "p99_ms",
                                "throughput_rps", "inprocess_p50_ms", "ratio_server_over_inprocess"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
