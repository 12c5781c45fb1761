"""Fuzzing the server's OpenAPI schema with schemathesis against a real uvicorn process on loopback.

For every operation in /openapi.json, schemathesis generates requests from the schema (positive mode:
schema-valid bodies; negative mode: bodies that break the schema) and sends them to the real server.
Every response must pass:

* ``not_a_server_error``: no 5xx, ever;
* ``status_code_conformance``: the status is one the schema documents for that operation;
* ``content_type_conformance`` / ``response_headers_conformance``: as documented;
* ``response_schema_conformance``: the JSON body validates against the documented response model
  (the 200 models and ``ErrorResponse`` for 413/422);
* negative mode also ``negative_data_rejection``: a schema-invalid body is refused with a 4xx.

Not checked: ``positive_data_acceptance`` (schema-valid => 2xx). The schema cannot express every input
rule, on purpose: a timestamp that matches the ISO 8601 pattern can still be impossible (``2025-13-45``),
outside 1970..2100 or after the customer's as-of, and a customer needs an as-of from somewhere. Those are
422 with the field named (docs/serving.md, "Input rules"), which the schema documents.

The fast test runs a bounded, derandomised number of examples per operation (a few seconds each); the
slow one (``make test-slow``) runs many more, randomised.
"""

from __future__ import annotations

import time
import warnings

import pytest
from serve_fixtures import ADMIN_AUTH, API, AUTH, Server, info  # noqa: F401 - info is a fixture

schemathesis = pytest.importorskip("schemathesis", reason="the dev extra's schemathesis is not installed")

from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
POST_OPS = ("/v1/score", "/v1/promotions/curves", "/v1/promotions/allocate")


@pytest.fixture(scope="module")
def server(info, tmp_path_factory):  # noqa: F811
    # The bundle with a promotion model, so curves and allocation run for real; both tokens set.
    s = Server(info["bundle_dipn"], tmp_path_factory.mktemp("serve-fuzz"), SELLERLIFT_API_TOKEN=API)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def schema(server):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=AUTH, timeout=30)


@pytest.fixture(scope="module")
def full_server(info, tmp_path_factory):  # noqa: F811
    # The bundle with every model (value head, DIPN, enduring model, action segments): the schema of its responses
    # (value, loyalty, retention / value per level) and the allocation's weight and constraints run for real.
    s = Server(info["bundle_full"], tmp_path_factory.mktemp("serve-fuzz-full"), SELLERLIFT_API_TOKEN=API)
    yield s
    s.stop()


def fuzz(schema, server, examples: int, derandomize: bool, budget_s: float, only=None) -> dict:
    """Every operation, positive and negative mode, ``examples`` each; returns {op: (cases, seconds)}.

    Raises AssertionError listing every operation that failed a check (with schemathesis' reproduction).
    """
    failures, stats = [], {}
    deadline = time.monotonic() + budget_s
    for result in schema.get_all_operations():
        op = result.ok()
        if only is not None and op.path not in only:
            continue
        headers = ADMIN_AUTH if op.path.endswith("/reload") else AUTH
        has_input = op.body or any(True for _ in op.iter_parameters())
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if has_input else [])
        for mode in modes:
            checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
            n = [0]
            t0 = time.monotonic()

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=derandomize,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.generate, Phase.shrink],
                report_multiple_bugs=False,
            )
            def one(case):
                if time.monotonic() > deadline:  # bounded in time as well as in count
                    return
                n[0] += 1  # noqa: B023 - one() runs right here, inside this iteration
                case.call_and_validate(
                    base_url=server.url,
                    headers=headers,  # noqa: B023
                    checks=checks,  # noqa: B023
                    timeout=60,
                )

            try:
                one()
            except Exception as err:
                failures.append(f"{op.method.upper()} {op.path} [{mode.value}]: {err}")
            stats[f"{op.method.upper()} {op.path} [{mode.value}]"] = (n[0], round(time.monotonic() - t0, 1))
    assert not failures, "\n\n".join(failures)
    assert server.proc.poll() is None, "the server died during fuzzing"
    return stats


def _log_has_no_tracebacks(server) -> None:
    log = server.log.read_text()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]


def test_schema_covers_every_endpoint(schema):
    ops = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
    assert {("POST", p) for p in POST_OPS} <= ops
    assert {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
        ("POST", "/v1/admin/reload"),
    } <= ops


def test_fuzz_openapi_fast(schema, server):
    stats = fuzz(schema, server, examples=15, derandomize=True, budget_s=45)
    print("schemathesis cases per operation:", stats)
    for name, (cases, _) in stats.items():  # the POST endpoints really were exercised
        if name.split()[1] in POST_OPS:
            assert cases >= 5, stats
    _log_has_no_tracebacks(server)


def test_fuzz_full_bundle_fast(full_server):
    """The POST endpoints of a bundle with every model: its own schema (value, loyalty, action segments, retention
    and value per level; the allocation's weight and constraints), the same checks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = schemathesis.openapi.from_url(f"{full_server.url}/openapi.json", headers=AUTH, timeout=30)
    props = schema.raw_schema["components"]["schemas"]["CustomerScore"]["properties"]
    assert {"value_90d", "loyalty", "action_segment"} <= set(props)
    stats = fuzz(schema, full_server, examples=10, derandomize=True, budget_s=40, only=POST_OPS)
    print("schemathesis cases per operation (full bundle):", stats)
    _log_has_no_tracebacks(full_server)


@pytest.mark.slow
def test_fuzz_openapi_slow(schema, server):
    stats = fuzz(schema, server, examples=300, derandomize=False, budget_s=600)
    print("schemathesis cases per operation:", stats)
    _log_has_no_tracebacks(server)


def test_non_utf8_json_body_is_422_not_400(server):
    """Found by the fuzzer: FastAPI answered an undocumented 400 to JSON bodies that are not UTF-8 text."""
    import httpx

    for body in (b"\xff\xfe\x00garbage", b'{"customers": ["\xc3\x28"]}', b"\x80"):
        r = httpx.post(
            f"{server.url}/v1/score", content=body, headers={**AUTH, "content-type": "application/json"}, timeout=30
        )
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert r.json()["detail"][0]["field"] == "body", r.text
