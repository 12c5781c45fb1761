"""What the server serves beyond intent and churn: customer value, loyalty, action segments, the enduring response
per level, the retention-aware allocation with its constraints, names that follow the bundle's horizons, the data
set served; and that bundles from before all of it are still served (issue 15; issue 13 item 1).

The bundles: the session's tiny real training run (value head on), its copy with a small DIPN, and that copy with a
small enduring.onnx and action_segments.json (tests/test_serve.py); plus, built here, an old bundle (two outputs, no
value head, no horizons in the manifest) and one trained for a 30-day churn horizon.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_serve import AS_OF, _sha, build_test_bundle, bundle_root, reference_features, request_for, settings

from sellerlift.allocate import allocate_lagrangian
from sellerlift.runtime import BundleError, Runtime, allocate_offers, loyalty_of
from sellerlift.runtime.enduring import enduring_value
from serve.app import create_app

EXPORT = """
import sys, torch
from pathlib import Path
from sellerlift import export
from sellerlift.features import AGGREGATES, EVENT_NUMERIC
from sellerlift.models.networks import GRUEncoder, SequenceNet
out, names = Path(sys.argv[1]), sys.argv[2].split(",")
torch.manual_seed(0)
net = SequenceNet(GRUEncoder(d_model=16, hidden=16), d_model=16, head_hidden=16, value=len(names) > 2).eval()
if len(names) > 2:
    net.set_value_scale([50.0, 1.0])
export.export_sequence_onnx(net, out, len(EVENT_NUMERIC), len(AGGREGATES), score_names=tuple(names[:2]),
                            value_names=tuple(names[2:]) or None)
"""


def _with_sequence(src: Path, dst: Path, names: list[str], manifest_edit) -> Path:
    """Copy bundle ``src`` to ``dst`` with a fresh untrained sequence.onnx of outputs ``names`` (exported in a fresh
    process: torch freezes the GRU's length after a first export) and ``manifest_edit(manifest)`` applied."""
    shutil.copytree(src, dst)
    proc = subprocess.run(
        [sys.executable, "-c", EXPORT, str(dst / "sequence.onnx"), ",".join(names)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((dst / "manifest.json").read_text())
    m["files"]["sequence"]["sha256"] = _sha(dst / "sequence.onnx")
    manifest_edit(m)
    (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    return dst


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    return build_test_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def events(info):
    return pd.read_parquet(Path(info["bundle"]).parents[2] / "events.parquet")


@pytest.fixture(scope="module")
def full(info):
    return Runtime.load(info["bundle_full"])


@pytest.fixture(scope="module")
def full_client(info, full):
    return TestClient(create_app(settings(info["bundle_full"]), model=full))


@pytest.fixture(scope="module")
def extra_bundles(info):
    """An old bundle (two outputs, no value section, no horizons) with the full bundle's DIPN, enduring model and
    action segments, and a bundle trained for churn within 30 days (value_30d) without promotion models."""
    root = Path(bundle_root(info["bundle"])) / "value_tests"
    old, h30 = root / "old", root / "h30"
    if not (old / "manifest.json").exists() or not (h30 / "manifest.json").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)

        def make_old(m):
            m.pop("value", None)
            m.pop("horizons", None)

        def make_30(m):
            m["horizons"] = {"intent_days": 7, "churn_days": 30}
            m["cold_start"]["churn_30d"] = m["cold_start"].pop("churn_90d")
            v = m["value"]
            v["outputs"] = ["value_30d", "purchases_30d"]
            v["cold_start"] = {
                "value_30d": v["cold_start"]["value_90d"],
                "purchases_30d": v["cold_start"]["purchases_90d"],
            }

        _with_sequence(Path(info["bundle_full"]), old, ["intent_7d", "churn_90d"], make_old)
        _with_sequence(Path(info["bundle"]), h30, ["intent_7d", "churn_30d", "value_30d", "purchases_30d"], make_30)
    return {"old": str(old), "h30": str(h30)}


def _ids(events, n=60):
    return np.sort(events["customer_id"].unique())[:n].tolist()


def _alloc_body(events, ids, seed=0, **extra):
    body = request_for(events, ids)
    rng = np.random.default_rng(seed)
    for k, c in enumerate(body["customers"]):
        c.update(value=float(rng.uniform(20, 80)), margin=0.4, seller_id=["s1", "s2", "s3"][k % 3])
    body.update(extra)
    return body


# ----------------------------------------------------------------------------- the runtime loads everything


def test_full_bundle_loads_every_model_from_verified_bytes(info, full, tmp_path):
    assert full.value is not None and full.value_outputs == ("value_90d", "purchases_90d") and full.has_loyalty
    assert full.enduring is not None and full.action_segments is not None and full.promotion is not None
    d = full.describe()
    assert d["enduring_model"]["horizon_days"] == 90 and d["action_segments"] and d["loyalty"]
    for name in ("enduring.onnx", "action_segments.json"):  # a changed file is refused, as sequence.onnx is
        bad = tmp_path / name
        shutil.copytree(info["bundle_full"], bad)
        data = bytearray((bad / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (bad / name).write_bytes(bytes(data))
        with pytest.raises(BundleError, match="sha256"):
            Runtime.load(bad)
    no_info = tmp_path / "no_info"
    shutil.copytree(info["bundle_full"], no_info)
    m = json.loads((no_info / "manifest.json").read_text())
    del m["enduring"]
    (no_info / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="no 'enduring' section"):
        Runtime.load(no_info)


def test_old_bundles_still_load_and_serve(info, extra_bundles, events):
    old = Runtime.load(extra_bundles["old"])
    assert old.value is None and old.value_outputs == () and not old.has_loyalty and old.enduring is not None
    c = TestClient(create_app(settings(extra_bundles["old"]), model=old))
    ids = _ids(events, 20)
    res = c.post("/v1/score", json=request_for(events, ids)).json()["results"]
    assert set(res[0]) == {
        "customer_id",
        "as_of",
        "intent_7d",
        "churn_90d",
        "segment",
        "segment_id",
        "action_segment",
        "action_segment_id",
        "n_events",
        "cold_start",
        "prior",
    }
    spec = c.get("/openapi.json").json()["components"]["schemas"]
    assert (
        "value_90d" not in spec["CustomerScore"]["properties"] and "loyalty" not in spec["CustomerScore"]["properties"]
    )
    assert c.post("/v1/promotions/curves", json=request_for(events, ids)).status_code == 200
    r = c.post("/v1/promotions/allocate", json=_alloc_body(events, ids, budget=20.0, weight=1.0))
    assert r.status_code == 200, r.text
    # the session's plain bundle (sequence model and segments only) serves scores with value and loyalty
    plain = Runtime.load(info["bundle"])
    c = TestClient(create_app(settings(info["bundle"]), model=plain))
    res = c.post("/v1/score", json=request_for(events, ids)).json()["results"]
    assert {"value_90d", "purchases_90d", "loyalty"} <= set(res[0]) and "action_segment" not in res[0]


def test_names_follow_the_bundles_horizons(extra_bundles, events):
    rt = Runtime.load(extra_bundles["h30"])
    assert rt.outputs == ("intent_7d", "churn_30d") and rt.value_outputs == ("value_30d", "purchases_30d")
    c = TestClient(create_app(settings(extra_bundles["h30"]), model=rt))
    ids = _ids(events, 10)
    res = c.post("/v1/score", json=request_for(events, ids + [10**9])).json()["results"]
    assert {"churn_30d", "value_30d", "purchases_30d", "loyalty"} <= set(res[0])
    assert "churn_90d" not in res[0] and "value_90d" not in res[0]
    assert res[-1]["prior"] and res[-1]["value_30d"] == pytest.approx(rt.value.prior["value_30d"])
    props = c.get("/openapi.json").json()["components"]["schemas"]["CustomerScore"]["properties"]
    assert "churn_30d" in props and "30 days" in props["churn_30d"]["description"] and "churn_90d" not in props


# ----------------------------------------------------------------------------- /v1/score


def test_score_serves_value_loyalty_and_action_segment_as_in_process(full_client, full, events):
    ids = _ids(events, 80)
    cold = int(max(ids)) + 10**6
    res = full_client.post("/v1/score", json=request_for(events, ids + [cold])).json()["results"]
    feats = reference_features(full, events, ids + [cold])
    scores = full.score(feats)
    for name in ("value_90d", "purchases_90d"):
        assert np.array_equal([x[name] for x in res], scores[name].astype(np.float64))
    loyalty = np.array([x["loyalty"] for x in res])
    assert np.array_equal(loyalty, full.loyalty(scores)) and ((loyalty >= 0) & (loyalty <= 1)).all()
    idx, names = full.assign_action_segments(feats, scores)
    assert [x["action_segment"] for x in res] == names.tolist()
    assert [x["action_segment_id"] for x in res] == idx.tolist()
    last = res[-1]  # cold start: the prior, value included
    assert last["cold_start"] and last["prior"]
    assert last["churn_90d"] == pytest.approx(full.prior["churn_90d"])
    assert last["value_90d"] == pytest.approx(full.value.prior["value_90d"])


def test_loyalty_of_an_events_table(full, events):
    ids = np.asarray(_ids(events, 50))
    df = loyalty_of(full, events[events["customer_id"].isin(ids)], pd.Timestamp(AS_OF), ids)
    assert list(df.columns) == ["customer_id", "churn_90d", "value_90d", "value_percentile", "loyalty"]
    assert df["loyalty"].between(0, 1).all() and df["value_percentile"].between(0, 1).all()
    assert np.allclose(df["loyalty"], np.sqrt((1 - df["churn_90d"]) * df["value_percentile"]))


# ----------------------------------------------------------------------------- /v1/promotions/curves


def test_curves_with_retention_and_value_equal_the_runtime(full_client, full, events):
    ids = _ids(events, 100)
    r = full_client.post("/v1/promotions/curves", json=request_for(events, ids))
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    feats = reference_features(full, events, ids)
    scores = full.score(feats)
    curves, end = full.curves(feats, scores), full.enduring_response(feats, scores)
    assert np.array_equal([x["conversion"] for x in res], curves.astype(np.float64))
    assert np.array_equal([x["retention_90d"] for x in res], end["retention"])
    assert np.array_equal([x["value_90d"] for x in res], end["revenue"])
    assert (np.diff(np.array([x["conversion"] for x in res]), axis=1) >= 0).all()


# ----------------------------------------------------------------------------- /v1/promotions/allocate


def test_allocation_with_weight_0_equals_todays(full_client, full, events):
    ids = _ids(events, 120)
    body = _alloc_body(events, ids, budget=15.0, seller_budgets={"s1": 4.0, "s2": 1e9, "s3": 0.0})
    r = full_client.post("/v1/promotions/allocate", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    feats = reference_features(full, events, ids)
    p = full.curves(feats, full.score(feats)).astype(np.float64)
    value = np.array([c["value"] for c in body["customers"]])
    sellers = np.array([c["seller_id"] for c in body["customers"]], dtype=object)
    today = allocate_lagrangian(
        p,
        value,
        np.full(len(ids), 0.4),
        list(full.levels),
        budget=15.0,
        seller=sellers,
        seller_budgets=body["seller_budgets"],
    )
    assert [x["level_pct"] for x in out["results"]] == today.level_pct.tolist()
    t = out["totals"]
    assert t["incremental_profit"] == today.profit and t["spend"] == today.spend and t["roi"] == today.roi
    assert t["objective"] == t["incremental_profit"] and t["weight"] == 0.0 and t["spread_penalty_paid"] == 0.0
    assert t["upper_bound"] == today.bound and t["status"] in ("optimal", "feasible")


def test_weight_1_maximises_the_90_day_profit_as_in_process(full_client, full, events):
    ids = _ids(events, 120)
    body = _alloc_body(events, ids, budget=10.0, weight=1.0)
    out = full_client.post("/v1/promotions/allocate", json=body).json()
    feats = reference_features(full, events, ids)
    scores = full.score(feats)
    p = full.curves(feats, scores).astype(np.float64)
    value = np.array([c["value"] for c in body["customers"]])
    E = enduring_value(full.enduring_response(feats, scores), np.full(len(ids), 0.4))
    ref = allocate_offers(p, value, np.full(len(ids), 0.4), full.levels, budget=10.0, enduring=E, weight=1.0)
    assert [x["level_pct"] for x in out["results"]] == ref.level_pct.tolist()
    t = out["totals"]
    assert t["enduring_value"] == pytest.approx(float(ref.enduring.sum()))
    assert t["objective"] == pytest.approx(t["incremental_profit"] + t["enduring_value"])
    for x in out["results"]:
        assert x["objective"] == pytest.approx(x["expected_incremental_profit"] + x["expected_enduring_value"])


def test_every_constraint_holds_in_the_response(full_client, full, events):
    ids = _ids(events, 150)
    feats = reference_features(full, events, ids)
    _, seg_names = full.assign_action_segments(feats)
    some = str(seg_names[0])
    body = _alloc_body(
        events,
        ids,
        budget=12.0,
        weight=0.5,
        seller_budgets={"s1": 5.0, "s2": 6.0, "s3": 4.0},
        seller_tiers={"s1": "gold", "s2": "gold", "s3": "silver", "elsewhere": "bronze"},
        tier_budgets={"gold": 7.0, "silver": 1.5, "bronze": 99.0},
        max_discount=25.0,
        segment_max_discount={some: 10.0},
        max_incentive=0.9,
        spread_penalty=0.05,
    )
    body["customers"][3]["max_discount"] = 5.0
    body["customers"][4]["segment"] = "vip"
    body["segment_max_discount"]["vip"] = 0.0
    r = full_client.post("/v1/promotions/allocate", json=body)
    assert r.status_code == 200, r.text
    out, eps = r.json(), 1e-9
    res, t = out["results"], out["totals"]
    spend = np.array([x["expected_spend"] for x in res])
    level = np.array([x["level_pct"] for x in res])
    seller = np.array([x["seller_id"] for x in res])
    assert spend.sum() <= 12.0 * (1 + eps) and t["spend"] == pytest.approx(spend.sum())
    for s, b in body["seller_budgets"].items():
        assert spend[seller == s].sum() <= b * (1 + eps) and t["seller_spend"][s] <= b * (1 + eps)
    assert spend[np.isin(seller, ["s1", "s2"])].sum() <= 7.0 * (1 + eps) and t["tier_spend"]["gold"] <= 7.0 + eps
    assert spend[seller == "s3"].sum() <= 1.5 * (1 + eps) and set(t["tier_spend"]) == {"gold", "silver"}
    assert level.max() <= 25.0 and level[3] <= 5.0 and level[4] == 0.0
    segment = np.array([c.get("segment") or seg_names[i] for i, c in enumerate(body["customers"])], dtype=object)
    assert (level[segment == some] <= 10.0).all()
    assert (spend <= 0.9 + 1e-12).all()
    assert t["spread"] >= 0 and t["spread_penalty_paid"] == pytest.approx(0.05 * (spend**2).sum())
    assert t["objective"] == pytest.approx(
        t["incremental_profit"] + 0.5 * t["enduring_value"] - t["spread_penalty_paid"]
    )
    assert (spend >= 0).all() and t["customers_with_discount"] == int((level > 0).sum())


BAD = [
    ("weight above 1", {"weight": 1.5}, "weight"),
    ("tier budgets without tiers", {"tier_budgets": {"gold": 1.0}}, "seller_tiers"),
    ("seller without tier", {"seller_tiers": {"s1": "gold"}}, "seller_tiers"),
    (
        "unknown tier",
        {"seller_tiers": {"s1": "a", "s2": "a", "s3": "a"}, "tier_budgets": {"a": 1.0, "zz": 1.0}},
        "tier_budgets.zz",
    ),
    (
        "tier without budget",
        {"seller_tiers": {"s1": "a", "s2": "b", "s3": "a"}, "tier_budgets": {"a": 1.0}},
        "tier_budgets",
    ),
    (
        "negative tier budget",
        {"seller_tiers": {"s1": "a", "s2": "a", "s3": "a"}, "tier_budgets": {"a": -1.0}},
        "tier_budgets.a",
    ),
    ("max discount above 100", {"max_discount": 150.0}, "max_discount"),
    ("unknown segment", {"segment_max_discount": {"no such segment": 5.0}}, "segment_max_discount.no such segment"),
    ("negative max incentive", {"max_incentive": -1.0}, "max_incentive"),
    ("negative spread penalty", {"spread_penalty": -0.1}, "spread_penalty"),
]


@pytest.mark.parametrize("name,change,field", BAD, ids=[b[0] for b in BAD])
def test_allocate_rejects_bad_constraints_naming_the_field(full_client, events, name, change, field):
    body = _alloc_body(events, _ids(events, 9), budget=5.0, **change)
    r = full_client.post("/v1/promotions/allocate", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert field in [d["field"] for d in detail], detail
    assert all(d["msg"] for d in detail)


def test_weight_needs_the_enduring_model(info, events):
    c = TestClient(create_app(settings(info["bundle_dipn"]), model=Runtime.load(info["bundle_dipn"])))
    r = c.post("/v1/promotions/allocate", json=_alloc_body(events, _ids(events, 5), budget=5.0, weight=0.3))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "weight"
    assert "enduring" in r.json()["detail"][0]["msg"] and "0.3" in r.json()["detail"][0]["msg"]


# ----------------------------------------------------------------------------- the data set served


def test_server_serves_its_own_data_set(info, full):
    from serve.state import load_runtime

    c = TestClient(create_app(settings(info["bundle_full"], data="simulator"), model=full))
    assert c.get("/v1/models").json()["server"]["data"] == "simulator"
    with pytest.raises(BundleError, match="trained on data set 'simulator'.*data set 'shop'"):
        load_runtime(settings(info["bundle_full"], data="shop"))
    assert load_runtime(settings(info["bundle_full"], data="")).data == "simulator"  # '' = no check
    app = create_app(settings(info["bundle_full"], data="shop", admin_token="adm"), model=full)
    r = TestClient(app).post(
        "/v1/admin/reload", json={"bundle": info["bundle"]}, headers={"Authorization": "Bearer adm"}
    )
    assert r.status_code == 409 and "'shop'" in r.json()["detail"] and "'simulator'" in r.json()["detail"]


def test_reload_by_alias_uses_the_data_sets_registered_model(info, tmp_path, monkeypatch):
    import sqlite3

    from serve.state import load_runtime

    bundles = Path(bundle_root(info["bundle"]))
    run = Path(info["bundle_full"]).name
    db = tmp_path / "mlflow.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE registered_model_aliases (alias VARCHAR(256), version INTEGER, name VARCHAR(256))")
    con.execute("CREATE TABLE model_versions (name VARCHAR(256), version INTEGER, run_id VARCHAR(32))")
    con.execute(
        "CREATE TABLE model_version_tags (key VARCHAR(250), value VARCHAR(5000), name VARCHAR(256), version INTEGER)"
    )
    con.execute("INSERT INTO model_versions VALUES ('sellerlift-sequence-simulator', 1, ?)", (run,))
    con.execute("INSERT INTO registered_model_aliases VALUES ('champion', 1, 'sellerlift-sequence-simulator')")
    con.commit()
    con.close()
    s = settings(info["bundle"], registry_db=str(db), bundles_dir=str(bundles))
    assert load_runtime(s, "@champion").bundle_dir == bundles / run
    with pytest.raises(BundleError, match="sellerlift-sequence-shop@champion"):
        load_runtime(settings(info["bundle"], registry_db=str(db), bundles_dir=str(bundles), data="shop"), "@champion")


def test_data_setting_from_flag_and_environment(monkeypatch):
    from serve.__main__ import parse_args
    from serve.config import Settings

    monkeypatch.delenv("SELLERLIFT_DATA", raising=False)
    assert Settings.from_env().data == "simulator"
    assert Settings.from_env(**vars(parse_args(["--data", "cdnow"]))).data == "cdnow"
    monkeypatch.setenv("SELLERLIFT_DATA", "myshop")
    assert Settings.from_env().data == "myshop"
    monkeypatch.setenv("SELLERLIFT_DATA", "")
    assert Settings.from_env().data == ""


# ----------------------------------------------------------------------------- the batch scorer


def test_batch_scorer_writes_the_servers_columns_and_the_chosen_level(full_client, full, info, events, tmp_path):
    from sellerlift import score

    ids = _ids(events, 60)
    sub = events[events["customer_id"].isin(ids)].assign(seller_id=lambda d: "s" + (d["customer_id"] % 2).astype(str))
    path = tmp_path / "events.parquet"
    sub.to_parquet(path)
    out = tmp_path / "scores.parquet"
    rc = score.main(
        [
            "--bundle",
            info["bundle_full"],
            "--events",
            str(path),
            "--out",
            str(out),
            "--as-of",
            AS_OF,
            "--data",
            "simulator",
            "--budget",
            "8",
            "--weight",
            "1",
            "--max-discount",
            "20",
            "--seller-tiers",
            '{"s0": "a", "s1": "b"}',
            "--tier-budgets",
            '{"a": 5, "b": 2}',
            "--spread-penalty",
            "0.01",
            "--enduring-value",
            "retention",
            "--no-progress",
        ]
    )
    assert rc == 0
    df = pd.read_parquet(out).sort_values("customer_id").reset_index(drop=True)
    served = pd.DataFrame(full_client.post("/v1/score", json=request_for(events, ids)).json()["results"])
    for col in ("intent_7d", "churn_90d", "value_90d", "purchases_90d", "loyalty", "action_segment", "segment"):
        assert col in df, col
        if not pd.api.types.is_numeric_dtype(df[col]):
            assert df[col].tolist() == served[col].tolist(), col
        else:
            np.testing.assert_allclose(df[col].to_numpy(), served[col].to_numpy(), rtol=0, atol=1e-6, err_msg=col)
    curves = pd.DataFrame(full_client.post("/v1/promotions/curves", json=request_for(events, ids)).json()["results"])
    for j, lvl in enumerate(full.levels):
        np.testing.assert_allclose(df[f"retention_90d_{lvl}pct"], [r[j] for r in curves["retention_90d"]], atol=1e-6)
        np.testing.assert_allclose(df[f"value_90d_{lvl}pct"], [r[j] for r in curves["value_90d"]], rtol=1e-6)
    assert df["discount_pct"].max() <= 20 and df["expected_spend"].sum() <= 8 * (1 + 1e-9)
    assert df.loc[df["seller_id"] == "s1", "expected_spend"].sum() <= 2 * (1 + 1e-9)
    assert {"expected_enduring_value", "objective"} <= set(df.columns)
    feats = reference_features(full, events, df["customer_id"].tolist())  # --enduring-value retention, as served
    scores = full.score(feats)
    E = enduring_value(full.enduring_response(feats, scores), full.margin, "retention", full.kept_value(scores, 0.4))
    chosen = np.searchsorted(full.levels, df["discount_pct"].to_numpy())
    np.testing.assert_allclose(df["expected_enduring_value"], E[np.arange(len(df)), chosen], rtol=1e-5, atol=1e-6)
    bad = score.main(
        [
            "--bundle",
            info["bundle_dipn"],
            "--events",
            str(path),
            "--out",
            str(tmp_path / "x.csv"),
            "--as-of",
            AS_OF,
            "--data",
            "simulator",
            "--budget",
            "8",
            "--weight",
            "1",
            "--no-progress",
        ]
    )
    assert bad == 2  # weight > 0 needs the enduring model


def test_retention_valued_objective_is_served_as_in_process(full_client, full, events):
    """enduring_value='retention': the change in retention after the week, valued at a kept customer's CLV."""
    ids = _ids(events, 120)
    body = {**_alloc_body(events, ids, budget=10.0, weight=1.0), "enduring_value": "retention"}
    out = full_client.post("/v1/promotions/allocate", json=body).json()
    feats = reference_features(full, events, ids)
    scores = full.score(feats)
    p = full.curves(feats, scores).astype(np.float64)
    value, margin = np.array([c["value"] for c in body["customers"]]), np.full(len(ids), 0.4)
    kept = full.kept_value(scores, margin)
    np.testing.assert_allclose(kept, 0.4 * scores["value_90d"] / np.maximum(1 - scores["churn_90d"], 0.05), rtol=1e-6)
    E = enduring_value(full.enduring_response(feats, scores), margin, "retention", kept)
    assert np.all(E[:, 0] == 0)
    ref = allocate_offers(p, value, margin, full.levels, budget=10.0, enduring=E, weight=1.0)
    assert [x["level_pct"] for x in out["results"]] == ref.level_pct.tolist()
    assert out["totals"]["enduring_value"] == pytest.approx(float(ref.enduring.sum()))
    margin_kind = full_client.post("/v1/promotions/allocate", json={**body, "enduring_value": "margin"}).json()
    assert margin_kind["totals"]["enduring_value"] != pytest.approx(out["totals"]["enduring_value"])
    bad = full_client.post("/v1/promotions/allocate", json={**body, "enduring_value": "clv"})
    assert bad.status_code == 422 and "enduring_value" in bad.text
