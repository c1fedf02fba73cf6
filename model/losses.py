"""Losses computed with static shapes on the device, for training steps that never wait for the host.

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

import torch
import torch.nn.functional as F
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
