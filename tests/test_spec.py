"""The pages' specification is one file (model/demo/static/spec.json) read by both pages, and
the example grid is the same on both: spec.js's examplePicks, run under node, gives exactly
spec.py's example_picks for the shipped galleries' labels, small galleries and unlabelled ones,
every class in turn."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
from conftest import ROOT, load_script

from model.demo import spec
from model.index import read_npz

STATIC = ROOT / "model" / "demo" / "static"


def js_picks(cases: list[tuple[list[int], int]]) -> list[list[int]]:
    node = shutil.which("node")
    assert node, "node is missing: bash .ci/run installs it with npm (apt-get install npm)"
    script = (f'import("{(STATIC / "spec.js").as_posix()}").then((m) => {{'
              f"const cases = {json.dumps(cases)};"
              "console.log(JSON.stringify(cases.map(([labels, seed]) => m.examplePicks(labels, seed)))); });")
    done = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_both_pages_pick_the_same_examples_class_by_class() -> None:
    rng = np.random.default_rng(0)
    cases = []
    for gallery in sorted((ROOT / "assets" / "gallery").glob("*.npz")):
        labels = read_npz(gallery)["labels"].astype(int).tolist()
        cases += [(labels, seed) for seed in (0, 1, 7919 * 17 + 17)]
    cases += [([0, 1], 0), ([3] * 9, 5), (rng.integers(0, 4, 32).tolist(), 1), ([-1] * 40, 0),
              (rng.integers(0, 10, 100).tolist(), 2)]
    got = js_picks(cases)
    for (labels, seed), picks in zip(cases, got, strict=True):
        assert picks == spec.example_picks(labels, seed), (len(labels), seed)
        assert len(picks) == len(set(picks)) == min(spec.N_EXAMPLES, len(labels))
        classes = sorted(set(labels))
        first = [labels[i] for i in picks[: len(classes)]]
        assert first == classes  # every class in turn, from the first round
    assert got[0] != got[1]  # a seed is a shuffle


def test_the_specification_is_one_file_both_pages_read() -> None:
    on_disk = json.loads((STATIC / "spec.json").read_text())
    assert spec.SPEC == on_disk and on_disk["version"] == 1
    from model.demo import html, page

    assert page.MAX_K == on_disk["max_k"] and page.N_EXAMPLES == on_disk["n_examples"]
    assert html.CLASS_COLOURS == on_disk["class_colours"]
    search = (STATIC / "search.js").read_text()
    assert 'from "./spec.js"' in search and "#4e79a7" not in search and "MAX_K = 48" not in search


def test_a_large_upload_is_said_to_be_shrunk_before_it_is_cropped(tmp_path) -> None:
    """Issue 37: a 4000x3000 upload was described as "centre-cropped 1024x768" with no word of
    the shrink before it; the shrink is now said first, in spec.json's words (search.js too)."""
    from PIL import Image

    from model.demo.service import open_upload
    from model.queries import prepare_query

    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (120, 60, 30)).save(path)
    image, note = open_upload(path)
    assert image.size == (1024, 768) and note == spec.text("shrunk", **{"from": "4000x3000", "to": "1024x768"})
    assert prepare_query(image, "photo")[1] == ["centre-cropped 1024x768 to 768x768"]
    assert "text(\"shrunk\"" in (STATIC / "search.js").read_text()


def test_the_static_site_schema_is_checked_on_both_sides() -> None:
    """site.json's schema is documented and versioned in model/demo/static_site.py; its writer
    checks what it writes against it (schema_problems) and the page refuses another version."""
    from model.demo import static_site

    good = {"schema": static_site.SCHEMA_VERSION, "datasets": [
        {"name": "d", "title": "D", "style": "photo", "size": 32, "channels": 3, "n": 2, "columns": 50,
         "gallery": "data/d/gallery.png", "class_names": ["a"], "labels": [0, -1], "paths": ["x.png", "y.png"],
         "models": [{"key": "hybrid1", "title": "Hybrid-1", "dim": 256, "onnx": "o", "embeddings": "e",
                     "umap": "u", "familiarity": {}}]}]}
    assert static_site.schema_problems(good) == []
    bad = json.loads(json.dumps(good))
    bad["datasets"][0]["labels"] = [0]
    del bad["datasets"][0]["models"][0]["umap"]
    assert len(static_site.schema_problems(bad)) == 2
    search = (STATIC / "search.js").read_text()
    assert static_site.SCHEMA_VERSION == spec.SPEC["site_schema"]  # one declaration, read by both
    assert "const SCHEMA = spec.site_schema;" in search and "site.schema !== SCHEMA" in search


def test_the_javascript_fixtures_are_what_the_python_computes_now(capsys) -> None:
    """tests/js/prepare.test.js checks prepare.js and familiarity.js against these fixtures under
    node; this checks the fixtures against the Python, so a change on either side fails a test."""
    fixtures = load_script("js_fixtures")
    assert fixtures.main(["--check"]) == 0, capsys.readouterr().out
    # equal but for float32 rounding, which differs between CPUs; any real change still fails
    assert fixtures.same({"a": [1.0, 2]}, {"a": [1.0 + 2e-6, 2]})
    assert not fixtures.same({"a": [1.0, 2]}, {"a": [1.001, 2]}) and not fixtures.same([1.0], [1.0, 2.0])


def test_both_pages_lay_a_phone_out_alike() -> None:
    """Both style sheets switch to the phone layout at spec.json's phone_max_width (CSS cannot read
    it, so this reads both), and both put the results above the query sources there."""
    import re

    width = json.loads((STATIC / "spec.json").read_text())["phone_max_width"]
    sheets = ((ROOT / "model/demo/web/page.css", "column-reverse"), (STATIC / "style.css", "order: -1"))
    for css, results_first in sheets:
        text = css.read_text()
        assert set(re.findall(r"@media \(max-width: (\d+)px\)", text)) == {str(width)}, css
        phone = text[text.index("@media"):]
        assert results_first in phone, css


def test_precision_says_what_it_can_reach_in_a_small_gallery() -> None:
    """With fewer than k other images of the query's class in the gallery (a small folder's test
    split), precision@k cannot reach 1: both pages say the most it can be, in spec.json's words."""
    from types import SimpleNamespace

    from model.demo.html import results_row
    from model.demo.page import same_class_others
    from model.index import Hit

    gallery = SimpleNamespace(labels=np.array([0, 1, 0, 1, 2, 0, 1, 1, 2]))  # 9 images: 3, 4 and 2 a class
    others = same_class_others(gallery, 0, exclude=0)
    assert others == 2 and same_class_others(gallery, None, None) is None
    hits = [Hit(i, int(gallery.labels[i]), 0.9) for i in (2, 5, 1, 3, 4, 6, 7, 8)]
    row = results_row("Hybrid-1", hits, ["x.png"] * 9, ["circle", "square", "star"], 0, 2 / 8, others=others)
    assert "precision@8 = 0.250" in row
    assert "(at most 0.250 here: the gallery holds 2 other circle images)" in row
    roomy = results_row("Hybrid-1", hits[:2], ["x.png"] * 9, ["circle", "square", "star"], 0, 1.0, others=others)
    assert "at most" not in roomy  # k = 2: precision@2 can reach 1
    assert 'text("precision_best"' in (STATIC / "search.js").read_text()  # the static page says it too
