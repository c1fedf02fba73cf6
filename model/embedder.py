"""The inference API: `load_embedder(path).embed(images)`: a checkpoint (checkpoint.py) with
its preprocessing and search views (search_views.py), images in, embeddings out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .checkpoint import load_model
from .data import normalize, pil_to_mode
from .search_views import describe_views, search_views, view_averaged

ImageLike = Image.Image | np.ndarray


class Embedder:
    """A trained network plus its preprocessing: images in, L2-normalised embeddings out."""

    def __init__(self, model: nn.Module, config: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.channels: int = config["in_channels"]
        self.image_size: tuple[int, int] = tuple(config["image_size"])  # type: ignore[assignment]
        self.mean = torch.tensor(config["mean"], device=self.device)
        self.std = torch.tensor(config["std"], device=self.device)
        self.flip_average: bool = bool(config.get("flip_average", False))
        self.shift_average: int = int(config.get("shift_average", 0))

    @property
    def class_names(self) -> list[str]:
        return list(self.config["class_names"])

    def to_uint8(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Any PIL images or uint8 arrays -> (N, C, H, W) uint8 at the training size and mode.

        PIL input is EXIF-rotated, converted to L or RGB (transparency composited on
        white) and resized with bilinear filtering.
        """
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8:
                raise ValueError(f"image arrays must be uint8 (got {images.dtype}); scale to 0-255 first")
            if images.ndim == 4 and images.shape[1:] == (*self.image_size, self.channels):
                return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
            if images.ndim == 3 and self.channels == 1 and images.shape[1:] == self.image_size:
                return torch.from_numpy(np.ascontiguousarray(images[:, None]))
            if images.ndim not in (3, 4):
                raise ValueError(f"image arrays must be (N, H, W) or (N, H, W, C); got shape {images.shape}")
            images = list(images)
        elif isinstance(images, Image.Image):
            images = [images]
        return torch.from_numpy(np.stack([self._one(im) for im in images])).permute(0, 3, 1, 2).contiguous()

    def _one(self, image: ImageLike) -> np.ndarray:  # -> (H, W, C) uint8
        if isinstance(image, np.ndarray):
            if image.ndim == 3 and image.shape[2] == 1:
                image = image[:, :, 0]
            image = Image.fromarray(image)
        image = pil_to_mode(image, "L" if self.channels == 1 else "RGB")
        h, w = self.image_size
        if image.size != (w, h):
            image = image.resize((w, h), Image.BILINEAR)
        arr = np.asarray(image, dtype=np.uint8)
        return arr[:, :, None] if arr.ndim == 2 else arr

    @property
    def views(self) -> str:
        return describe_views(self.flip_average, self.shift_average)

    @torch.inference_mode()
    def view_embeddings(self, x: torch.Tensor, batch_size: int = 1024) -> list[torch.Tensor]:
        """(N, C, H, W) uint8 at the training size -> the network's (N, D) float32 output, on the
        CPU, for each search view (search_views' order: the image itself first)."""
        per_view: list[list[torch.Tensor]] = []
        for i in range(0, len(x), batch_size):
            batch = normalize(x[i : i + batch_size].to(self.device), self.mean, self.std)
            views = search_views(batch, self.flip_average, self.shift_average)
            per_view = per_view or [[] for _ in views]
            for out, view in zip(per_view, views, strict=True):
                out.append(self.model(view).float().cpu())
        if not per_view:
            return [torch.zeros((0, self.model.embedding_dim))]
        return [torch.cat(out) for out in per_view]

    def embed_uint8(self, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
        """(N, C, H, W) uint8 at the training size -> (N, D) float32, unit L2 norm: the mean
        over the checkpoint's search views."""
        return view_averaged(self.view_embeddings(x, batch_size)).numpy()

    def embed(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 1024) -> np.ndarray:
        """PIL images or uint8 arrays of any size and mode -> (N, D) float32 L2-normalised embeddings."""
        return self.embed_uint8(self.to_uint8(images), batch_size)

    @classmethod
    def from_pretrained(cls, repo_id_or_path: str | Path, revision: str | None = None,
                        device: str | torch.device = "cpu") -> Embedder:
        """A checkpoint folder, or a Hub model repository "USER/NAME" (at `revision`), in the
        manner of huggingface_hub's PyTorchModelHubMixin.from_pretrained."""
        if Path(repo_id_or_path).is_dir():
            return load_embedder(repo_id_or_path, device)
        return load_embedder(f"hf://{repo_id_or_path}{'@' + revision if revision else ''}", device)


def load_embedder(path: str | Path, device: str | torch.device = "cpu") -> Embedder:
    """Load a checkpoint for inference: a folder written by train.py, or "hf://USER/NAME[@REVISION]",
    a model repository published with scripts/publish_models.py (downloaded once into
    huggingface_hub's cache)."""
    from .hub import resolve_checkpoint  # hub.py builds on this module

    model, config = load_model(resolve_checkpoint(path))
    return Embedder(model, config, device)
