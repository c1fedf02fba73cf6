"""train.py writes only where it was asked to, and refuses bad data before the first epoch:
each refusal is one line that names the problem and the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, synthetic_arrays
from PIL import Image

import train
from model.data import load_dataset
from model.embedder import Embedder
from model.networks import build_model
from model.training import Trainer

QUICK = ["--dataset", "mnist", "--model", "cnn3a", "--loss", "ce", "--epochs", "1", "--batch-size", "50",
         "--device", "cpu", "--no-index"]


def run(args: list[str], data_dir: Path, out: Path) -> int:
    return train.main([*args, "--data-dir", str(data_dir), "--out", str(out)])


def one_line_error(capsys) -> str:
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "epoch   1" not in out  # refused before training
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_finished_checkpoint_is_never_overwritten_unasked(data_dir, tmp_path, capsys, monkeypatch) -> None:
    shipped = tmp_path / "cifar10-hybrid1"  # as shipped: no resume state beside the weights
    shutil.copytree(ROOT / "assets" / "cifar10-hybrid1", shipped)
    before = snapshot(shipped)

    def decoded(*args, **kwargs):
        raise AssertionError("the data was loaded before --out was checked")

    with monkeypatch.context() as m:  # refused before a (possibly large) dataset is decoded
        m.setattr(train, "load_dataset", decoded)
        assert run([*QUICK[:1], "cifar10", *QUICK[2:3], "hybrid1", *QUICK[4:]], data_dir, shipped) == 2
    err = one_line_error(capsys)
    p1 = json.loads((shipped / "metrics.json").read_text())["test"]["precision_at_1"]
    assert f"already holds a finished checkpoint (hybrid1 on cifar10, test P@1 {p1:.4f})" in err
    assert "--overwrite" in err and "--resume" not in err  # a finished run has nothing to resume
    assert snapshot(shipped) == before
    legacy = tmp_path / "legacy"  # the record of a checkpoint trained before recipes (a `final` block)
    legacy.mkdir()
    shutil.copy(ROOT / "results" / "recipes" / "cifar10-hybrid1-then-ms-flip-lr1e-3-50ep" / "metrics.json", legacy)
    assert run([*QUICK[:1], "cifar10", *QUICK[2:3], "hybrid1", *QUICK[4:]], data_dir, legacy) == 2
    assert "already holds a finished checkpoint (hybrid1 on cifar10, test P@1 0.7553)" in one_line_error(capsys)
    ours = tmp_path / "ours"
    assert run(QUICK, data_dir, ours) == 0
    capsys.readouterr()
    assert run(QUICK, data_dir, ours) == 2
    assert "already holds a finished checkpoint (cnn3a on mnist, test P@1" in one_line_error(capsys)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert run(QUICK, data_dir, tmp_path / "other") == 2
    assert "already holds other files (notes.txt" in one_line_error(capsys)


def test_a_torn_save_is_refused_and_cleaned_on_resume(data_dir, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "torn"
    assert run([*QUICK[:7], "2", *QUICK[8:], "--time-budget", "0"], data_dir, out) == 0  # 1 of 2 epochs
    (out / ".model.safetensors.k3j2").write_bytes(b"half a file")
    (out / "work" / "stage-1" / "resume.tmp").mkdir()
    capsys.readouterr()
    assert run([*QUICK[:7], "2", *QUICK[8:]], data_dir, out) == 2
    err = one_line_error(capsys)
    assert "already holds a run in progress: pass --resume to continue the run" in err
    assert train.main(["--resume", "--out", str(out), "--data-dir", str(data_dir), "--no-index"]) == 0
    said = capsys.readouterr().out
    assert "removed what an interrupted save left: .model.safetensors.k3j2, work/stage-1/resume.tmp" in said
    assert not (out / ".model.safetensors.k3j2").exists() and not (out / "work").exists()
    assert json.loads((out / "metrics.json").read_text())["training"]["stages"][0]["epochs_done"] == 2
    only_torn = tmp_path / "only-torn"
    only_torn.mkdir()
    (only_torn / ".config.json.abc").write_text("{")
    assert run(QUICK, data_dir, only_torn) == 2
    assert "already holds a torn save (.config.json.abc)" in one_line_error(capsys)


def test_overwrite_keeps_the_old_folder_until_the_new_run_completes(data_dir, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "ckpt"
    assert run(QUICK, data_dir, out) == 0
    old = snapshot(out)
    capsys.readouterr()
    original = Trainer.train_epoch

    def interrupted(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    assert run([*QUICK[:7], "3", *QUICK[8:], "--seed", "1", "--overwrite"], data_dir, out) == 130
    replaced = tmp_path / "ckpt.replaced"
    assert snapshot(replaced) == old  # the old checkpoint, whole, while the new run is unfinished
    monkeypatch.setattr(Trainer, "train_epoch", original)
    capsys.readouterr()
    assert train.main(["--resume", "--out", str(out), "--data-dir", str(data_dir), "--no-index"]) == 0
    assert f"deleted {replaced}, the folder this run replaced" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert not replaced.exists() and metrics["training"]["stages"][0]["epochs_done"] == 3


def test_resume_refuses_options_that_contradict_the_saved_run(data_dir, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert run([*QUICK[:7], "2", *QUICK[8:], "--time-budget", "0"], data_dir, out) == 0
    capsys.readouterr()
    args = ["--resume", "--out", str(out), "--data-dir", str(data_dir), "--no-index"]
    assert train.main([*args, "--lr", "0.01", "--model", "hybrid1"]) == 2
    err = one_line_error(capsys)
    assert "--lr 0.01 (the run has 0.001)" in err and "--model hybrid1 (the run has cnn3a)" in err
    assert train.main([*args, "--set", "stages.1.batch_size=20"]) == 2
    assert "stages.1.batch_size = 20 (the run has 50)" in one_line_error(capsys)
    assert train.main([*args, "--flip-average", "--shift-average", "1"]) == 2
    assert "--flip-average/--shift-average (the run searches with views [{'flip': False, 'shift': 0}])" in (
        one_line_error(capsys))
    assert train.main([*args, "--precision", "bf16"]) == 2
    assert "precision = 'bf16' (the run has 'auto')" in one_line_error(capsys)
    assert train.main([*args, "--epochs=2", "--model", "cnn3a", "--device", "cpu"]) == 0  # agreeing options pass


def write_npz(folder: Path, xtr, ytr, xte, yte) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return folder


@pytest.mark.parametrize(("case", "message"), [
    ("truncated", "is truncated or corrupt"),
    ("train lengths", "x_train has 300 images but y_train has shape (299,)"),
    ("test lengths", "x_test has 100 images but y_test has shape (101,)"),
    ("label 12", "y_train holds label 12 (1 such); labels must be 0..9"),
    ("label -1", "y_test holds label -1 (1 such); labels must be 0..9"),
    ("float pixels", "x_train is float64 with values"),
    ("float labels", "y_train is float64; labels must be whole numbers"),
    ("image sizes", "train images are (28, 28) and test images (32, 32)"),
])
def test_bad_data_is_refused_before_training(case, message, tmp_path, capsys) -> None:
    xtr, ytr, xte, yte = synthetic_arrays(300, 100)
    ytr, yte = ytr.astype(np.int64), yte.astype(np.int64)
    folder = tmp_path / "data"
    if case == "truncated":
        write_npz(folder, xtr, ytr, xte, yte)
        data = (folder / "mnist.npz").read_bytes()
        (folder / "mnist.npz").write_bytes(data[: len(data) // 2])
    else:
        if case == "train lengths":
            ytr = ytr[:-1]
        elif case == "test lengths":
            yte = np.concatenate([yte, yte[:1]])
        elif case == "label 12":
            ytr[5] = 12
        elif case == "label -1":
            yte[7] = -1
        elif case == "float pixels":
            xtr = xtr / 255.0
        elif case == "float labels":
            ytr = ytr.astype(np.float64)
        elif case == "image sizes":
            xte = synthetic_arrays(10, 100, size=32)[2]
        write_npz(folder, xtr, ytr, xte, yte)
    assert run(QUICK, folder, tmp_path / "out") == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--loss", "ms", "--batch-size", "1"], "batch_size 1 holds no pair"),
    (["--max-train-samples", "0"], "--max-train-samples must be at least 1 (got 0)"),
    (["--max-train-samples", "-3"], "--max-train-samples must be at least 1 (got -3)"),
])
def test_bad_options_are_refused_before_training(args, message, data_dir, tmp_path, capsys) -> None:
    assert run([*QUICK, *args], data_dir, tmp_path / "out") == 2
    assert message in one_line_error(capsys)


def test_a_class_too_small_for_ms_batches_is_named(tmp_path, capsys) -> None:
    xtr, ytr, xte, yte = synthetic_arrays(300, 100)
    keep = np.flatnonzero(ytr != 3)[:]
    keep = np.concatenate([keep, np.flatnonzero(ytr == 3)[:2]])  # class 3 keeps 2 images
    folder = write_npz(tmp_path / "data", xtr[keep], ytr[keep], xte, yte)
    assert run([*QUICK[:4], "--loss", "ms", *QUICK[6:]], folder, tmp_path / "out") == 2
    err = one_line_error(capsys)
    assert "too few images per class for class-balanced batches of 50 (5 per class): '3' (2)" in err
    assert "Lower the batch size" in err


def test_an_image_folder_trains_on_the_pixels_a_query_gets(tmp_path) -> None:
    """Transparent, palette and greyscale images in an image folder are converted as a photo query
    is (queries.centre_square, then the Embedder): the same pixels at training and at search time."""
    from model.queries import centre_square

    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    files = []
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i, mode in enumerate(("RGBA", "P", "L", "LA")):
                rgba = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
                rgba[:8, :, 3] = 0  # a transparent band
                im = Image.fromarray(rgba, "RGBA")
                im = im if mode == "RGBA" else im.convert(mode)
                path = root / split / c / f"{i}.png"
                im.save(path)
                files.append(path)
    data = load_dataset(str(root), image_size=16)
    config = {"in_channels": 3, "image_size": [16, 16], "mean": [0.5] * 3, "std": [0.25] * 3}
    embedder = Embedder(build_model("cnn3a", 3), config)  # a 16 px RGB checkpoint's preprocessing
    train_files = sorted(p for p in files if "/train/" in p.as_posix())
    for i, path in enumerate(train_files):
        with Image.open(path) as im:
            assert np.array_equal(embedder.to_uint8([centre_square(im, [])])[0].numpy(), data.train_x[i].numpy()), path


def test_a_validation_split_too_small_to_choose_on_is_said() -> None:
    import torch

    tiny = torch.tensor([0, 0, 1, 1, 2, 2, 2])  # 15 images a class, a fifth held out of the training fifth
    note = train.validation_note(tiny, 3)
    assert note.startswith("note: the validation split holds 7 images, 2 in its smallest class: too few")
    assert "\n" not in note
    assert ", 0 in its smallest class" in train.validation_note(torch.tensor([0, 1, 2]), 4)  # a class with none
    assert train.validation_note(torch.arange(4).repeat(10), 4) == ""  # 10 a class: firm enough
    assert train.validation_note(None, 4) == ""  # the named datasets' recipes: no split unless asked
