"""Whitening of a trained embedding, fitted on training images and folded into its last layer.

Why: a network trained with a metric loss leaves its embeddings with a common offset and a
few dominant directions that every image shares; cosine similarity spends much of its range
on them. Subtracting the training set's mean embedding and shrinking the dominant directions
(PCA whitening, softened by a power of at most 1 and by shrinkage of the eigenvalues:
the retrieval literature's post-processing of learned descriptors) lets the directions that tell
images apart count. The transform is affine and the embedding layer is linear, so it folds
into that layer: the architecture, parameter count and file size stay as they are, and every
consumer (Embedder, the index, Trainer.evaluate) sees the whitened embedding unchanged.

How strongly to whiten is chosen by MAP@R on training images held out from the fit
(choose_whitening, best_row), never on the test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .embedder import view_averaged
from .training import RETRIEVAL_METRICS, retrieval_calculator


@dataclass(frozen=True)
class Whitening:
    """power 0 centres only; 1 whitens fully. shrinkage is added to every eigenvalue, as a
    fraction of the largest one, so that near-empty directions are not blown up."""

    power: float
    shrinkage: float = 0.0


# The candidates choose_whitening compares, mildest first (ties go to the milder one).
CANDIDATES: tuple[Whitening, ...] = (Whitening(0.0),) + tuple(
    Whitening(p, s) for p in (0.25, 0.5, 0.75, 1.0) for s in (0.001, 0.01, 0.1, 1.0))


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


def choose_whitening(views: Sequence[torch.Tensor], labels: torch.Tensor, held_out: int, seed: int = 0,
                     candidates: Sequence[Whitening] = CANDIDATES) -> list[dict]:
    """Score 'unchanged' and every candidate on `held_out` training images, fitting on the rest.

    views: the raw embeddings of every search view of the same training images (V x (N, D)).
    Each held-out image is queried against the other held-out ones, as the test set is
    (same gallery size as a 10,000-image test set when held_out is 10,000), and ranked by
    its view-averaged embedding, as the search does. Returns one row per candidate:
    {"whitening": None or asdict, precision_at_1, r_precision, mean_average_precision_at_r}.
    """
    n = len(labels)
    if not 1 < held_out < n - 1:
        raise ValueError(f"held_out must leave images on both sides (got {held_out} of {n})")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test, fit = order[:held_out], order[held_out:]
    calc, knn_device = retrieval_calculator(torch.device("cpu"))
    y = labels[test].to(knn_device)
    rows = []
    mean, cov = embedding_moments([v[fit] for v in views])
    for whitening in (None, *candidates):
        if whitening is None:
            emb = view_averaged([v[test] for v in views])
        else:
            matrix = whitening_matrix(cov, whitening)
            emb = view_averaged([apply_whitening(v[test], mean, matrix) for v in views])
        acc = calc.get_accuracy(emb.to(knn_device), y)
        rows.append({"whitening": whitening and asdict(whitening), **{k: float(acc[k]) for k in RETRIEVAL_METRICS}})
    return rows


# MAP@R scores the whole ranking of every query's class (Musgrave et al., "A Metric Learning
# Reality Check"): a whitening that lifts the first hit while it scatters the rest of the
# top-k shown in the demo does not win. P@1 on a few thousand held-out images also moves by
# single queries.
SELECTION_METRIC = "mean_average_precision_at_r"


def best_row(rows: list[dict]) -> dict:
    """The row with the highest held-out MAP@R; the first (mildest) on ties."""
    return max(rows, key=lambda r: r[SELECTION_METRIC])
