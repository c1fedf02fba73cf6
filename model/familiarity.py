"""How like a gallery a query is: the demo's "unlike the dataset" line.

A similarity search always answers, so a photo of a car searched among handwritten digits
still gets "2 · 0.818". The best similarity alone barely tells such a query from a real one
(on a CIFAR-10 gallery it flagged about 12% of MNIST and FashionMNIST images, measured by
scripts/fit_unlike.py): an embedding trained on ten classes puts almost anything near one of
them. Two looks together do much better:

- the pixels: 17 statistics of the image as the model sees it (brightness, its spread, how
  much is black, white or ink, how much of the frame the object spans, colourfulness, edges and
  edges per ink pixel, the border, how spread the object is),
  scored by their Mahalanobis distance to the gallery's; digits on CIFAR-10 or photos on MNIST
  give themselves away here;
- the embedding: its Mahalanobis distance to the nearest class mean of the gallery (a shared,
  shrunk covariance; Lee et al., NeurIPS 2018).

Each is fitted on one half of the gallery and its threshold set at the THRESHOLD_PERCENTILE of
the other half, so about 0.5% of the dataset's own images are flagged by each; a query is flagged
when either says so. scripts/fit_unlike.py measures both rates on test images outside the
gallery (the dataset's own as fits, the other datasets' as misfits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

THRESHOLD_PERCENTILE = 99.5
SHRINKAGE = 0.1


def pixel_statistics(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) uint8 images -> (N, 17) statistics of their pixels."""
    x = x.float() / 255
    lum = x.mean(1)
    sat = x.max(1).values - x.min(1).values
    grad_y, grad_x = (lum[:, 1:] - lum[:, :-1]).abs(), (lum[:, :, 1:] - lum[:, :, :-1]).abs()
    border = torch.cat([lum[:, :2].flatten(1), lum[:, -2:].flatten(1), lum[:, :, :2].flatten(1),
                        lum[:, :, -2:].flatten(1)], 1)
    weight = lum / lum.sum((1, 2), keepdim=True).clamp_min(1e-6)
    rows, cols = torch.arange(lum.shape[1]).float(), torch.arange(lum.shape[2]).float()
    wy, wx = weight.sum(2), weight.sum(1)
    cy, cx = (wy * rows).sum(1, keepdim=True), (wx * cols).sum(1, keepdim=True)
    spread_y, spread_x = (wy * (rows - cy) ** 2).sum(1).sqrt(), (wx * (cols - cx) ** 2).sum(1).sqrt()
    ink = (lum > 0.1).float()
    filled_rows, filled_cols = ink.amax(2).mean(1), ink.amax(1).mean(1)  # how much of the frame the object spans
    features = [lum.mean((1, 2)), lum.std((1, 2)), (lum < 0.05).float().mean((1, 2)), (lum > 0.95).float().mean((1, 2)),
                ink.mean((1, 2)), (lum > 0.5).float().mean((1, 2)), filled_rows, filled_cols,
                (grad_y.sum((1, 2)) + grad_x.sum((1, 2))) / ink.sum((1, 2)).clamp_min(1.0),
                sat.mean((1, 2)), sat.std((1, 2)), grad_y.mean((1, 2)), grad_x.mean((1, 2)), border.mean(1),
                border.std(1), spread_y, spread_x]
    return torch.stack(features, 1).numpy().astype(np.float64)


def _mahalanobis(centred: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Row-wise d^T P d, as one matrix product (an einsum over the three indices is 20 times slower)."""
    return ((centred @ precision) * centred).sum(1)


def _shrunk_inverse(centred: np.ndarray) -> np.ndarray:
    cov = centred.T @ centred / max(1, len(centred) - 1)
    cov = (1 - SHRINKAGE) * cov + SHRINKAGE * np.diag(np.diag(cov)) + 1e-9 * np.eye(len(cov))
    return np.linalg.inv(cov)


@dataclass
class Familiarity:
    """The two scores' models and thresholds, fitted on a gallery."""

    pixel_mean: np.ndarray
    pixel_precision: np.ndarray
    pixel_threshold: float
    class_means: np.ndarray
    embedding_precision: np.ndarray
    embedding_threshold: float

    @classmethod
    def fit(cls, images: torch.Tensor, embeddings: np.ndarray, labels: np.ndarray) -> Familiarity:
        """`images` (N, C, H, W) uint8 as the model sees them, their embeddings and labels."""
        fit, held = np.arange(len(labels)) % 2 == 0, np.arange(len(labels)) % 2 == 1
        stats = pixel_statistics(images)
        mean = stats[fit].mean(0)
        precision = _shrunk_inverse(stats[fit] - mean)
        classes = np.unique(labels[fit])
        means = np.stack([embeddings[fit][labels[fit] == c].mean(0) for c in classes]).astype(np.float64)
        nearest = means[np.searchsorted(classes, labels[fit])]
        emb_precision = _shrunk_inverse(embeddings[fit].astype(np.float64) - nearest)
        out = cls(mean, precision, 0.0, means, emb_precision, 0.0)
        out.pixel_threshold = float(np.percentile(out.pixel_distance(stats[held]), THRESHOLD_PERCENTILE))
        out.embedding_threshold = float(np.percentile(out.embedding_distance(embeddings[held]), THRESHOLD_PERCENTILE))
        return out

    def pixel_distance(self, stats: np.ndarray) -> np.ndarray:
        return _mahalanobis(stats - self.pixel_mean, self.pixel_precision)

    def embedding_distance(self, embeddings: np.ndarray) -> np.ndarray:
        e = np.asarray(embeddings, np.float64)
        return np.min([_mahalanobis(e - m, self.embedding_precision) for m in self.class_means], axis=0)

    def unlike(self, images: torch.Tensor, embeddings: np.ndarray) -> np.ndarray:
        """(N,) bool: which queries are unlike the gallery, by their pixels or their embedding."""
        return ((self.pixel_distance(pixel_statistics(images)) > self.pixel_threshold)
                | (self.embedding_distance(embeddings) > self.embedding_threshold))
