"""A user's own labelled folder, as it comes: both layouts, nested files, mixed formats and
modes, unreadable files named and skipped, classes too small refused in one line, the split
recorded and replayed, the defaults chosen from the folder's size, and the health check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script
from PIL import Image

from model import image_folder as fo
from model.data import DataError, load_dataset, load_recorded_split
from model.evaluation import chance_precision_at_1, embedding_check, mean_pairwise_cosine
from model.recipe import folder_defaults

sample = load_script("sample_folders")


def tiny_folder(root: Path, per_class: int = 8, classes: tuple[str, ...] = ("red", "blue")) -> Path:
    """Flat-coloured images of mixed sizes, formats and modes, a third one folder deeper."""
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    for c in classes:
        for i in range(per_class):
            folder = root / c / ("deeper/still" if i % 3 == 0 else "")
            folder.mkdir(parents=True, exist_ok=True)
            w, h = int(rng.integers(20, 90)), int(rng.integers(20, 90))
            im = Image.new("RGB", (w, h), colours[c])
            ext = ("png", "jpg", "webp", "bmp")[i % 4]
            if ext == "png" and i % 2:
                im = im.convert("RGBA")
            im.save(folder / f"{c}{i}.{ext}")
    return root


def test_a_plain_class_folder_is_split_by_class_with_a_fixed_seed(tmp_path) -> None:
    root = tiny_folder(tmp_path / "colours", per_class=10)
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(30))
    (root / "red" / "notes.txt").write_text("hello")
    (root / ".hidden").mkdir()
    logged: list[str] = []
    data = load_dataset(str(root), image_size=16, log=logged.append)
    assert data.class_names == ["blue", "red"] and data.train_x.shape[1:] == (3, 16, 16)
    assert len(data.test_y) == 4 and len(data.train_y) == 16  # 2 test images a class, nested files included
    assert any("skipped 1 unreadable file(s): red/broken.jpg" in line for line in logged)
    assert any("not images" in line and "red/notes.txt" in line for line in logged)
    assert data.folder["skipped"][0].startswith("red/broken.jpg") and data.folder["layout"] == "classes"
    # the files follow the tensors through every cut
    assert [label for _, label in data.files["test"]] == data.test_y.tolist()
    held = data.hold_out_validation(0.25, 0)
    assert len(held.files["val"]) == len(held.val_y) == 4 and len(held.files["train"]) == len(held.train_y) == 12
    assert not set(f for f, _ in held.files["val"]) & set(f for f, _ in held.files["train"])
    assert load_dataset(str(root), image_size=16, log=lambda _: None).files == data.files  # the same split again
    # the record replays the same images
    record = held.split_record()
    again = load_recorded_split(json.loads(json.dumps(record)), 16)
    assert torch.equal(again.test_x, held.test_x) and torch.equal(again.val_x, held.val_x)
    assert torch.equal(again.train_y, held.train_y)


def test_red_stays_red_whatever_the_mode_and_the_crop_is_centred(tmp_path) -> None:
    im = np.zeros((40, 120, 3), np.uint8)
    im[:, 40:80] = (200, 0, 0)  # red in the centre third, black sides a centre crop drops
    Image.fromarray(im).save(tmp_path / "wide.png")
    Image.fromarray(im).convert("RGBA").save(tmp_path / "wide-rgba.png")
    x, y, kept, skipped = fo.decode(tmp_path, [("wide.png", 0), ("wide-rgba.png", 1)], 8)
    assert x.shape == (2, 8, 8, 3) and not skipped and kept == ["wide.png", "wide-rgba.png"]
    assert (x[:, :, :, 0] > 150).all() and (x[:, :, :, 1:] < 20).all()


def test_a_train_test_folder_keeps_its_test_split(tmp_path) -> None:
    for split, n in (("train", 6), ("test", 3)):
        tiny_folder(tmp_path / "f" / split, per_class=n)
    data = load_dataset(str(tmp_path / "f"), image_size=16, log=lambda _: None)
    assert len(data.train_y) == 12 and len(data.test_y) == 6
    assert all(f.startswith("test/") for f, _ in data.files["test"])
    assert data.folder["layout"] == "train-test"


@pytest.mark.parametrize("make, match", [
    (lambda r: tiny_folder(r, per_class=5), r"class 'blue' has 5 image\(s\) \(and 1 more such classes\); "
                                            r"each class needs at least 6 .* add images to .*blue or remove"),
    (lambda r: tiny_folder(r, classes=("red",)), "one class folder"),
    (lambda r: r.mkdir(), "has no class folders"),
    (lambda r: None, r"no folder at .*f: check the path; --dataset takes mnist, fashion_mnist, cifar10, or an image"),
    (lambda r: r.write_bytes(b"x"), "is a file, not a folder: give the folder that holds the class folders"),
])
def test_a_folder_that_cannot_train_is_refused_in_one_line(tmp_path, make, match) -> None:
    root = tmp_path / "f"
    make(root)
    with pytest.raises(DataError, match=match) as e:
        load_dataset(str(root), log=lambda _: None)
    assert "\n" not in str(e.value)


def test_skipping_broken_files_can_leave_a_class_too_small(tmp_path) -> None:
    root = tiny_folder(tmp_path / "f", per_class=6)
    for i in range(2):
        (root / "red" / f"bad{i}.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="after skipping unreadable files, class 'red' has 5 image"):
        # 8 files by name, 2 unreadable: the 6 left still split; remove one more and they do not
        (root / "red" / "red1.jpg").unlink()
        load_dataset(str(root), log=lambda _: None)


def test_defaults_follow_the_folder_size() -> None:
    small, why = folder_defaults(192, 4, 48, 120)
    assert small["loss"] == "normsoftmax" and small["batch_size"] == 16 and small["epochs"] == 160
    assert "normsoftmax" in why and "192 training images" in why and "from scratch" in why
    assert small["model"] == "compact-conv" and "Compact-Conv" in why  # this project's network, the best on textures
    assert folder_defaults(192, 4, 48, 120, model="hybrid1")[0]["model"] == "hybrid1"  # --model wins
    tiny, _ = folder_defaults(40, 2, 20, 24)
    assert tiny["batch_size"] == 16 and tiny["epochs"] == 200 and tiny["image_size"] == 32  # small images: 32 px
    large, _ = folder_defaults(50_000, 10, 5_000, 300)
    assert large["batch_size"] == 256 and large["epochs"] == 11 and large["image_size"] == small["image_size"] == 48
    assert small["augment"] == ["zoom-flip", "zoom-flip-mix"] and "48 px" in why


def test_the_check_flags_chance_and_collapse() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(25)
    assert chance_precision_at_1(labels) == pytest.approx(24 / 99)
    good = torch.nn.functional.one_hot(labels, 8).float() + 0.05 * torch.randn(100, 8, generator=g)
    assert embedding_check(good, labels)["verdict"] == "ok"
    noise = torch.randn(100, 8, generator=g)
    chance = embedding_check(noise, labels)
    assert chance["verdict"] == "near chance" and "random ranking" in chance["advice"]
    collapsed = torch.ones(100, 8) + 0.01 * torch.randn(100, 8, generator=g)
    assert mean_pairwise_cosine(collapsed) > 0.99
    check = embedding_check(collapsed, labels)
    assert check["verdict"] == "collapsed" and "collapsed" in check["advice"] and "\n" not in check["advice"]


def test_sample_folders_are_what_the_bench_trains_on(tmp_path) -> None:
    root = sample.make_folder(tmp_path / "shapes", "shapes", per_class=6, seed=1)
    scanned = fo.scan(root)
    assert scanned.classes == sorted(sample.KINDS["shapes"]) and scanned.layout == "classes"
    assert scanned.count() == 4 * 6 + 1  # with the truncated JPEG, which only decoding finds
    assert scanned.not_images == ["circle/notes.txt"]


def test_sample_colour_scenes_are_never_greyscale(tmp_path) -> None:
    """A grey copy of a red scene is no longer red: the colours folder would be mislabelled."""
    from PIL import Image

    modes = {}
    for kind in ("colours", "shapes"):
        root = sample.make_folder(tmp_path / kind, kind, per_class=15, seed=3)
        modes[kind] = {Image.open(p).mode for p in root.rglob("*") if p.suffix in (".png", ".webp", ".bmp", ".jpg")
                       and p.name != "broken.jpg"}
    assert "L" not in modes["colours"] and "L" in modes["shapes"]  # shapes keep their greyscale files
