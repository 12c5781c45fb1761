"""The inference server under a real load generator vs the same work in process; validation; a bad body.

    python benchmarks/bench_serve.py                 # wrk, 1 and 100 customers/request, 1 and 2 workers
    python benchmarks/bench_serve.py --quick         # seconds; in-Python load loop (no wrk needed)
    python benchmarks/bench_serve.py --bundle bundles/<run id> --duration 20

Three parts, each in the JSON:

* **rows** (latency and throughput): for each number of uvicorn workers it starts ``python -m serve``
  on a free 127.0.0.1 port (a real process) and, for each request size, drives ``POST /v1/score`` with
  one connection, one request at a time (p50 / p99) and ``--connections`` concurrent keep-alive
  connections (requests per second), with ``wrk`` (a Lua script rotates 8 request bodies) or, without
  wrk or with --quick, a bounded asyncio + httpx loop. Every response must be 200. In process: the
  same requests' arrays through the runtime's features + sequence model + segments. Latency runs in
  ``--rounds`` interleaved rounds (in process, server, in process), so ``server p50 / in-process p50``
  is taken side by side even while the load of a shared machine changes: medians over the rounds.
* **validation** (the two candidates for the one validation path, same bodies, in this process):
  pydantic v2 ``model_validate_json`` / ``TypeAdapter.validate_json`` on the raw bytes (the request
  types of benchmarks/pydantic_contract.py) vs msgspec alone (serve/parsing.py: types and limits; and
  the whole parse, timestamps and arrays included), on 1 and 100 customers with their events and on
  14 MB invalid bodies. Skipped for an older ``--server-root``.
* **bad_body**: a 1-worker server gets 14 MB invalid bodies (the 700,000-customer reproducer of issue
  12 and 1,000 customers x 500 bad timestamps) while another connection polls ``GET /healthz`` every
  2 ms: the longest /healthz answer, how long each rejection took, and the server's RSS before, after
  and at its peak.

The bundle: --bundle, else the newest complete one under bundles/ (a GRU one first), else a
bundle made here in seconds (the default GRU, random weights, exported to ONNX;
a fitted feature spec): latency does not depend on the weights.
``--server-root DIR`` benchmarks the ``serve`` package found under DIR, and the
``sellerlift`` package under DIR/src when there is one (an older checkout), in
the server and in process: before/after numbers (benchmarks/before_after.py).
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
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import machine_info, markdown_table, newest_bundle, write_result

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
        types = rng.choice(len(EVENT_TYPES), size=k, p=[0.35, 0.3, 0.1, 0.08, 0.1, 0.03, 0.04])
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

    from sellerlift.export import export_sequence_onnx
    from sellerlift.features import AGGREGATES, EVENT_NUMERIC, FeatureSpec, build_features
    from sellerlift.models.networks import GRUEncoder, SequenceNet
    from sellerlift.runtime import write_bundle

    torch.manual_seed(0)
    net = SequenceNet(GRUEncoder(64, 64), d_model=64, head_hidden=64).eval()
    out.mkdir(parents=True, exist_ok=True)
    export_sequence_onnx(net, out / "sequence.onnx", len(EVENT_NUMERIC), len(AGGREGATES))
    rows = [
        (i, pd.Timestamp(e["ts"]).tz_localize(None), e["type"], e.get("amount", 0.0))
        for i, c in enumerate(make_request(200, 99)["customers"])
        for e in c["events"]
    ]
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
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
        "--",
        *map(str, body_files),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = json.loads(line[len("WRKJSON ") :])
    return {
        "requests": r["requests"],
        "errors": r["non_2xx"] + r["socket_errors"],
        "p50_ms": r["p50_us"] / 1e3,
        "p99_ms": r["p99_us"] / 1e3,
        "throughput_rps": r["requests"] / (r["duration_us"] / 1e6),
    }


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
                    r = await client.post(
                        "/v1/score", content=bodies[i % len(bodies)], headers={"content-type": "application/json"}
                    )
                    lat.append(time.perf_counter() - t0)
                    errors[0] += r.status_code != 200
                    i += 1

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(connections)))
            took = time.perf_counter() - t0
        return lat, errors[0], took

    lat, errors, took = asyncio.run(main())
    ms = np.asarray(lat) * 1e3
    return {
        "requests": len(lat),
        "errors": errors,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "throughput_rps": len(lat) / took,
    }


# ----------------------------------------------------------------------------- server


class Server:
    def __init__(self, root: Path, src: Path, bundle: Path, workers: int, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SELLERLIFT_")}
        env["PYTHONPATH"] = os.pathsep.join([str(root), str(src)])
        self.log = log
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serve",
                "--bundle",
                str(bundle),
                "--data",  # the bundle's own data set: the benchmark serves exactly the bundle it is given
                str(json.loads((Path(bundle) / "manifest.json").read_text()).get("data") or ""),
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
            ],
            cwd=root,
            env=env,
            stdout=open(log, "w"),  # noqa: SIM115 (the server process owns the handle)
            stderr=subprocess.STDOUT,
        )
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
    """The same requests' arrays -> features -> sequence.onnx -> segments, in this process.

    Works with this tree (the runtime) and with an older ``--server-root`` (its serve.bundle.Model).
    """

    def __init__(self, bundle: Path):
        try:
            from sellerlift.runtime import Runtime
            from serve import parsing

            rt = Runtime.load(bundle, threads=1)
            self._build = lambda req: parsing.parse(json.dumps(req).encode(), parsing.SCORE, 10**6, 10**6).batch

            def run(b):
                feats = rt.features(b)
                rt.score(feats)
                rt.assign_segments(feats)
        except ImportError:  # an older server: serve.bundle.Model, pydantic requests
            from serve.app import build_batch
            from serve.bundle import Model
            from serve.config import Settings
            from serve.schemas import ScoreRequest

            m = Model.load(bundle, ort_threads=1)
            self._build = lambda req: build_batch(ScoreRequest.model_validate(req), Settings(bundle=str(bundle)))

            def run(b):
                feats = m.features(b)
                m.run_sequence(feats)
                m.assign_segments(feats)

        self._run = run

    def prepare(self, reqs: list[dict]) -> list:
        return [self._build(r) for r in reqs]

    def time(self, batches: list, repeats: int) -> list[float]:
        out = []
        for i in range(repeats):
            t0 = time.perf_counter()
            self._run(batches[i % len(batches)])
            out.append(time.perf_counter() - t0)
        return out


# ----------------------------------------------------------------------------- validation candidates


def bad_bodies(scale: float = 1.0) -> dict[str, bytes]:
    """The 14 MB invalid bodies of issue 12 (``scale`` < 1: smaller ones, for --quick)."""
    n = int(700_000 * scale)
    repro = b'{"as_of":"2026-11-30T00:00:00Z","customers":[' + b'{"customer_id":1.5},' * n + b'{"customer_id":1.5}]}'
    ev = b",".join([b'{"type":"visit","ts":"bad"}'] * 500)
    one = b'{"customer_id":%d,"events":[' + ev + b"]}"
    bad_ts = (
        b'{"as_of":"2026-11-30T00:00:00Z","customers":['
        + b",".join(one % i for i in range(max(1, int(1000 * scale))))
        + b"]}"
    )
    return {
        f"{len(repro) / 1e6:.0f} MB invalid: {n + 1:,} customers with a float id": repro,
        f"{len(bad_ts) / 1e6:.0f} MB invalid: {int(1000 * scale) * 500:,} bad timestamps": bad_ts,
    }


def validation_comparison(bodies: dict[str, bytes], repeats: int) -> list[dict]:
    """Median seconds of each candidate on each body (every candidate must reject the invalid ones)."""
    from pydantic import TypeAdapter, ValidationError
    from pydantic_contract import ScoreRequest

    from serve import parsing
    from serve.errors import ClientError

    adapter = TypeAdapter(ScoreRequest)
    candidates = {
        "pydantic model_validate_json": ScoreRequest.model_validate_json,
        "pydantic TypeAdapter.validate_json": adapter.validate_json,
        "msgspec: types + limits": lambda b: parsing.decode(b, parsing.SCORE, 1000, 10_000),
        "msgspec: the server's whole parse (+ timestamps, arrays)": lambda b: parsing.parse(
            b, parsing.SCORE, 1000, 10_000
        ),
    }
    rows = []
    for body_name, body in bodies.items():
        big = len(body) > 1_000_000
        row = {"body": body_name, "bytes": len(body)}
        for name, fn in candidates.items():
            times, outcome = [], "ok"
            for _ in range(1 if big and name.startswith("pydantic") else (3 if big else repeats)):
                t0 = time.perf_counter()
                try:
                    fn(body)
                except ValidationError as err:
                    outcome = f"rejected ({err.error_count():,} error(s))"
                except ClientError as err:
                    outcome = f"rejected ({err.status}, {err.total:,} error(s))"
                times.append(time.perf_counter() - t0)
            row[name + " ms"] = float(np.median(times) * 1e3)
            row[name + " outcome"] = outcome
        fast = {k: v for k, v in row.items() if k.endswith(" ms")}
        row["fastest"] = min(fast, key=fast.get)[:-3]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# ----------------------------------------------------------------------------- a bad body


def rss_of(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def bad_body_run(server: Server, bodies: dict[str, bytes], repeats: int, valid: bytes) -> dict:
    """/healthz latency (polled every 2 ms on its own connection) while ``bodies`` are rejected; RSS."""
    import httpx

    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=server.url, timeout=600) as c:
        for _ in range(3):
            assert c.post("/v1/score", content=valid, headers=headers).status_code == 200
        time.sleep(0.5)
        before = rss_of(server.proc.pid)
        lat, stop = [], threading.Event()

        def poll():
            with httpx.Client(base_url=server.url, timeout=600) as h:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    h.get("/healthz")
                    lat.append(time.perf_counter() - t0)
                    time.sleep(0.002)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        time.sleep(0.2)
        rejections = []
        for name, body in bodies.items():
            for _ in range(repeats):
                t0 = time.perf_counter()
                r = c.post("/v1/score", content=body, headers=headers)
                rejections.append({"body": name, "status": r.status_code, "seconds": time.perf_counter() - t0})
                print(json.dumps(rejections[-1]), flush=True)
        time.sleep(0.2)
        stop.set()
        poller.join(60)
        time.sleep(1.0)
        after = rss_of(server.proc.pid)
    ms = np.asarray(lat) * 1e3
    return {
        "healthz_max_ms": float(ms.max()),
        "healthz_p99_ms": float(np.percentile(ms, 99)),
        "healthz_p50_ms": float(np.percentile(ms, 50)),
        "healthz_probes": len(lat),
        "rejections": rejections,
        "reject_max_s": max(r["seconds"] for r in rejections),
        "statuses": sorted({r["status"] for r in rejections}),
        "rss_before_mib": before["VmRSS"],
        "rss_after_mib": after["VmRSS"],
        "rss_peak_mib": after["VmHWM"],
        "rss_growth_mib": after["VmRSS"] - before["VmRSS"],
        "repeats": repeats,
    }


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="seconds, in-Python load loop (the test suite's mode)")
    ap.add_argument("--bundle", help="bundle dir (default: newest under bundles/, else a synthetic one)")
    ap.add_argument("--sizes", type=int, nargs="+", help="customers per request (default 1 100)")
    ap.add_argument("--workers", type=int, nargs="+", help="uvicorn worker counts (default 1 2)")
    ap.add_argument("--duration", type=float, help="seconds per load run (default 10; --quick 1)")
    ap.add_argument("--connections", type=int, default=8, help="concurrent connections for throughput (default 8)")
    ap.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk when installed (never with --quick), else the in-Python loop",
    )
    ap.add_argument("--server-root", default=str(REPO), help="directory holding the serve package to benchmark")
    ap.add_argument("--label", default="current", help="a name for this run, kept in the JSON")
    ap.add_argument("--out", help="output JSON (default benchmarks/results/serve[.quick].json)")
    ap.add_argument("--rounds", type=int, help="interleaved latency rounds (default 5; --quick 2)")
    ap.add_argument("--bad-repeats", type=int, help="times each 14 MB invalid body is sent (default 3; --quick 1)")
    ap.add_argument(
        "--skip", nargs="*", default=[], choices=["rows", "validation", "bad_body"], help="parts to leave out"
    )
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
    args.rounds = args.rounds or (2 if args.quick else 5)
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
        new_server = (root / "serve" / "parsing.py").exists()
        bad = bad_bodies(0.05 if args.quick else 1.0)
        validation = []
        if "validation" not in args.skip and new_server:
            print("validation candidates ...", flush=True)
            valid = {
                f"{n} customer(s), {sum(len(c['events']) for c in reqs[n][0]['customers']):,} events": bodies[n][0]
                for n in sizes
            }
            validation = validation_comparison({**valid, **bad}, repeats=20 if args.quick else 100)
        inproc = InProcess(bundle) if "rows" not in args.skip else None
        batches = {n: inproc.prepare(reqs[n]) for n in sizes} if inproc else {}
        for n in batches:
            inproc.time(batches[n], 5)  # warm up
        for workers in worker_counts if inproc else []:
            server = Server(root, src, bundle, workers, tmp / f"server_{workers}.log")
            try:
                for n in sizes:
                    server.warm(bodies[n], workers)
                    # Latency in interleaved rounds: in process, the server, in process again, each round a
                    # fraction of the time, so the two sides see the same load of a shared machine; the
                    # figures are the medians over the rounds (the ratio: of the per-round ratios).
                    t_in, rounds = [], []
                    for _ in range(args.rounds):
                        before = inproc.time(batches[n], max(2, repeats // (2 * args.rounds)))
                        if generator == "wrk":
                            lat = run_wrk(server.url, files[n], 1, duration / args.rounds, script)
                        else:
                            lat = run_python(server.url, bodies[n], 1, duration / args.rounds)
                        after = inproc.time(batches[n], max(2, repeats // (2 * args.rounds)))
                        t_in += before + after
                        lat["inprocess_p50_ms"] = float(np.percentile(np.asarray(before + after) * 1e3, 50))
                        rounds.append(lat)
                    lat = {
                        "p50_ms": float(np.median([r["p50_ms"] for r in rounds])),
                        "p99_ms": float(np.median([r["p99_ms"] for r in rounds])),
                        "ratio": float(np.median([r["p50_ms"] / r["inprocess_p50_ms"] for r in rounds])),
                        "requests": sum(r["requests"] for r in rounds),
                        "errors": sum(r["errors"] for r in rounds),
                    }
                    if generator == "wrk":
                        thr = run_wrk(server.url, files[n], args.connections, duration, script)
                    else:
                        thr = run_python(server.url, bodies[n], args.connections, duration)
                    if lat["errors"] or thr["errors"]:
                        raise RuntimeError(
                            f"non-200 responses under load: {lat['errors']} + {thr['errors']}\n"
                            f"{server.log.read_text()[-2000:]}"
                        )
                    ms = np.asarray(t_in) * 1e3
                    row = {
                        "customers_per_request": n,
                        "workers": workers,
                        "generator": gen_name,
                        "p50_ms": lat["p50_ms"],
                        "p99_ms": lat["p99_ms"],
                        "throughput_rps": thr["throughput_rps"],
                        "inprocess_p50_ms": float(np.percentile(ms, 50)),
                        "inprocess_p99_ms": float(np.percentile(ms, 99)),
                        "ratio_server_over_inprocess": lat["ratio"],
                        "rounds": args.rounds,
                        "saturated_p50_ms": thr["p50_ms"],
                        "saturated_p99_ms": thr["p99_ms"],
                        "connections": args.connections,
                        "customers_per_s": thr["throughput_rps"] * n,
                        "requests_latency_run": lat["requests"],
                        "requests_throughput_run": thr["requests"],
                        "events_per_request": int(
                            np.mean([sum(len(c["events"]) for c in r["customers"]) for r in reqs[n]])
                        ),
                        "request_bytes": int(np.mean([len(b) for b in bodies[n]])),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                server.stop()
        bad_body = None
        if "bad_body" not in args.skip:
            print("bad bodies ...", flush=True)
            server = Server(root, src, bundle, 1, tmp / "server_bad.log")
            try:
                bad_body = bad_body_run(server, bad, args.bad_repeats or (1 if args.quick else 3), bodies[sizes[-1]][0])
            finally:
                server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    payload = {
        "label": args.label,
        "bundle": bundle_source,
        "server_root": str(root),
        "duration_s": duration,
        "rows": rows,
        "validation": validation,
        "bad_body": bad_body,
        "settings": {"inference_threads": 2, "ort_intra_op_threads": 1},
        "definitions": {
            "p50_ms/p99_ms": "one connection, one request at a time (latency)",
            "throughput_rps": f"{args.connections} concurrent keep-alive connections",
            "inprocess": "features + sequence.onnx + segments on the same requests' arrays, "
            "timed right before and after each latency round",
            "rounds": "latency in interleaved rounds (in process, server, in process); p50/p99 "
            "and the ratio are medians over the rounds",
            "validation": "median ms per body of each candidate, in one process",
            "bad_body": "GET /healthz every 2 ms on its own connection while the 14 MB invalid "
            "bodies are rejected; RSS of the server process (VmRSS, VmHWM)",
        },
    }
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"benchmark": "serve", "quick": args.quick, "machine": machine_info(), **payload}, indent=2)
        )
    else:
        path = write_result("serve", payload, args.quick)
    print(
        markdown_table(
            rows,
            [
                "customers_per_request",
                "workers",
                "generator",
                "p50_ms",
                "p99_ms",
                "throughput_rps",
                "inprocess_p50_ms",
                "ratio_server_over_inprocess",
            ],
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
