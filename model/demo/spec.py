"""The demo's specification, declared once in static/spec.json and read here and by the static
page (static/spec.js imports the same file): limits, colours, and the example picks, which both
pages draw with the same integer generator so that a dataset opens on the same grid on both."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SPEC_FILE = Path(__file__).with_name("static") / "spec.json"
SPEC: dict = json.loads(SPEC_FILE.read_text())
N_EXAMPLES: int = SPEC["n_examples"]
MAX_K: int = SPEC["max_k"]
CLASS_COLOURS: list[str] = SPEC["class_colours"]
UNLABELLED_COLOUR: str = SPEC["unlabelled_colour"]
MIN_GALLERY: int = SPEC["min_gallery"]
SKETCH: dict = SPEC["sketch"]  # the sketchpad both pages draw on (static/sketch.js): side and stroke, px


def text(key: str, /, **fields: str) -> str:
    """One of the pages' texts (SPEC["texts"]) with its {fields} filled, as spec.js's text() fills them."""
    return SPEC["texts"][key].format(**fields)


class Lcg:
    """The 32-bit linear congruential generator both pages use (exact in integers in Python and,
    with Math.imul, in JavaScript); each draw is its state's top 24 bits."""

    def __init__(self, seed: int) -> None:
        self.x = int(seed) & 0xFFFFFFFF

    def next(self) -> int:
        self.x = (self.x * 1103515245 + 12345) & 0xFFFFFFFF
        return self.x >> 8


def example_picks(labels: Sequence[int] | np.ndarray, seed: int = 0, n: int = N_EXAMPLES) -> list[int]:
    """n gallery positions, every class in turn (SPEC["example_picks"]): for each class in
    ascending order, its positions (ascending) with the first min(n, count) shuffled into place
    by a partial Fisher-Yates on one Lcg(seed) stream; then round after round, one per class."""
    labels = np.asarray(labels)
    rng = Lcg(seed)
    orders = []
    for c in np.unique(labels):
        ids = np.flatnonzero(labels == c).tolist()
        for i in range(min(n, len(ids))):
            j = i + rng.next() % (len(ids) - i)
            ids[i], ids[j] = ids[j], ids[i]
        orders.append(ids)
    picks = [ids[r] for r in range(n) for ids in orders if r < len(ids)]
    return [int(i) for i in picks[:n]]
