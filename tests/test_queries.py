"""Queries as users make them (model/queries.py) and a user's own gallery (model/own_gallery.py):
brought to the dataset's form, and refused with one line when they are over a limit."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from model.demo.own_gallery import MAX_IMAGES, GalleryError, read_own_images
from model.queries import mnist_style, prepare_query, sketch_pixels, sketch_to_image


def _mnist_seven() -> np.ndarray:
    with np.load(ROOT / "assets" / "gallery" / "mnist.npz") as f:
        return f["images"][int(np.flatnonzero(f["labels"] == 7)[0])].squeeze()


def _centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    a = a.astype(np.float64)
    return (a.sum(1) * np.arange(28)).sum() / a.sum(), (a.sum(0) * np.arange(28)).sum() / a.sum()


def test_an_inverted_off_centre_digit_lands_as_mnist_would_have_it() -> None:
    seven = _mnist_seven()
    photo = Image.new("L", (300, 200), 230)  # light paper
    photo.paste(Image.fromarray(255 - seven).resize((140, 140), Image.BILINEAR), (150, 50))  # dark, off-centre
    seen, notes = prepare_query(photo.convert("RGB"), "mnist")
    arr = np.asarray(seen)
    assert seen.size == (28, 28) and "light background: inverted" in notes
    assert arr[0].max() == 0 and arr[:, 0].max() == 0 and arr.max() > 200  # light on black, margin kept
    cy, cx = _centre_of_mass(arr)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5  # centre of mass at (14, 14), as in MNIST
    ys, xs = np.nonzero(arr > 60)
    assert max(np.ptp(ys), np.ptp(xs)) + 1 <= 21  # within the 20x20 box (anti-aliasing may add a pixel)
    # and it matches the original digit far better than the raw photo, squeezed to 28x28, does
    def match(a: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel().astype(np.float64), seven.ravel())[0, 1])

    raw = np.asarray(photo.resize((28, 28), Image.BILINEAR))
    assert match(arr) > 0.4 and match(arr) > match(raw) + 0.4, (match(arr), match(raw))


def test_fashion_and_cifar_preparation() -> None:
    shoe = Image.new("RGB", (120, 60), "white")
    shoe.paste((20, 20, 20), (10, 20, 110, 50))
    seen, notes = prepare_query(shoe, "fashion_mnist")
    arr = np.asarray(seen)
    assert "light background: inverted" in notes and arr.shape == (28, 28)
    assert (arr[:, 0] > 100).any() and (arr[:, -1] > 100).any()  # the longest side spans the canvas
    photo = Image.new("RGB", (640, 480), "blue")
    seen, notes = prepare_query(photo, "photo")
    assert seen.size == (480, 480) and notes == ["centre-cropped 640x480 to 480x480"]
    # a dataset image goes through the same steps as any other (no shortcut by size) and comes out
    # nearly as it was: it is already in the dataset's form
    dataset_image = Image.fromarray(_mnist_seven())
    seen, notes = prepare_query(dataset_image, "mnist")
    assert notes == ["cropped, scaled into 20x20 and centred by centre of mass"]
    assert np.corrcoef(np.asarray(seen, np.float64).ravel(), _mnist_seven().ravel().astype(np.float64))[0, 1] > 0.9


def test_blank_and_drawn_queries() -> None:
    seen, notes = prepare_query(Image.new("RGB", (100, 100), "white"), "mnist")
    assert not np.asarray(seen).any() and "no object found: the image is blank" in notes
    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[40:240, 60:80, 3] = 255  # one vertical stroke, off-centre, on a transparent canvas
    digit = np.asarray(sketch_to_image({"composite": canvas}))
    cy, cx = _centre_of_mass(digit)
    assert abs(cx - 14) <= 0.5 and abs(cy - 14) <= 0.5
    assert mnist_style(np.zeros((10, 10))).max() == 0


def test_the_sketchpad_png_is_read_and_anything_else_refused_in_one_line() -> None:
    """The pages' sketchpad (static/sketch.js) sends each stroke as a data URL of its canvas: black
    on opaque white. It is read to pixels and searched as the same drawing would be; a payload that
    is not a PNG data URL is refused with one line, never a traceback."""
    import base64

    canvas = Image.new("RGBA", (280, 280), "white")
    canvas.paste((0, 0, 0, 255), (60, 40, 80, 240))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    pixels = sketch_pixels(url)
    assert pixels.shape == (280, 280, 4) and pixels[100, 70, 0] == 0 and pixels[0, 0, 0] == 255
    digit = np.asarray(sketch_to_image(pixels))
    cy, cx = _centre_of_mass(digit)
    assert abs(cx - 14) <= 0.5 and abs(cy - 14) <= 0.5
    jpeg = io.BytesIO()
    canvas.convert("RGB").save(jpeg, format="JPEG")
    for bad in ("", "not a url", "data:image/png;base64,@@@", "data:text/plain;base64,aGk=",
                "data:image/png;base64," + base64.b64encode(jpeg.getvalue()).decode(),
                "data:image/png;base64," + "A" * 5_000_000):
        with pytest.raises(ValueError, match="the drawing did not arrive as a PNG of the sketchpad"):
            sketch_pixels(bad)


def _png(side: int = 40, colour: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return str(path)


def test_own_gallery_reads_files_and_zips_and_lists_what_it_skips(tmp_path) -> None:
    (tmp_path / "a.png").write_bytes(_png())
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    archive = _zip(tmp_path / "x.zip", {"../../escape.png": _png(colour="blue"), "dir/b.png": _png(200),
                                        "readme.txt": b"hi", "__MACOSX/._b.png": b"junk"})
    own = read_own_images([tmp_path / "a.png", tmp_path / "broken.jpg", archive])
    assert own.names == ["a.png", "escape.png", "b.png"] and max(own.images[2].size) <= 96
    assert [s.split(":")[0] for s in own.skipped] == ["broken.jpg", "readme.txt"]
    assert not (tmp_path.parent / "escape.png").exists()  # read in memory, never extracted


def test_own_gallery_limits_are_one_line(tmp_path) -> None:
    many = _zip(tmp_path / "many.zip", {f"{i}.png": _png(8) for i in range(MAX_IMAGES + 1)})
    with pytest.raises(GalleryError, match=f"more than {MAX_IMAGES} images"):
        read_own_images([many])
    # a zip bomb: a small archive that unpacks to 300 MB is refused from its directory
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.png", b"\x00" * (300 * 2**20))
    assert bomb.stat().st_size < 2 * 2**20
    with pytest.raises(GalleryError, match="unpacks to 300 MB, over the limit of 200 MB") as e:
        read_own_images([bomb])
    assert "\n" not in str(e.value)
    # a decompression bomb: a small PNG that claims 12000x12000 pixels is skipped with its reason
    from test_demo import _bomb_png

    (tmp_path / "huge.png").write_bytes(_bomb_png())
    own = read_own_images([tmp_path / "huge.png"])
    assert own.images == [] and "megapixels" in own.skipped[0]


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_a_gallery_image_searched_as_an_upload_keeps_its_results(dataset) -> None:
    """Every query goes through the dataset's normalisation whatever its size, so a dataset image
    must come through it as it was: the shipped gallery's own P@1 (each image against the rest),
    with every query normalised as an upload is, within 0.005 of the P@1 of the images as they are."""
    from model.demo import Demo
    from model.index import SearchIndex

    demo = Demo(assets=ROOT / "assets")
    index = demo.index(dataset, "hybrid1")
    raw = index.embedder.embed(index.images)
    prepared = index.embedder.embed([prepare_query(Image.fromarray(a.squeeze()), dataset)[0] for a in index.images])

    def p_at_1(queries: np.ndarray) -> float:
        hits = [index.search_embedding(q, 2) for q in queries]
        first = [next(h for h in hs if h.index != i) for i, hs in enumerate(hits)]
        return float(np.mean([h.label == index.labels[i] for i, h in enumerate(first)]))

    assert isinstance(index, SearchIndex)
    assert abs(p_at_1(prepared) - p_at_1(raw)) <= 0.005, (p_at_1(prepared), p_at_1(raw))
