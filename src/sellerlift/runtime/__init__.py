"""The inference runtime (torch-free): a verified bundle -> features, scores, curves, segments.

``bundle``  writing, verifying, signing and finding bundles on disk
``onnx``    the one place an onnxruntime session is created
``model``   :class:`Runtime` (one loaded bundle), :class:`SequenceModel`, :class:`PromotionModel`
"""

from sellerlift.runtime.bundle import BundleError, find_bundle, read_verified, verify_bundle, write_bundle
from sellerlift.runtime.model import EventBatch, PromotionModel, Runtime, SequenceModel
from sellerlift.runtime.onnx import session

__all__ = ["BundleError", "EventBatch", "PromotionModel", "Runtime", "SequenceModel", "find_bundle",
           "read_verified", "session", "verify_bundle", "write_bundle"]
