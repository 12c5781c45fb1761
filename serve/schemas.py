"""Request and response models (pydantic 2). Strict: no type coercion, no unknown fields.

Per-field rules that pydantic checks in its Rust core (types, event type
names, finite non-negative amounts) live here; rules that need the whole
request (timestamps vs. as-of, limits from the config) are checked,
vectorised, in :mod:`serve.app`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from sellerlift.schema import EVENT_TYPES

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
CustomerId = Annotated[StrictStr, Field(min_length=1, max_length=256)] | StrictInt
# ISO 8601 date, optionally followed by a time and offset; the rest is checked by the parser.
# (Also keeps out words pandas would accept, such as "now".)
TS_PATTERN = r"^(19|20|21)\d\d-?\d\d-?\d\d([T ][0-9:.,]+(Z|[+-]\d\d(:?\d\d)?)?)?$"
Timestamp = Annotated[StrictStr, Field(max_length=64, pattern=TS_PATTERN)]

_STRICT = ConfigDict(strict=True, extra="forbid")

_EXAMPLE_CUSTOMERS = [
    {"customer_id": "c-1001", "events": [
        {"type": "visit", "ts": "2025-12-01T10:00:00Z"},
        {"type": "add_to_cart", "ts": "2025-12-01T10:03:00Z"},
        {"type": "purchase", "ts": "2025-12-01T10:05:00Z", "amount": 42.5},
        {"type": "email_open", "ts": "2025-12-20T08:00:00+01:00"},
    ]},
    {"customer_id": 1002, "events": []},
]


class Event(BaseModel):
    model_config = _STRICT
    type: EventType = Field(description="what happened; one of " + ", ".join(EVENT_TYPES))
    ts: Timestamp = Field(description="ISO 8601 time; an offset is converted to UTC, no offset = UTC. "
                                                     "Must not be after the customer's as-of time.")
    amount: float = Field(0.0, ge=0.0, le=1e9, allow_inf_nan=False,
                          description="order value for purchases (net of discount), else 0; at most 1e9")


class Customer(BaseModel):
    model_config = _STRICT
    customer_id: CustomerId = Field(description="your identifier, echoed back (string <= 256 chars or integer)")
    as_of: Timestamp | None = Field(None,
                                    description="score as of this time (ISO 8601); default: the request's as_of")
    events: list[Event] = Field(default_factory=list, description="raw history, any order; empty = cold start")


class ScoreRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [
        {"as_of": "2026-01-01T00:00:00Z", "customers": _EXAMPLE_CUSTOMERS}]})
    as_of: Timestamp | None = Field(None, description="default as-of time for every customer")
    customers: list[Customer] = Field(description="customers to score (limit: max_customers)")


class CustomerScore(BaseModel):
    customer_id: CustomerId
    as_of: str
    intent_7d: float = Field(description="probability of a purchase in the next 7 days")
    churn_90d: float = Field(description="probability of no purchase in the next 90 days")
    segment: str | None = Field(description="RFM segment name (None if the bundle has no segments)")
    segment_id: int | None
    n_events: int = Field(description="events before as_of that were used (the model reads the last max_len)")
    cold_start: bool = Field(description="no events before as_of")


class ModelRef(BaseModel):
    version: str = Field(description="bundle version: sha256 prefix of its manifest")
    run_id: str | None


class ScoreResponse(BaseModel):
    model: ModelRef
    results: list[CustomerScore]


class CurvesRequest(ScoreRequest):
    pass


class CustomerCurve(BaseModel):
    customer_id: CustomerId
    conversion: list[float] = Field(description="P(purchase) at each discount level, monotone non-decreasing")
    uplift: list[float] = Field(description="conversion minus conversion at no discount")


class CurvesResponse(BaseModel):
    model: ModelRef
    discount_levels: list[int]
    results: list[CustomerCurve]


class AllocateCustomer(Customer):
    value: float = Field(ge=0.0, le=1e9, allow_inf_nan=False,
                         description="expected order value if the customer buys; at most 1e9")
    margin: float = Field(gt=0.0, le=1.0, allow_inf_nan=False, description="profit margin of the order, in (0, 1]")
    seller_id: CustomerId | None = Field(None, description="required when seller_budgets is given")


class AllocateRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [{
        "as_of": "2026-01-01T00:00:00Z",
        "budget": 50.0,
        "seller_budgets": {"s-1": 30.0, "s-2": 40.0},
        "customers": [
            {**_EXAMPLE_CUSTOMERS[0], "value": 60.0, "margin": 0.4, "seller_id": "s-1"},
            {**_EXAMPLE_CUSTOMERS[1], "value": 35.0, "margin": 0.3, "seller_id": "s-2"},
        ]}]})
    as_of: Timestamp | None = Field(None)
    customers: list[AllocateCustomer]
    budget: float | None = Field(None, ge=0.0, allow_inf_nan=False,
                                 description="cap on total expected discount spend; null = no total cap")
    seller_budgets: dict[str, float] | None = Field(
        None, description="cap on expected spend per seller (keys: seller_id as a string)")


class CustomerAllocation(BaseModel):
    customer_id: CustomerId
    seller_id: CustomerId | None
    level_pct: float = Field(description="discount to offer, in percent (0 = none)")
    conversion: float = Field(description="P(purchase) at that level")
    expected_spend: float
    expected_incremental_profit: float


class AllocationTotals(BaseModel):
    spend: float = Field(description="expected discount spend")
    incremental_profit: float = Field(description="expected profit over offering no discount")
    roi: float = Field(description="incremental_profit / spend (0 when nothing is spent)")
    bound: float = Field(description="upper bound on the best possible incremental profit (Lagrangian dual)")
    gap: float = Field(description="relative gap to the bound")
    status: str
    customers_with_discount: int
    seller_spend: dict[str, float] | None


class AllocateResponse(BaseModel):
    model: ModelRef
    discount_levels: list[int]
    totals: AllocationTotals
    results: list[CustomerAllocation]


class ReloadRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid",
                              json_schema_extra={"examples": [{"bundle": "bundles/0123abcd"}, {}]})
    bundle: StrictStr | None = Field(None, max_length=4096,
                                     description="bundle directory; default: resolve again (alias / newest)")


class ErrorItem(BaseModel):
    field: str = Field(description="the offending field, e.g. customers[3].events[0].ts")
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    detail: list[ErrorItem] | str


# ------------------------------------------------------------------ the fast path (msgspec)
#
# The same request shapes as msgspec Structs, decoded and checked in C in one
# pass over the body (about 20x faster than pydantic on 6,000 events). They are
# a *stricter subset* of the pydantic models above: whatever they accept,
# pydantic accepts with the same values; anything they reject is validated
# again by the pydantic models, which produce the (documented) 4xx. So errors
# never come from here. Event timestamps are not pattern-checked here (a regex
# per event costs more than the rest of the decode): serve.app checks them,
# vectorised, against TS_PATTERN before anything else uses them.

try:
    import msgspec
except ImportError:  # the fast path is optional: without msgspec every request takes the pydantic path
    msgspec = None

if msgspec is not None:
    from typing import Optional, Union

    # ASCII digits only and \Z (Python's $ also matches before a final newline; pydantic's Rust regex does not)
    TS_PATTERN_STRICT = (r"^(19|20|21)[0-9][0-9]-?[0-9][0-9]-?[0-9][0-9]([T ][0-9:.,]+(Z|[+-][0-9][0-9](:?[0-9][0-9])?)?)?"
                         r"\Z")
    _FastTs = Annotated[str, msgspec.Meta(max_length=64, pattern=TS_PATTERN_STRICT)]
    _FastEventTs = Annotated[str, msgspec.Meta(max_length=64)]  # pattern: checked vectorised in serve.app
    _FastId = Union[Annotated[str, msgspec.Meta(min_length=1, max_length=256)], int]
    _Amount = Annotated[float, msgspec.Meta(ge=0.0, le=1e9)]

    class FastEvent(msgspec.Struct, forbid_unknown_fields=True):
        type: EventType
        ts: _FastEventTs
        amount: _Amount = 0.0

    class FastCustomer(msgspec.Struct, forbid_unknown_fields=True):
        customer_id: _FastId
        as_of: Optional[_FastTs] = None
        events: list[FastEvent] = []

    class FastScoreRequest(msgspec.Struct, forbid_unknown_fields=True):
        customers: list[FastCustomer]
        as_of: Optional[_FastTs] = None

    class FastAllocateCustomer(msgspec.Struct, forbid_unknown_fields=True):
        customer_id: _FastId
        value: Annotated[float, msgspec.Meta(ge=0.0, le=1e9)]
        margin: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]
        as_of: Optional[_FastTs] = None
        events: list[FastEvent] = []
        seller_id: Optional[_FastId] = None

    class FastAllocateRequest(msgspec.Struct, forbid_unknown_fields=True):
        customers: list[FastAllocateCustomer]
        as_of: Optional[_FastTs] = None
        budget: Optional[Annotated[float, msgspec.Meta(ge=0.0)]] = None
        seller_budgets: Optional[dict[str, float]] = None
