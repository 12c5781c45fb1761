"""Batch scoring: the CLI's scores equal in-process featurise + onnxruntime and the server's /v1/score."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from sellerlift import score
from sellerlift.data.files import FileSource
from sellerlift.features import FeatureSpec, build_features
from sellerlift.runtime import Runtime, session, verify_bundle
from sellerlift.segment import SegmentModel

EXAMPLE = REPO / "examples" / "seller_events.csv"
MAPPING = REPO / "examples" / "seller_events.mapping.yaml"
AS_OF = "2025-12-31"


BUILD_BUNDLE = """
import json, sys
from pathlib import Path
import pandas as pd, torch
from sellerlift import export, segment
from sellerlift.runtime import write_bundle
from sellerlift.data.files import FileSource
from sellerlift.features import AGGREGATES, EVENT_NUMERIC, FeatureSpec, build_features
from sellerlift.models.networks import GRUEncoder, SequenceNet

out, example, mapping, as_of = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
out.mkdir(parents=True)
events = FileSource.from_yaml(mapping, path=example).read_events()
spec = FeatureSpec(max_len=32)
feats = build_features(events, pd.Timestamp(as_of), spec)
spec.fit(feats)
torch.manual_seed(0)
net = SequenceNet(GRUEncoder(d_model=16, hidden=16), d_model=16, head_hidden=16).eval()
onnx_path = export.export_sequence_onnx(net, out / "sequence.onnx", len(EVENT_NUMERIC), len(AGGREGATES))
seg, _ = segment.fit_segments(feats.rfm(), ks=range(3, 5), rule=3)
(out / "segments.json").write_text(json.dumps(seg.to_json()))
write_bundle(out, {"sequence": onnx_path, "segments": out / "segments.json"}, spec, {},
             extra={"run_id": None, "model": "gru"})
"""


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """A real bundle (ONNX export, fitted spec, segments) of an untrained net: scoring parity needs no training.

    Built in a subprocess: a second ONNX export in one process currently loses the dynamic sequence
    axis (torch 2.13), and the pytest worker may export again in another test.
    """
    out = tmp_path_factory.mktemp("score") / "bundle"
    proc = subprocess.run(
        [sys.executable, "-c", BUILD_BUNDLE, str(out), str(EXAMPLE), str(MAPPING), AS_OF],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def reference(bundle_dir, events: pd.DataFrame) -> pd.DataFrame:
    """What the training side computes for these events: build_features + onnxruntime + segments."""

    verify_bundle(bundle_dir)
    spec = FeatureSpec.from_json(json.loads((bundle_dir / "feature_spec.json").read_text()))
    feats = build_features(events, pd.Timestamp(AS_OF), spec)
    sess = session(bundle_dir / "sequence.onnx")
    intent, churn, _ = sess.run(
        None,
        {
            "event_type": feats.event_type,
            "numeric": feats.numeric,
            "length": feats.length,
            "aggregates": feats.aggregates,
        },
    )
    seg = SegmentModel.from_json(json.loads((bundle_dir / "segments.json").read_text()))
    return pd.DataFrame(
        {
            "customer_id": feats.customer_id,
            "intent_7d": intent.reshape(-1),
            "churn_90d": churn.reshape(-1),
            "segment": seg.assign_names(feats.rfm()),
        }
    )


def test_cli_scores_equal_in_process_scores(bundle_dir, tmp_path, capsys):
    out = tmp_path / "scores.parquet"
    rc = score.main(
        [
            "--bundle",
            str(bundle_dir),
            "--events",
            str(EXAMPLE),
            "--mapping",
            str(MAPPING),
            "--as-of",
            AS_OF,
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "scored 240 customers" in capsys.readouterr().err
    got = pd.read_parquet(out)
    assert list(got.columns) == [
        "customer_id",
        "seller_id",
        "as_of",
        "intent_7d",
        "churn_90d",
        "segment",
        "segment_id",
        "n_events",
        "cold_start",
        "prior",
    ]
    events = FileSource.from_yaml(MAPPING, path=str(EXAMPLE)).read_events()
    ref = reference(bundle_dir, events).set_index("customer_id").loc[got["customer_id"]]
    np.testing.assert_allclose(got["intent_7d"], ref["intent_7d"], atol=1e-6)
    np.testing.assert_allclose(got["churn_90d"], ref["churn_90d"], atol=1e-6)
    assert (got["segment"].to_numpy() == ref["segment"].to_numpy()).all()
    hist = events[events["ts"] < pd.Timestamp(AS_OF)]
    assert (
        got.set_index("customer_id")["n_events"].to_dict()
        == hist.groupby("customer_id").size().reindex(got["customer_id"]).fillna(0).astype(int).to_dict()
    )

    # Partitioned (bounded-memory) path and CSV output: same numbers.
    out2 = tmp_path / "scores.csv"
    assert (
        score.main(
            [
                "--bundle",
                str(bundle_dir),
                "--events",
                str(EXAMPLE),
                "--mapping",
                str(MAPPING),
                "--as-of",
                AS_OF,
                "--out",
                str(out2),
                "--no-progress",
                "--partition-rows",
                "4000",
                "--chunk-rows",
                "3000",
                "--chunk-customers",
                "16",
            ]
        )
        == 0
    )
    got2 = pd.read_csv(out2).set_index("customer_id").loc[got["customer_id"]]
    np.testing.assert_allclose(got2["churn_90d"], got["churn_90d"], atol=1e-6)
    assert (got2["segment"].to_numpy() == got["segment"].to_numpy()).all()


def test_cli_equals_v1_score(bundle_dir, tmp_path):
    pytest.importorskip("fastapi")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    serve_app = pytest.importorskip("serve.app")
    from fastapi.testclient import TestClient

    from serve.config import Settings

    events = FileSource.from_yaml(MAPPING, path=str(EXAMPLE)).read_events()
    some = sorted(events["customer_id"].unique())[:25]
    sub = events[events["customer_id"].isin(some)]
    sub_path = tmp_path / "some.parquet"
    sub.assign(event_type=sub["event_type"].astype(str)).to_parquet(sub_path)  # contract-shaped file
    out = tmp_path / "scores.parquet"
    assert (
        score.main(
            [
                "--bundle",
                str(bundle_dir),
                "--events",
                str(sub_path),
                "--as-of",
                AS_OF,
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    got = pd.read_parquet(out).set_index("customer_id")

    app = serve_app.create_app(Settings(bundle=str(bundle_dir)), model=Runtime.load(bundle_dir))
    hist = sub[sub["ts"] < pd.Timestamp(AS_OF)]
    body = {
        "as_of": f"{AS_OF}T00:00:00Z",
        "customers": [
            {
                "customer_id": c,
                "events": [
                    {"type": str(e.event_type), "ts": e.ts.isoformat() + "Z", "amount": e.amount}
                    for e in hist[hist["customer_id"] == c].itertuples()
                ],
            }
            for c in some
        ],
    }
    with TestClient(app) as http:
        resp = http.post("/v1/score", json=body)
    assert resp.status_code == 200, resp.text
    api = pd.DataFrame(resp.json()["results"]).set_index("customer_id").loc[got.index]
    np.testing.assert_allclose(got["intent_7d"], api["intent_7d"], atol=1e-6)
    np.testing.assert_allclose(got["churn_90d"], api["churn_90d"], atol=1e-6)
    assert (got["segment"] == api["segment"]).all() and (got["n_events"] == api["n_events"]).all()


def test_score_module_never_imports_torch(bundle_dir, tmp_path):
    out = tmp_path / "s.csv"
    code = (
        "import sys; from sellerlift import score; "
        f"rc = score.main(['--bundle', r'{bundle_dir}', '--events', r'{EXAMPLE}', '--mapping', r'{MAPPING}', "
        f"'--out', r'{out}', '--no-progress', '--budget', '100']); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "--budget ignored" in proc.stderr  # no promotion model in this bundle: said, not silently skipped
    assert len(pd.read_csv(out)) == 240


def test_bad_rows_are_reported_with_file_row_and_column(bundle_dir, tmp_path, capsys):
    bad = pd.read_csv(EXAMPLE, dtype={"Customer ID": str})
    bad.loc[41, "Action"] = "refund"
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    rc = score.main(
        [
            "--bundle",
            str(bundle_dir),
            "--events",
            str(path),
            "--mapping",
            str(MAPPING),
            "--out",
            str(tmp_path / "x.parquet"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "bad.csv" in err and "row 42" in err and "'Action'" in err
    assert not (tmp_path / "x.parquet").exists()


def _purchase_log(tmp_path):
    """A transaction log in the shop's own shape: integer ids, dd/mm/yyyy dates, no event-type column."""
    events = FileSource.from_yaml(MAPPING, path=str(EXAMPLE)).read_events()
    buys = events[events["event_type"] == "purchase"]
    ids = {c: 1000 + i for i, c in enumerate(sorted(buys["customer_id"].unique()))}
    log = pd.DataFrame(
        {
            "Kundennr": buys["customer_id"].map(ids),
            "Datum": buys["ts"].dt.strftime("%d/%m/%Y"),
            "Betrag": buys["amount"],
        }
    )
    path = tmp_path / "orders.csv"
    log.to_csv(path, index=False, sep=";", decimal=",")
    mapping = tmp_path / "orders.yaml"
    mapping.write_text(
        "columns: {customer_id: Kundennr, ts: Datum, amount: Betrag, event_type: null}\n"
        "event_type_constant: purchase\ntimestamp_format: '%d/%m/%Y'\ncsv_sep: ';'\ndecimal: ','\n"
    )
    return path, mapping, log


@pytest.mark.parametrize(
    "out_name, chunks", [("s.parquet", []), ("s.csv", ["--partition-rows", "300", "--chunk-rows", "97"])]
)
def test_purchase_only_file_scores_with_integer_ids(bundle_dir, tmp_path, capsys, out_name, chunks):
    path, mapping, log = _purchase_log(tmp_path)
    out = tmp_path / out_name
    rc = score.main(
        [
            "--bundle",
            str(bundle_dir),
            "--events",
            str(path),
            "--mapping",
            str(mapping),
            "--as-of",
            AS_OF,
            "--out",
            str(out),
            "--no-progress",
            *chunks,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    got = pd.read_parquet(out) if out.suffix == ".parquet" else pd.read_csv(out)
    assert got["customer_id"].dtype == np.int64  # integer ids come out as integers, not text
    assert sorted(got["customer_id"]) == sorted(log["Kundennr"].unique())


def test_contract_shaped_file_with_integer_ids_keeps_them_integer(bundle_dir, tmp_path):
    events = FileSource.from_yaml(MAPPING, path=str(EXAMPLE)).read_events()
    events["customer_id"] = events["customer_id"].str[1:].astype(int)
    path = tmp_path / "contract.csv"
    events.assign(
        event_type=events["event_type"].astype(str), ts=events["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    ).to_csv(path, index=False)
    out = tmp_path / "s.parquet"
    assert (
        score.main(
            [
                "--bundle",
                str(bundle_dir),
                "--events",
                str(path),
                "--as-of",
                AS_OF,
                "--out",
                str(out),
                "--no-progress",
                "--chunk-rows",
                "5000",
                "--partition-rows",
                "6000",
            ]
        )
        == 0
    )
    got = pd.read_parquet(out)
    assert got["customer_id"].dtype == np.int64 and len(got) == events["customer_id"].nunique()
