"""The losses, their class heads and batch samplers (make_loss), and the sync-free Multi-Similarity loss.

Losses computed with static shapes on the device, for training steps that never wait for the host.

MultiSimilarity is the paper's Multi-Similarity loss (Wang et al., "Multi-Similarity Loss with
General Pair Weighting for Deep Metric Learning", CVPR 2019) with its pair miner, as
pytorch-metric-learning computes `MultiSimilarityLoss(alpha, beta, base)` on the pairs of
`MultiSimilarityMiner(epsilon)`, the same value and gradient. pytorch-metric-learning's miner
sorts every row of the similarity matrix and turns masks into index lists with `torch.where`, a
nonzero whose output size the host must read, so every training step synchronises with the GPU
and has shapes that change from batch to batch, which `torch.compile` cannot fuse. Here the
hardest positive and negative of each anchor are a masked min and max, the mined pairs are
boolean masks of the batch's fixed size, and the losses are masked logsumexps: no sort, no
nonzero, no boolean indexing, no `.item()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses
from torch import nn


def _masked_logsumexp_plus_one(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Row-wise log(1 + sum of exp(x) over `keep`), 0 for rows that keep nothing."""
    lowest = torch.finfo(x.dtype).min
    x = torch.cat([x.masked_fill(~keep, lowest), torch.zeros_like(x[:, :1])], dim=1)
    return torch.logsumexp(x, dim=1) * keep.any(dim=1)


class MultiSimilarity(nn.Module):
    """Multi-Similarity loss on the pairs its miner keeps, for (B, D) embeddings and (B,) labels.

    Cosine similarities S. For anchor i, a positive j (same label, j != i) is kept when
    S_ij - epsilon < the anchor's largest negative similarity, and a negative k (another label)
    when S_ik + epsilon > its smallest positive similarity. The anchor's loss is
    (1/alpha) log(1 + sum over kept positives of exp(-alpha (S_ij - base)))
    + (1/beta) log(1 + sum over kept negatives of exp(beta (S_ik - base))), and the loss is the
    mean over the B anchors. As in pytorch-metric-learning, a batch that keeps at most one
    positive pair and at most one negative pair has a loss of zero.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, epsilon: float = 0.1) -> None:
        super().__init__()
        self.alpha, self.beta, self.base, self.epsilon = alpha, beta, base, epsilon

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = F.normalize(embeddings, p=2, dim=1)
        sim = x @ x.T
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        positive, negative = same & ~eye, ~same
        with torch.no_grad():  # mining chooses pairs; the gradient flows through the loss only
            s = sim.detach()
            info = torch.finfo(s.dtype)
            hardest_negative = s.masked_fill(~negative, info.min).amax(dim=1, keepdim=True)
            hardest_positive = s.masked_fill(~positive, info.max).amin(dim=1, keepdim=True)
            hard_positive = positive & (s - self.epsilon < hardest_negative)
            hard_negative = negative & (s + self.epsilon > hardest_positive)
            counts_matter = (hard_positive.sum() > 1) | (hard_negative.sum() > 1)
        pos_loss = _masked_logsumexp_plus_one(self.alpha * (self.base - sim), hard_positive) / self.alpha
        neg_loss = _masked_logsumexp_plus_one(self.beta * (sim - self.base), hard_negative) / self.beta
        return (pos_loss + neg_loss).mean() * counts_matter

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, base={self.base}, epsilon={self.epsilon}"


# ----- the factory: a loss name -> its class head, criterion and batch sampler ------------------
# A new loss is one entry here: train.py, the recipes and the trainer name it and nothing else.
LOSSES = ("ce", "normsoftmax", "ms")


class LossError(Exception):
    """The data cannot feed this loss; the message says why and what to do."""


@dataclass
class LossParts:
    """What a loss brings to a training run.

    head: the class head trained beside the embedder (ce, normsoftmax), dropped for search;
    criterion(embeddings, labels) -> the batch loss; balanced: batches of m images per class
    (the MS loss needs positives in every batch) instead of a plain shuffle."""

    head: nn.Module | None
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    balanced: bool

    def logits(self, emb: torch.Tensor) -> torch.Tensor | None:
        """(B, D) float32 -> (B, classes) for the heads that classify; None for ms."""
        if isinstance(self.head, losses.NormalizedSoftmaxLoss):
            # get_logits, not the loss's forward, which would cast the proxies to the
            # embedding's dtype in place (bf16 under autocast) behind Adam's back
            return self.head.get_logits(emb)
        return None if self.head is None else self.head(emb)


def make_loss(name: str, n_classes: int, embedding_dim: int, label_smoothing: float = 0.0,
              temperature: float = 0.05, ms: tuple[float, float, float, float] = (2.0, 50.0, 0.5, 0.1)) -> LossParts:
    """ce: softmax cross-entropy through a linear head (the paper); normsoftmax: cross-entropy over
    cosine similarities to one learned proxy per class over a temperature (pytorch-metric-learning's
    NormalizedSoftmaxLoss; Zhai & Wu 2019), which trains the angular geometry cosine search uses;
    ms: Multi-Similarity (alpha, beta, base, miner epsilon) on class-balanced batches (the paper)."""
    if name == "ms":
        return LossParts(None, MultiSimilarity(*ms), balanced=True)
    if name == "ce":
        head: nn.Module = nn.Linear(embedding_dim, n_classes)
    elif name == "normsoftmax":
        head = losses.NormalizedSoftmaxLoss(n_classes, embedding_dim, temperature)
    else:
        raise LossError(f"unknown loss {name!r}: use one of {', '.join(LOSSES)}")
    parts = LossParts(head, lambda emb, y: F.cross_entropy(parts.logits(emb), y, label_smoothing=label_smoothing),
                      balanced=False)
    return parts


def images_per_class(n_classes: int, batch_size: int) -> int:
    """m, the images of one class in a class-balanced batch: the smallest divisor of batch_size
    that lets the classes fill a batch."""
    return next(d for d in range(2, batch_size + 1) if batch_size % d == 0 and d * n_classes >= batch_size)


def check_class_sizes(labels: torch.Tensor, class_names: list[str], batch_size: int) -> None:
    """Before the first epoch: every class must fill its share of a class-balanced batch, or
    class_balanced_order would leave it out of training without a word."""
    m = images_per_class(len(class_names), batch_size)
    counts = torch.bincount(labels.cpu(), minlength=len(class_names))
    small = [(class_names[c], int(n)) for c, n in enumerate(counts.tolist()) if n < m]
    if small:
        named = ", ".join(f"{name!r} ({n})" for name, n in small[:5]) + (" ..." if len(small) > 5 else "")
        raise LossError(f"too few images per class for class-balanced batches of {batch_size} ({m} per class): "
                        f"{named}. Lower the batch size, add images, or use the ce loss")


def batch_order(labels: torch.Tensor, batch_size: int, balanced: bool, n_classes: int,
                generator: torch.Generator) -> torch.Tensor:
    """An epoch's sample order, consecutive batch_size slices being its batches: a shuffle, or
    (balanced) batches of m same-class images per class, as pytorch-metric-learning's
    MPerClassSampler draws them; every batch then holds batch_size / m classes."""
    if not balanced:
        return torch.randperm(len(labels), generator=generator)
    m = images_per_class(n_classes, batch_size)
    chunks = []
    for c in range(n_classes):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        chunks.append(idx[: len(idx) // m * m].view(-1, m))
    chunks = torch.cat(chunks)
    chunks = chunks[torch.randperm(len(chunks), generator=generator)]
    n_batches = len(chunks) // (batch_size // m)
    if n_batches == 0:
        raise LossError(f"too few images per class for class-balanced batches of {batch_size} ({m} per class): "
                        "lower the batch size or use the ce loss")
    return chunks[: n_batches * (batch_size // m)].flatten()


def similarity_distillation_loss(student: torch.Tensor, teacher: torch.Tensor,
                                 temperature: float = 0.1) -> torch.Tensor:
    """Relational distillation: (B, D) student and (B, D') teacher embeddings -> a scalar.

    For each image in the batch, the softmax over its cosine similarities to the other
    images (divided by `temperature`) is a distribution over "which images are like me";
    the loss is the mean KL divergence of the student's from the teacher's. Only the
    geometry is matched, not the coordinates, so the teacher may have any dimension, or be
    several models' embeddings concatenated (Park et al., "Relational Knowledge
    Distillation", CVPR 2019; Yu et al., "Learning Metrics from Teachers", CVPR 2019).
    """
    s = F.normalize(student.float(), dim=1)
    t = F.normalize(teacher.float(), dim=1)
    mask = torch.eye(len(s), dtype=torch.bool, device=s.device)  # an image's similarity to itself says nothing
    s_logits = (s @ s.T / temperature).masked_fill(mask, float("-inf"))
    t_logits = (t @ t.T / temperature).masked_fill(mask, float("-inf"))
    t_prob = t_logits.softmax(dim=1)
    log_ratio = (t_logits.log_softmax(dim=1) - s_logits.log_softmax(dim=1)).masked_fill(mask, 0.0)
    return (t_prob * log_ratio).sum(dim=1).mean()


def check_teacher(folder: str, channels: int, image_size: tuple[int, int]) -> None:
    """A teacher must take this dataset's images: refused in one line, before any training."""
    from pathlib import Path

    from .checkpoint import read_config

    if not (Path(folder) / "config.json").is_file():
        raise LossError(f"distill_from: {folder} is not a checkpoint folder")
    config = read_config(folder)
    if config["in_channels"] != channels or tuple(config["image_size"]) != tuple(image_size):
        raise LossError(f"distill_from {folder}: that checkpoint takes {config['in_channels']}-channel "
                        f"{config['image_size'][0]}x{config['image_size'][1]} images; distil from a checkpoint "
                        "trained on this dataset")


def teacher_targets(folders: list[str], data, device: torch.device, log=print
                    ) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """Embed the training images once with every teacher checkpoint (each with its own
    preprocessing and search views): their unit-norm concatenation is the target of
    similarity_distillation_loss. Never saved: a resumed run recomputes the same targets from
    the same files, whose hashes the returned records name."""
    from pathlib import Path

    from .checkpoint import WEIGHTS_NAME
    from .embedder import load_embedder
    from .files import sha256_file

    parts, records = [], []
    for folder in folders:
        check_teacher(folder, data.channels, data.image_size)
        teacher = load_embedder(folder, device)
        parts.append(torch.from_numpy(teacher.embed_uint8(data.train_x, batch_size=512)).to(device))
        log(f"teacher {folder}: {len(data.train_x):,} training images embedded")
        records.append({"path": str(folder), "weights_sha256": sha256_file(Path(folder) / WEIGHTS_NAME)})
    return F.normalize(torch.cat(parts, dim=1), dim=1), records
