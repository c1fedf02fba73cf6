"""Checkpoints on disk and the inference API: `load_embedder(path).embed(images)`.

A checkpoint is a folder with two files, safetensors and JSON only (nothing is ever
unpickled, so a checkpoint handed over by a stranger cannot run code):

    model.safetensors  the embedding network's state_dict
    config.json        what rebuilds it and its preprocessing: architecture name and
                       arguments, input size and channels, normalisation, class names,
                       and the search views: flip_average and shift_average (optional,
                       default off: see search_views)

That is the layout of huggingface_hub's PyTorchModelHubMixin: scripts/publish_models.py
pushes a folder to a model repository, and `load_embedder("hf://USER/NAME")` (model/hub.py)
loads it back through huggingface_hub's cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .data import normalize, pil_to_mode
from .networks import build_model

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
CONFIG_KEYS = ("model", "in_channels", "embedding_dim", "activation", "image_size", "mean", "std", "class_names")


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


class CheckpointError(Exception):
    """A checkpoint folder is missing, incomplete or inconsistent; the message says which."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(folder: str | Path, model: nn.Module, config: dict[str, Any]) -> None:
    """Write model.safetensors and config.json atomically (weights first, so a config
    on disk never describes weights that are not there yet)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f"checkpoint config lacks {missing}")
    atomic_save_tensors(folder / WEIGHTS_NAME, model.state_dict())
    atomic_write_json(folder / CONFIG_NAME, config)


def sha256_file(path: str | Path) -> str:
    """A file's content hash: names a checkpoint's weights even after its folder is overwritten."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a checkpoint: {CONFIG_NAME} is missing (train one with train.py)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); retrain or restore the file") from None
    missing = [k for k in CONFIG_KEYS if k not in config] if isinstance(config, dict) else list(CONFIG_KEYS)
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: it was not written by this project's train.py")
    return config


def build_from_config(config: dict[str, Any]) -> nn.Module:
    try:
        return build_model(config["model"], config["in_channels"], config["embedding_dim"], config["activation"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"config.json describes no buildable model: {e}") from None


def load_model(folder: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from config.json and load model.safetensors into it (strictly)."""
    folder = Path(folder)
    config = read_config(folder)
    model = build_from_config(config)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{folder} has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({e})") from None
    expected = model.state_dict()
    problems = sorted(set(expected) ^ set(state))
    problems += [k for k in expected if k in state and expected[k].shape != state[k].shape]
    if problems:
        raise CheckpointError(
            f"{weights} does not match config.json (model {config['model']!r}, "
            f"{config['in_channels']} input channels): mismatched tensors {problems[:5]}"
            f"{' ...' if len(problems) > 5 else ''}"
        )
    model.load_state_dict(state)
    return model.eval(), config


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
