"""The server's fast path (msgspec decode, vectorised timestamps) answers exactly as the pydantic path.

The fast path is an optimisation only: for every body, valid or not, the status and the JSON of the
response must be those of the FastAPI/pydantic path (tests/test_serve.py defines that contract).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from serve import app as serve_app, schemas  # noqa: E402

pytestmark = pytest.mark.skipif(schemas.msgspec is None, reason="msgspec not installed: no fast path")

# ----------------------------------------------------------------------------- timestamps

SHAPES = ["2025-12-01", "2025-12-01T10:00:00", "2025-12-01T10:00:00Z", "2025-12-01 10:00:00",
          "2025-12-01T10:00:00.123", "2025-12-01T10:00:00.123Z", "2025-12-01T10:00:00.123456",
          "2025-12-01T10:00:00.123456Z"]
ODD = ["2025-02-29T00:00:00Z", "2024-02-29T23:59:59.999999Z", "2100-02-29", "2000-02-29", "1900-02-29",
       "2025-13-01", "2025-00-10", "2025-04-31", "2025-12-01T24:00:00", "2025-12-01T23:60:00",
       "2025-12-01T23:59:60Z", "2025-12-01X10:00:00", "2025-12-01T10:00:00.12Z", "2025-12-01T10:00:00+02:00",
       "2025-12-01T10:00:00.1234567", "20251201", "2025-12-01T10:00", "1969-12-31T23:59:59Z",
       "1970-01-01T00:00:00Z", "2099-12-31T23:59:59.999999Z", "2100-01-01", "1850-01-01", "2025-1-01",
       "2025-12-01T10:00:00z", "2025-12-01t10:00:00", "٢٠٢٥-12-01", "2025-12-01T10:00:00Z\n", " 2025-12-01",
       "2025-12-01T10:0a:00Z", "2025/12/01T10:00:00Z"]


def _compare(values: list[str]) -> None:
    fast, done = serve_app._fast_times(values)
    fast = serve_app._in_range(fast)  # the schema's 1970..2100 range, as _parse_times applies it
    ref = serve_app._parse_times(list(values))
    got = serve_app._event_times(list(values), strict=False)
    for v, f, d, r, g in zip(values, fast, done, ref, got):
        if d:  # every string the vectorised parser takes, it parses exactly as pandas does
            assert (np.isnat(f) and np.isnat(r)) or f == r, (v, f, r)
        assert (np.isnat(g) and np.isnat(r)) or g == r, (v, g, r)


def test_fast_timestamps_equal_pandas_on_shapes_and_edge_cases():
    _compare(SHAPES + ODD)
    fast, done = serve_app._fast_times(SHAPES)
    assert done.all()  # the common shapes do take the fast path


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1890, 2130), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25),
                          st.integers(0, 61), st.integers(0, 61), st.integers(0, 999_999),
                          st.sampled_from(SHAPES)), min_size=1, max_size=20))
def test_fast_timestamps_equal_pandas_random(parts):
    values = []
    for y, mo, d, h, mi, s, us, shape in parts:
        full = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{us:06d}"
        cut = {10: 10, 19: 19, 20: 19, 23: 23, 24: 23, 26: 26, 27: 26}[len(shape)]
        v = full[:cut] + ("Z" if shape.endswith("Z") else "")
        values.append(v.replace("T", " ") if " " in shape else v)
    _compare(values)


# ----------------------------------------------------------------------------- whole requests: fast == pydantic


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """(fast client, pydantic-only client) on the same DIPN bundle."""
    from fastapi.testclient import TestClient
    from test_serve import build_test_bundle, settings

    from serve.bundle import Model

    info = build_test_bundle(tmp_path_factory)
    model = Model.load(info["bundle_dipn"])
    fast = TestClient(serve_app.create_app(settings(info["bundle_dipn"], max_customers=50,
                                                    max_events_per_customer=40), model=model))
    mp = pytest.MonkeyPatch()
    mp.setattr(schemas, "msgspec", None)  # routes built now take FastAPI's path only
    slow = TestClient(serve_app.create_app(settings(info["bundle_dipn"], max_customers=50,
                                                    max_events_per_customer=40), model=model))
    mp.undo()
    return fast, slow


def _bodies() -> list[tuple[str, bytes]]:
    from test_serve import ALLOC, ALLOC_RULES, BAD_BODIES, RULES, VALID

    out = [("/v1/score", json.dumps(b).encode()) for _, b, _, _ in RULES]
    out += [(p, b) for b in BAD_BODIES for p in ("/v1/score", "/v1/promotions/allocate")]
    out += [("/v1/promotions/allocate", json.dumps({**ALLOC, **c}, allow_nan=True).encode()) for _, c, _ in ALLOC_RULES]
    ev = VALID["customers"][0]["events"]

    def with_ts(ts, as_of="2026-01-01T00:00:00Z"):
        return json.dumps({"as_of": as_of, "customers": [{"customer_id": "c", "events": [
            {"type": "visit", "ts": ts}, *ev]}]}, ensure_ascii=False).encode()

    out += [("/v1/score", with_ts(t)) for t in SHAPES + ODD]
    out += [("/v1/promotions/curves", with_ts(t)) for t in ("2025-12-01T10:00:00+02:00", "2026-01-01T00:00:00Z",
                                                             "2026-01-01T00:00:00.000001Z", "bad")]
    out += [
        ("/v1/score", b'{"as_of": "2026-01-01", "customers": [{"customer_id": 1, "customer_id": "x"}]}'),
        ("/v1/score", b'{"as_of": "2026-01-01", "customers": [{"customer_id": 1, "events": [{"type": "visit", '
                      b'"ts": "2025-01-01", "amount": NaN}]}]}'),
        ("/v1/score", b'{"as_of": "2026-01-01", "customers": [{"customer_id": 1, "events": [{"type": "visit", '
                      b'"ts": "2025-01-01", "amount": 7}]}]}'),
        ("/v1/score", b'{"as_of": "2026-01-01", "customers": [{"customer_id": 1, "events": [{"type": "visit", '
                      b'"ts": "2025-01-01", "amount": -0.0}]}]}'),
        ("/v1/score", b'{"as_of": "2026-01-01\\n", "customers": [{"customer_id": 1}]}'),
        ("/v1/score", b'{"as_of": "2026-01-01", "customers": [{"customer_id": "\\ud83d"}]}'),
        ("/v1/score", json.dumps({"as_of": "2026-01-01", "customers": [{"customer_id": i} for i in range(51)]}
                                 ).encode()),  # 413 (max_customers 50)
        ("/v1/score", json.dumps({"as_of": "2026-01-01", "customers": [
            {"customer_id": 1, "events": [{"type": "visit", "ts": "2025-01-01"}] * 41}]}).encode()),  # 413
        ("/v1/score", json.dumps({"as_of": "2026-01-01", "customers": [
            {"customer_id": 1, "events": [{"type": "visit", "ts": "2025-01-01"}] * 41},
            {"customer_id": 2, "events": [{"type": "visit", "ts": "yesterday"}]}]}).encode()),  # 422 before 413
        ("/v1/promotions/allocate", json.dumps({**ALLOC, "seller_budgets": {"s1": 5.0, "s2": 1e308}}).encode()),
        ("/v1/promotions/allocate", json.dumps({**ALLOC, "budget": 3}).encode()),
    ]
    return out


def test_fast_path_answers_exactly_like_pydantic(apps):
    fast, slow = apps
    for path, body in _bodies():
        for ctype in ("application/json", "application/vnd.x+json; charset=utf-8", "text/plain", None):
            headers = {"content-type": ctype} if ctype else {}
            a = fast.post(path, content=body, headers=headers)
            b = slow.post(path, content=body, headers=headers)
            assert a.status_code == b.status_code, (path, body[:200], ctype, a.text[:300], b.text[:300])
            assert a.json() == b.json(), (path, body[:200], ctype)
            assert a.status_code < 500


def test_fast_path_is_taken_for_valid_bodies(apps, monkeypatch):
    fast, _ = apps
    calls = []
    orig = serve_app.build_batch
    monkeypatch.setattr(serve_app, "build_batch", lambda req, s: calls.append(type(req).__name__) or orig(req, s))
    from test_serve import VALID

    assert fast.post("/v1/score", json=VALID).status_code == 200
    assert calls == ["FastScoreRequest"]
