"""Names shared by training, the runtime, the server and the reports: each defined once here.

The data contract (event types, discount levels) lives in :mod:`sellerlift.schema`.

The two probability outputs are named after the configured horizons (``data.horizons``):
``intent_<intent_days>d`` and ``churn_<churn_days>d``. Bundles exported before the names
followed the horizons say ``intent_7d`` / ``churn_90d`` and carry no ``horizons``: the
defaults below, so they still load.

A sequence model with the customer-value head also outputs ``value_<C>d`` (expected spend in the
next C days, C = the churn horizon: value and retention share one horizon) and ``purchases_<C>d``
(expected days with a purchase in them), after the probabilities and before the embedding. Bundles
without the head (every bundle before it) have neither and still load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# The sequence model's two binary heads, in the order of its outputs and label columns.
HEADS: tuple[str, ...] = ("intent", "churn")
# data.horizons key of each head, and the horizons of bundles that do not record theirs.
HORIZON_KEYS: dict[str, str] = {"intent": "intent_days", "churn": "churn_days"}
DEFAULT_HORIZONS: dict[str, int] = {"intent_days": 7, "churn_days": 90}
EMBEDDING_OUTPUT = "customer_embedding"
_OUTPUT = re.compile(r"^(intent|churn)_(\d+)d$")
# The customer-value head: expected spend and purchase days over the churn horizon (log-link means, not
# probabilities), in this order.
VALUE_HEADS: tuple[str, ...] = ("value", "purchases")
VALUE_HORIZON_KEY = "churn_days"
_VALUE_OUTPUT = re.compile(r"^(value|purchases)_(\d+)d$")


def horizons_of(horizons: Mapping | None = None) -> dict[str, int]:
    """``{"intent_days": int, "churn_days": int}`` from a config/manifest mapping (defaults fill the gaps)."""
    h = dict(DEFAULT_HORIZONS)
    for key, value in dict(horizons or {}).items():
        if key in h:
            h[key] = int(value)
    return h


def score_outputs(horizons: Mapping | None = None) -> tuple[str, ...]:
    """Names of the probability outputs for these horizons, in head order: ``("intent_7d", "churn_90d")``."""
    h = horizons_of(horizons)
    return tuple(f"{head}_{h[HORIZON_KEYS[head]]}d" for head in HEADS)


def value_outputs(horizons: Mapping | None = None) -> tuple[str, ...]:
    """Names of the customer-value outputs for these horizons: ``("value_90d", "purchases_90d")``."""
    days = horizons_of(horizons)[VALUE_HORIZON_KEY]
    return tuple(f"{head}_{days}d" for head in VALUE_HEADS)


def sequence_outputs(horizons: Mapping | None = None, value: bool = False) -> tuple[str, ...]:
    """ONNX outputs of sequence.onnx: one probability per head, the value outputs (``value=True``: a model with
    the customer-value head), then the customer embedding."""
    return (*score_outputs(horizons), *(value_outputs(horizons) if value else ()), EMBEDDING_OUTPUT)


def value_days_of_outputs(names: Sequence[str]) -> int:
    """``["value_90d", "purchases_90d"]`` -> 90; ValueError naming the expected form on anything else."""
    names = list(names)
    parsed = [_VALUE_OUTPUT.match(str(n)) for n in names]
    if (
        len(names) != len(VALUE_HEADS)
        or not all(parsed)
        or [m.group(1) for m in parsed] != list(VALUE_HEADS)
        or len({m.group(2) for m in parsed}) != 1
    ):
        raise ValueError(
            f"value outputs {names}: expected {[f'{h}_<days>d' for h in VALUE_HEADS]} in that order, "
            f"one horizon (e.g. {list(value_outputs())})"
        )
    return int(parsed[0].group(2))


def is_value_output(name: str) -> bool:
    """True for ``value_<d>d`` / ``purchases_<d>d`` (the customer-value head's outputs)."""
    return _VALUE_OUTPUT.match(str(name)) is not None


def horizons_of_outputs(names: Sequence[str]) -> dict[str, int]:
    """Inverse of :func:`score_outputs`: ``["intent_7d", "churn_30d"]`` -> ``{"intent_days": 7, "churn_days": 30}``.

    Raises ValueError naming what was expected when the names are not one ``intent_<n>d`` then one ``churn_<n>d``.
    """
    names = list(names)
    parsed = [_OUTPUT.match(str(n)) for n in names]
    if len(names) != len(HEADS) or not all(parsed) or [m.group(1) for m in parsed] != list(HEADS):
        raise ValueError(
            f"probability outputs {names}: expected {len(HEADS)} names "
            f"{[f'{h}_<days>d' for h in HEADS]} in that order (e.g. {list(score_outputs())})"
        )
    return {HORIZON_KEYS[m.group(1)]: int(m.group(2)) for m in parsed}


def head_of_output(name: str) -> str | None:
    """``"churn_30d"`` -> ``"churn"`` (None for a name that is not a probability output)."""
    m = _OUTPUT.match(str(name))
    return m.group(1) if m else None


def head_description(head: str, horizons: Mapping | None = None) -> str:
    """What a head predicts, in words: ``"buys in the next 7 days"``."""
    days = horizons_of(horizons)[HORIZON_KEYS[head]]
    unit = "day" if days == 1 else "days"
    return {"intent": f"buys in the next {days} {unit}", "churn": f"no purchase in the next {days} {unit}"}[head]


def truth_columns(horizons: Mapping | None = None) -> dict[str, str]:
    """Simulator truth column of each head for these horizons (``p_intent_7d``); the simulator writes 7 / 90 days
    only, so a run with other horizons has no ceiling (the columns are then absent from the truth table)."""
    return {head: f"p_{name}" for head, name in zip(HEADS, score_outputs(horizons))}


# ONNX interface of sequence.onnx and dipn.onnx (export writes these names, the runtime checks them).
SEQUENCE_INPUTS: tuple[str, ...] = ("event_type", "numeric", "length", "aggregates")
# The default-horizon names (and those of every bundle exported before names followed the horizons).
SEQUENCE_OUTPUTS: tuple[str, ...] = sequence_outputs()
SCORE_OUTPUTS: tuple[str, ...] = SEQUENCE_OUTPUTS[:2]
# Simulator truth: the exact label probability of each head at the cutoff (7 and 90 days).
TRUTH_COLUMNS: dict[str, str] = truth_columns()
DIPN_INPUT, DIPN_OUTPUT = "features", "curve"
