"""A real browser on the real page: Playwright drives Debian's Chromium (no browser
download), runs a search through the UI and saves a screenshot under test-artifacts/."""

import shutil
from pathlib import Path

from conftest import free_port as _free_port

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_search_in_the_browser(assets, monkeypatch) -> None:
    from playwright.sync_api import sync_playwright

    import app
    from model.demo import Demo

    assert Path(CHROMIUM).exists(), "Chromium is missing: `apt-get install chromium` (bash .ci/run does it)"
    monkeypatch.setattr(app, "demo_state", Demo(assets=assets))
    blocks = app.build()
    blocks.queue(max_size=16).launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                                     quiet=True)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(blocks.local_url)
            idle = "!document.body.innerText.includes('processing')"
            page.wait_for_function("document.querySelectorAll('button.thumbnail-item').length > 0", timeout=60_000)
            page.wait_for_function(idle, timeout=60_000)  # the search run on page load
            page.locator("input[type=number][aria-label*='top-k']").fill("6")
            page.get_by_label("gallery example #").fill("5")
            page.get_by_role("button", name="Search", exact=True).click()
            page.wait_for_function("document.body.innerText.includes('precision@6')", timeout=60_000)
            page.wait_for_function(idle, timeout=60_000)
            assert page.locator("button.thumbnail-item").count() == 6
            page.locator(".vega-embed canvas, .vega-embed svg").first.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)
            browser.close()
    finally:
        blocks.close()
