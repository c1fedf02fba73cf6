"""A checkpoint trained on a user's own ImageFolder is served end to end: train.py writes it and
its gallery where the demo finds them, the demo lists it by its dataset's name, and /search
answers for it as for a shipped one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port
from PIL import Image, ImageDraw

import train

pytestmark = pytest.mark.slow  # trains a checkpoint and launches the app

SHAPES = ("circle", "square", "triangle")


def make_shapes(root: Path, n_train: int = 40, n_test: int = 12, seed: int = 0) -> Path:
    """A three-class ImageFolder of 32 px shapes, light on dark, at random places and colours."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for shape in SHAPES:
            folder = root / split / shape
            folder.mkdir(parents=True)
            for i in range(n):
                im = Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(0, 80, 3)))
                draw = ImageDraw.Draw(im)
                colour = tuple(int(v) for v in rng.integers(150, 256, 3))
                x, y, r = (int(v) for v in (rng.integers(10, 22), rng.integers(10, 22), rng.integers(6, 10)))
                if shape == "circle":
                    draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
                elif shape == "square":
                    draw.rectangle((x - r, y - r, x + r, y + r), fill=colour)
                else:
                    draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
                im.save(folder / f"{i}.png")
    return root


def test_an_image_folder_checkpoint_is_served_and_searched(tmp_path, monkeypatch, capfd) -> None:
    from gradio_client import Client, handle_file

    import app
    from model.demo import Action, Demo, apply, initial_state, render

    shapes = make_shapes(tmp_path / "shapes")
    assets = tmp_path / "assets"
    assert train.main(["--dataset", str(shapes), "--model", "hybrid1", "--loss", "ce", "--epochs", "1",
                       "--set", "validation.size=15", "--out", str(assets / "shapes-hybrid1")]) == 0
    config = json.loads((assets / "shapes-hybrid1" / "config.json").read_text())
    assert config["gallery"].startswith("shapes-")  # named by the folder's path and content
    assert (assets / "gallery" / config["gallery"]).is_file()  # sampled from the folder's test split
    from model.image_folder import DISPLAY_SIDE
    from model.index import read_npz

    gallery = read_npz(assets / "gallery" / config["gallery"])  # the photos shown sharper than the model sees them
    assert gallery["display"].shape[1:] == (DISPLAY_SIDE, DISPLAY_SIDE, 3)
    assert len(gallery["display"]) == len(gallery["images"])

    demo = Demo(assets=assets)
    assert demo.datasets() == ["shapes"] and demo.models("shapes") == ["Hybrid-1"]
    assert Image.open(demo.gallery_thumbs("shapes", "Hybrid-1")[0]).size == (DISPLAY_SIDE, DISPLAY_SIDE)
    state = initial_state(demo)
    assert state.dataset == "shapes" and state.error is None and len(state.rows[0].hits) == 8
    page = render(state)
    assert "· shapes</span>" in page.results and not page.drawable
    assert {h.label for h in state.rows[0].hits} <= {0, 1, 2}
    uploaded = apply(state, Action("upload", str(shapes / "test" / "square" / "3.png")), demo)
    assert uploaded.error is None and uploaded.seen.shape == (32, 32, 3)

    monkeypatch.setattr(app, "demo_state", demo)
    assert "| shapes | Hybrid-1 (paper) |" in app.about_markdown()
    blocks = app.build()
    blocks.queue(max_size=16).launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                     quiet=True, **app.LAUNCH)
    try:
        client = Client(blocks.local_url, verbose=False)
        gallery, table = client.predict("shapes", handle_file(str(shapes / "test" / "circle" / "5.png")), 4,
                                        api_name="/search")
        assert len(gallery) == 4 and len(table["data"]) == 4
        assert all(row[1] in SHAPES for row in table["data"])  # labelled by the folder's class names
        for name in ("shapes-hybrid1", " shapes "):  # a checkpoint folder's name serves too
            gallery, table = client.predict(name, handle_file(str(shapes / "test" / "circle" / "5.png")), 3,
                                            api_name="/search")
            assert len(table["data"]) == 3
        with pytest.raises(Exception, match="no checkpoint serves 'MNIST': use one of shapes"):  # one line
            client.predict("MNIST", handle_file(str(shapes / "test" / "circle" / "5.png")), 4, api_name="/search")
        assert "Traceback" not in "".join(capfd.readouterr())  # refused in one line, nothing in the log
    finally:
        blocks.close()
