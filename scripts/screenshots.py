"""Screenshots of the demo on the shipped weights, driven through a real browser.

    python scripts/screenshots.py [--out test-artifacts]

Launches app.py's UI on a free port, then with Playwright and Debian's Chromium: searches by
example on each dataset, by upload (CIFAR-10), by drawing (MNIST), and opens the feature maps.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IDLE = "!document.body.innerText.includes('processing')"


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

    blocks = app.build()
    blocks.queue(max_size=16).launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                     quiet=True)
    upload = Path(tempfile.mkdtemp()) / "query.png"
    cifar = app.demo_state.index("CIFAR-10", "Hybrid-1")
    Image.fromarray(cifar.images[int(np.flatnonzero(cifar.labels == 7)[3])]).resize((96, 96)).save(upload)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.goto(blocks.local_url)
            page.wait_for_function("document.querySelectorAll('button.thumbnail-item').length > 0", timeout=120_000)
            page.wait_for_function(IDLE, timeout=120_000)
            for dataset in ("MNIST", "FashionMNIST", "CIFAR-10"):
                page.get_by_label("dataset").click()
                page.get_by_role("option", name=dataset, exact=True).click()
                page.wait_for_function(IDLE, timeout=120_000)
                page.get_by_label("gallery example #").fill("123")
                page.get_by_label("gallery example #").press("Enter")
                page.wait_for_timeout(2500)
                page.wait_for_function(IDLE, timeout=120_000)
                page.screenshot(path=str(out / f"example-{dataset}.png"), full_page=True)
            page.locator("input[type=file]").first.set_input_files(str(upload))
            page.wait_for_timeout(1000)
            page.wait_for_function(IDLE, timeout=120_000)
            page.screenshot(path=str(out / "upload-CIFAR-10.png"), full_page=True)
            page.get_by_role("tab", name="Involution feature maps").click()
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "feature-maps-CIFAR-10.png"), full_page=True)
            page.get_by_role("tab", name="Search").click()
            page.get_by_label("dataset").click()
            page.get_by_role("option", name="MNIST", exact=True).click()
            page.wait_for_function(IDLE, timeout=120_000)
            page.wait_for_timeout(1000)
            hint = page.get_by_text("select the draw tool to start")
            hint.wait_for(timeout=60_000)  # the sketchpad shows again once MNIST is loaded
            box = hint.bounding_box()  # the canvas centre
            page.get_by_role("button", name="Brush").click()
            page.wait_for_timeout(500)
            x0, y0 = box["x"] + box["width"] / 2, box["y"] - 70
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x0, y0 + 140, steps=15)
            page.mouse.up()
            page.wait_for_timeout(500)
            page.get_by_label("draw").check()
            page.get_by_role("button", name="Search", exact=True).click()
            page.wait_for_timeout(6000)
            page.wait_for_function(IDLE, timeout=120_000)
            page.screenshot(path=str(out / "draw-MNIST.png"), full_page=True)
            page.get_by_role("tab", name="About").click()
            page.screenshot(path=str(out / "about.png"), full_page=True)
            browser.close()
    finally:
        blocks.close()
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
