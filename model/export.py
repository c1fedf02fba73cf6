"""A checkpoint as one ONNX graph: `python -m model.export CHECKPOINT --onnx FILE`.

The graph is the whole of `load_embedder(CHECKPOINT).embed_uint8`, so onnxruntime alone (in
Python, or onnxruntime-web in a browser) embeds as the demo does:

    input   images      uint8 (N, H, W, C) at the checkpoint's size (28x28x1, 32x32x3), N dynamic
    output  embeddings  float32 (N, D), unit L2 norm

Inside: the normalisation, the checkpoint's search views (shifts with reflected edges, mirror
images) and the mean of their unit vectors; the whitening was folded into the last layer when
the checkpoint was written, so it is in the weights. Resizing and mode conversion of other
images stay outside, as in Embedder.to_uint8. The involution exports as ordinary ops (pad,
strided slices, multiply-adds): ONNX has no im2col.

    python -m model.export assets/cifar10-hybrid1 --onnx cifar10-hybrid1.onnx

checks the written file with onnxruntime against the PyTorch embedder on the checkpoint's
gallery (test images, which no choice saw) and prints the largest difference and whether every
top-10 neighbour list is the same (exactly, and up to ties of 1e-6).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError
from .data import normalize
from .embedder import Embedder, load_embedder
from .search_views import search_views, view_averaged

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "embeddings"


class SearchEmbedding(nn.Module):
    """uint8 (N, H, W, C) -> float32 (N, D) unit vectors: an Embedder's embed_uint8 as one module.
    Every search view goes through the network in one batch (view-major), then the unit
    vectors of an image's views are averaged and normalised again (embedder.view_averaged)."""

    def __init__(self, embedder: Embedder) -> None:
        super().__init__()
        self.model = embedder.model.cpu().eval()
        self.register_buffer("mean", embedder.mean.detach().cpu().clone())
        self.register_buffer("std", embedder.std.detach().cpu().clone())
        self.flip_average, self.shift_average = embedder.flip_average, embedder.shift_average

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(images.permute(0, 3, 1, 2), self.mean, self.std)
        views = search_views(x, self.flip_average, self.shift_average)
        out = self.model(torch.cat(views) if len(views) > 1 else x)
        return view_averaged(list(out.view(len(views), images.shape[0], -1).unbind(0)))


def export_onnx(checkpoint: str | Path, path: str | Path) -> Path:
    """Write the checkpoint's search embedding as an ONNX file (atomically) and return its path."""
    embedder = load_embedder(checkpoint)
    module = SearchEmbedding(embedder).eval()
    (h, w), c = embedder.image_size, embedder.channels
    example = torch.zeros(2, h, w, c, dtype=torch.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".onnx")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=OPSET,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
                                        verbose=False)
            program.save(tmp, external_data=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def onnx_embed(path: str | Path, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """uint8 (N, H, W, C) -> (N, D) float32 with onnxruntime, on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: images[i:i + batch_size]})[0]
                           for i in range(0, len(images), batch_size)])


def parity(checkpoint: str | Path, path: str | Path, images: np.ndarray, k: int = 10,
           tie: float = 1e-6) -> dict[str, float]:
    """The ONNX file against the PyTorch embedder on uint8 (N, H, W, C) images: the largest
    absolute difference of the embeddings; the share of images whose top-k neighbour list
    (among the other images) is the same; and the share where it is the same up to ties, i.e.
    the ONNX list's similarities, measured with the PyTorch embeddings, are the PyTorch
    list's within `tie` (two neighbours 1e-7 apart may swap places under float rounding)."""
    embedder = load_embedder(checkpoint)
    want = embedder.embed_uint8(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    got = onnx_embed(path, images)
    reference = want @ want.T
    np.fill_diagonal(reference, -np.inf)

    def top(e: np.ndarray) -> np.ndarray:
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return np.argsort(-sim, axis=1, kind="stable")[:, :k]

    top_want, top_got = top(want), top(got)
    rows = np.arange(len(images))[:, None]
    tied = np.abs(reference[rows, top_got] - reference[rows, top_want]) <= tie
    return {"images": len(images), "max_abs_diff": float(np.abs(got - want).max()),
            f"same_top_{k}": float((top_got == top_want).all(axis=1).mean()),
            f"same_top_{k}_up_to_ties": float(tied.all(axis=1).mean())}


def gallery_images(checkpoint: str | Path) -> np.ndarray:
    """The checkpoint's demo gallery (sampled from the test split) as uint8 (N, H, W, C)."""
    from .checkpoint import read_config
    from .index import default_gallery_dir, gallery_name, read_npz  # the bundle owns where the gallery lives

    images = read_npz(default_gallery_dir(Path(checkpoint)) / gallery_name(read_config(checkpoint)))["images"]
    return images if images.ndim == 4 else images[..., None]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="a checkpoint folder (assets/NAME) or hf://USER/NAME")
    p.add_argument("--onnx", required=True, metavar="FILE", help="where to write the .onnx file")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check on the gallery")
    args = p.parse_args(argv)
    try:
        path = export_onnx(args.checkpoint, args.onnx)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    if args.no_check:
        return 0
    if not Path(args.checkpoint).is_dir():
        print("parity not checked: the gallery it is checked on ships beside a local checkpoint folder")
        return 0
    print(json.dumps(parity(args.checkpoint, path, gallery_images(args.checkpoint))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
