"""The demo's logic on small synthetic checkpoints: bundles, search, bad uploads, sketches,
feature maps, and the /search endpoint through gradio_client against a launched app."""

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, free_port
from PIL import Image

from model.demo import Demo, QueryError, feature_maps, open_upload, prepare_upload, sketch_to_image
from model.demo.html import feature_maps_html, map_highlight, map_value
from model.index import INDEX_JSON, BundleError, load_index


def test_gallery_image_finds_itself_first(assets) -> None:
    index = load_index(assets / "mnist-hybrid1", rebuild=False)
    assert len(index) == 100 and index.xy.shape == (100, 2)
    assert sorted(np.bincount(index.labels)) == [10] * 10  # stratified
    for i in (0, 17, 99):
        _, hits = index.search(index.images[i], k=5)
        assert hits[0].index == i and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
        assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)


def test_stale_bundle_is_detected_and_rebuilt(assets, tmp_path) -> None:
    import shutil

    ckpt = tmp_path / "mnist-hybrid1"
    shutil.copytree(assets / "mnist-hybrid1", ckpt)
    shutil.copytree(assets / "gallery", tmp_path / "gallery")
    meta = json.loads((ckpt / INDEX_JSON).read_text())
    (ckpt / INDEX_JSON).write_text(json.dumps({**meta, "weights_sha256": "0" * 64}))
    with pytest.raises(BundleError, match="does not match its weights"):
        load_index(ckpt, rebuild=False)
    messages = []
    index = load_index(ckpt, log=messages.append)
    assert any("does not match its weights, gallery or search views; rebuilding it once" in m for m in messages)
    assert json.loads((ckpt / INDEX_JSON).read_text())["weights_sha256"] == meta["weights_sha256"]
    assert index.search(index.images[3], 1)[1][0].index == 3
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "flip_average": True}))  # other embeddings
    with pytest.raises(BundleError, match="does not match"):
        load_index(ckpt, rebuild=False)
    load_index(ckpt, log=messages.append)
    assert json.loads((ckpt / INDEX_JSON).read_text())["flip_average"] is True
    (ckpt / "config.json").write_text(json.dumps({**config, "flip_average": True, "shift_average": 1}))
    with pytest.raises(BundleError, match="does not match its weights, gallery or search views"):
        load_index(ckpt, rebuild=False)
    load_index(ckpt, log=messages.append)
    assert json.loads((ckpt / INDEX_JSON).read_text())["shift_average"] == 1
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="does not match"):
        load_index(ckpt, rebuild=False)
    (tmp_path / "gallery" / "mnist.npz").unlink()
    with pytest.raises(BundleError, match="no gallery for mnist"):
        load_index(ckpt)


def test_bundle_cli_errors_are_one_line(tmp_path, capsys) -> None:
    from model.index import main

    assert main(["--checkpoint", str(tmp_path)]) == 2
    assert "config.json is missing" in capsys.readouterr().err


def test_demo_search_and_map(assets) -> None:
    demo = Demo(assets=assets)
    assert ("MNIST", "Hybrid-1") in demo.available() and ("CIFAR-10", "Hybrid-1") not in demo.available()
    index = demo.index("MNIST", "Hybrid-1")
    result = demo.search("MNIST", "Hybrid-1", index.images[7], 8, int(index.labels[7]), exclude=7)
    assert len(result.hits) == 8 and 7 not in [h.index for h in result.hits]
    assert 0 <= result.precision <= 1
    api = demo.search_api("MNIST", "Hybrid-1", index.images[7], 8)
    assert Image.open(api.gallery[0][0]).size == (112, 112)  # 28 px upscaled x4, nearest neighbour
    assert api.table["gallery index"].tolist()[0] == 7
    thumbs = demo.gallery_thumbs("MNIST", "Hybrid-1")
    assert len(thumbs) == len(index) and Image.open(thumbs[7]).size == (28, 28)  # native size, for the page
    value = map_value(index, thumbs, "t")
    assert len(value["points"]) == len(index) and [n for n, _ in value["legend"]] == index.class_names
    assert all(0 <= p[0] <= 1 and 0 <= p[1] <= 1 for p in value["points"])
    assert map_highlight(result.hits) == {"query": result.hits[0].index, "neighbours": [h.index for h in result.hits],
                                          "on_itself": False}  # a query is drawn on its nearest image
    with pytest.raises(BundleError, match="no Hybrid-1 weights for CIFAR-10"):
        demo.index("CIFAR-10", "Hybrid-1")


def test_feature_maps(assets) -> None:
    demo = Demo(assets=assets)
    fm = feature_maps(demo, "MNIST", demo.index("MNIST", "Hybrid-1").images[0], (3, 40))
    assert fm.pixel == (3, 27)  # clipped to the 28x28 image
    assert fm.kernel_taps.shape == (9, 28, 28) and fm.kernel_at_pixel.shape == (3, 3)
    assert np.allclose(fm.kernel_at_pixel.ravel(), fm.kernel_taps[:, 3, 27])
    assert set(fm.conv) == {"Hybrid-1", "CNN-3a"} and fm.conv["CNN-3a"].shape[0] == 16
    page = feature_maps_html(fm)
    assert 'data-h="28" data-w="28"' in page and "row 3, column 27" in page and page.count("<img") == 1 + 1 + 9 + 16


def _png_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _bomb_png(side: int = 12000) -> bytes:
    """A tiny PNG whose header claims side x side pixels."""
    raw = zlib.compress(b"\x00" * (side // 8 + 1) * 4)
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


BAD_UPLOADS = {
    "empty": (b"", "empty"),
    "text": (b"hello, I am not a picture", "not an image"),
    "truncated": (_png_bytes(Image.new("RGB", (64, 64), "red"))[:60], "truncated or corrupt"),
    "tiny": (_png_bytes(Image.new("RGB", (1, 1))), "1x1 pixels"),
    "bomb": (_bomb_png(), "too large"),
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_uploads_are_named(kind, tmp_path) -> None:
    data, message = BAD_UPLOADS[kind]
    path = tmp_path / f"{kind}.png"
    path.write_bytes(data)
    with pytest.raises(QueryError, match=message):
        open_upload(path)


def _odd_images(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    files = {}
    def save(name, image, fmt="PNG", **kw):
        files[name] = tmp_path / f"{name}.{fmt.lower()}"
        image.save(files[name], format=fmt, **kw)
    save("rgba", rgb.convert("RGBA"))
    save("palette", rgb.convert("P"))
    save("cmyk", rgb.convert("CMYK"), "JPEG")
    save("sixteen_bit", Image.fromarray(rng.integers(0, 65535, (30, 30), dtype=np.uint16)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    save("exif_rotated", rgb, "JPEG", exif=exif)
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "green", "blue")]
    files["animated"] = tmp_path / "animated.gif"
    frames[0].save(files["animated"], save_all=True, append_images=frames[1:])
    return files


def test_unusual_but_valid_uploads_are_searched(assets, tmp_path) -> None:
    demo = Demo(assets=assets)
    for name, path in _odd_images(tmp_path).items():
        image, note = open_upload(path)
        result = demo.search("MNIST", "Hybrid-1", image, 4)
        assert len(result.hits) == 4, name
        assert ("first frame" in note) == (name == "animated")
    exif_image, _ = open_upload(tmp_path / "exif_rotated.jpeg")
    assert exif_image.size == (30, 40)  # the embedder applies the EXIF rotation itself
    assert demo.index("MNIST", "Hybrid-1").embedder.to_uint8([exif_image]).shape == (1, 1, 28, 28)


def test_sketches() -> None:
    assert sketch_to_image(None) is None
    blank = np.zeros((280, 280, 4), np.uint8)
    assert sketch_to_image({"composite": blank, "layers": [], "background": None}) is None
    drawn = blank.copy()
    drawn[60:220, 130:150] = (0, 0, 0, 255)  # a black vertical stroke: a "1"
    digit = np.asarray(sketch_to_image({"composite": drawn}))
    assert digit.shape == (28, 28) and digit.max() > 200 and digit[:, :4].max() == 0
    white = np.full((280, 280, 3), 255, np.uint8)
    white[100:180, 100:180] = 0
    assert np.asarray(sketch_to_image(white)).max() > 200


def test_search_endpoint_through_gradio_client(assets, tmp_path, monkeypatch) -> None:
    from gradio_client import Client, handle_file

    import app

    monkeypatch.setattr(app, "demo_state", Demo(assets=assets))
    blocks = app.build()
    blocks.queue(max_size=16).launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                     quiet=True)
    try:
        client = Client(blocks.local_url, verbose=False)
        index = app.demo_state.index("MNIST", "Hybrid-1")
        query = tmp_path / "q.png"
        Image.fromarray(index.images[11].squeeze()).save(query)
        gallery, table = client.predict("MNIST", handle_file(str(query)), 5, api_name="/search")
        assert len(gallery) == 5
        with Image.open(gallery[0]["image"]) as first:  # downloaded: the thumbnails are served
            assert first.format == "PNG" and first.size == (112, 112)
        # the file is prepared as the page prepares an upload (normalised like any query, whatever its size)
        expected = app.demo_state.search("MNIST", "Hybrid-1", prepare_upload(query, "MNIST")[0], 5).hits
        assert [row[0] for row in table["data"]] == [h.index for h in expected]
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"nope")
        with pytest.raises(Exception, match="not an image"):
            client.predict("MNIST", handle_file(str(bad)), 5, api_name="/search")
        gallery, _ = client.predict("MNIST", handle_file(str(query)), 3, api_name="/search")
        assert len(gallery) == 3  # served normally after a bad upload
    finally:
        blocks.close()


def test_about_tab_says_how_each_checkpoint_was_made(assets) -> None:
    import json

    from conftest import ROOT

    import app

    # the CIFAR-10 Hybrid-1 checkpoint shipped before recipes, kept as a record
    legacy_record = ROOT / "results" / "recipes" / "cifar10-hybrid1-then-ms-flip-lr1e-3-50ep" / "metrics.json"
    legacy = json.loads(legacy_record.read_text())
    assert app.training_summary(legacy) == (
        "CE 100 + MS 25 + MS 25 + MS 50 epochs, 10 views averaged (1 + 4 shifts of 1 px, each mirrored) search, "
        "whitened (power 0.75, shrinkage 0.1)")
    recipe_run = json.loads((assets / "mnist-hybrid1" / "metrics.json").read_text())
    assert app.training_summary(recipe_run) == "CE 1 epochs"
    about = app.about_markdown()
    assert "| choices made on |" in about and "| validation |" in about
    assert "trained before recipes" not in about  # every shipped checkpoint is a recipe run


def test_a_fine_tune_is_summarized_as_the_whole_chain_or_names_its_start() -> None:
    """A recipe run started from another checkpoint of its dataset and model (init_from) reads as
    that checkpoint's stages then its own where the record is there, and names it where not."""
    import copy
    import json

    from conftest import ROOT

    from model.record import summarize

    start = "results/recipes/fashion_mnist-compact-conv-ce-36ep"
    parent = json.loads((ROOT / start / "metrics.json").read_text())
    child = copy.deepcopy(parent)
    child["recipe"]["init_from"] = start
    child["recipe"]["stages"][0]["loss"] = child["training"]["stages"][0]["loss"] = "ms"
    chain = summarize(child, ROOT)
    assert chain.epochs == "36 + 36" and chain.training == "CE 36 + MS 36 epochs" and len(chain.stages) == 2
    alone = summarize(child)  # no repository at hand (a Space): one stage, and where it started
    assert alone.epochs == "36, from fashion_mnist-compact-conv-ce-36ep" and len(alone.stages) == 1
    child["recipe"]["init_from"] = "results/recipes/cifar10-compact-conv-ce-72ep"  # another dataset: a start only
    assert summarize(child, ROOT).training == "MS 36 epochs, from cifar10-compact-conv-ce-72ep"
    assert summarize(parent, ROOT).epochs == "36"


def test_recorded_device_is_the_one_training_ran_on(assets) -> None:
    """The fixture trains on one thread; building the bundle (UMAP, numba) changes torch's thread
    count afterwards, and must not change what metrics.json says training ran on."""
    import json

    for model in ("hybrid1", "cnn3a"):
        metrics = json.loads((assets / f"mnist-{model}" / "metrics.json").read_text())
        assert metrics["training"]["device"] == "cpu (1 threads)"


def test_a_gallery_added_while_the_demo_runs_is_found_on_the_next_action(tmp_path) -> None:
    """A checkpoint served before its gallery exists says so; once the gallery is put in place
    (copied, or linked as a user may), the next action searches it, without a restart."""
    from model.demo import Action, apply, initial_state

    assets = tmp_path / "assets"
    (assets / "gallery").mkdir(parents=True)
    shutil.copytree(ROOT / "assets" / "mnist-hybrid1", assets / "mnist-hybrid1")
    demo = Demo(assets=assets, log=lambda _: None)
    state = initial_state(demo)
    assert state.error and "no gallery for mnist" in state.error[1] and "\n" not in state.error[1]
    state = apply(state, Action("dataset", "MNIST"), demo)
    assert state.error and "no gallery for mnist" in state.error[1]  # still none: the same line, cheaply
    (assets / "gallery" / "mnist.npz").symlink_to(ROOT / "assets" / "gallery" / "mnist.npz")
    state = apply(state, Action("dataset", "MNIST"), demo)
    assert state.error is None and len(state.rows[0].hits) == 8
