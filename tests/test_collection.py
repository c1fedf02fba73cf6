"""Collections: a folder as it comes (mixed formats, nested folders, broken files, planted
near-duplicates) indexed, searched and deduplicated from the command line and from Python;
a build killed with SIGKILL and run again holds every file exactly once; a changed folder
embeds only what changed; another checkpoint is refused unless --rebuild; above the exact
limit an IVF index reaches its recall target."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, load_script
from PIL import Image, ImageEnhance

from model import collection as col

sample = load_script("sample_folders")
CKPT = str(ROOT / "assets" / "cifar10-hybrid1")


def plant_duplicates(folder: Path, n: int = 6) -> list[tuple[str, str]]:
    """For n images of the folder, a copy resized to 70% and saved as JPEG quality 60, or a
    brightened one, in another folder: the pairs (original, copy) a duplicate search must find."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".png", ".bmp") and "broken" not in p.name)[:n]
    out = folder / "copies" / "made"
    out.mkdir(parents=True)
    pairs = []
    for i, f in enumerate(files):
        with Image.open(f) as im:
            im = im.convert("RGB")
            copy = (im.resize((int(im.width * 0.7), int(im.height * 0.7)), Image.BILINEAR) if i % 2 == 0
                    else ImageEnhance.Brightness(im).enhance(1.1))
        target = out / f"copy-{i}.jpg"
        copy.save(target, quality=60)
        pairs.append(tuple(sorted((f.relative_to(folder).as_posix(), target.relative_to(folder).as_posix()))))
    return pairs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collection")
    folder = tmp / "photos"
    sample.make_folder(folder / "shapes", "shapes", per_class=15, seed=5)
    sample.make_folder(folder / "textures", "textures", per_class=15, seed=6)
    (folder / "textures" / "dots" / "deep" / "er").mkdir(parents=True)
    Image.new("RGB", (120, 90), (200, 40, 40)).save(folder / "textures" / "dots" / "deep" / "er" / "red.gif")
    pairs = plant_duplicates(folder)
    (folder / "empty.png").write_bytes(b"")
    out = tmp / "index"
    assert col.main(["build", str(folder), "--checkpoint", CKPT, "--out", str(out)]) == 0
    return folder, out, pairs


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model.collection", *args], capture_output=True, text=True, cwd=ROOT)


def test_build_indexes_every_readable_image_and_names_the_broken(built) -> None:
    folder, out, pairs = built
    files = col.scan_images(folder)
    info = json.loads(cli("info", str(out), "--json").stdout)
    broken = {"shapes/circle/broken.jpg", "textures/stripes/broken.jpg", "empty.png"}
    assert info["images"] == len(files) - len(broken) and info["skipped"] == len(broken)
    assert info["checkpoint"] == CKPT and info["index"]["kind"] == "flat"
    record = json.loads((out / "collection.json").read_text())
    assert set(record["skipped_files"]) == broken
    c = col.open_collection(out)
    assert "textures/dots/deep/er/red.gif" in c.paths and len(set(c.paths)) == len(c.paths)
    assert c.thumbnail(0).size == (col.THUMB, col.THUMB)


def test_search_from_the_cli_and_python(built) -> None:
    folder, out, _ = built
    query = folder / "shapes" / "square" / "square-003.jpg"
    if not query.exists():
        query = next((folder / "shapes" / "square").glob("square-003.*"))
    rel = query.relative_to(folder).as_posix()
    hits = json.loads(cli("search", str(out), str(query), "-k", "5", "--json").stdout)
    assert len(hits) == 5 and set(hits[0]) == {"path", "similarity"}
    assert hits[0]["path"] == rel and hits[0]["similarity"] > 0.999
    assert all(a["similarity"] >= b["similarity"] for a, b in zip(hits, hits[1:], strict=False))
    text = cli("search", str(out), str(query), "-k", "3").stdout.splitlines()
    assert len(text) == 3 and rel in text[0]
    c = col.open_collection(out)
    assert [h.path for h in c.search(query, 5)] == [h["path"] for h in hits]
    assert [h.path for h in c.search_vector(c.vectors([c.paths.index(rel)])[0], 1)] == [rel]
    bad = cli("search", str(out), str(folder / "shapes" / "circle" / "broken.jpg"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not an image Pillow can read" in bad.stderr
    missing = cli("search", str(out / "nothing"), str(query))
    assert missing.returncode == 2 and "is not a collection" in missing.stderr and "Traceback" not in missing.stderr


def test_duplicates_are_the_planted_copies(built) -> None:
    folder, out, pairs = built
    found = json.loads(cli("duplicates", str(out), "--json").stdout)
    assert all(set(p) == {"a", "b", "similarity"} for p in found)
    got = {tuple(sorted((p["a"], p["b"]))) for p in found}
    assert len(got & set(pairs)) >= len(pairs) - 1  # resized, re-encoded, brightened copies
    assert len(got - set(pairs)) <= 1, got - set(pairs)  # almost only real copies


def test_a_build_killed_with_sigkill_completes_with_every_file_once(tmp_path) -> None:
    folder = sample.make_folder(tmp_path / "f", "colours", per_class=40, seed=7)
    out = tmp_path / "c"
    script = (f"import model.collection as c; c.PART_ROWS = 16; c.BATCH = 16; "
              f"c.main(['build', {str(folder)!r}, '--checkpoint', {CKPT!r}, '--out', {str(out)!r}])")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "parts").glob("part-*.npz"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "collection.json").exists()  # killed mid-way: no reader sees a half-built collection
    done = sum(len(np.load(p)["path"]) for p in (out / "parts").glob("part-*.npz"))
    assert 0 < done < 160
    again = cli("build", str(folder), "--checkpoint", CKPT, "--out", str(out))
    assert again.returncode == 0, again.stderr
    # nothing embedded twice (the broken file, never embedded, is tried again)
    assert f"{done:,} already embedded, {161 - done:,} to embed" in again.stderr
    c = col.open_collection(out)
    readable = sorted(p for p in col.scan_images(folder) if p != "red/broken.jpg")
    assert len(c) == 160 and sorted(c.paths) == readable and len(set(c.paths)) == 160
    assert sum(len(np.load(p)["path"]) for p in (out / "parts").glob("part-*.npz")) == 160


def test_a_changed_folder_embeds_only_what_changed(tmp_path) -> None:
    folder = sample.make_folder(tmp_path / "f", "shapes", per_class=10, seed=8)
    out = tmp_path / "c"
    assert col.main(["build", str(folder), "--checkpoint", CKPT, "--out", str(out)]) == 0
    before = col.open_collection(out)
    gone = [p for p in before.paths if p.startswith("cross/")][:3]
    for p in gone:
        (folder / p).unlink()
    changed = next(p for p in before.paths if p.startswith("square/") and p.endswith(".png"))
    Image.new("RGB", (80, 80), (10, 200, 10)).save(folder / changed)
    for i in range(4):
        Image.new("RGB", (64, 64), (200, 10 * i, 10)).save(folder / "circle" / f"new-{i}.png")
    logged: list[str] = []
    col.build(folder, CKPT, out, log=logged.append, progress=False)
    # 5 to embed: the changed one, the 4 new ones (and the broken file, tried again)
    assert any(f"{len(before) - 3 - 1:,} already embedded, 6 to embed" in line for line in logged), logged
    after = col.open_collection(out)
    assert len(after) == len(before) - 3 + 4 and not set(gone) & set(after.paths)
    assert after.record["generation"] == before.record["generation"] + 1
    hit = after.search(folder / changed, 1)[0]
    assert hit.path == changed and hit.similarity > 0.999  # the new pixels, not the old ones
    assert not (out / before.record["index_file"]).exists() or before.record["index_file"] == after.record["index_file"]


def test_another_checkpoint_is_refused_unless_rebuild(tmp_path) -> None:
    folder = sample.make_folder(tmp_path / "f", "colours", per_class=6, seed=9)
    out = tmp_path / "c"
    assert col.main(["build", str(folder), "--checkpoint", CKPT, "--out", str(out)]) == 0
    other = str(ROOT / "assets" / "cifar10-cnn3a")
    refused = cli("build", str(folder), "--checkpoint", other, "--out", str(out))
    assert refused.returncode == 2 and "another checkpoint" in refused.stderr and "--rebuild" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0
    assert cli("build", str(folder), "--checkpoint", other, "--out", str(out), "--rebuild").returncode == 0
    assert json.loads(cli("info", str(out), "--json").stdout)["checkpoint"] == other
    # the search views are part of what a collection was embedded with: another choice is refused too
    assert col.open_collection(out).record["views"] == {"flip": True, "shift": 0}  # fast: CNN-3a's mirror pair
    refused = cli("build", str(folder), "--checkpoint", other, "--out", str(out), "--views", "checkpoint")
    assert refused.returncode == 2 and "other search views (mirror-averaged; asked: 10 views" in refused.stderr
    assert cli("build", str(folder), "--checkpoint", other, "--out", str(out), "--views", "checkpoint",
               "--rebuild").returncode == 0
    c = col.open_collection(out)
    assert c.record["views"] == {"flip": True, "shift": 1} and c.embedder.views.startswith("10 views")
    query = next(p for p in folder.rglob("*") if p.suffix == ".png")
    assert c.search(query, 1)[0].similarity > 0.999  # the query embedded with the collection's own views


def test_fast_views_are_the_cheapest_within_reach_of_the_checkpoints_choice() -> None:
    """--views fast reads the candidates the checkpoint's training measured on validation."""
    cifar = col.resolve_views(ROOT / "assets" / "cifar10-hybrid1", "fast")
    assert cifar == {"flip": True, "shift": 0}  # mirror-averaged: validation MAP@R 0.443 against 0.454 (10 views)
    assert col.resolve_views(ROOT / "assets" / "cifar10-hybrid1", "one") == {"flip": False, "shift": 0}
    assert col.resolve_views(ROOT / "assets" / "mnist-hybrid1", "checkpoint") == {"flip": False, "shift": 1}
    with pytest.raises(col.CollectionError, match="--views 'many'"):
        col.resolve_views(ROOT / "assets" / "mnist-hybrid1", "many")


def test_above_the_exact_limit_an_ivf_index_reaches_its_recall(tmp_path, monkeypatch) -> None:
    folder = sample.make_folder(tmp_path / "f", "textures", per_class=60, seed=10)
    monkeypatch.setattr(col, "EXACT_UP_TO", 100)
    record = col.build(folder, CKPT, tmp_path / "c", log=lambda _: None, progress=False)
    about = record["index"]
    assert about["kind"] == "ivf-flat" and about["recall_at_10"] >= col.TARGET_RECALL and about["nprobe"] >= 1
    c = col.open_collection(tmp_path / "c")
    assert c.search_vector(c.vectors([5])[0], 1)[0].path == c.paths[5]


@pytest.mark.slow
def test_a_ray_build_equals_the_local_one(built, tmp_path) -> None:
    pytest.importorskip("ray.data")
    folder, local_out, _ = built
    out = tmp_path / "ray"
    run = cli("build", str(folder), "--checkpoint", CKPT, "--out", str(out), "--ray")
    assert run.returncode == 0, run.stderr[-2000:]
    local, ray = col.open_collection(local_out), col.open_collection(out)
    assert ray.paths == local.paths and ray.record["skipped"] == local.record["skipped"]
    np.testing.assert_allclose(ray.vectors(), local.vectors(), atol=1e-5)
    for i in range(0, len(local), 5):
        v = local.vectors([i])[0]
        assert [h.path for h in ray.search_vector(v, 10)] == [h.path for h in local.search_vector(v, 10)]
