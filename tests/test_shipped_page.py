"""What only trained models show through the demo page (model/demo/page.py), on the shipped
checkpoints: a drawn 1 finds 1s and drawn trousers find trousers; a car photo is unlike MNIST
and a digit unlike CIFAR-10. The page's state logic itself is tested without them
(test_page.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from test_page import pad_png, sketch

from model.demo import Action, Demo, apply, initial_state

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shipped() -> Demo:
    """The shipped checkpoints: for what only trained models show (a drawn 1 finds 1s)."""
    return Demo(assets=ROOT / "assets")


def test_a_drawing_is_searched_as_what_was_drawn(shipped) -> None:
    """A drawn vertical stroke is seen by the model as a thin light "1" on black (not the whole
    canvas as a box, which the ink converted twice once gave) and finds mostly 1s on MNIST; drawn
    trousers find trousers on FashionMNIST."""
    drawn = apply(initial_state(shipped), Action("draw", sketch()), shipped)
    seen = np.asarray(drawn.seen, np.float32) / 255
    assert seen.shape == (28, 28) and 0.03 < seen.mean() < 0.2, seen.mean()  # a stroke, not a filled canvas
    assert seen[:, 11:17].sum() > 0.8 * seen.sum()  # in the middle columns
    assert [h.label for h in drawn.rows[0].hits].count(1) >= 6, drawn.rows[0].hits
    trousers = Image.new("RGBA", (280, 280), "white")
    for box in ((90, 40, 120, 240), (160, 40, 190, 240), (90, 40, 190, 80)):
        trousers.paste((0, 0, 0, 255), box)
    trousers_drawn = apply(drawn, Action("draw", pad_png(trousers)), shipped)
    fashion = apply(trousers_drawn, Action("dataset", "FashionMNIST"), shipped)
    assert [h.label for h in fashion.rows[0].hits].count(1) >= 6, fashion.rows[0].hits  # Trouser


def test_unlike_the_dataset_flags_other_datasets_images(shipped, tmp_path) -> None:
    """A car photo on MNIST and a digit on CIFAR-10 are flagged; MNIST's own digits are not
    (scripts/fit_unlike.py measures the rates: results/unlike_dataset.json)."""
    cifar = shipped.index("CIFAR-10", "Hybrid-1")
    mnist = shipped.index("MNIST", "Hybrid-1")
    car = tmp_path / "car.png"
    Image.fromarray(cifar.images[int(np.flatnonzero(cifar.labels == 1)[0])]).resize((96, 96)).save(car)
    digit = tmp_path / "digit.png"
    Image.fromarray(mnist.images[5].squeeze()).save(digit)
    first = initial_state(shipped)
    flagged = apply(first, Action("upload", str(car)), shipped)
    assert any("unlike MNIST" in n for n in flagged.notes), flagged.notes
    own = apply(first, Action("upload", str(digit)), shipped)
    assert not any("unlike" in n for n in own.notes), own.notes
    on_cifar = apply(apply(first, Action("dataset", "CIFAR-10"), shipped), Action("upload", str(digit)), shipped)
    assert any("unlike CIFAR-10" in n for n in on_cifar.notes), on_cifar.notes
