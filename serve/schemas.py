"""The request/response contract: msgspec Structs, the one definition of every body the server reads or writes.

The same Structs decode the requests (:mod:`serve.parsing`), encode the responses
(:mod:`serve.jobs`) and give the OpenAPI schema (:func:`openapi_components`), so the
documented contract and what is accepted cannot drift apart. Decoding is strict: no
type coercion (``"12.5"`` is not a number, ``true`` is not a number), no unknown
fields. Timestamps are strings here (at most 64 characters) and their ISO 8601 form
is checked, vectorised, in :mod:`serve.parsing` (the schema states the pattern);
rules that need the whole request (limits, as-of) are checked there too.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from sellerlift.schema import EVENT_TYPES

# ISO 8601 date, optionally followed by a time and offset (the parser checks the rest). ASCII digits only.
TS_PATTERN = r"^(19|20|21)[0-9][0-9]-?[0-9][0-9]-?[0-9][0-9]([T ][0-9:.,]+(Z|[+-][0-9][0-9](:?[0-9][0-9])?)?)?$"
TS_PATTERN_STRICT = TS_PATTERN[:-1] + r"\Z"  # Python's $ also matches before a final newline

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
Timestamp = Annotated[str, Meta(max_length=64, extra_json_schema={"pattern": TS_PATTERN})]
Id = Annotated[str, Meta(min_length=1, max_length=256)] | int
Amount = Annotated[float, Meta(ge=0.0, le=1e9)]


def _d(text: str, **kw) -> Meta:
    return Meta(description=text, **kw)


# ------------------------------------------------------------------ requests


class Event(Struct, forbid_unknown_fields=True, gc=False):
    type: Annotated[EventType, _d("what happened; one of " + ", ".join(EVENT_TYPES))]
    ts: Annotated[Timestamp, _d("ISO 8601 time; an offset is converted to UTC, no offset = UTC. Must not be after "
                                "the customer's as-of time.")]
    amount: Annotated[Amount, _d("order value for purchases (net of discount), else 0; at most 1e9")] = 0.0


class Customer(Struct, forbid_unknown_fields=True, gc=False):
    customer_id: Annotated[Id, _d("your identifier, echoed back (string <= 256 chars or integer)")]
    as_of: Annotated[Timestamp | None, _d("score as of this time (ISO 8601); default: the request's as_of")] = None
    events: Annotated[list[Event], _d("raw history, any order; empty = cold start")] = []


class ScoreRequest(Struct, forbid_unknown_fields=True, gc=False):
    customers: Annotated[list[Customer], _d("customers to score (limit: max_customers)")]
    as_of: Annotated[Timestamp | None, _d("default as-of time for every customer")] = None


class AllocateCustomer(Struct, forbid_unknown_fields=True, gc=False):
    customer_id: Annotated[Id, _d("your identifier, echoed back (string <= 256 chars or integer)")]
    value: Annotated[float, Meta(ge=0.0, le=1e9, description="expected order value if the customer buys; at most "
                                                               "1e9")]
    margin: Annotated[float, Meta(gt=0.0, le=1.0, description="profit margin of the order, in (0, 1]")]
    as_of: Annotated[Timestamp | None, _d("as-of time of this customer; default: the request's as_of")] = None
    events: Annotated[list[Event], _d("raw history, any order; empty = cold start")] = []
    seller_id: Annotated[Id | None, _d("required when seller_budgets is given")] = None


Budget = Annotated[float, Meta(extra_json_schema={"minimum": 0})]  # >= 0 and finite: checked with the key named


class AllocateRequest(Struct, forbid_unknown_fields=True, gc=False):
    customers: list[AllocateCustomer]
    as_of: Timestamp | None = None
    budget: Annotated[Annotated[float, Meta(ge=0.0)] | None,
                      _d("cap on total expected discount spend; null = no total cap")] = None
    seller_budgets: Annotated[dict[str, Budget] | None,
                              _d("cap on expected spend per seller (keys: seller_id as a string)")] = None


class ReloadRequest(Struct, forbid_unknown_fields=True):
    bundle: Annotated[Annotated[str, Meta(max_length=4096)] | None,
                      _d("a bundle directory inside the bundle root (bundles_dir), or @alias of the registry "
                         "(e.g. @champion); default: choose again as at start")] = None


# ------------------------------------------------------------------ responses


class ModelRef(Struct):
    version: Annotated[str, _d("bundle version: sha256 prefix of its manifest")]
    run_id: str | None


class CustomerScore(Struct):
    customer_id: Id
    as_of: str
    intent_7d: Annotated[float, _d("probability of a purchase in the next 7 days")]
    churn_90d: Annotated[float, _d("probability of no purchase in the next 90 days")]
    segment: Annotated[str | None, _d("RFM segment name (null if the bundle has no segments)")]
    segment_id: int | None
    n_events: Annotated[int, _d("events before as_of that were used (the model reads the last max_len)")]
    cold_start: Annotated[bool, _d("no events before as_of")]
    prior: Annotated[bool, _d("intent_7d and churn_90d are the bundle's calibrated cold-start prior (base rates "
                              "of customers without history), not a model output: true for cold-start customers "
                              "when the bundle has a prior")]


class ScoreResponse(Struct):
    model: ModelRef
    results: list[CustomerScore]


class CustomerCurve(Struct):
    customer_id: Id
    conversion: Annotated[list[float], _d("P(purchase) at each discount level, monotone non-decreasing")]
    uplift: Annotated[list[float], _d("conversion minus conversion at no discount")]


class CurvesResponse(Struct):
    model: ModelRef
    discount_levels: list[int]
    results: list[CustomerCurve]


class CustomerAllocation(Struct):
    customer_id: Id
    seller_id: Id | None
    level_pct: Annotated[float, _d("discount to offer, in percent (0 = none)")]
    conversion: Annotated[float, _d("P(purchase) at that level")]
    expected_spend: float
    expected_incremental_profit: float


class AllocationTotals(Struct):
    spend: Annotated[float, _d("expected discount spend")]
    incremental_profit: Annotated[float, _d("expected profit over offering no discount")]
    roi: Annotated[float, _d("incremental_profit / spend (0 when nothing is spent)")]
    upper_bound: Annotated[float, _d(
        "an upper bound on the best incremental profit any allocation could reach: the Lagrangian dual, equal to "
        "the LP relaxation's optimum (customers may take fractions of a level there), so it is loose when few "
        "customers share a budget")]
    gap_to_upper_bound: Annotated[float, _d(
        "(upper_bound - incremental_profit) / upper_bound: how far the answer can be from optimal at most; an "
        "optimal answer can still show a gap when the bound is loose")]
    status: Annotated[Literal["optimal", "feasible"], _d(
        "optimal: proven (incremental_profit reaches upper_bound); feasible: within every budget, optimality "
        "not proven")]
    customers_with_discount: int
    seller_spend: dict[str, float] | None


class AllocateResponse(Struct):
    model: ModelRef
    discount_levels: list[int]
    totals: AllocationTotals
    results: list[CustomerAllocation]


class Health(Struct):
    status: str


class Ready(Struct, omit_defaults=True):
    ready: bool
    version: str | None = None
    reason: Annotated[str | None, _d("why not ready: draining (shutting down), no model, inference queue "
                                        "over max_queue_depth")] = None


class ErrorItem(Struct):
    field: Annotated[str, _d("the offending field, e.g. customers[3].events[0].ts")]
    loc: list[str | int]
    msg: Annotated[str, _d("what is wrong: the value given and what was expected")]
    type: str


class ErrorResponse(Struct):
    detail: list[ErrorItem] | str


# ------------------------------------------------------------------ OpenAPI

_EXAMPLE_CUSTOMERS = [
    {"customer_id": "c-1001", "events": [
        {"type": "visit", "ts": "2025-12-01T10:00:00Z"},
        {"type": "add_to_cart", "ts": "2025-12-01T10:03:00Z"},
        {"type": "purchase", "ts": "2025-12-01T10:05:00Z", "amount": 42.5},
        {"type": "email_open", "ts": "2025-12-20T08:00:00+01:00"},
    ]},
    {"customer_id": 1002, "events": []},
]
EXAMPLES = {
    "ScoreRequest": [{"as_of": "2026-01-01T00:00:00Z", "customers": _EXAMPLE_CUSTOMERS}],
    "AllocateRequest": [{
        "as_of": "2026-01-01T00:00:00Z", "budget": 50.0, "seller_budgets": {"s-1": 30.0, "s-2": 40.0},
        "customers": [{**_EXAMPLE_CUSTOMERS[0], "value": 60.0, "margin": 0.4, "seller_id": "s-1"},
                      {**_EXAMPLE_CUSTOMERS[1], "value": 35.0, "margin": 0.3, "seller_id": "s-2"}]}],
    "ReloadRequest": [{"bundle": "bundles/0123abcd"}, {"bundle": "@champion"}, {}],
}
TYPES = (ScoreRequest, AllocateRequest, ReloadRequest, ScoreResponse, CurvesResponse, AllocateResponse, Health, Ready,
         ErrorResponse)


def openapi_components() -> dict:
    """``components.schemas`` of every Struct above (JSON Schema 2020-12, as OpenAPI 3.1 takes it)."""
    _, components = msgspec.json.schema_components(TYPES, ref_template="#/components/schemas/{name}")
    for name, examples in EXAMPLES.items():
        components[name]["examples"] = examples
    return components


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}
