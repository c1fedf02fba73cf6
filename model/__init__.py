"""Compact involution + convolution embedding models for image similarity search.

Data flows one way: data.py -> networks.py (involution.py) -> losses.py -> training.py
(one stage; train.py chains a recipe.py recipe's stages and its choices, measured by
evaluation.py) -> embedder.py (the checkpoint) -> index.py (the search bundle) -> app.py.
"""

from .data import DataError, ImageData, load_dataset
from .embedder import CheckpointError, Embedder, load_embedder
from .involution import Involution
from .networks import PAPER_MODELS, REGISTRY, build_model, keras_param_count

__all__ = [
    "CheckpointError",
    "DataError",
    "Embedder",
    "ImageData",
    "Involution",
    "PAPER_MODELS",
    "REGISTRY",
    "build_model",
    "keras_param_count",
    "load_dataset",
    "load_embedder",
]
