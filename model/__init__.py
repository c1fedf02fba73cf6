"""Compact involution + convolution embedding models for image similarity search.

Data flows one way: data.py -> networks.py (involution.py) -> losses.py -> training.py
(one stage; train.py chains a recipe.py recipe's stages and its choices, measured by
evaluation.py) -> checkpoint.py (the checkpoint on disk) -> embedder.py (images in, embeddings out) ->
index.py (the search bundle) -> demo/ -> app.py.
"""

from .checkpoint import CheckpointError
from .data import DataError, ImageData, load_dataset
from .embedder import Embedder, load_embedder
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
