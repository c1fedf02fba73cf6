"""Small labelled image folders to try `train.py --dataset FOLDER` on, made from nothing:

    python scripts/sample_folders.py OUT [--kinds shapes textures colours] [--per-class 60] [--seed 0]
                                         [--layout classes|train-test]

Each kind is a folder of 4 classes, as a user's own photos come: images of mixed sizes (40 to
200 px, 3:4 to 4:3), formats (PNG, JPEG, WebP, BMP) and modes (RGB, RGBA, and greyscale except
among colours, where a grey picture would carry no label), some
in nested subfolders, plus one truncated JPEG and one text file that training must name and
skip. `shapes`: a filled circle, square, triangle or cross, anywhere, any size and colour, on a
noisy background; `textures`: stripes, a checkerboard, dots or blotches, at any angle, scale and
colours; `colours`: a scene of random blobs whose dominant hue is red, green, blue or yellow.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

KINDS = {"shapes": ("circle", "square", "triangle", "cross"),
         "textures": ("stripes", "checker", "dots", "blotches"),
         "colours": ("red", "green", "blue", "yellow")}
HUES = {"red": 0.0, "yellow": 0.15, "green": 0.33, "blue": 0.62}


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def _noisy(rng: np.random.Generator, w: int, h: int, base: tuple[int, int, int], amount: float = 18) -> Image.Image:
    arr = np.clip(np.array(base, np.float32) + rng.normal(0, amount, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def shape(rng: np.random.Generator, cls: str, w: int, h: int) -> Image.Image:
    im = _noisy(rng, w, h, _colour(rng, 0, 110))
    d = ImageDraw.Draw(im)
    s = min(w, h)
    r = rng.uniform(0.18, 0.38) * s
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    fill = _colour(rng, 140, 256)
    if cls == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif cls == "square":
        a = rng.uniform(0, math.pi / 2)
        pts = [(cx + r * math.cos(a + k * math.pi / 2), cy + r * math.sin(a + k * math.pi / 2)) for k in range(4)]
        d.polygon(pts, fill=fill)
    elif cls == "triangle":
        a = rng.uniform(0, 2 * math.pi)
        pts = [(cx + r * math.cos(a + k * 2 * math.pi / 3), cy + r * math.sin(a + k * 2 * math.pi / 3))
               for k in range(3)]
        d.polygon(pts, fill=fill)
    else:
        t = r * 0.35
        d.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        d.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
    return im


def texture(rng: np.random.Generator, cls: str, w: int, h: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, math.pi)
    period = rng.uniform(0.08, 0.2) * min(w, h)
    u = (xx * math.cos(a) + yy * math.sin(a)) / period
    v = (-xx * math.sin(a) + yy * math.cos(a)) / period
    if cls == "stripes":
        m = (np.sin(2 * math.pi * u) > 0).astype(np.float32)
    elif cls == "checker":
        m = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    elif cls == "dots":
        m = (((u % 1 - 0.5) ** 2 + (v % 1 - 0.5) ** 2) < 0.09).astype(np.float32)
    else:
        small = rng.random((max(2, h // 12), max(2, w // 12)))
        m = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC), np.float32)
        m = (m > 128).astype(np.float32)
    c0, c1 = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    if np.abs(c0 - c1).sum() < 150:
        c1 = 255 - c0
    arr = c0 * (1 - m[..., None]) + c1 * m[..., None] + rng.normal(0, 10, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def colour(rng: np.random.Generator, cls: str, w: int, h: int) -> Image.Image:
    import colorsys

    im = _noisy(rng, w, h, _colour(rng, 60, 200), 12)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(6, 14))):  # a scene of blobs, most of them of the class's hue
        hue = HUES[cls] if rng.random() < 0.75 else rng.random()
        rgb = colorsys.hsv_to_rgb((hue + rng.normal(0, 0.025)) % 1, rng.uniform(0.55, 1), rng.uniform(0.5, 1))
        r = rng.uniform(0.1, 0.3) * min(w, h)
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        d.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(255 * c) for c in rgb))
    return im.filter(ImageFilter.GaussianBlur(0.8))


DRAW = {"shapes": shape, "textures": texture, "colours": colour}


def save_varied(im: Image.Image, path: Path, rng: np.random.Generator, greyscale: bool = True) -> None:
    """Saved as a user's files come: PNG, JPEG, WebP or BMP; now and then with alpha, and now and
    then greyscale where `greyscale` (not in a folder whose classes are colours: a grey copy of
    a red scene is no longer red, and such a folder would be mislabelled)."""
    fmt = ("png", "jpg", "webp", "bmp")[int(rng.integers(0, 4))]
    roll = rng.random()
    if roll < 0.1 and fmt != "bmp":
        im = im.convert("RGBA")
    elif roll < 0.15 and greyscale:
        im = im.convert("L")
    if fmt == "jpg" and im.mode == "RGBA":
        fmt = "png"
    im.save(path.with_suffix(f".{fmt}"), quality=int(rng.integers(70, 95)) if fmt in ("jpg", "webp") else None)


def make_folder(root: Path, kind: str, per_class: int = 60, seed: int = 0, layout: str = "classes",
                test_per_class: int = 0) -> Path:
    """One kind's folder under `root`: `per_class` images a class in <class>/ (a third of them one
    folder deeper), or train/<class>/ and test/<class>/ with `test_per_class` (default a fifth)
    in test/; plus a truncated JPEG and a notes file."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    test_n = test_per_class or max(2, per_class // 5)
    for cls in KINDS[kind]:
        for i in range(per_class):
            if layout == "classes":
                folder = root / cls / ("batch-2" if i % 3 == 2 else "")
            else:
                folder = root / ("test" if i < test_n else "train") / cls
            folder.mkdir(parents=True, exist_ok=True)
            w = int(rng.integers(40, 200))
            h = int(w * rng.uniform(0.75, 4 / 3))  # photos' aspect ratios, 3:4 to 4:3
            save_varied(DRAW[kind](rng, cls, w, h), folder / f"{cls}-{i:03d}", rng, greyscale=kind != "colours")
    first = root / (KINDS[kind][0] if layout == "classes" else f"train/{KINDS[kind][0]}")
    (first / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(40))  # a JPEG header and nothing more
    (first / "notes.txt").write_text("not an image\n")
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--per-class", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", default="classes", choices=["classes", "train-test"])
    args = p.parse_args(argv)
    for kind in args.kinds:
        path = make_folder(Path(args.out) / kind, kind, args.per_class, args.seed, args.layout)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
