"""The OpenAPI schema's components: every Struct of :mod:`serve.schemas` with its examples, and the response
types of the served bundle (:mod:`serve.response_types`), so the schema documents what is answered.
"""

from __future__ import annotations

import msgspec

from serve.response_types import DEFAULT_KEY, ResponseTypes, response_types
from serve.schemas import AllocateRequest, AllocateResponse, ErrorResponse, Health, Ready, ReloadRequest, ScoreRequest

_EXAMPLE_CUSTOMERS = [
    {
        "customer_id": "c-1001",
        "events": [
            {"type": "visit", "ts": "2025-12-01T10:00:00Z"},
            {"type": "add_to_cart", "ts": "2025-12-01T10:03:00Z"},
            {"type": "purchase", "ts": "2025-12-01T10:05:00Z", "amount": 42.5},
            {"type": "email_open", "ts": "2025-12-20T08:00:00+01:00"},
        ],
    },
    {"customer_id": 1002, "events": []},
]
EXAMPLES = {
    "ScoreRequest": [{"as_of": "2026-01-01T00:00:00Z", "customers": _EXAMPLE_CUSTOMERS}],
    "AllocateRequest": [
        {
            "as_of": "2026-01-01T00:00:00Z",
            "budget": 50.0,
            "seller_budgets": {"s-1": 30.0, "s-2": 40.0},
            "customers": [
                {**_EXAMPLE_CUSTOMERS[0], "value": 60.0, "margin": 0.4, "seller_id": "s-1"},
                {**_EXAMPLE_CUSTOMERS[1], "value": 35.0, "margin": 0.3, "seller_id": "s-2"},
            ],
        }
    ],
    "ReloadRequest": [{"bundle": "bundles/0123abcd"}, {"bundle": "@champion"}, {}],
}
STATIC_TYPES = (ScoreRequest, AllocateRequest, ReloadRequest, AllocateResponse, Health, Ready, ErrorResponse)


def openapi_components(types: ResponseTypes | None = None) -> dict:
    """``components.schemas`` of every Struct of :mod:`serve.schemas` and of the served bundle's response types
    (JSON Schema 2020-12, as OpenAPI 3.1 takes it; default: a default bundle's)."""
    types = types or response_types(DEFAULT_KEY)
    _, components = msgspec.json.schema_components(
        (*STATIC_TYPES, types.ScoreResponse, types.CurvesResponse), ref_template="#/components/schemas/{name}"
    )
    for name, examples in EXAMPLES.items():
        components[name]["examples"] = examples
    return components


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}
