"""The request/response contract: msgspec Structs, the one definition of every body the server reads or writes.

The same Structs decode the requests (:mod:`serve.parsing`), encode the responses
(:mod:`serve.jobs`) and give the OpenAPI schema (:mod:`serve.openapi`), so the
documented contract and what is accepted cannot drift apart. Decoding is strict: no
type coercion (``"12.5"`` is not a number, ``true`` is not a number), no unknown
fields. Timestamps are strings here (at most 64 characters) and their ISO 8601 form
is checked, vectorised, in :mod:`serve.parsing` (the schema states the pattern);
rules that need the whole request (limits, as-of) are checked there too. The responses
whose fields follow the served bundle are :mod:`serve.response_types`.
"""

from __future__ import annotations

from typing import Annotated, Literal

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
    ts: Annotated[
        Timestamp,
        _d(
            "ISO 8601 time; an offset is converted to UTC, no offset = UTC. Must not be after "
            "the customer's as-of time."
        ),
    ]
    amount: Annotated[Amount, _d("order value for purchases (net of discount), else 0; at most 1e9")] = 0.0


class Customer(Struct, forbid_unknown_fields=True, gc=False):
    customer_id: Annotated[Id, _d("your identifier, echoed back (string <= 256 chars or integer)")]
    as_of: Annotated[Timestamp | None, _d("score as of this time (ISO 8601); default: the request's as_of")] = None
    events: Annotated[list[Event], _d("raw history, any order; empty = cold start")] = []


class ScoreRequest(Struct, forbid_unknown_fields=True, gc=False):
    customers: Annotated[list[Customer], _d("customers to score (limit: max_customers)")]
    as_of: Annotated[Timestamp | None, _d("default as-of time for every customer")] = None


Percent = Annotated[float, Meta(ge=0.0, le=100.0)]
Money = Annotated[float, Meta(ge=0.0, le=1e9)]
Name = Annotated[str, Meta(min_length=1, max_length=256)]


class AllocateCustomer(Struct, forbid_unknown_fields=True, gc=False):
    customer_id: Annotated[Id, _d("your identifier, echoed back (string <= 256 chars or integer)")]
    value: Annotated[float, Meta(ge=0.0, le=1e9, description="expected order value if the customer buys; at most 1e9")]
    margin: Annotated[float, Meta(gt=0.0, le=1.0, description="profit margin of the order, in (0, 1]")]
    as_of: Annotated[Timestamp | None, _d("as-of time of this customer; default: the request's as_of")] = None
    events: Annotated[list[Event], _d("raw history, any order; empty = cold start")] = []
    seller_id: Annotated[Id | None, _d("required when seller_budgets or seller_tiers is given")] = None
    max_discount: Annotated[
        Percent | None,
        _d("highest discount (percent) this customer may get; with the request's max_discount the lower one holds"),
    ] = None
    segment: Annotated[
        Name | None,
        _d("the segment segment_max_discount applies to; default: the bundle's action segment, else its RFM segment"),
    ] = None


Budget = Annotated[float, Meta(extra_json_schema={"minimum": 0})]  # >= 0 and finite: checked with the key named


class AllocateRequest(Struct, forbid_unknown_fields=True, gc=False):
    customers: list[AllocateCustomer]
    as_of: Timestamp | None = None
    budget: Annotated[
        Annotated[float, Meta(ge=0.0)] | None, _d("cap on total expected discount spend; null = no total cap")
    ] = None
    seller_budgets: Annotated[
        dict[str, Budget] | None, _d("cap on expected spend per seller (keys: seller_id as a string)")
    ] = None
    weight: Annotated[
        float,
        Meta(
            ge=0.0,
            le=1.0,
            description=(
                "objective weight: 0 = the week's incremental profit (the default), 1 = the whole 90-day incremental "
                "profit (the week's + the margin on the extra revenue after it, from the bundle's enduring model); in "
                "between a blend. > 0 needs a bundle with the enduring model"
            ),
        ),
    ] = 0.0
    enduring_value: Annotated[
        Literal["margin", "retention"],
        _d(
            "what the weight values beyond the week: 'margin' (the margin on the extra revenue after the offer's "
            "week, the default) or 'retention' (the change in retention after it, valued at a kept customer's "
            "CLV: the value head's 90-day margin over P(buy again); needs a bundle with the value head)"
        ),
    ] = "margin"
    seller_tiers: Annotated[
        dict[str, Name] | None,
        _d("tier of each seller (keys: seller_id as a string); every seller of the request needs one"),
    ] = None
    tier_budgets: Annotated[
        dict[str, Budget] | None, _d("cap on expected spend per seller tier (keys: the tiers of seller_tiers)")
    ] = None
    max_discount: Annotated[Percent | None, _d("highest discount (percent) any customer may get")] = None
    segment_max_discount: Annotated[
        dict[str, Percent] | None,
        _d("highest discount (percent) per segment (keys: segment names, see customers[].segment)"),
    ] = None
    max_incentive: Annotated[
        Money | None, _d("most expected incentive (discount x P(purchase) x value, in money) any one customer may get")
    ] = None
    spread_penalty: Annotated[
        Annotated[float, Meta(ge=0.0, le=1e6)],
        _d(
            "penalty per squared unit of a customer's expected incentive (fairness: spreads incentives over more "
            "customers); 0 = none"
        ),
    ] = 0.0


class ReloadRequest(Struct, forbid_unknown_fields=True):
    bundle: Annotated[
        Annotated[str, Meta(max_length=4096)] | None,
        _d(
            "a bundle directory inside the bundle root (bundles_dir), or @alias of the registry "
            "(e.g. @champion); default: choose again as at start"
        ),
    ] = None


# ------------------------------------------------------------------ responses


class ModelRef(Struct):
    version: Annotated[str, _d("bundle version: sha256 prefix of its manifest")]
    run_id: str | None


class CustomerAllocation(Struct):
    customer_id: Id
    seller_id: Id | None
    level_pct: Annotated[float, _d("discount to offer, in percent (0 = none)")]
    conversion: Annotated[float, _d("P(purchase) at that level")]
    expected_spend: float
    expected_incremental_profit: Annotated[float, _d("the week's expected profit over no discount (the direct part)")]
    expected_enduring_value: Annotated[
        float | None,
        _d(
            "margin on the extra 90-day revenue beyond the week at that level (the enduring part, not weighted); "
            "null without the enduring model"
        ),
    ]
    objective: Annotated[
        float,
        _d(
            "what the allocation maximised for this customer: direct + weight x enduring - "
            "spread_penalty x expected_spend^2"
        ),
    ]


class AllocationTotals(Struct):
    spend: Annotated[float, _d("expected discount spend")]
    incremental_profit: Annotated[float, _d("expected profit over offering no discount")]
    roi: Annotated[float, _d("incremental_profit / spend (0 when nothing is spent)")]
    upper_bound: Annotated[
        float,
        _d(
            "an upper bound on the best objective (the incremental profit with weight 0 and no spread penalty) any "
            "allocation could reach: the Lagrangian dual, equal to "
            "the LP relaxation's optimum (customers may take fractions of a level there), so it is loose when few "
            "customers share a budget"
        ),
    ]
    gap_to_upper_bound: Annotated[
        float,
        _d(
            "(upper_bound - objective) / upper_bound: how far the answer can be from optimal at most; an "
            "optimal answer can still show a gap when the bound is loose"
        ),
    ]
    status: Annotated[
        Literal["optimal", "feasible"],
        _d(
            "optimal: proven (objective reaches upper_bound); feasible: within every budget and cap, optimality "
            "not proven"
        ),
    ]
    customers_with_discount: int
    seller_spend: dict[str, float] | None
    tier_spend: Annotated[dict[str, float] | None, _d("expected spend per seller tier (with seller_tiers)")]
    weight: Annotated[float, _d("the objective weight used")]
    enduring_value: Annotated[
        float | None, _d("the enduring part of the chosen levels (not weighted); null without the enduring model")
    ]
    objective: Annotated[
        float,
        _d(
            "incremental_profit + weight x enduring_value - spread_penalty_paid: what was "
            "maximised (upper_bound bounds it)"
        ),
    ]
    spread_penalty_paid: float
    spread: Annotated[
        float,
        _d(
            "standard deviation of the expected incentive among customers offered a discount "
            "(the fairness / spread figure)"
        ),
    ]


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
    reason: Annotated[
        str | None, _d("why not ready: draining (shutting down), no model, inference queue over max_queue_depth")
    ] = None


class ErrorItem(Struct):
    field: Annotated[str, _d("the offending field, e.g. customers[3].events[0].ts")]
    loc: list[str | int]
    msg: Annotated[str, _d("what is wrong: the value given and what was expected")]
    type: str


class ErrorResponse(Struct):
    detail: list[ErrorItem] | str
