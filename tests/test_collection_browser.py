"""A collection served by the demo, in a real browser: results captioned with their files, the
map a sample whose points hover and click as the gallery images they stand for (point i of the
drawn sample is not gallery image i). Screenshots under test-artifacts/."""

from __future__ import annotations

import pytest
from conftest import ROOT, load_script
from test_browser import ARGS, ARTIFACTS, CHROMIUM, RESULT, hover_a_point, shot, wait_query

from model import collection as col

pytestmark = pytest.mark.slow  # a Chromium and a demo server

sample = load_script("sample_folders")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import free_port

    import app
    from model.demo import Demo, collection_view

    tmp = tmp_path_factory.mktemp("served")
    folder = sample.make_folder(tmp / "holiday", "shapes", per_class=12, seed=3)
    assert col.main(["build", str(folder), "--checkpoint", str(ROOT / "assets" / "cifar10-hybrid1"),
                     "--out", str(tmp / "assets" / "holiday-photos")]) == 0
    saved, sample_size = app.demo_state, collection_view.MAP_SAMPLE
    collection_view.MAP_SAMPLE = 20  # 48 images: the map draws 20 of them
    app.demo_state = Demo(assets=tmp / "assets")
    blocks = app.build()
    blocks.queue(max_size=16).launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                     quiet=True, **app.LAUNCH)
    ARTIFACTS.mkdir(exist_ok=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield blocks.local_url, browser, col.open_collection(tmp / "assets" / "holiday-photos").paths
        browser.close()
    blocks.close()
    app.demo_state, collection_view.MAP_SAMPLE = saved, sample_size


def test_a_collection_page_names_files_and_maps_a_sample(server) -> None:
    url, browser, paths = server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector(RESULT, timeout=90_000)
    captions = page.locator(f"{RESULT} .caption").all_inner_texts()
    assert len(captions) == 8 and all(c.split(" · ")[0] in paths for c in captions)
    assert page.locator("#compare-with").is_hidden()  # one model: no empty "compare with" list
    shot(page, "collection-results")
    canvas = page.locator("#embedding-map canvas")
    canvas.scroll_into_view_if_needed()
    page.wait_for_function("document.querySelector('#embedding-map .legend')?.innerText.includes('query')",
                           timeout=60_000)
    title = page.inner_text("#embedding-map .map-title")
    assert "collection of 48 images; 20 of them on the map" in title
    box = canvas.bounding_box()
    hit = hover_a_point(page, box, 25)
    number = int(page.inner_text("#embedding-map .tip").split("#")[1])
    import app

    assert number in app.demo_state.index("holiday-photos", "Hybrid-1").map_ids  # a gallery id, not a position
    src = page.get_attribute("#embedding-map .tip img", "src")
    assert src.endswith(f"/{number}.jpg"), src  # the point's own thumbnail
    shot(page, "collection-map-hover", full=False)
    page.mouse.click(box["x"] + hit[0] * box["width"], box["y"] + hit[1] * box["height"])
    wait_query(page, f"gallery example #{number}")
    shot(page, "collection-map-click")
    page.close()
