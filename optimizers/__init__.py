"""Optimizer passes and workers: turn a model and feedback data into a verified, signed candidate.

A *pass* (``optimizers.passes``) turns one model directory into another (fine-tune, distill,
prune, export to ONNX, quantize, evaluate, package). A *recipe* (``optimizers.recipe``) chains
passes and states the gates; ``optimizers.pipeline`` runs it with the precision fallback chain;
``optimizers.worker`` serves optimization requests from Kafka. Importing this package is cheap:
torch and onnxruntime load only when a pass runs.
"""

from optimizers.errors import (
    CandidateRefused,
    DataError,
    ModelLoadError,
    OptimizerError,
    PassError,
    RecipeError,
)

__all__ = [
    "CandidateRefused",
    "DataError",
    "ModelLoadError",
    "OptimizerError",
    "PassError",
    "RecipeError",
]
