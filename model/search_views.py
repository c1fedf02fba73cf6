"""Test-time views: what a checkpoint searches with besides the image itself (its config.json's
flip_average and shift_average), and how their embeddings are averaged into one query."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def search_views(x: torch.Tensor, flip_average: bool = False, shift_average: int = 0) -> list[torch.Tensor]:
    """(B, C, H, W) normalised float batch -> the views a checkpoint searches with, the image first.

    Test-time augmentation: the search embeds every view and averages (view_averaged).
    `shift_average` s > 0 adds the image moved by s px left, right, up and down (edges
    reflected): 5 views. `flip_average` adds the mirror image of each: for data where a
    mirror image keeps its class (clothes, objects; never digits). A network trained with
    random flips and crops maps these views close together, and their mean is a steadier
    query than any one of them.
    """
    views = [x]
    if shift_average:
        s = shift_average
        padded = F.pad(x, (s, s, s, s), mode="reflect")
        h, w = x.shape[-2:]
        views += [padded[..., s + dy : s + dy + h, s + dx : s + dx + w]
                  for dy, dx in ((0, -s), (0, s), (-s, 0), (s, 0))]
    if flip_average:
        views += [v.flip(-1) for v in views]
    return views


def view_averaged(embs: Sequence[torch.Tensor]) -> torch.Tensor:
    """(N, D) embeddings of each view of the same N images -> (N, D) unit-norm mean of the unit vectors."""
    if len(embs) == 1:  # normalised once, so that one view gives exactly the network's unit embedding
        return F.normalize(embs[0].float(), dim=1)
    return F.normalize(sum(F.normalize(e.float(), dim=1) for e in embs), dim=1)


def describe_views(flip_average: bool, shift_average: int = 0) -> str:
    """How a checkpoint searches, in words: "one view", "mirror-averaged", "10 views (...)"."""
    if not shift_average:
        return "mirror-averaged" if flip_average else "one view"
    n = 10 if flip_average else 5
    return f"{n} views averaged (1 + 4 shifts of {shift_average} px{', each mirrored' if flip_average else ''})"
