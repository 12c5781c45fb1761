"""The inference runtime (torch-free): a verified bundle -> features, scores, curves, segments.

``bundle``  writing, verifying, signing and finding bundles on disk
``onnx``    the one place an onnxruntime session is created
``model``   :class:`Runtime` (one loaded bundle), :class:`SequenceModel`, :class:`PromotionModel`
``decide``  :func:`allocate_offers`: the budgeted allocation on a bundle's curves
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
from sellerlift.runtime.model import EventBatch, PromotionModel, Runtime, SequenceModel
from sellerlift.runtime.onnx import session

__all__ = ["BundleError", "EventBatch", "Offers", "PromotionModel", "Runtime", "SequenceModel", "allocate_offers",
           "check_bundle_data", "find_bundle", "read_verified", "registered_model_name", "session", "verify_bundle",
           "write_bundle"]
