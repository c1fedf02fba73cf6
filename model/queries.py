"""Query images as users make them -> images as the dataset was made.

A digit photographed on paper is dark on light, off-centre and large; MNIST digits are light
on black, scaled into a 20x20 box and centred by their centre of mass in 28x28. A query
that is not brought to the dataset's form is searched as a different kind of image (a dark
digit on white returned wrong digits at about 0.6 similarity). Each function returns the
image the model sees and notes saying what was done, for the page to show.

- MNIST: grey; a light background inverted; background level removed; the object cropped,
  scaled into 20x20 (aspect kept) and centred by centre of mass in 28x28 (LeCun et al.).
- FashionMNIST: grey; a light background inverted; the object cropped, its longest side
  scaled to 28 and centred in 28x28 (Xiao et al. 2017: trim, resize, extend, negate).
- CIFAR-10 and any other dataset: a centre crop to a square; the embedder resizes it.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image

from .data import pil_to_mode

STYLES = ("mnist", "fashion_mnist", "photo")  # data.DatasetInfo.query_style: how a dataset's images were made
INK_THRESHOLD = 0.25  # of the strongest ink: weaker pixels (paper texture, shadows) do not widen the crop ...
FAINT, GROW = 0.01, 2  # ... except faint ink right at the object's edge (see _crop_to_ink)


def _ink(grey: np.ndarray, notes: list[str]) -> np.ndarray:
    """Grey pixels -> ink in 0..1 on a zero background, inverting a light background (judged
    by the image's border, where the background is)."""
    border = np.concatenate([grey[:2].ravel(), grey[-2:].ravel(), grey[:, :2].ravel(), grey[:, -2:].ravel()])
    background = float(np.median(border))
    if background > 127:
        grey = 255.0 - grey
        background = 255.0 - background
        notes.append("light background: inverted")
    ink = np.clip(grey - background, 0, None)
    peak = float(ink.max())
    return ink / peak if peak > 0 else ink


def _crop_to_ink(ink: np.ndarray) -> np.ndarray | None:
    """The object's box: where the ink reaches INK_THRESHOLD of its peak, grown by up to GROW
    pixels on each side over faint ink (anti-aliased edges, which a dataset image has and which
    its own box includes), so that a dataset image is cropped to the box it was made with."""
    mask = ink >= INK_THRESHOLD
    if mask.sum() < 3:
        return None
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    for _ in range(GROW):
        if top > 0 and ink[top - 1, left : right + 1].max() >= FAINT:
            top -= 1
        if bottom < ink.shape[0] - 1 and ink[bottom + 1, left : right + 1].max() >= FAINT:
            bottom += 1
        if left > 0 and ink[top : bottom + 1, left - 1].max() >= FAINT:
            left -= 1
        if right < ink.shape[1] - 1 and ink[top : bottom + 1, right + 1].max() >= FAINT:
            right += 1
    return ink[top : bottom + 1, left : right + 1]


def _resize(ink: np.ndarray, box: int) -> np.ndarray:
    """Scale so the longest side is `box` pixels, aspect kept (anti-aliased)."""
    h, w = ink.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.LANCZOS)
    return np.asarray(im, dtype=np.float32) / 255


def _paste(canvas: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    h, w = patch.shape
    top, left = int(np.clip(top, 0, canvas.shape[0] - h)), int(np.clip(left, 0, canvas.shape[1] - w))
    canvas[top : top + h, left : left + w] = patch


def mnist_style(ink: np.ndarray, size: int = 28) -> np.ndarray:
    """Ink (0..1, object bright) -> uint8 size x size as MNIST was made: the object scaled into a
    20x20 box, then placed so its centre of mass is at pixel (14, 14) of 28 (where MNIST's own
    digits have theirs: 14.0 on average over the gallery; placing it at 13.5 shifted every query
    by a pixel against the dataset)."""
    crop = _crop_to_ink(ink)
    canvas = np.zeros((size, size), np.float32)
    if crop is None:
        return canvas.astype(np.uint8)
    digit = _resize(crop, round(size * 20 / 28))
    mass = digit.astype(np.float64)  # in float64: a symmetric stroke's centre is exactly on a half pixel,
    total = mass.sum() or 1.0  # which float32 sums put a hair to one side (the page computes in doubles)
    cy = (mass.sum(1) * np.arange(mass.shape[0])).sum() / total
    cx = (mass.sum(0) * np.arange(mass.shape[1])).sum() / total
    _paste(canvas, digit, round(size / 2 - cy), round(size / 2 - cx))
    return (canvas * 255).round().clip(0, 255).astype(np.uint8)


def fashion_style(ink: np.ndarray, size: int = 28) -> np.ndarray:
    """Ink (0..1) -> uint8 size x size as Fashion-MNIST was made: trimmed, the longest side
    scaled to the canvas, centred."""
    crop = _crop_to_ink(ink)
    canvas = np.zeros((size, size), np.float32)
    if crop is None:
        return canvas.astype(np.uint8)
    item = _resize(crop, size)
    # an odd margin goes to the top and left, as in Fashion-MNIST's own images
    _paste(canvas, item, -(-(size - item.shape[0]) // 2), -(-(size - item.shape[1]) // 2))
    return (canvas * 255).round().clip(0, 255).astype(np.uint8)


def centre_square(image: Image.Image, notes: list[str]) -> Image.Image:
    w, h = image.size
    if w == h:
        return image
    side = min(w, h)
    notes.append(f"centre-cropped {w}x{h} to {side}x{side}")
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


def prepare_query(image: Image.Image, style: str) -> tuple[Image.Image, list[str]]:
    """An uploaded, pasted or webcam image -> (the image in the dataset's form, notes).

    `style` is the dataset's query style (data.query_style). Every image goes through the same
    steps whatever its size: a digit that fills a 28x28 frame is centred like any other, and a
    dataset image, already in that form, comes out nearly unchanged (its search results kept)."""
    notes: list[str] = []
    if style not in ("mnist", "fashion_mnist"):
        return centre_square(pil_to_mode(image, "RGB"), notes), notes
    grey = np.asarray(pil_to_mode(image, "L"), dtype=np.float32)
    ink = _ink(grey, notes)
    out = mnist_style(ink) if style == "mnist" else fashion_style(ink)
    if not out.any():
        notes.append("no object found: the image is blank")
    else:
        notes.append("cropped, scaled into 20x20 and centred by centre of mass" if style == "mnist"
                     else "cropped, scaled to 28 px and centred")
    return Image.fromarray(out), notes


SKETCH_MAX_CHARS = 4_000_000  # a drawing's data URL; a 280x280 canvas as PNG takes a few KB
SKETCH_MAX_SIDE = 2048
SKETCH_REFUSED = "the drawing did not arrive as a PNG of the sketchpad: clear it and draw again"


def sketch_pixels(url: str) -> np.ndarray:
    """The pages' sketchpad (static/sketch.js) as the Gradio page sends a stroke: a data URL of a
    PNG -> its RGBA pixels. Anything else raises ValueError with the line to show."""
    head, _, data = url.partition(",")
    if head != "data:image/png;base64" or len(data) > SKETCH_MAX_CHARS:
        raise ValueError(SKETCH_REFUSED)
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        if image.format != "PNG" or max(image.size) > SKETCH_MAX_SIDE:
            raise ValueError
        return np.asarray(image.convert("RGBA"))
    except (ValueError, binascii.Error, OSError, Image.DecompressionBombError):
        raise ValueError(SKETCH_REFUSED) from None


def sketch_ink(value: dict | np.ndarray | None) -> np.ndarray | None:
    """A Sketchpad value (Gradio gives a dict with the flattened `composite`) -> ink in 0..1,
    from alpha on a transparent canvas or from darkness on a white one; None when blank."""
    if isinstance(value, dict):
        value = value.get("composite")
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.ndim == 3 and arr.shape[2] == 4 and arr[..., 3].min() < 255:
        ink = arr[..., 3].astype(np.float32) / 255 * (1 - arr[..., :3].mean(-1) / 255 * 0.5)
    else:
        grey = arr if arr.ndim == 2 else arr[..., :3].mean(-1)
        ink = (255 - grey.astype(np.float32)) / 255
    if (ink > 40 / 255).sum() < 5:
        return None
    return ink


def ink_to_image(ink: np.ndarray, style: str = "mnist") -> Image.Image:
    """A drawing's ink (H, W) in 0..1, as sketch_ink gives it -> a light-on-black 28x28 image made
    as the dataset's images were (`style`: mnist or fashion_mnist)."""
    return Image.fromarray(fashion_style(ink) if style == "fashion_mnist" else mnist_style(ink))


def sketch_to_image(value: dict | np.ndarray | None, style: str = "mnist") -> Image.Image | None:
    """A Sketchpad value -> the dataset-style image of its ink; None when empty."""
    ink = sketch_ink(value)
    return None if ink is None else ink_to_image(ink, style)
