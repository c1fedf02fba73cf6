"""The fixtures node's tests check the static page's JavaScript against: small generated images
of every kind a visitor brings, each prepared by the Python the Gradio app runs (model/demo/
queries.py, the embedder's resize), their pixel statistics and the "unlike the dataset" distances
(model/familiarity.py), written to tests/js/fixtures/queries.json:

    python scripts/js_fixtures.py [--out tests/js/fixtures/queries.json] [--check]

--check exits 1 when the file differs from what the Python computes now (tests/test_spec.py runs
it), so a change on either side fails a test: node's when the JavaScript drifts, pytest's when
the Python does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.embedder import Embedder  # noqa: E402
from model.familiarity import Familiarity, pixel_statistics  # noqa: E402
from model.queries import prepare_query, sketch_to_image  # noqa: E402

OUT = ROOT / "tests" / "js" / "fixtures" / "queries.json"
STYLES = (("mnist", 28, 1), ("fashion_mnist", 28, 1), ("photo", 32, 3))


def images() -> list[tuple[str, Image.Image]]:
    """Small uploads: a photo-like gradient with noise (odd size), a dark digit-like stroke on white,
    a light mark on black, ink on a transparent canvas, a flat colour and a greyscale scan."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:19, 0:27]
    photo = np.stack([xx * 9, yy * 13, (xx + yy) * 5], -1) + rng.integers(0, 40, (19, 27, 3))
    out = [("photo", Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)))]
    stroke = Image.new("RGB", (30, 34), "white")
    ImageDraw.Draw(stroke).line((6, 28, 22, 5), fill=(20, 20, 20), width=3)
    out.append(("stroke", stroke))
    mark = Image.new("L", (24, 24), 0)
    ImageDraw.Draw(mark).ellipse((5, 8, 17, 20), fill=230)
    out.append(("light-on-dark", mark))
    rgba = np.zeros((26, 26, 4), np.uint8)
    rgba[6:20, 11:15] = (0, 0, 0, 255)
    out.append(("transparent", Image.fromarray(rgba, "RGBA")))
    out.append(("flat", Image.new("RGB", (21, 15), (200, 120, 40))))
    out.append(("scan", Image.fromarray(rng.integers(150, 256, (22, 18), dtype=np.uint8), "L")))
    return out


def drawings() -> list[np.ndarray]:
    """Opaque sketchpad canvases (dark strokes on white), smaller than the page's 280 px: RGB, the
    page adds an opaque alpha."""
    out = []
    for i, stroke in enumerate([(20, 6, 20, 34), (8, 8, 32, 30), (14, 7, 26, 7, 17, 33)]):
        canvas = Image.new("RGB", (40, 40), "white")
        ImageDraw.Draw(canvas).line(stroke, fill="black", width=5 - i, joint="curve")
        out.append(np.asarray(canvas))
    return out


def familiarity_case(gallery: torch.Tensor) -> tuple[Familiarity, dict]:
    """A check fitted on a gallery of `gallery`'s images (N, 3, 32, 32), each 10 times with noise, and
    8-d embeddings in 3 classes: photo-like queries pass it, drawings do not."""
    rng = np.random.default_rng(3)
    x = gallery.repeat(10, 1, 1, 1).int() + torch.from_numpy(rng.integers(-12, 13, (10 * len(gallery), 3, 32, 32)))
    labels = np.arange(len(x)) % 3
    emb = rng.normal(size=(len(x), 8)) + labels[:, None]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    f = Familiarity.fit(x.clamp(0, 255).to(torch.uint8), emb.astype(np.float32), labels)
    params = np.concatenate([f.pixel_mean.ravel(), f.pixel_precision.ravel(), f.class_means.ravel(),
                             f.embedding_precision.ravel()]).astype(np.float64)
    spec = {"features": len(f.pixel_mean), "classes": len(f.class_means), "pixel_threshold": f.pixel_threshold,
            "embedding_threshold": f.embedding_threshold}
    return f, {"params": params.tolist(), "spec": spec, "dim": 8}


def query_embedding(rng: np.random.Generator, label: int) -> np.ndarray:
    """Drawn as the gallery's embeddings are, so that the embedding check passes some queries."""
    e = rng.normal(size=8) + label
    return e / np.linalg.norm(e)


def fixtures() -> dict:
    prepared = {}
    for name, image in images():
        for style, size, channels in STYLES:
            embedder = Embedder(torch.nn.Identity(), {"in_channels": channels, "image_size": [size, size],
                                                      "mean": [0.0] * channels, "std": [1.0] * channels})
            prepared[name, style] = embedder.to_uint8(prepare_query(image, style)[0])
    f, fam = familiarity_case(torch.cat([x for (_, style), x in prepared.items() if style == "photo"]))
    emb_rng = np.random.default_rng(5)
    queries = []
    for i, (name, image) in enumerate(images()):
        styles = {}
        for style, size, _ in STYLES:
            x = prepared[name, style]
            embedding = query_embedding(emb_rng, i % 3)
            styles[style] = {"size": size, "prepared": x[0].permute(1, 2, 0).ravel().tolist(),
                             "statistics": pixel_statistics(x)[0].astype(float).tolist(),
                             "embedding": embedding.tolist(),
                             "pixel_distance": float(f.pixel_distance(pixel_statistics(x))[0]),
                             "embedding_distance": float(f.embedding_distance(embedding[None])[0]),
                             "unlike": bool(f.unlike(x, embedding[None])[0])}
        queries.append({"name": name, "width": image.width, "height": image.height,
                        "rgba": np.asarray(image.convert("RGBA")).ravel().tolist(), "styles": styles})
    sketches = []
    for canvas in drawings():
        rgba = np.dstack([canvas, np.full(canvas.shape[:2], 255, np.uint8)])
        sketches.append({"width": canvas.shape[1], "height": canvas.shape[0], "rgb": canvas.ravel().tolist(),
                         "prepared": {style: np.asarray(sketch_to_image({"composite": rgba}, style)).ravel().tolist()
                                      for style in ("mnist", "fashion_mnist")}})
    return {"written_by": "python scripts/js_fixtures.py", "familiarity": fam, "queries": queries,
            "drawings": sketches}


def dumps(data: dict) -> str:
    return json.dumps(data, separators=(",", ":")) + "\n"


def same(a: object, b: object) -> bool:
    """The fixtures equal but for float32 rounding: the image statistics are float32 sums, whose last
    bits differ between CPUs (an Intel Xeon and an AMD EPYC differed by up to 2e-6, relatively)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-5,
                                                                                         abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    args = p.parse_args(argv)
    text = dumps(fixtures())
    out = Path(args.out)
    if args.check:
        if not out.is_file() or not same(json.loads(out.read_text()), json.loads(text)):
            print(f"{out} differs from what the Python computes now: rerun python scripts/js_fixtures.py")
            return 1
        print(f"{out} is up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out} ({len(text) // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
