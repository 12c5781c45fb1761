"""sellerlift inference server: ``python -m serve`` (or ``make serve``) from the repository root.

onnxruntime + NumPy + the torch-free parts of sellerlift (features, schema,
segment, allocate, promotion_features). Never imports torch, Lightning, Hydra
or MLflow. See docs/serving.md.
"""

__version__ = "0.1.0"
