"""Whitening of a trained embedding, fitted on training images and folded into its last layer.

Why: a network trained with a metric loss leaves its embeddings with a common offset and a
few dominant directions that every image shares; cosine similarity spends much of its range
on them. Subtracting the training set's mean embedding and shrinking the dominant directions
(PCA whitening, softened by a power of at most 1 and by shrinkage of the eigenvalues:
the retrieval literature's post-processing of learned descriptors) lets the directions that tell
images apart count. The transform is affine and the embedding layer is linear, so it folds
into that layer: the architecture, parameter count and file size stay as they are, and every
consumer (Embedder, the index, the evaluation) sees the whitened embedding unchanged.

A recipe step (train.py): fitted on training images, chosen on the validation split by the
recipe's selection metric, folded in before the checkpoint is written; never on the test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .evaluation import retrieval_metrics
from .search_views import view_averaged


@dataclass(frozen=True)
class Whitening:
    """power 0 centres only; 1 whitens fully. shrinkage is added to every eigenvalue, as a
    fraction of the largest one, so that near-empty directions are not blown up."""

    power: float
    shrinkage: float = 0.0


def embedding_moments(views: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's raw embeddings of every search view of the same images (V tensors (N, D))
    -> their mean (D,) and covariance (D, D), float64. Every view is a sample of what the
    search embeds, so all are pooled."""
    n = sum(len(v) for v in views)
    mean = sum(v.double().sum(0) for v in views) / n
    cov = sum((v.double() - mean).T @ (v.double() - mean) for v in views) / (n - 1)
    return mean, cov


def whitening_matrix(cov: torch.Tensor, whitening: Whitening) -> torch.Tensor:
    """(D, D) covariance -> (D, D) matrix M, float64: the whitened embedding is M @ (e - mean).
    M keeps the largest direction's length (its scale is 1 there); the others grow."""
    if whitening.power == 0:
        return torch.eye(len(cov), dtype=torch.float64)
    eigenvalues, vectors = torch.linalg.eigh(cov)  # ascending
    # rounding leaves empty directions (a 128-wide layer feeds the 256-d embedding) at about
    # +-1e-16: floor them, so that no scale is infinite even without shrinkage
    eigenvalues = eigenvalues.clamp_min(1e-12 * float(eigenvalues.max().clamp_min(1e-30)))
    scale = (eigenvalues + whitening.shrinkage * eigenvalues.max()) ** (-whitening.power / 2)
    scale = scale / scale[-1]
    return vectors @ torch.diag(scale) @ vectors.T


def fit_whitening(views: Sequence[torch.Tensor], whitening: Whitening) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw embeddings of every search view (V tensors (N, D)) -> (mean, matrix) to fold."""
    mean, cov = embedding_moments(views)
    return mean, whitening_matrix(cov, whitening)


def apply_whitening(emb: torch.Tensor, mean: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """(N, D) raw embeddings -> (N, D) whitened, float32: what the folded layer outputs."""
    return ((emb.double() - mean) @ matrix.T).float()


@torch.no_grad()
def fold_whitening(layer: nn.Linear, mean: torch.Tensor, matrix: torch.Tensor) -> None:
    """Make `layer` output matrix @ (its old output - mean): W <- M W, b <- M (b - mean)."""
    weight, bias = layer.weight.double(), layer.bias.double()
    layer.weight.copy_(matrix @ weight)
    layer.bias.copy_(matrix @ (bias - mean))


def candidates(powers: Sequence[float], shrinkages: Sequence[float]) -> list[Whitening]:
    """A recipe's whitening grid, mildest first (ties go to the milder one): centring (power 0)
    and every power x shrinkage pair; none for an empty grid."""
    if not powers:
        return []
    return [Whitening(0.0)] + [Whitening(p, s) for p in sorted(powers) if p > 0 for s in sorted(shrinkages)]


def choose_whitening(fit_views: Sequence[torch.Tensor], val_views: Sequence[torch.Tensor], val_labels: torch.Tensor,
                     grid: Sequence[Whitening], metric: str) -> dict:
    """Fit every candidate on training images and score it on the validation split.

    fit_views / val_views: the raw embeddings of every search view of the training images the
    whitening is fitted on and of the validation images (V x (N, D) each). Each validation image
    is queried against the others by its view-averaged embedding, as the search does. The
    unchanged embedding is the first candidate, so a whitening must beat it to be chosen.
    Returns {"candidates": rows, "chosen": row}; a row's "whitening" is None or a Whitening dict.
    """
    rows = []
    mean, cov = embedding_moments(fit_views)
    for whitening in (None, *grid):
        if whitening is None:
            emb = view_averaged(val_views)
        else:
            matrix = whitening_matrix(cov, whitening)
            emb = view_averaged([apply_whitening(v, mean, matrix) for v in val_views])
        rows.append({"whitening": whitening and asdict(whitening), **retrieval_metrics(emb, val_labels)})
    return {"candidates": rows, "chosen": max(rows, key=lambda r: r[metric])}
