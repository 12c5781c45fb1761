"""The inference server (serve/), in process: parity, input rules, auth, reload, metrics, bundle choice.

One tiny real training run per test session builds the bundle (shared between
xdist workers through a file lock); a copy of it gets a small monotone DIPN
(torch, here in the test only) so the promotion endpoints have a model.
The real-uvicorn tests are in test_serve_process.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import sqlite3
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient

from sellerlift.runtime import BundleError, Runtime
from sellerlift.runtime.bundle import find_bundle
from serve.app import create_app
from serve.config import Settings

# The tiny run of tests/conftest.py, without MLflow and without the baselines (faster; the bundle is the same).
SERVE_OVERRIDES = ["~logger", "extras=[sellerlift.stages.segments.fit_segments_stage]"]
AS_OF = "2026-01-01T00:00:00"


# ----------------------------------------------------------------------------- the shared test bundle


class MonotoneDIPN:
    """Factory for a tiny DIPN with the bundle interface: features [B, F] -> curve [B, 7], monotone."""

    @staticmethod
    def make(n_inputs: int, levels: int = 7):
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(n_inputs, levels)

            def forward(self, features):
                z = self.lin(features)
                inc = torch.nn.functional.softplus(z[:, 1:])
                logit = torch.cat([z[:, :1] - 1.0, inc * 0.3], dim=1).cumsum(dim=1)
                return torch.sigmoid(logit)

        torch.manual_seed(0)
        return Net().eval()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _add_dipn(src: Path, dst: Path, work: Path) -> None:
    """Copy bundle ``src`` to ``dst`` and add dipn.onnx + its manifest entries (sha256 included)."""
    import torch

    from sellerlift.promotion_features import input_names

    shutil.copytree(src, dst)
    names = input_names(True)
    net = MonotoneDIPN.make(len(names))
    torch.save(net.state_dict(), work / "dipn_state.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(2, len(names)),),
            str(dst / "dipn.onnx"),
            input_names=["features"],
            output_names=["curve"],
            dynamic_axes={"features": {0: "batch"}, "curve": {0: "batch"}},
            dynamo=False,
        )
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["files"]["dipn"] = {"path": "dipn.onnx", "sha256": _sha(dst / "dipn.onnx")}
    manifest["dipn"] = {"inputs": names, "uses_sequence_outputs": True}
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _add_enduring(src: Path, dst: Path, events: pd.DataFrame, as_of: str) -> None:
    """Copy the DIPN bundle ``src`` to ``dst`` and add a small enduring.onnx (torch, exported here) and
    action_segments.json fitted on the runtime's own features of ``events``, with their manifest entries."""
    import torch

    from sellerlift import action_segments
    from sellerlift.export import export_enduring_onnx
    from sellerlift.features import build_features
    from sellerlift.models.enduring import EnduringNet
    from sellerlift.promotion_features import input_names
    from sellerlift.runtime.enduring import action_inputs

    shutil.copytree(src, dst)
    n_inputs = len(input_names(True))
    torch.manual_seed(1)
    net = EnduringNet(n_inputs, hidden=(8,), dropout=0.0).eval()
    export_enduring_onnx(net, dst / "enduring.onnx", n_inputs)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["files"]["enduring"] = {"path": "enduring.onnx", "sha256": _sha(dst / "enduring.onnx")}
    manifest["enduring"] = {
        "horizon_days": 90,
        "revenue_scale": 100.0,
        "outputs": ["conversion", "retention", "revenue", "later_revenue"],
        "uses_sequence_outputs": True,
    }
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    rt = Runtime.load(dst)
    feats = build_features(events, pd.Timestamp(as_of), rt.spec)
    scores = rt.score(feats)
    curves = rt.curves(feats, scores)
    X = action_inputs(feats, curves, rt.enduring_response(feats, scores), rt.basket(feats), rt.margin, rt.levels)
    model, _ = action_segments.fit(X, ks=range(3, 5), seed=0)
    (dst / "action_segments.json").write_text(json.dumps(model.to_json()))
    manifest["files"]["action_segments"] = {
        "path": "action_segments.json",
        "sha256": _sha(dst / "action_segments.json"),
    }
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _shared_dir(tmp_path_factory) -> Path:
    if os.environ.get("SELLERLIFT_SERVE_TEST_CACHE"):  # developers: reuse one bundle across sessions
        d = Path(os.environ["SELLERLIFT_SERVE_TEST_CACHE"])
        d.mkdir(parents=True, exist_ok=True)
        return d
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by all workers of this session
    d = base / "serve_bundle"
    d.mkdir(exist_ok=True)
    return d


def build_test_bundle(tmp_path_factory) -> dict:
    """Train once per session (~1 min), under a lock so parallel workers reuse it."""
    d = _shared_dir(tmp_path_factory)
    info_path = d / "info.json"
    with open(d / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if info_path.exists():
            info = json.loads(info_path.read_text())
            if "bundle_full" not in info or not Path(info["bundle_full"]).exists():  # a cache from before it
                info["bundle_full"] = str(d / "bundle_full")
                shutil.rmtree(info["bundle_full"], ignore_errors=True)
                _add_enduring(
                    Path(info["bundle_dipn"]), Path(info["bundle_full"]), pd.read_parquet(d / "events.parquet"), AS_OF
                )
                info_path.write_text(json.dumps(info))
            return info
        if (d / "failed.txt").exists():  # fail every dependent test fast, not with one training run each
            pytest.fail(f"building the test bundle failed earlier in this session:\n{(d / 'failed.txt').read_text()}")
        try:
            return _build(d, info_path)
        except Exception as err:
            (d / "failed.txt").write_text(f"{type(err).__name__}: {err}")
            raise


def _build(d: Path, info_path: Path) -> dict:
    from conftest import TINY, compose_config
    from hydra.utils import instantiate

    from sellerlift.pipeline import run

    (d / "run").mkdir(exist_ok=True)
    cfg = compose_config([*TINY, *SERVE_OVERRIDES], root=d / "run")
    result = run(cfg)
    tables = instantiate(cfg.data.source).load()
    ev = tables.events.loc[tables.events["ts"] < tables.cutoff, ["customer_id", "ts", "event_type", "amount"]]
    ev.reset_index(drop=True).to_parquet(d / "events.parquet")
    ckpts = sorted(p for p in (d / "run").rglob("checkpoints/*.ckpt") if p.name != "last.ckpt")
    _add_dipn(result.bundle_dir, d / "bundle_dipn", d)
    _add_enduring(d / "bundle_dipn", d / "bundle_full", ev.reset_index(drop=True), AS_OF)
    info = {
        "bundle": str(result.bundle_dir),
        "bundle_dipn": str(d / "bundle_dipn"),
        "root": str(d),
        "bundle_full": str(d / "bundle_full"),
        "ckpt": str(ckpts[-1]) if len(ckpts) == 1 else None,
        "cutoff": str(tables.cutoff),
        "dipn_state": str(d / "dipn_state.pt"),
        "overrides": [*TINY, *SERVE_OVERRIDES],
    }
    info_path.write_text(json.dumps(info))
    return info


@pytest.fixture(scope="session")
def bundle_info(tmp_path_factory) -> dict:
    return build_test_bundle(tmp_path_factory)


@pytest.fixture(scope="session")
def events(bundle_info) -> pd.DataFrame:
    return pd.read_parquet(Path(bundle_info["bundle"]).parents[2] / "events.parquet")


def bundle_root(bundle: str | Path) -> Path:
    """The directory holding every bundle of the test session (the servers' bundles_dir: reloads stay inside)."""
    for p in Path(bundle).resolve().parents:
        if (p / "info.json").exists() or (p / "lock").exists():
            return p
    return Path(bundle).resolve().parent  # a copy elsewhere: its own directory


def scratch(bundle: str | Path) -> Path:
    """A fresh directory inside the bundle root (for tampered copies a reload may reach); removed by the caller."""
    import uuid

    d = bundle_root(bundle) / "scratch" / uuid.uuid4().hex
    d.mkdir(parents=True)
    return d


@pytest.fixture()
def inside_root(bundle_info):
    d = scratch(bundle_info["bundle"])
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def model(bundle_info) -> Runtime:
    return Runtime.load(bundle_info["bundle"])


@pytest.fixture(scope="session")
def dipn_model(bundle_info) -> Runtime:
    return Runtime.load(bundle_info["bundle_dipn"])


def settings(bundle: str, **kw) -> Settings:
    base = dict(
        bundle=str(bundle),
        bundles_dir=str(bundle_root(bundle)),
        max_customers=1000,
        max_events_per_customer=10_000,
        max_body_bytes=16 * 1024 * 1024,
        api_token=None,
        admin_token=None,
    )
    base.update(kw)
    return Settings(**base)


@pytest.fixture()
def client(bundle_info, model):
    return TestClient(create_app(settings(bundle_info["bundle"]), model=model))


@pytest.fixture()
def dipn_client(bundle_info, dipn_model):
    return TestClient(create_app(settings(bundle_info["bundle_dipn"]), model=dipn_model))


def request_for(events: pd.DataFrame, ids, as_of: str = AS_OF, **extra) -> dict:
    """The JSON body for customers ``ids`` (in this order) with their events (ts as ISO strings, to the us)."""
    sub = events.loc[events["customer_id"].isin(ids)]
    ts = sub["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").to_numpy()
    groups = {cid: [] for cid in ids}
    for cid, t, typ, amt in zip(
        sub["customer_id"].to_numpy(), ts, sub["event_type"].astype(str).to_numpy(), sub["amount"].to_numpy()
    ):
        groups[cid].append({"type": typ, "ts": t, "amount": float(amt)})
    return {"as_of": as_of, "customers": [{"customer_id": int(c), "events": groups[c], **extra} for c in ids]}


def reference_features(model: Runtime, events: pd.DataFrame, ids, as_of=AS_OF):
    """The pipeline's own path: build_features (+ spec.transform) on the same customers, same order."""
    from sellerlift.features import build_features

    sub = events.loc[events["customer_id"].isin(ids)]
    return build_features(sub, pd.Timestamp(as_of), model.spec, customers=np.asarray(ids))


def reference_scores(model: Runtime, bundle: str, feats) -> dict:
    """sequence.onnx on the whole padded batch (its own session); customers without history: the bundle's prior."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(Path(bundle) / "sequence.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out = dict(
        zip(
            names,
            sess.run(
                names,
                {
                    "event_type": feats.event_type,
                    "numeric": feats.numeric,
                    "length": feats.length,
                    "aggregates": feats.aggregates,
                },
            ),
        )
    )
    cold = feats.length == 0
    for name, p in (model.prior or {}).items():
        out[name] = out[name].copy()
        out[name][cold] = np.float32(p)
    return out


# ----------------------------------------------------------------------------- parity


def test_score_equals_in_process_pipeline_to_the_last_digit(client, model, bundle_info, events):
    ids = np.sort(events["customer_id"].unique())
    cold = int(ids.max()) + 1  # plus one cold-start customer
    body = request_for(events, [*ids.tolist(), cold])
    r = client.post("/v1/score", json=body)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == len(ids) + 1 and [x["customer_id"] for x in res] == [*ids.tolist(), cold]

    feats = reference_features(model, events, [*ids.tolist(), cold])
    ref = reference_scores(model, bundle_info["bundle"], feats)
    got_intent = np.array([x["intent_7d"] for x in res])
    got_churn = np.array([x["churn_90d"] for x in res])
    assert np.array_equal(got_intent, ref["intent_7d"].astype(np.float64))  # exact, not approx
    assert np.array_equal(got_churn, ref["churn_90d"].astype(np.float64))
    names = model.segments.assign_names(feats.rfm())
    assert [x["segment"] for x in res] == names.tolist()
    assert res[-1]["cold_start"] and res[-1]["n_events"] == 0 and res[-1]["prior"]
    assert not res[0]["cold_start"] and not res[0]["prior"]
    n_events = events.groupby("customer_id").size()
    assert [x["n_events"] for x in res[:-1]] == n_events.loc[ids].tolist()


def test_score_matches_pytorch_within_1e5(client, model, bundle_info, events):
    if not bundle_info["ckpt"]:
        pytest.skip("no single best checkpoint to load")
    import torch
    from conftest import compose_config
    from hydra.utils import instantiate

    from sellerlift.models.networks import ExportWrapper

    cfg = compose_config(bundle_info["overrides"])
    net = instantiate(cfg.model.module.net)  # the network alone: no Lightning import needed
    state = torch.load(bundle_info["ckpt"], weights_only=True)["state_dict"]
    net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    ids = np.sort(events["customer_id"].unique())[:300]
    res = client.post("/v1/score", json=request_for(events, ids.tolist())).json()["results"]
    feats = reference_features(model, events, ids)
    with torch.no_grad():
        outs = ExportWrapper(net.eval())(
            *(torch.from_numpy(a) for a in (feats.event_type, feats.numeric, feats.length, feats.aggregates))
        )
    intent, churn = outs[0], outs[1]
    assert np.abs(np.array([x["intent_7d"] for x in res]) - intent.numpy()).max() <= 1e-5
    assert np.abs(np.array([x["churn_90d"] for x in res]) - churn.numpy()).max() <= 1e-5
    if len(outs) == 5:  # the value head: served spend and purchase days equal PyTorch's (relative 1e-5)
        for name, ref in (("value_90d", outs[2]), ("purchases_90d", outs[3])):
            got, ref = np.array([x[name] for x in res]), ref.numpy()
            assert (np.abs(got - ref) / np.maximum(1.0, np.abs(ref))).max() <= 1e-5, name


def test_curves_equal_in_process_and_pytorch(dipn_client, dipn_model, bundle_info, events):
    import torch

    from sellerlift.promotion_features import dipn_inputs, input_names

    ids = np.sort(events["customer_id"].unique())[:200].tolist()
    r = dipn_client.post("/v1/promotions/curves", json=request_for(events, ids))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["discount_levels"] == [0, 5, 10, 15, 20, 25, 30]
    conv = np.array([x["conversion"] for x in body["results"]])
    uplift = np.array([x["uplift"] for x in body["results"]])
    assert conv.shape == (len(ids), 7) and (np.diff(conv, axis=1) >= 0).all()
    assert np.array_equal(uplift, conv - conv[:, :1]) and (uplift[:, 0] == 0).all()

    feats = reference_features(dipn_model, events, ids)
    x = dipn_inputs(feats, reference_scores(dipn_model, bundle_info["bundle_dipn"], feats))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(Path(bundle_info["bundle_dipn"]) / "dipn.onnx"), providers=["CPUExecutionProvider"])
    assert np.array_equal(conv, sess.run(["curve"], {"features": x})[0].astype(np.float64))
    net = MonotoneDIPN.make(len(input_names(True)))
    net.load_state_dict(torch.load(bundle_info["dipn_state"], weights_only=True))
    with torch.no_grad():
        assert np.abs(conv - net(torch.from_numpy(x)).numpy()).max() <= 1e-5


def test_per_customer_as_of_is_grouped(client, model, bundle_info, events):
    ids = np.sort(events["customer_id"].unique())[:40].tolist()
    early = "2025-09-01T00:00:00"
    body = request_for(events.loc[events["ts"] < pd.Timestamp(early)], ids[:20], as_of=early)
    body["customers"] = [{**c, "as_of": early} for c in body["customers"]]
    late = request_for(events, ids[20:])
    body["customers"] += late["customers"]
    body["as_of"] = AS_OF
    res = client.post("/v1/score", json=body).json()["results"]
    assert [x["as_of"] for x in res] == ["2025-09-01T00:00:00Z"] * 20 + ["2026-01-01T00:00:00Z"] * 20
    for part, as_of in ((slice(0, 20), early), (slice(20, 40), AS_OF)):
        feats = reference_features(model, events.loc[events["ts"] < pd.Timestamp(as_of)], ids[part], as_of)
        ref = reference_scores(model, bundle_info["bundle"], feats)
        np.testing.assert_allclose([x["intent_7d"] for x in res[part]], ref["intent_7d"], atol=1e-6, rtol=0)


def test_empty_histories_and_empty_batch(client):
    r = client.post(
        "/v1/score", json={"as_of": AS_OF, "customers": [{"customer_id": "new", "events": []}, {"customer_id": 2}]}
    )
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert all(x["cold_start"] and 0 <= x["intent_7d"] <= 1 for x in res)
    assert res[0]["intent_7d"] == res[1]["intent_7d"]
    r = client.post("/v1/score", json={"as_of": AS_OF, "customers": []})
    assert r.status_code == 200 and r.json()["results"] == []


def test_timezones_are_converted_to_utc(client):
    def score(ts, as_of):
        body = {
            "as_of": as_of,
            "customers": [{"customer_id": 1, "events": [{"type": "purchase", "ts": ts, "amount": 20.0}]}],
        }
        r = client.post("/v1/score", json=body)
        assert r.status_code == 200, r.text
        return r.json()["results"][0]

    a = score("2025-12-01T12:00:00Z", "2026-01-01T00:00:00Z")
    b = score("2025-12-01T14:00:00+02:00", "2026-01-01T02:00:00+02:00")
    c = score("2025-12-01T12:00:00", "2026-01-01T00:00:00")
    assert a["intent_7d"] == b["intent_7d"] == c["intent_7d"] and a["as_of"] == b["as_of"] == c["as_of"]


# ----------------------------------------------------------------------------- input rules

VALID = {
    "as_of": AS_OF,
    "customers": [
        {
            "customer_id": "c1",
            "events": [
                {"type": "visit", "ts": "2025-12-01T10:00:00Z"},
                {"type": "purchase", "ts": "2025-12-02T10:00:00Z", "amount": 12.5},
            ],
        }
    ],
}


def _mutate(path, value):
    body = json.loads(json.dumps(VALID))
    obj = body
    for p in path[:-1]:
        obj = obj[p]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return body


RULES = [
    (
        "unknown event type",
        _mutate(["customers", 0, "events", 1, "type"], "refund"),
        422,
        "customers[0].events[1].type",
    ),
    ("negative amount", _mutate(["customers", 0, "events", 1, "amount"], -1.0), 422, "customers[0].events[1].amount"),
    (
        "amount as string",
        _mutate(["customers", 0, "events", 1, "amount"], "12.5"),
        422,
        "customers[0].events[1].amount",
    ),
    ("amount absurd", _mutate(["customers", 0, "events", 1, "amount"], 1e300), 422, "customers[0].events[1].amount"),
    ("amount as bool", _mutate(["customers", 0, "events", 1, "amount"], True), 422, "customers[0].events[1].amount"),
    ("unparseable ts", _mutate(["customers", 0, "events", 0, "ts"], "yesterday"), 422, "customers[0].events[0].ts"),
    (
        "impossible date",
        _mutate(["customers", 0, "events", 0, "ts"], "2025-13-45T10:00:00"),
        422,
        "customers[0].events[0].ts",
    ),
    (
        "ts out of range",
        _mutate(["customers", 0, "events", 0, "ts"], "1969-12-31T23:59:59Z"),
        422,
        "customers[0].events[0].ts",
    ),
    (
        "ts after as_of",
        _mutate(["customers", 0, "events", 1, "ts"], "2026-01-01T00:00:01Z"),
        422,
        "customers[0].events[1].ts",
    ),
    ("ts as number", _mutate(["customers", 0, "events", 0, "ts"], 1735725600), 422, "customers[0].events[0].ts"),
    ("missing ts", _mutate(["customers", 0, "events", 0, "ts"], KeyError), 422, "customers[0].events[0].ts"),
    ("as_of missing", _mutate(["as_of"], KeyError), 422, "customers[0].as_of"),
    ("as_of unparseable", _mutate(["as_of"], "2026-02-30"), 422, "as_of"),
    ("customer as_of unparseable", _mutate(["customers", 0, "as_of"], "soon"), 422, "customers[0].as_of"),
    ("customer_id float", _mutate(["customers", 0, "customer_id"], 1.5), 422, "customers[0].customer_id"),
    ("customer_id empty", _mutate(["customers", 0, "customer_id"], ""), 422, "customers[0].customer_id"),
    ("unknown field", _mutate(["customers", 0, "colour"], "red"), 422, "customers[0].colour"),
    ("events not a list", _mutate(["customers", 0, "events"], {"type": "visit"}), 422, "customers[0].events"),
    ("customers missing", _mutate(["customers"], KeyError), 422, "customers"),
    ("customers not a list", _mutate(["customers"], "c1"), 422, "customers"),
]


@pytest.mark.parametrize("name,body,status,field", RULES, ids=[r[0] for r in RULES])
def test_input_rules_name_the_field(client, name, body, status, field):
    r = client.post("/v1/score", json=body)
    assert r.status_code == status, r.text
    fields = [d["field"] for d in r.json()["detail"]]
    assert field in fields, fields


def test_malformed_json_and_wrong_content(client):
    r = client.post(
        "/v1/score", content=b'{"as_of": "2026-01-01", "customers": [}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body"
    assert "invalid JSON" in r.json()["detail"][0]["msg"]
    r = client.post("/v1/score", json=[VALID])
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body"


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_amount(client, token):
    raw = json.dumps(VALID).replace('"amount": 12.5', f'"amount": {token}')
    r = client.post("/v1/score", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == "customers[0].events[1].amount"


def test_limits_from_config(bundle_info, model):
    c = TestClient(
        create_app(
            settings(bundle_info["bundle"], max_customers=2, max_events_per_customer=3, max_body_bytes=4000),
            model=model,
        )
    )
    three = {"as_of": AS_OF, "customers": [{"customer_id": i} for i in range(3)]}
    r = c.post("/v1/score", json=three)
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "customers"
    ev = {"type": "visit", "ts": "2025-12-01T10:00:00Z"}
    r = c.post(
        "/v1/score",
        json={
            "as_of": AS_OF,
            "customers": [{"customer_id": 1, "events": [ev] * 3}, {"customer_id": 2, "events": [ev] * 4}],
        },
    )
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "customers[1].events"
    r = c.post("/v1/score", json={"as_of": AS_OF, "customers": [{"customer_id": "x" * 5000}]})
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "body"

    def chunks():  # no Content-Length: the limit holds for a streamed body too
        yield b'{"as_of": "2026-01-01", "customers": ['
        for _ in range(200):
            yield b'{"customer_id": 1},'
        yield b'{"customer_id": 1}]}'

    r = c.post("/v1/score", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


BAD_BODIES = [
    b"",
    b"{",
    b"null",
    b"[]",
    b"42",
    b'"text"',
    b"{}",
    b'{"customers": null}',
    b"[" * 5000 + b"]" * 5000,
    b'{"as_of": "2026-01-01", "customers": [{"customer_id": 1, "events": [null]}]}',
    b'{"as_of": "2026-01-01", "customers": [{"customer_id": 99999999999999999999999999}]}',
    b'{"as_of": "2026-01-01", "customers": [{"customer_id": 1, "events": [{"type": "visit", "ts": '
    b'"2025-01-01T10:00:00+99:99"}]}]}',
    b'{"as_of": "2100-01-01", "customers": [{"customer_id": 1}]}',
    b'{"as_of": "2026-01-01", "customers": [{"customer_id": 1, "events": [{"type": "visit", "ts": '
    b'"2025-01-01T10:00:00", "amount": 1e308}]}]}',
    '{"as_of": "2026-01-01", "customers": [{"customer_id": "\u00e9\u6f22\ud83d\ude00"}]}'.encode(
        "utf-8", "surrogatepass"
    ),
    b"\xff\xfe\x00garbage",
]


@pytest.mark.parametrize("i", range(len(BAD_BODIES)))
@pytest.mark.parametrize("path", ["/v1/score", "/v1/promotions/curves", "/v1/promotions/allocate"])
def test_no_5xx_for_client_input(dipn_client, i, path):
    for ctype in ("application/json", "text/plain"):
        r = dipn_client.post(path, content=BAD_BODIES[i], headers={"content-type": ctype})
        assert r.status_code < 500, (r.status_code, r.text)


# ----------------------------------------------------------------------------- promotions


def test_curves_and_allocate_need_a_promotion_model(client):
    for path in ("/v1/promotions/curves", "/v1/promotions/allocate"):
        r = client.post(path, json={**VALID, "budget": 1.0})
        assert r.status_code == 503 and r.json()["detail"] == "no promotion model in this bundle"


def test_allocate_respects_budgets(dipn_client, events):
    ids = np.sort(events["customer_id"].unique())[:120].tolist()
    body = request_for(events, ids)
    rng = np.random.default_rng(0)
    for k, c in enumerate(body["customers"]):
        c.update(value=float(rng.uniform(20, 80)), margin=0.4, seller_id=["s1", "s2", 3][k % 3])
    unlimited = dipn_client.post("/v1/promotions/allocate", json={**body, "budget": 1e9})
    assert unlimited.status_code == 200, unlimited.text
    full_spend = unlimited.json()["totals"]["spend"]
    assert full_spend > 0
    budget = full_spend / 3
    r = dipn_client.post(
        "/v1/promotions/allocate",
        json={**body, "budget": budget, "seller_budgets": {"s1": budget / 2, "s2": 1e9, "3": 0.0}},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    t = out["totals"]
    assert 0 < t["spend"] <= budget * (1 + 1e-9)
    assert t["seller_spend"]["s1"] <= budget / 2 * (1 + 1e-9) and t["seller_spend"]["3"] == 0
    assert t["incremental_profit"] >= 0 and t["roi"] == pytest.approx(t["incremental_profit"] / t["spend"])
    res = out["results"]
    assert {x["level_pct"] for x in res} <= {0, 5, 10, 15, 20, 25, 30}
    assert sum(x["expected_spend"] for x in res) == pytest.approx(t["spend"])
    assert sum(x["expected_incremental_profit"] for x in res) == pytest.approx(t["incremental_profit"])
    assert all(x["level_pct"] == 0 for x in res if x["seller_id"] == 3)
    zero = dipn_client.post("/v1/promotions/allocate", json={**body, "budget": 0.0}).json()
    assert zero["totals"]["spend"] == 0 and all(x["level_pct"] == 0 for x in zero["results"])


ALLOC = {
    "as_of": AS_OF,
    "budget": 10.0,
    "customers": [
        {"customer_id": "a", "value": 50.0, "margin": 0.4, "seller_id": "s1", "events": []},
        {"customer_id": "b", "value": 30.0, "margin": 0.3, "seller_id": "s2", "events": []},
    ],
}
ALLOC_RULES = [
    ("negative budget", {"budget": -1.0}, "budget"),
    ("infinite budget", {"budget": math.inf}, "budget"),
    ("no budget at all", {"budget": None}, "budget"),
    ("margin zero", {"customers": [{**ALLOC["customers"][0], "margin": 0.0}]}, "customers[0].margin"),
    ("margin above 1", {"customers": [{**ALLOC["customers"][0], "margin": 1.5}]}, "customers[0].margin"),
    ("negative value", {"customers": [{**ALLOC["customers"][0], "value": -5.0}]}, "customers[0].value"),
    (
        "value missing",
        {"customers": [{k: v for k, v in ALLOC["customers"][0].items() if k != "value"}]},
        "customers[0].value",
    ),
    ("seller without budget", {"seller_budgets": {"s1": 5.0}}, "seller_budgets"),
    ("budget for unknown seller", {"seller_budgets": {"s1": 5.0, "s2": 1.0, "zz": 1.0}}, "seller_budgets.zz"),
    ("negative seller budget", {"seller_budgets": {"s1": -5.0, "s2": 1.0}}, "seller_budgets.s1"),
    (
        "seller_id missing",
        {
            "seller_budgets": {"s1": 5.0},
            "customers": [{k: v for k, v in ALLOC["customers"][0].items() if k != "seller_id"}],
        },
        "customers[0].seller_id",
    ),
]


@pytest.mark.parametrize("name,change,field", ALLOC_RULES, ids=[r[0] for r in ALLOC_RULES])
def test_allocate_rejects_invalid_or_infeasible(dipn_client, name, change, field):
    body = {**ALLOC, **change}
    raw = json.dumps(body, allow_nan=True)
    r = dipn_client.post("/v1/promotions/allocate", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["detail"]], r.json()


# ----------------------------------------------------------------------------- auth


def test_tokens(bundle_info, model, caplog):
    api, admin = "api-secret-123", "admin-secret-456"
    c = TestClient(create_app(settings(bundle_info["bundle"], api_token=api, admin_token=admin), model=model))
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {api}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {api}x"},
    ):
        for method, path in (
            ("get", "/v1/models"),
            ("post", "/v1/score"),
            ("get", "/metrics"),
            ("post", "/v1/admin/reload"),
        ):
            r = getattr(c, method)(path, headers=headers)
            assert r.status_code == 401, (path, headers, r.status_code)
            assert r.json() == {"detail": "unauthorized"} and r.headers["www-authenticate"] == "Bearer"
    ok = {"Authorization": f"Bearer {api}"}
    assert c.post("/v1/score", json=VALID, headers=ok).status_code == 200
    assert c.get("/healthz", headers=ok).status_code == 200
    assert c.post("/v1/admin/reload", headers=ok).status_code == 401  # the api token cannot reload
    with caplog.at_level("DEBUG"):
        r = c.post(
            "/v1/admin/reload", json={"bundle": bundle_info["bundle"]}, headers={"Authorization": f"Bearer {admin}"}
        )
    assert r.status_code == 200, r.text
    assert api not in caplog.text and admin not in caplog.text
    assert api not in repr(c.app.state.serve.settings)


def test_reload_disabled_without_admin_token(client):
    assert client.post("/v1/admin/reload").status_code == 403
    assert client.post("/v1/admin/reload", headers={"Authorization": "Bearer x"}).status_code == 403


def test_reload_body_is_empty_or_json():
    """No body reloads the configured bundle; whitespace alone is invalid JSON (422), not "no body"."""
    from serve import parsing, schemas
    from serve.errors import ClientError

    assert parsing.decode_small(b"", schemas.ReloadRequest) is None
    assert parsing.decode_small(b' {"bundle": null} ', schemas.ReloadRequest).bundle is None
    for body in (b"\r", b"  \n"):
        with pytest.raises(ClientError) as err:
            parsing.decode_small(body, schemas.ReloadRequest)
        assert err.value.status == 422


def test_only_probes_and_docs_without_api_token(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True


# ----------------------------------------------------------------------------- bundles and reload


def tampered_copy(src: str, dst: Path, name: str = "sequence.onnx") -> Path:
    shutil.copytree(src, dst)
    p = dst / name
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    return dst


def test_tampered_bundle_is_refused(bundle_info, tmp_path):
    bad = tampered_copy(bundle_info["bundle"], tmp_path / "bad")
    with pytest.raises(BundleError, match="sha256 .* does not match the manifest"):
        Runtime.load(bad)
    with pytest.raises(BundleError, match="sha256"):
        create_app(settings(str(bad)))
    bad2 = tampered_copy(bundle_info["bundle"], tmp_path / "bad2", "segments.json")
    with pytest.raises(BundleError, match="segments.json"):
        Runtime.load(bad2)
    escape = tmp_path / "escape"
    shutil.copytree(bundle_info["bundle"], escape)
    m = json.loads((escape / "manifest.json").read_text())
    m["files"]["sequence"]["path"] = "../bad/sequence.onnx"
    (escape / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="outside the bundle"):
        Runtime.load(escape)
    with pytest.raises(BundleError, match="no manifest.json"):
        Runtime.load(tmp_path)


def test_reload_swaps_and_refuses_tampered(bundle_info, model, inside_root):
    app = create_app(settings(bundle_info["bundle"], admin_token="adm"), model=model)
    c = TestClient(app)
    auth = {"Authorization": "Bearer adm"}
    v1 = c.get("/v1/models").json()["model"]["version"]
    before = c.post("/v1/score", json=VALID).json()["results"]
    r = c.post("/v1/admin/reload", json={"bundle": bundle_info["bundle_dipn"]}, headers=auth)
    assert r.status_code == 200, r.text
    v2 = c.get("/v1/models").json()["model"]["version"]
    assert v2 != v1 and r.json()["previous_version"] == v1
    assert c.post("/v1/promotions/curves", json=VALID).status_code == 200
    assert c.post("/v1/score", json=VALID).json()["results"] == before  # same sequence model, same scores
    bad = tampered_copy(bundle_info["bundle"], inside_root / "bad")
    r = c.post("/v1/admin/reload", json={"bundle": str(bad)}, headers=auth)
    assert r.status_code == 409 and "sha256" in r.json()["detail"]
    assert r.json()["serving"]["version"] == v2
    assert c.get("/v1/models").json()["model"]["version"] == v2 and c.get("/readyz").status_code == 200
    r = c.post("/v1/admin/reload", json={"bundle": str(inside_root / "nope")}, headers=auth)
    assert r.status_code == 409
    metrics = c.get("/metrics").text
    assert 'sellerlift_reloads_total{result="ok"} 1.0' in metrics
    assert 'sellerlift_reloads_total{result="refused"} 2.0' in metrics
    assert f'sellerlift_model_info{{run_id="None",version="{v2}"}} 1.0' in metrics


def _fake_registry(db: Path, run_id: str, alias="champion", name="sellerlift-sequence"):
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE registered_model_aliases (alias VARCHAR(256), version INTEGER, name VARCHAR(256))")
    con.execute("CREATE TABLE model_versions (name VARCHAR(256), version INTEGER, run_id VARCHAR(32))")
    con.execute(
        "CREATE TABLE model_version_tags (key VARCHAR(250), value VARCHAR(5000), name VARCHAR(256), version INTEGER)"
    )
    con.execute("INSERT INTO model_versions VALUES (?, 1, 'old'), (?, 2, ?)", (name, name, run_id))
    con.execute("INSERT INTO registered_model_aliases VALUES (?, 2, ?)", (alias, name))
    con.commit()
    con.close()


def resolve_bundle(s: Settings):
    return find_bundle(s.bundle, s.bundles_dir, s.registry_db, s.registered_model, s.model_alias)


def test_bundle_resolution(bundle_info, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    s = Settings(bundles_dir=str(bundles))
    with pytest.raises(BundleError, match="no bundle to serve"):
        resolve_bundle(s)
    for name in ("runA", "runB"):
        shutil.copytree(bundle_info["bundle"], bundles / name)
    (bundles / "incomplete").mkdir()
    os.utime(bundles / "runA" / "manifest.json", (2e9, 2e9))  # runA is the newest
    assert resolve_bundle(s)[0] == bundles / "runA"
    _fake_registry(tmp_path / "mlruns.db", "runB")
    path, how = resolve_bundle(Settings(bundles_dir=str(bundles), registry_db=str(tmp_path / "mlruns.db")))
    assert path == bundles / "runB" and "champion" in how
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    assert resolve_bundle(s)[0] == bundles / "runB"
    assert resolve_bundle(Settings(bundles_dir=str(bundles), model_alias="other"))[0] == bundles / "runA"
    assert resolve_bundle(Settings(bundle="/x/y", bundles_dir=str(bundles)))[0] == Path("/x/y")
    # SELLERLIFT_BUNDLE from the environment
    monkeypatch.setenv("SELLERLIFT_BUNDLE", str(bundles / "runB"))
    assert Settings.from_env().bundle == str(bundles / "runB")


# ----------------------------------------------------------------------------- metrics and docs


def test_metrics_count_requests(client):
    for _ in range(3):
        assert client.post("/v1/score", json=VALID).status_code == 200
    assert client.post("/v1/score", json={}).status_code == 422
    client.get("/nope")
    text = client.get("/metrics").text
    assert 'sellerlift_requests_total{endpoint="/v1/score",method="POST",status="200"} 3.0' in text
    assert 'sellerlift_requests_total{endpoint="/v1/score",method="POST",status="422"} 1.0' in text
    assert 'sellerlift_request_errors_total{endpoint="/v1/score",kind="client"} 1.0' in text
    assert 'sellerlift_requests_total{endpoint="other",method="GET",status="404"} 1.0' in text
    assert 'sellerlift_request_latency_seconds_count{endpoint="/v1/score"} 4.0' in text
    assert 'sellerlift_customers_total{endpoint="/v1/score"} 3.0' in text


def test_models_endpoint_and_openapi(client, bundle_info):
    info = client.get("/v1/models").json()
    m = info["model"]
    manifest = json.loads((Path(bundle_info["bundle"]) / "manifest.json").read_text())
    assert m["files"] == manifest["files"] and m["metrics"] == manifest["metrics"]
    assert m["promotion_model"] is False and isinstance(info["server"]["heavy_modules_loaded"], list)
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/score",
        "/v1/promotions/curves",
        "/v1/promotions/allocate",
        "/healthz",
        "/readyz",
        "/v1/models",
        "/metrics",
        "/v1/admin/reload",
    ):
        assert path in spec["paths"], path
    assert spec["components"]["schemas"]["ScoreRequest"]["examples"]
    assert spec["components"]["schemas"]["AllocateRequest"]["examples"]
    example = spec["components"]["schemas"]["ScoreRequest"]["examples"][0]
    assert client.post("/v1/score", json=example).status_code == 200
