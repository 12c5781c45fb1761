"""The per-customer responses of ``/v1/score`` and ``/v1/promotions/curves``, which follow the served bundle
(:func:`response_types`): the probability fields are named after its horizons (``intent_7d``, ``churn_90d`` for a
default bundle, ``churn_30d`` for one trained for 30 days), and the value, loyalty, action segment, retention and
value-per-level fields exist only when the bundle has those models.
"""

from __future__ import annotations

import functools
from typing import Annotated, NamedTuple

import msgspec
from msgspec import Meta

from sellerlift.constants import head_of_output
from serve.schemas import Id, ModelRef, _d


class ResponseTypes(NamedTuple):
    """The per-customer score and curve Structs of one kind of bundle (and their responses)."""

    key: tuple
    CustomerScore: type
    ScoreResponse: type
    CustomerCurve: type
    CurvesResponse: type
    score_fields: tuple[str, ...]  # CustomerScore's fields, in order
    curve_fields: tuple[str, ...]


def _days(name: str) -> int:
    return int(name.rsplit("_", 1)[1][:-1])


def _score_field(name: str) -> tuple:
    head = head_of_output(name)
    if head == "intent":
        what = f"probability of a purchase in the next {_days(name)} days"
    elif head == "churn":
        what = f"probability of no purchase in the next {_days(name)} days"
    elif name.startswith("value_"):
        what = f"expected spend in the next {_days(name)} days (the sequence model's customer-value head)"
    else:
        what = f"expected number of days with a purchase in the next {_days(name)} days"
    return name, Annotated[float, _d(what)]


def types_key(rt) -> tuple:
    """What the response types of runtime ``rt`` depend on."""
    return (
        tuple(rt.outputs),
        tuple(getattr(rt, "value_outputs", ())),
        bool(getattr(rt, "has_loyalty", False)),
        getattr(rt, "action_segments", None) is not None,
        rt.enduring.horizon_days if getattr(rt, "enduring", None) is not None else None,
    )


def types_for(rt) -> ResponseTypes:
    """The response Structs of the bundle ``rt`` serves (cached per kind of bundle)."""
    return response_types(types_key(rt))


@functools.lru_cache(maxsize=64)
def response_types(key: tuple) -> ResponseTypes:
    outputs, value_outputs, loyalty, action, enduring_days = key
    fields = [("customer_id", Id), ("as_of", str), *(_score_field(n) for n in (*outputs, *value_outputs))]
    if loyalty:
        fields.append(
            (
                "loyalty",
                Annotated[
                    float,
                    Meta(
                        ge=0.0,
                        le=1.0,
                        description=(
                            "0-1 loyalty: sqrt(P(no churn) x value percentile), the geometric mean of the predicted "
                            "retention and "
                            "the predicted value's percentile among the training customers'"
                        ),
                    ),
                ],
            )
        )
    fields += [
        ("segment", Annotated[str | None, _d("RFM segment name (null if the bundle has no segments)")]),
        ("segment_id", int | None),
    ]
    if action:
        fields += [
            (
                "action_segment",
                Annotated[str, _d("segment by what it means for a promotion (RFM + the predicted response and value)")],
            ),
            ("action_segment_id", int),
        ]
    probs = " and ".join(outputs)
    fields += [
        ("n_events", Annotated[int, _d("events before as_of that were used (the model reads the last max_len)")]),
        ("cold_start", Annotated[bool, _d("no events before as_of")]),
        (
            "prior",
            Annotated[
                bool,
                _d(
                    f"{probs}{' and the value' if value_outputs else ''} are the bundle's "
                    "calibrated cold-start prior (base rates of customers without "
                    "history), not a model output: true for cold-start customers when "
                    "the bundle has a prior"
                ),
            ],
        ),
    ]
    score = msgspec.defstruct("CustomerScore", fields)
    score_response = msgspec.defstruct("ScoreResponse", [("model", ModelRef), ("results", list[score])])
    curve_fields = [
        ("customer_id", Id),
        ("conversion", Annotated[list[float], _d("P(purchase) at each discount level, monotone non-decreasing")]),
        ("uplift", Annotated[list[float], _d("conversion minus conversion at no discount")]),
    ]
    if enduring_days is not None:
        d = enduring_days
        curve_fields += [
            (
                f"retention_{d}d",
                Annotated[
                    list[float],
                    _d(
                        f"expected {d}-day retention (a purchase after the offer's week, by day {d}) at each level, "
                        "from the "
                        "enduring model (not constrained monotone: a discount can teach a customer to wait for one)"
                    ),
                ],
            ),
            (
                f"value_{d}d",
                Annotated[
                    list[float],
                    _d(f"expected {d}-day revenue (before discount) at each level, from the enduring model"),
                ],
            ),
        ]
    curve = msgspec.defstruct("CustomerCurve", curve_fields)
    curves_response = msgspec.defstruct(
        "CurvesResponse", [("model", ModelRef), ("discount_levels", list[int]), ("results", list[curve])]
    )
    return ResponseTypes(
        key,
        score,
        score_response,
        curve,
        curves_response,
        tuple(f[0] for f in fields),
        tuple(f[0] for f in curve_fields),
    )


DEFAULT_KEY = (("intent_7d", "churn_90d"), ("value_90d", "purchases_90d"), True, False, None)
