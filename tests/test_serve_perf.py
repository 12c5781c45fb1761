"""The server's one validation path (msgspec Structs + vectorised timestamps), and that it is the only one.

* Timestamps: the vectorised ISO 8601 parser gives exactly pandas' values (shapes, edge cases, random).
* The contract: on ~300 valid and invalid bodies (the input rules of test_serve.py and their variants),
  msgspec accepts nothing that the former pydantic contract (benchmarks/pydantic_contract.py) rejects;
  where pydantic accepts and the server refuses, it is one of the documented rules the types cannot
  express (timestamps, as-of, limits, sellers); every 4xx names a field; nothing is a 5xx.
* One path: every request is parsed exactly once, valid or not (no second parse on failure), and
  nothing in serve/ imports pydantic to validate a body.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "benchmarks"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from serve import parsing, timestamps

# ----------------------------------------------------------------------------- timestamps

SHAPES = [
    "2025-12-01",
    "2025-12-01T10:00:00",
    "2025-12-01T10:00:00Z",
    "2025-12-01 10:00:00",
    "2025-12-01T10:00:00.123",
    "2025-12-01T10:00:00.123Z",
    "2025-12-01T10:00:00.123456",
    "2025-12-01T10:00:00.123456Z",
]
ODD = [
    "2025-02-29T00:00:00Z",
    "2024-02-29T23:59:59.999999Z",
    "2100-02-29",
    "2000-02-29",
    "1900-02-29",
    "2025-13-01",
    "2025-00-10",
    "2025-04-31",
    "2025-12-01T24:00:00",
    "2025-12-01T23:60:00",
    "2025-12-01T23:59:60Z",
    "2025-12-01X10:00:00",
    "2025-12-01T10:00:00.12Z",
    "2025-12-01T10:00:00+02:00",
    "2025-12-01T10:00:00.1234567",
    "20251201",
    "2025-12-01T10:00",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "2099-12-31T23:59:59.999999Z",
    "2100-01-01",
    "1850-01-01",
    "2025-1-01",
    "2025-12-01T10:00:00z",
    "2025-12-01t10:00:00",
    "٢٠٢٥-12-01",
    "2025-12-01T10:00:00Z\n",
    " 2025-12-01",
    "2025-12-01T10:0a:00Z",
    "2025/12/01T10:00:00Z",
]


def _compare(values: list[str]) -> None:
    fast, done = timestamps.fast_times(values)
    fast = timestamps.in_range(fast)  # the schema's 1970..2100 range, as parse_times applies it
    ref = timestamps.parse_times(list(values))
    got, mismatch = timestamps.event_times(list(values))
    for v, f, d, r, g, m in zip(values, fast, done, ref, got, mismatch):
        if d:  # every string the vectorised parser takes, it parses exactly as pandas does
            assert (np.isnat(f) and np.isnat(r)) or f == r, (v, f, r)
        if m:  # not ISO 8601 at all: refused whatever pandas would make of it
            assert np.isnat(g) and timestamps.TS_RE.match(v) is None, v
        else:
            assert (np.isnat(g) and np.isnat(r)) or g == r, (v, g, r)


def test_fast_timestamps_equal_pandas_on_shapes_and_edge_cases():
    _compare(SHAPES + ODD)
    fast, done = timestamps.fast_times(SHAPES)
    assert done.all()  # the common shapes do take the fast path


@hsettings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1890, 2130),
            st.integers(0, 13),
            st.integers(0, 32),
            st.integers(0, 25),
            st.integers(0, 61),
            st.integers(0, 61),
            st.integers(0, 999_999),
            st.sampled_from(SHAPES),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_fast_timestamps_equal_pandas_random(parts):
    values = []
    for y, mo, d, h, mi, s, us, shape in parts:
        full = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{us:06d}"
        cut = {10: 10, 19: 19, 20: 19, 23: 23, 24: 23, 26: 26, 27: 26}[len(shape)]
        v = full[:cut] + ("Z" if shape.endswith("Z") else "")
        values.append(v.replace("T", " ") if " " in shape else v)
    _compare(values)


def test_one_length_lists_equal_pandas():
    """Lists whose strings all have one length take a shortcut (one join, no per-string work): same values."""
    by_len: dict[int, list[str]] = {}
    for v in SHAPES + ODD + ["2025-12-01T10:00:0\x00", "2025-12-01T10:0\x00:00", "2025-12-01\x00"[:10]]:
        by_len.setdefault(len(v), []).append(v)
    for group in by_len.values():
        _compare(group)
        _compare(group * 3)
    assert timestamps._uniform(["2025-12-01T10:00:00Z"] * 4) is not None
    assert timestamps._uniform(["2025-12-01T10:00:0\x00", "2025-12-01T10:00:00"]) is None  # a NUL inside
    assert timestamps._uniform(["2025-12-01", "2025-12-011"]) is None


def test_timestamps_in_chunks_equal_one_pass(monkeypatch):
    values = (SHAPES + ODD) * 7
    whole, mis = timestamps.event_times(values)
    monkeypatch.setattr(timestamps, "CHUNK", 5)
    parts, mis2 = timestamps.event_times(values)
    assert (
        np.array_equal(np.isnat(whole), np.isnat(parts)) and (whole[~np.isnat(whole)] == parts[~np.isnat(parts)]).all()
    )
    assert np.array_equal(mis, mis2)


# ----------------------------------------------------------------------------- the contract


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from fastapi.testclient import TestClient
    from test_serve import build_test_bundle, settings

    from sellerlift.runtime import Runtime
    from serve.app import create_app

    info = build_test_bundle(tmp_path_factory)
    return TestClient(
        create_app(
            settings(info["bundle_dipn"], max_customers=50, max_events_per_customer=40),
            model=Runtime.load(info["bundle_dipn"]),
        )
    )


def _bodies() -> list[tuple[str, bytes]]:
    from test_serve import ALLOC, ALLOC_RULES, BAD_BODIES, RULES, VALID

    out = [("/v1/score", json.dumps(b).encode()) for _, b, _, _ in RULES]
    out += [(p, b) for b in BAD_BODIES for p in ("/v1/score", "/v1/promotions/allocate")]
    out += [("/v1/promotions/allocate", json.dumps({**ALLOC, **c}, allow_nan=True).encode()) for _, c, _ in ALLOC_RULES]
    ev = VALID["customers"][0]["events"]

    def with_ts(ts, as_of="2026-01-01T00:00:00Z"):
        return json.dumps(
            {"as_of": as_of, "customers": [{"customer_id": "c", "events": [{"type": "visit", "ts": ts}, *ev]}]},
            ensure_ascii=False,
        ).encode()

    out += [("/v1/score", with_ts(t)) for t in SHAPES + ODD]
    out += [("/v1/score", with_ts("2025-12-01", as_of=t)) for t in SHAPES + ODD]
    out += [
        ("/v1/promotions/curves", with_ts(t))
        for t in ("2025-12-01T10:00:00+02:00", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000001Z", "bad")
    ]
    out += [
        ("/v1/score", b'{"as_of": "2026-01-01", "customers": [{"customer_id": 1, "customer_id": "x"}]}'),
        (
            "/v1/score",
            b'{"as_of": "2026-01-01", "customers": [{"customer_id": 1, "events": [{"type": "visit", '
            b'"ts": "2025-01-01", "amount": NaN}]}]}',
        ),
        (
            "/v1/score",
            b'{"as_of": "2026-01-01", "customers": [{"customer_id": 1, "events": [{"type": "visit", '
            b'"ts": "2025-01-01", "amount": 7}]}]}',
        ),
        (
            "/v1/score",
            b'{"as_of": "2026-01-01", "customers": [{"customer_id": 1, "events": [{"type": "visit", '
            b'"ts": "2025-01-01", "amount": -0.0}]}]}',
        ),
        ("/v1/score", b'{"as_of": "2026-01-01\\n", "customers": [{"customer_id": 1}]}'),
        ("/v1/score", b'{"as_of": "", "customers": []}'),
        (
            "/v1/score",
            json.dumps({"as_of": "2026-01-01", "customers": [{"customer_id": i} for i in range(51)]}).encode(),
        ),  # 413 (max_customers 50)
        (
            "/v1/score",
            json.dumps(
                {
                    "as_of": "2026-01-01",
                    "customers": [{"customer_id": 1, "events": [{"type": "visit", "ts": "2025-01-01"}] * 41}],
                }
            ).encode(),
        ),  # 413
        (
            "/v1/score",
            json.dumps(
                {
                    "as_of": "2026-01-01",
                    "customers": [
                        {"customer_id": 1, "events": [{"type": "visit", "ts": "2025-01-01"}] * 41},
                        {"customer_id": 2, "events": [{"type": "visit", "ts": "yesterday"}]},
                    ],
                }
            ).encode(),
        ),  # 413 first now
        ("/v1/promotions/allocate", json.dumps({**ALLOC, "seller_budgets": {"s1": 5.0, "s2": 1e308}}).encode()),
        ("/v1/promotions/allocate", json.dumps({**ALLOC, "budget": 3}).encode()),
    ]
    return out


# Rules the types cannot state: the server refuses bodies the pydantic contract accepts only for these.
RULE_TYPES = {
    "timestamp",
    "after_as_of",
    "missing",
    "too_many_customers",
    "too_many_events",
    "unknown_seller",
    "missing_seller_budget",
    "budget",
    "allocation",
}


def test_msgspec_accepts_nothing_the_pydantic_contract_rejects(client):
    import pydantic
    from pydantic_contract import AllocateRequest, ScoreRequest

    checked = 0
    for path, body in _bodies():
        model = AllocateRequest if path.endswith("allocate") else ScoreRequest
        try:
            model.model_validate_json(body)
            pydantic_ok = True
        except (pydantic.ValidationError, ValueError):
            pydantic_ok = False
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code < 500, (path, body[:200], r.text[:300])
        if r.status_code == 200:
            assert pydantic_ok, ("accepted what the contract rejects", path, body[:200])
            continue
        detail = r.json()["detail"]
        assert all(d["field"] and d["msg"] for d in detail), detail
        if pydantic_ok:
            kinds = {d["type"] for d in detail} - {"more_errors"}
            lone_surrogate = b"\\ud8" in body or b"\\udc" in body  # not Unicode text: refused (see D2)
            assert kinds <= RULE_TYPES or lone_surrogate, (path, body[:200], detail)
        checked += 1
    assert checked > 100


def test_error_messages_name_the_field_the_value_and_the_expectation(client):
    from test_serve import VALID

    cases = [
        (["customers", 0, "customer_id"], 1.5, "customers[0].customer_id", ["1.5", "int | str"]),
        (["customers", 0, "events", 1, "amount"], -1.0, "customers[0].events[1].amount", ["-1.0", ">= 0.0"]),
        (["customers", 0, "events", 1, "amount"], "12.5", "customers[0].events[1].amount", ["'12.5'", "float"]),
        (["customers", 0, "events", 0, "ts"], "yesterday", "customers[0].events[0].ts", ["'yesterday'", "ISO 8601"]),
        (["customers", 0, "events", 0, "type"], "refund", "customers[0].events[0].type", ["'refund'", "visit"]),
        (["customers", 0, "colour"], "red", "customers[0].colour", ["colour", "customer_id, as_of, events"]),
    ]
    for path, value, field, words in cases:
        body = json.loads(json.dumps(VALID))
        obj = body
        for p in path[:-1]:
            obj = obj[p]
        obj[path[-1]] = value
        r = client.post("/v1/score", json=body)
        assert r.status_code == 422, r.text
        item = next(d for d in r.json()["detail"] if d["field"] == field)
        assert all(w in item["msg"] for w in words), (field, item)


def test_error_lists_are_capped_at_20_with_a_count(client):
    body = {"as_of": "2026-01-01", "customers": [{"customer_id": 1.5} for _ in range(45)]}
    r = client.post("/v1/score", json=body)
    detail = r.json()["detail"]
    assert r.status_code == 422 and len(detail) == 21
    assert [d["field"] for d in detail[:20]] == [f"customers[{i}].customer_id" for i in range(20)]
    assert detail[20] == {"field": "body", "loc": ["body"], "msg": "... and 25 more error(s)", "type": "more_errors"}


# ----------------------------------------------------------------------------- one path


def test_every_request_is_parsed_once_valid_or_not(client, monkeypatch):
    from test_serve import VALID

    calls = []
    orig = parsing.parse
    monkeypatch.setattr(parsing, "parse", lambda *a: calls.append(1) or orig(*a))
    for body, status in (
        (VALID, 200),
        ({**VALID, "as_of": "soon"}, 422),
        ({"customers": [{"customer_id": 1.5}]}, 422),
        ({"customers": [{"customer_id": i} for i in range(51)]}, 413),
    ):
        calls.clear()
        assert client.post("/v1/score", json=body).status_code == status
        assert calls == [1], (body, calls)


def test_serve_never_validates_with_pydantic():
    for path in (REPO / "serve").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.split(".")[0] == "pydantic" for n in names), path.name
