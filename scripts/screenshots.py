"""Screenshots of the demo on the shipped weights, driven through a real browser.

    python scripts/screenshots.py [--out test-artifacts]

Launches app.py's page on a free port, then with Playwright and Debian's Chromium: an example
click on each dataset (desktop, 1400 px wide), CIFAR-10 with the compare switch on, the
feature maps, and a phone-sized search (390 px). docs/demo.png is the CIFAR-10 compare shot.
The flows themselves are tested in tests/test_browser.py.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(ROOT / "test-artifacts"))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    import app

    app.warm_up()
    blocks = app.build()
    blocks.queue(max_size=16).launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                     quiet=True, **app.LAUNCH)

    def wait_query(page, text: str) -> None:
        page.wait_for_function(f"document.querySelector('#results .query-line')?.innerText.includes({text!r})",
                               timeout=120_000)
        page.wait_for_timeout(400)

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(blocks.local_url)
            page.wait_for_selector("#results .result", timeout=120_000)
            for dataset in ("MNIST", "FashionMNIST", "CIFAR-10"):
                page.get_by_label("dataset").click()
                page.get_by_role("option", name=dataset, exact=True).click()
                page.wait_for_function(f"document.querySelector('#embedding-map .map-title')?.innerText"
                                       f".includes('{dataset} gallery')", timeout=120_000)
                cell = page.locator("#examples [data-pick]").nth(9)
                target = cell.get_attribute("data-pick")
                cell.click()
                wait_query(page, f"example #{target} ")
                page.screenshot(path=str(out / f"example-{dataset}.png"), full_page=True)
            page.get_by_label("compare two models").check()
            page.wait_for_function("document.querySelectorAll('#results section.row').length == 2", timeout=60_000)
            page.wait_for_timeout(400)
            page.screenshot(path=str(out / "compare-CIFAR-10.png"))
            page.get_by_role("tab", name="Involution feature maps").click()
            page.locator("#feature-maps .pick").wait_for(timeout=60_000)
            page.screenshot(path=str(out / "feature-maps-CIFAR-10.png"), full_page=True)
            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                     has_touch=True)
            phone.goto(blocks.local_url)
            phone.wait_for_selector("#results .result", timeout=120_000)
            cell = phone.locator("#examples [data-pick]").nth(6)
            target = cell.get_attribute("data-pick")
            cell.tap()
            wait_query(phone, f"example #{target} ")
            phone.screenshot(path=str(out / "phone.png"))
            browser.close()
    finally:
        blocks.close()
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
