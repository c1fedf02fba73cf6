"""The static Space as Spaces serves it: the files `scripts/publish_space.py --hardware static
--dry-run` lists, copied into an empty folder, served by a plain static file server on localhost
and driven in Chromium (Playwright, Debian's chromium). The search runs in the page: ONNX models
through the vendored onnxruntime-web, gallery embeddings computed offline. No request may leave
the file server. The page's preprocessing (model/demo/static/prepare.js) is checked pixel for
pixel against the server's (model/queries.py, Embedder.to_uint8) on images of every kind."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, load_script
from PIL import Image, ImageDraw

pytestmark = pytest.mark.slow  # six ONNX exports, onnxruntime-web and a Chromium

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
RESULT = "#results .result"
PUBLISHED: dict[str, Path] = {}  # the collection's source folder, as the site fixture made it


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """A plain file server; `slow` holds path parts answered late, as over a slow connection."""

    slow: dict[str, float] = {}

    def do_GET(self) -> None:
        time.sleep(max([s for part, s in self.slow.items() if part in self.path], default=0))
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The dry-run's files, staged by --stage and copied into an empty folder, on a file server;
    with a collection of 48 shapes (--collection) as one more dataset."""
    from model import collection as col

    publish_space = load_script("publish_space")
    photos = load_script("sample_folders").make_folder(tmp_path_factory.mktemp("c") / "holiday", "shapes",
                                                        per_class=12, seed=3)
    collection = photos.parent / "holiday-index"
    assert col.main(["build", str(photos), "--checkpoint", str(ROOT / "assets" / "cifar10-hybrid1"),
                     "--out", str(collection)]) == 0
    staged = tmp_path_factory.mktemp("staged") / "space"
    listed = publish_space.static_files(collection=collection)
    assert publish_space.main(["--repo-id", "someone/involution-static", "--hardware", "static",
                               "--stage", str(staged), "--dry-run", "--collection", str(collection)]) == 0
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == listed
    served = tmp_path_factory.mktemp("served")
    for rel in listed:
        (served / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(staged / rel, served / rel)
    readme = (served / "README.md").read_text()
    assert "sdk: static" in readme and "app_file: index.html" in readme
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    PUBLISHED["photos"] = photos
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: `apt-get install chromium` (bash .ci/run does it)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(site, browser, width: int = 1400, height: int = 1000, **kw):
    url, _ = site
    page = browser.new_page(viewport={"width": width, "height": height}, **kw)
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith("data:") else outside.append(r.url))
    page.goto(url)
    page.wait_for_selector(RESULT, timeout=90_000)
    page.outside = outside
    return page


def wait_query(page, text: str) -> None:
    page.wait_for_function(f"document.querySelector('#results .query-line')?.innerText.includes({text!r})",
                           timeout=60_000)


def click_a_point(page, box) -> str:
    """Hover the map (bounding `box`) until a point's tooltip shows, click there; the tooltip's text."""
    for fx in np.linspace(0.1, 0.9, 17):
        for fy in np.linspace(0.1, 0.9, 17):
            page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            if page.locator("#embedding-map .tip").is_visible():
                tip = page.inner_text("#embedding-map .tip")
                page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
                return tip
    raise AssertionError("no point of the map shows a tooltip")


def draw_a_one(page) -> None:
    """A vertical stroke down the middle of the sketch canvas, with the mouse."""
    page.get_by_role("tab", name="Draw").click()
    box = page.locator("#sketch canvas").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] * 0.8, steps=12)
    page.mouse.up()


def captions(page) -> list[str]:
    return page.locator(f"{RESULT} .caption").all_inner_texts()


def shot(page, name: str, full: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(200)
    page.screenshot(path=str(ARTIFACTS / f"static-{name}.png"), full_page=full)


# ------------------------------------------------------------------ the preprocessing, pixel for pixel

def _queries() -> list[tuple[str, Image.Image]]:
    """Images of every kind a visitor uploads: gallery digits and garments at their size and
    scaled, dark on light, off-centre on paper, thin strokes, colour photos of odd shapes, flat
    and transparent images."""
    from model.demo import Demo

    demo = Demo(assets=ROOT / "assets")
    rng = np.random.default_rng(7)
    out = []
    for title in ("MNIST", "FashionMNIST"):
        images = demo.index(title, "Hybrid-1").images.squeeze(-1)
        for i in (0, 17, 333):
            out.append((f"{title}-{i}", Image.fromarray(images[i])))
            out.append((f"{title}-{i}-x3-dark", Image.fromarray(255 - images[i]).resize((84, 84), Image.BILINEAR)))
        paper = Image.new("L", (300, 200), 232)
        paper.paste(Image.fromarray(255 - images[5]).resize((120, 120), Image.BICUBIC), (150, 40))
        out.append((f"{title}-on-paper", paper.convert("RGB")))
    cifar = demo.index("CIFAR-10", "Hybrid-1").images
    out.append(("cifar-0", Image.fromarray(cifar[0])))
    out.append(("cifar-wide", Image.fromarray(cifar[1]).resize((90, 50), Image.BICUBIC)))
    out.append(("noise-tall", Image.fromarray(rng.integers(0, 256, (77, 41, 3), dtype=np.uint8))))
    stroke = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(stroke).line((10, 50, 50, 12), fill=(20, 20, 20), width=3)
    out.append(("stroke", stroke))
    out.append(("flat", Image.new("RGB", (40, 30), (200, 120, 40))))
    rgba = np.zeros((48, 48, 4), np.uint8)
    rgba[10:38, 20:28] = (0, 0, 0, 255)  # opaque ink on a transparent canvas
    out.append(("transparent", Image.fromarray(rgba, "RGBA")))
    return out


def test_the_page_prepares_uploads_and_drawings_as_the_server_does(site, browser) -> None:
    from model.embedder import load_embedder
    from model.queries import prepare_query

    page = open_page(site, browser)
    embedders = {"mnist": load_embedder(ROOT / "assets/mnist-hybrid1"),
                 "photo": load_embedder(ROOT / "assets/cifar10-hybrid1")}
    checked = 0
    for name, image in _queries():
        rgba = np.asarray(image.convert("RGBA"))
        for style, size in (("mnist", 28), ("fashion_mnist", 28), ("photo", 32)):
            seen, _ = prepare_query(image, style)
            want = embedders["photo" if style == "photo" else "mnist"].to_uint8(seen)[0].permute(1, 2, 0).numpy()
            got = page.evaluate("([data, w, h, style, size]) => Array.from(window.__prepare.prepareQuery("
                                "new Uint8ClampedArray(data), w, h, style, size).image.data)",
                                [rgba.ravel().tolist(), image.width, image.height, style, size])
            got = np.asarray(got, np.uint8).reshape(want.shape)
            assert np.array_equal(got, want), (name, style, int(np.abs(got.astype(int) - want).max()),
                                               int((got != want).sum()))
            checked += 1
    assert checked == 3 * len(_queries())
    from model.queries import sketch_to_image

    for i, stroke in enumerate([(140, 40, 140, 240), (60, 60, 220, 200), (100, 50, 180, 50, 120, 230)]):
        canvas = Image.new("RGBA", (280, 280), "white")
        ImageDraw.Draw(canvas).line(stroke, fill="black", width=18 - 4 * i, joint="curve")
        rgba = np.asarray(canvas)
        for style in ("mnist", "fashion_mnist"):
            want = np.asarray(sketch_to_image({"composite": rgba}, style))
            got = page.evaluate("([data, style]) => Array.from(window.__prepare.drawingQuery("
                                "new Uint8ClampedArray(data), 280, 280, style).data)", [rgba.ravel().tolist(), style])
            assert np.array_equal(np.asarray(got, np.uint8).reshape(want.shape), want), (i, style)
    page.close()


# ------------------------------------------------------------------ the page, as a visitor uses it

def test_an_example_click_a_drawing_and_a_map_click_give_results(site, browser) -> None:
    from model.demo.spec import text

    page = open_page(site, browser)
    # the heading and intro are spec.json's, read by the Gradio page too
    assert page.inner_text("h1") == text("heading") and page.inner_text("#intro") == text("intro")
    assert page.locator("#examples [data-pick]").count() == 24
    cell = page.locator("#examples [data-pick]").nth(6)
    picked = cell.get_attribute("data-pick")
    cell.click()
    wait_query(page, f"gallery example #{picked}")
    assert page.locator(RESULT).count() == 8 and "precision@8" in page.inner_text("#results")
    assert all(c.split(" · ")[0] in {str(d) for d in range(10)} for c in captions(page))
    shot(page, "example")
    draw_a_one(page)
    wait_query(page, "your drawing")
    ones = [c for c in captions(page) if c.startswith("1 · ")]
    assert len(ones) >= 6, captions(page)  # a vertical stroke is a 1
    shot(page, "drawing")
    page.select_option("#compare-with", "compact-conv")  # any two models of a dataset: picking one compares
    page.wait_for_function("document.querySelectorAll('#results h4').length == 2")
    assert [t.split("precision")[0].strip() for t in page.locator("#results h4").all_inner_texts()] == [
        "Hybrid-1", "Compact-Conv"]
    assert page.locator("#compare").is_checked()
    shot(page, "compare-with-compact")
    page.select_option("#compare-with", "cnn3a")
    page.locator("#compare").uncheck()
    page.wait_for_function("document.querySelectorAll('#results h4').length == 1")
    page.select_option("#dataset", "fashion_mnist")
    page.wait_for_function("document.querySelector('#embedding-map .map-title').innerText.includes('FashionMNIST')")
    wait_query(page, "FashionMNIST")
    page.locator("#compare").check()
    page.wait_for_function("document.querySelectorAll('#results h4').length == 2")
    assert [t.split("precision")[0].strip() for t in page.locator("#results h4").all_inner_texts()] == [
        "Hybrid-1", "CNN-3a"]
    others = page.locator("#compare-with option").all_inner_texts()  # the models Hybrid-1 can be compared with
    assert others[0] == "CNN-3a" and "Hybrid-1" not in others
    canvas = page.locator("#embedding-map canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    tip = click_a_point(page, box)
    wait_query(page, f"gallery example #{tip.split('#')[1]}")
    assert tip.split(" · ")[0] in page.inner_text("#results .query-line")
    shot(page, "fashion-compare-map-click")
    assert not page.outside, page.outside
    page.close()


def test_an_upload_gives_the_top_k_of_the_apps_search_endpoint(site, browser, tmp_path) -> None:
    import app
    from model.demo import Demo

    saved, app.demo_state = app.demo_state, Demo(assets=ROOT / "assets")
    try:
        page = open_page(site, browser)
        page.get_by_role("tab", name="Upload").click()
        queries = dict(_queries())
        for title, name, image in (("MNIST", "mnist", queries["MNIST-on-paper"]),
                                   ("CIFAR-10", "cifar10", queries["cifar-wide"])):
            path = tmp_path / f"query-{name}.png"
            image.save(path)
            page.select_option("#dataset", name)
            page.wait_for_function(f"document.querySelector('#embedding-map .map-title').innerText.includes({title!r})")
            page.fill("#top-k", "10")
            page.press("#top-k", "Enter")
            page.wait_for_function(f"document.querySelectorAll('{RESULT}').length == 10")
            page.locator("#upload").set_input_files(str(path))
            wait_query(page, f"your upload {path.name}")
            got = [int(i) for i in page.locator(RESULT).evaluate_all("cells => cells.map(c => c.dataset.pick)")]
            _, table = app.search_api(title, str(path), 10)
            assert got == list(table["gallery index"]), (title, got, list(table["gallery index"]))
            sims = [float(c.split(" · ")[1]) for c in captions(page)]
            assert np.allclose(sims, table["similarity"], atol=1.5e-3)
        shot(page, "upload-cifar10")
        assert not page.outside, page.outside
        page.close()
    finally:
        app.demo_state = saved


def test_a_refused_upload_and_a_phone(site, browser, tmp_path) -> None:
    page = open_page(site, browser, 390, 844, device_scale_factor=2, is_mobile=True, has_touch=True)
    before = page.inner_text("#results .query-line")
    page.get_by_role("tab", name="Upload").click()
    Image.new("RGB", (1, 1), "white").save(tmp_path / "dot.png")
    page.locator("#upload").set_input_files(str(tmp_path / "dot.png"))
    page.wait_for_function("document.querySelector('#upload-error').innerText.includes('1x1 pixels')")
    assert page.inner_text("#results .query-line") == before  # the last good query stays
    assert "still those of" in page.inner_text("#results .refused")
    assert page.evaluate("document.documentElement.scrollWidth") <= 391
    shot(page, "phone-refused", full=False)
    page.close()


def test_your_gallery_is_searched_in_the_page(site, browser, tmp_path) -> None:
    """The Your gallery tab, as on the Gradio page: your images read in the page (nothing sent),
    a grid of them; a click searches one among the others, named by file, with their map; a
    single image is refused in one line and the gallery shown stays."""
    from PIL import ImageDraw

    def drawn(name: str, shape, shift: int = 0) -> str:
        im = Image.new("RGB", (120, 120), "white")
        shape(ImageDraw.Draw(im), shift)
        im.save(tmp_path / name)
        return str(tmp_path / name)

    files = [drawn("one-a.png", lambda d, s: d.line((60 + s, 15, 60 + s, 105), fill="black", width=12)),
             drawn("zero.png", lambda d, s: d.ellipse((25, 15, 95, 105), outline="black", width=12)),
             drawn("one-b.png", lambda d, s: d.line((60 + s, 20, 62 + s, 100), fill="black", width=14), 6),
             drawn("seven.png", lambda d, s: d.line((25, 20, 95, 20, 50, 105), fill="black", width=12))]
    page = open_page(site, browser)
    before = page.inner_text("#results .query-line")
    page.get_by_role("tab", name="Your gallery").click()
    page.locator("#own-files").set_input_files(files)
    page.wait_for_function("document.querySelectorAll('#own-examples [data-pick]').length == 4")
    assert "4 images ready" in page.inner_text("#own-status")
    assert page.inner_text("#results .query-line") == before  # the query on screen stays
    page.locator("#own-examples [data-pick='0']").click()
    wait_query(page, "your image one-a.png")
    names = [c.split(" · ")[0] for c in captions(page)]
    assert sorted(names) == ["one-b.png", "seven.png", "zero.png"] and names[0] == "one-b.png", names
    assert "your 4 images" in page.inner_text("#embedding-map .map-title")
    page.locator(f"{RESULT}").first.click()  # a result is a query too
    wait_query(page, "your image one-b.png")
    shot(page, "own-gallery")
    page.locator("#own-files").set_input_files(files[:1])
    page.wait_for_function("document.querySelector('#own-error').innerText.includes('need at least 2')")
    assert page.locator("#own-examples [data-pick]").count() == 4  # the gallery shown stays
    assert not page.outside, page.outside
    page.close()


@pytest.fixture
def slow():
    """Path parts the file server answers late, for one test."""
    yield _Quiet.slow
    _Quiet.slow.clear()


def test_actions_taken_while_the_page_loads_build_on_each_other(site, browser, tmp_path, slow) -> None:
    """On a slow connection: an upload then a top-k change searches the upload with the new k;
    a dataset switch then a click on the old dataset's grid keeps the new dataset; a drawing
    left on CIFAR-10 (where drawings are not searched) is searched again back on MNIST."""
    slow[".onnx"] = 3  # the models arrive 3 s late: the upload waits for them
    page = open_page(site, browser)
    page.get_by_role("tab", name="Upload").click()
    dict(_queries())["MNIST-on-paper"].save(tmp_path / "seven.png")
    page.locator("#upload").set_input_files(str(tmp_path / "seven.png"))
    page.fill("#top-k", "12")
    page.press("#top-k", "Enter")
    page.wait_for_function("document.querySelector('#status').innerText.includes('Loading the model')")
    wait_query(page, "your upload seven.png")
    page.wait_for_function(f"document.querySelectorAll('{RESULT}').length == 12")
    slow.clear()
    slow["/cifar10/"] = 1.5
    page.get_by_role("tab", name="Examples").click()
    page.select_option("#dataset", "cifar10")
    page.locator("#examples [data-pick]").nth(3).click()  # still the MNIST grid
    page.wait_for_function("document.querySelector('#embedding-map .map-title').innerText.includes('CIFAR-10')")
    page.wait_for_timeout(500)
    assert page.input_value("#dataset") == "cifar10" and "CIFAR-10" in page.inner_text("#results .query-line")
    assert "your upload seven.png" in page.inner_text("#results .query-line")
    slow.clear()
    page.select_option("#dataset", "mnist")
    draw_a_one(page)
    wait_query(page, "your drawing")
    page.select_option("#dataset", "cifar10")
    page.wait_for_function("document.querySelector('#results').innerText.includes('drawings are searched on')")
    assert not page.locator(RESULT).count()
    page.select_option("#dataset", "mnist")
    wait_query(page, "your drawing")
    assert sum(c.startswith("1 · ") for c in captions(page)) >= 6
    page.close()


def test_a_tap_on_the_map_keeps_the_phone_page_its_width(site, browser) -> None:
    page = open_page(site, browser, 390, 844, device_scale_factor=2, is_mobile=True, has_touch=True)
    canvas = page.locator("#embedding-map canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    scale = page.evaluate("(c => c.width / c.clientWidth)(document.querySelector('#embedding-map canvas'))")
    assert abs(scale - 2) < 0.01  # drawn at the screen's resolution
    for fx in np.linspace(0.98, 0.6, 20):  # the right edge, where a tooltip once ran off the screen
        for fy in np.linspace(0.1, 0.9, 9):
            page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            assert page.evaluate("document.documentElement.scrollWidth") <= 391
    shot(page, "phone-map", full=False)
    # a tap on a point: on a phone the results sit above the map, and they are brought into view
    tip = click_a_point(page, box)
    wait_query(page, f"gallery example #{tip.split('#')[1]}")
    page.wait_for_function("(r => r.top < innerHeight && r.bottom > 0)"
                           "(document.querySelector('#results').getBoundingClientRect())", timeout=10_000)
    shot(page, "phone-map-tap", full=False)
    # an example tapped below the results: the query line comes to the top of the screen, as on
    # the Gradio page (web/results.js), not left above it
    page.locator("#examples [data-pick]").nth(3).scroll_into_view_if_needed()
    picked = page.locator("#examples [data-pick]").nth(3).get_attribute("data-pick")
    page.locator("#examples [data-pick]").nth(3).tap()
    wait_query(page, f"gallery example #{picked} ")
    page.wait_for_function("(r => r.top >= -1 && r.top < innerHeight * 0.4)"
                           "(document.querySelector('#results .query-line').getBoundingClientRect())", timeout=10_000)
    shot(page, "phone-example-tap", full=False)
    page.close()


def test_the_page_flags_uploads_unlike_the_dataset_as_the_app_does(site, browser, tmp_path) -> None:
    """familiarity.js against model/familiarity.py: the same pixel and embedding distances on
    prepared queries of every kind, the same verdict, and the line on the page for a photo
    uploaded to MNIST."""

    from model.demo import Demo
    from model.familiarity import pixel_statistics
    from model.queries import prepare_query

    demo = Demo(assets=ROOT / "assets")
    page = open_page(site, browser)
    verdicts = []
    for title, name, style in (("MNIST", "mnist", "mnist"), ("CIFAR-10", "cifar10", "photo")):
        index = demo.index(title, "Hybrid-1")
        for label, image in _queries():
            seen, _ = prepare_query(image, style)
            x = index.embedder.to_uint8(seen)  # (1, C, H, W)
            embedding = index.embedder.embed_uint8(x)[0]
            want = (float(index.familiarity.pixel_distance(pixel_statistics(x))[0]),
                    float(index.familiarity.embedding_distance(embedding[None])[0]))
            hwc = x[0].permute(1, 2, 0).contiguous()
            got = page.evaluate("""async ([file, spec, dim, data, w, c, e]) => {
                const check = window.__familiarity.familiarity(await window.__familiarity.load(file), spec, dim);
                const image = {data: new Uint8ClampedArray(data), width: w, height: w, channels: c};
                return [check.pixelDistance(image), check.embeddingDistance(new Float32Array(e))]; }""",
                [f"data/{name}/hybrid1.familiarity.f64", _spec(site, name), int(embedding.shape[0]),
                 hwc.ravel().tolist(), int(x.shape[-1]), int(x.shape[1]), embedding.tolist()])
            assert np.allclose(got, want, rtol=1e-4, atol=1e-6), (title, label, got, want)
            verdicts.append(bool(index.familiarity.unlike(x, embedding[None])[0]))
    assert any(verdicts) and not all(verdicts)  # the queries include both kinds
    page.get_by_role("tab", name="Upload").click()
    photo = Image.fromarray(demo.index("CIFAR-10", "Hybrid-1").images[3]).resize((96, 96), Image.BICUBIC)
    photo.save(tmp_path / "photo.png")
    page.locator("#upload").set_input_files(str(tmp_path / "photo.png"))
    wait_query(page, "your upload photo.png")
    x = demo.index("MNIST", "Hybrid-1").embedder.to_uint8(prepare_query(photo, "mnist")[0])
    flagged = bool(demo.index("MNIST", "Hybrid-1").familiarity.unlike(
        x, demo.index("MNIST", "Hybrid-1").embedder.embed_uint8(x)))
    assert flagged and "unlike MNIST" in page.inner_text("#results .unlike")
    shot(page, "unlike-mnist")
    page.close()


def _spec(site, name: str) -> dict:
    import json

    entry = json.loads((site[1] / "site.json").read_text())
    (d,) = [d for d in entry["datasets"] if d["name"] == name]
    return d["models"][0]["familiarity"]


def test_a_one_row_sprite_sheet_is_addressed() -> None:
    """An image folder's gallery can hold a few dozen images: a one-row sprite sheet is addressed
    (a 0/0 position once voided the rule, showing the first image everywhere). Run under node;
    the example picks on small galleries: tests/test_spec.py."""
    import json as _json
    import subprocess

    node = shutil.which("node")
    assert node, "node is missing: bash .ci/run installs it with npm (apt-get install npm)"
    src = (ROOT / "model" / "demo" / "static" / "search.js").read_text()
    thumb = re.search(r"function thumb[\s\S]*?\n}\n", src).group(0)
    script = thumb + """
console.log(JSON.stringify(thumb({n: 32, columns: 50, gallery: "g.png"}, 7)));"""
    got = _json.loads(subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30,
                                     check=True).stdout)
    assert "NaN" not in got and "background-position:" in got


def test_a_published_collection_is_searched_with_its_paths(site, browser) -> None:
    """--collection: the collection is one more dataset of the page, its results captioned with
    their paths, its map every image of it; an upload of one of its files finds that file first."""
    import json

    url, served = site
    entry = next(d for d in json.loads((served / "site.json").read_text())["datasets"] if d.get("paths"))
    assert entry["title"] == "holiday-index" and entry["n"] == 48 and len(entry["paths"]) == 48
    page = open_page(site, browser)
    page.select_option("#dataset", entry["name"])
    page.wait_for_function("document.querySelector('#embedding-map .map-title').innerText.includes('collection')")
    assert page.locator("#compare-with").is_hidden()  # one model: no empty "compare with" list
    cell = page.locator("#examples [data-pick]").nth(3)
    picked = int(cell.get_attribute("data-pick"))
    cell.click()
    wait_query(page, f"gallery example #{picked}")
    assert all(c.split(" · ")[0] in entry["paths"] for c in captions(page))
    assert "holiday-index collection (48 images)" in page.inner_text("#embedding-map .map-title")
    assert "cosine similarity to the query" in page.inner_text("#results .scores-help")
    upload = PUBLISHED["photos"] / entry["paths"][5]
    page.get_by_role("tab", name="Upload").click()
    page.locator("#upload").set_input_files(str(upload))
    wait_query(page, "your upload")
    assert captions(page)[0].split(" · ")[0] == entry["paths"][5]
    shot(page, "collection-upload")
    page.locator("#compare").check()  # one model: said, not a silent single row
    page.wait_for_function("document.querySelector('#status').innerText.includes('compare needs a second model')")
    assert page.locator("#results h4").count() == 1
    assert not page.outside, page.outside
    page.close()


def test_both_pages_open_each_dataset_on_the_same_grid_and_results(site, browser) -> None:
    """Issue 37: for each shipped dataset, the static page's example grid is the Gradio page's
    (spec.example_picks, seed 0), and the first example's results are the app's, in order."""
    from model.demo import Demo, initial_state
    from model.demo.page import _switch_dataset

    demo = Demo(assets=ROOT / "assets")
    page = open_page(site, browser)
    state = initial_state(demo)
    for title in demo.datasets():
        key = demo.dataset_key(title)
        if state.dataset != title:
            state = _switch_dataset(state, title, demo)
        page.select_option("#dataset", key)
        page.wait_for_function(f"document.querySelector('#results .result')?.dataset.gallery === {key!r}")
        wait_query(page, f"gallery example #{state.examples[0]}")
        picks = "els => els.map(e => e.dataset.pick)"
        grid = [int(v) for v in page.eval_on_selector_all("#examples [data-pick]", picks)]
        assert grid == list(state.examples), title
        shown = [int(v) for v in page.eval_on_selector_all(RESULT, picks)]
        assert shown == [h.index for h in state.rows[0].hits], title
    page.close()
