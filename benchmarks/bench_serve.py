"""Latency of POST /v1/score: the same work in process (featurise + onnxruntime) vs the server over loopback.

    python benchmarks/bench_serve.py --bundle bundles/<run id>          # default sizes 1 and 100 customers
    python benchmarks/bench_serve.py --bundle DIR --sizes 1 10 100 --repeats 200

Starts ``python -m serve`` on a free 127.0.0.1 port (a real uvicorn process),
sends one request at a time and reports p50/p99 per batch size for
  * in_process: ``build_batch`` + ``Model.features`` + ``run_sequence`` + segments
    (what the handler does, without HTTP/JSON),
  * http: the full request over loopback (JSON encode, HTTP, validation, response);
and their ratio (the server's overhead). Writes benchmarks/results/serve.json.
Requests are synthetic but shaped like the simulator's customers (about 60
events each, a mix of types, purchases with amounts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from serve.app import build_batch  # noqa: E402
from serve.bundle import Model, newest_bundle  # noqa: E402
from serve.config import Settings  # noqa: E402
from serve.schemas import ScoreRequest  # noqa: E402
from sellerlift.schema import EVENT_TYPES  # noqa: E402

AS_OF = np.datetime64("2026-01-01T00:00:00", "s")


def make_request(n: int, seed: int, events_per_customer: int = 60) -> dict:
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


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="bundle dir (default: newest under bundles/)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 100])
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve.json"))
    args = ap.parse_args()
    bundle = Path(args.bundle) if args.bundle else newest_bundle(REPO / "bundles")
    if bundle is None:
        sys.exit("no bundle: pass --bundle DIR or run `make train`")
    import httpx

    settings = Settings(bundle=str(bundle))
    model = Model.load(bundle, ort_threads=settings.ort_intra_op_threads)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELLERLIFT_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen([sys.executable, "-m", "serve", "--bundle", str(bundle), "--port", str(port),
                             "--log-level", "warning"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    results = []
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=60) as client:
            for n in args.sizes:
                reqs = [make_request(n, seed) for seed in range(8)]
                bodies = [json.dumps(r).encode() for r in reqs]
                parsed = [ScoreRequest.model_validate(r) for r in reqs]
                for i in range(5):  # warm up both paths
                    client.post("/v1/score", content=bodies[i % 8], headers={"content-type": "application/json"})
                    model.run_sequence(model.features(build_batch(parsed[i % 8], settings)))
                t_in, t_http = [], []
                for i in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
                    t0 = time.perf_counter()
                    feats = model.features(build_batch(parsed[i % 8], settings))
                    model.run_sequence(feats)
                    model.assign_segments(feats)
                    t_in.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    r = client.post("/v1/score", content=bodies[i % 8], headers={"content-type": "application/json"})
                    t_http.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                row = {"customers": n, "events": int(np.mean([sum(len(c["events"]) for c in r["customers"])
                                                              for r in reqs])),
                       "request_bytes": int(np.mean([len(b) for b in bodies])),
                       "in_process_p50_ms": pct(t_in, 50), "in_process_p99_ms": pct(t_in, 99),
                       "http_p50_ms": pct(t_http, 50), "http_p99_ms": pct(t_http, 99)}
                row["overhead_ratio_p50"] = row["http_p50_ms"] / row["in_process_p50_ms"]
                results.append(row)
                print(json.dumps(row))
    finally:
        proc.terminate()
        proc.wait(10)
    out = {"benchmark": "serve", "bundle": str(bundle), "repeats": args.repeats, "results": results,
           "machine": {"cores": os.cpu_count(), "loadavg": os.getloadavg(), "python": platform.python_version(),
                       "platform": platform.platform()},
           "settings": {k: v for k, v in settings.public().items() if k in ("inference_threads",
                                                                              "ort_intra_op_threads")}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
