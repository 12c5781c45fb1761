"""The request contract as pydantic v2 models: the server's former validation path, kept as the other candidate.

The server validates with msgspec alone (serve/schemas.py); these are the same request
types as pydantic models (what serve/schemas.py held up to commit f474cbe), so
``bench_serve.py`` can time ``model_validate_json`` on the raw body against msgspec on the
same bodies, and tests/test_serve_perf.py can check that msgspec accepts nothing this
contract rejects.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from sellerlift.schema import EVENT_TYPES

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
CustomerId = Annotated[StrictStr, Field(min_length=1, max_length=256)] | StrictInt
TS_PATTERN = r"^(19|20|21)\d\d-?\d\d-?\d\d([T ][0-9:.,]+(Z|[+-]\d\d(:?\d\d)?)?)?$"
Timestamp = Annotated[StrictStr, Field(max_length=64, pattern=TS_PATTERN)]
_STRICT = ConfigDict(strict=True, extra="forbid")


class Event(BaseModel):
    model_config = _STRICT
    type: EventType
    ts: Timestamp
    amount: float = Field(0.0, ge=0.0, le=1e9, allow_inf_nan=False)


class Customer(BaseModel):
    model_config = _STRICT
    customer_id: CustomerId
    as_of: Timestamp | None = None
    events: list[Event] = Field(default_factory=list)


class ScoreRequest(BaseModel):
    model_config = _STRICT
    as_of: Timestamp | None = None
    customers: list[Customer]


class AllocateCustomer(Customer):
    value: float = Field(ge=0.0, le=1e9, allow_inf_nan=False)
    margin: float = Field(gt=0.0, le=1.0, allow_inf_nan=False)
    seller_id: CustomerId | None = None


class AllocateRequest(BaseModel):
    model_config = _STRICT
    as_of: Timestamp | None = None
    customers: list[AllocateCustomer]
    budget: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    seller_budgets: dict[str, float] | None = None
