"""The inference runtime (torch-free): a verified bundle -> features, scores, curves, segments.

``bundle``    writing, verifying, signing and finding bundles on disk
``onnx``      the one place an onnxruntime session is created
``models``    :class:`SequenceModel` (probabilities + customer value), :class:`PromotionModel` (curves)
``model``     :class:`Runtime` (one loaded bundle: every model it has)
``enduring``  :class:`EnduringModel` (retention and revenue per level), the retention-aware objective
``loyalty``   customer value and the 0-1 loyalty score, :func:`loyalty_of` for an events table
``decide``    :func:`allocate_offers`: the budgeted allocation on a bundle's curves
"""

from sellerlift.runtime.bundle import (
    BundleError,
    check_bundle_data,
    find_bundle,
    read_verified,
    registered_model_name,
    verify_bundle,
    write_bundle,
)
from sellerlift.runtime.decide import Offers, allocate_offers
from sellerlift.runtime.enduring import EnduringModel
from sellerlift.runtime.loyalty import loyalty_of
from sellerlift.runtime.model import EventBatch, PromotionModel, Runtime, SequenceModel
from sellerlift.runtime.onnx import session

__all__ = [
    "BundleError",
    "EnduringModel",
    "EventBatch",
    "Offers",
    "PromotionModel",
    "Runtime",
    "SequenceModel",
    "allocate_offers",
    "check_bundle_data",
    "find_bundle",
    "loyalty_of",
    "read_verified",
    "registered_model_name",
    "session",
    "verify_bundle",
    "write_bundle",
]
