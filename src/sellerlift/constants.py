"""Names shared by training, the runtime, the server and the reports: each defined once here.

The data contract (event types, discount levels) lives in :mod:`sellerlift.schema`.
"""

from __future__ import annotations

# The sequence model's two binary heads, in the order of its outputs and label columns.
HEADS: tuple[str, ...] = ("intent", "churn")
# Simulator truth: the exact label probability of each head at the cutoff.
TRUTH_COLUMNS: dict[str, str] = {"intent": "p_intent_7d", "churn": "p_churn_90d"}

# ONNX interface of sequence.onnx and dipn.onnx (export writes these names, the runtime checks them).
SEQUENCE_INPUTS: tuple[str, ...] = ("event_type", "numeric", "length", "aggregates")
SEQUENCE_OUTPUTS: tuple[str, ...] = ("intent_7d", "churn_90d", "customer_embedding")
SCORE_OUTPUTS: tuple[str, ...] = SEQUENCE_OUTPUTS[:2]  # the probabilities (one per head)
DIPN_INPUT, DIPN_OUTPUT = "features", "curve"
