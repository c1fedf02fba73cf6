import numpy as np
import pytest
import torch
from PIL import Image

from model import DataError, load_dataset
from model.data import random_crop_flip


def test_npz_loads_as_uint8_nchw(data_dir) -> None:
    data = load_dataset("mnist", data_dir)
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape == (300, 1, 28, 28)
    assert data.test_y.dtype == torch.int64 and len(data.class_names) == 10
    assert data.augment == "none"
    cifar = load_dataset("CIFAR-10", data_dir, max_train_samples=50)
    assert cifar.train_x.shape == (50, 3, 32, 32) and cifar.augment == "crop-flip"
    mean, std = cifar.mean_std()
    assert len(mean) == 3 and all(0 < s < 1 for s in std)


def test_unknown_dataset_names_the_choices(tmp_path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'svhn'.*mnist, fashion_mnist, cifar10"):
        load_dataset("svhn", tmp_path)


def test_missing_offline_file_without_network_names_the_fix(tmp_path, monkeypatch) -> None:
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataError, match="fashion_mnist.npz.*--data-dir"):
        load_dataset("fashion_mnist", tmp_path)


def test_cifar_archive_without_npz_says_how_to_convert(tmp_path) -> None:
    (tmp_path / "cifar10-jpeg.tar.gz").write_bytes(b"")
    with pytest.raises(DataError, match="cifar10_jpeg_to_npz.py"):
        load_dataset("cifar10", tmp_path)


def test_corrupt_npz_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "mnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a dataset .npz"):
        load_dataset("mnist", tmp_path)


def test_image_folder(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cats", "dogs"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(4):
                arr = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / split / cls / f"{i}.png")
    data = load_dataset(str(tmp_path), image_size=24)
    assert data.train_x.shape == (8, 3, 24, 24) and data.class_names == ["cats", "dogs"]
    (tmp_path / "only_train" / "train" / "cats").mkdir(parents=True)
    with pytest.raises(DataError, match="has no class folders"):  # train/ alone is no layout
        load_dataset(str(tmp_path / "only_train"))


def test_crop_flip_is_a_per_sample_shift_or_mirror() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8).to(torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(1), pad=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    # every output pixel is either zero padding or a pixel of the same image and channel
    for b in range(2):
        for c in range(3):
            assert set(out[b, c].flatten().tolist()) <= set(x[b, c].flatten().tolist()) | {0}
    same = random_crop_flip(x, torch.Generator().manual_seed(1), pad=2)
    assert torch.equal(out, same)


def test_shift_never_flips() -> None:
    from model.data import augment

    x = torch.zeros(64, 1, 12, 12, dtype=torch.uint8)
    x[:, :, 6, 2] = 255  # one bright pixel left of centre
    out = augment(x, "shift", torch.Generator().manual_seed(0))
    cols = out[:, 0].amax(dim=1).argmax(dim=1)  # column of the bright pixel per image
    assert cols.min() >= 0 and cols.max() <= 4  # shifted by at most 2, never mirrored to the right half
    assert torch.equal(augment(x, "none", torch.Generator()), x)


def test_shift_flip_shifts_by_two_and_mirrors_about_half() -> None:
    from model.data import augment

    x = torch.zeros(400, 1, 12, 12, dtype=torch.uint8)
    x[:, :, 6, 2] = 255
    cols = augment(x, "shift-flip", torch.Generator().manual_seed(0))[:, 0].amax(dim=1).argmax(dim=1)
    left, right = cols <= 4, cols >= 7  # unmirrored: column 2 +- 2; mirrored: column 9 +- 2
    assert bool((left | right).all())
    assert 0.4 < float(right.float().mean()) < 0.6


def test_flip_mirrors_about_half_and_never_shifts() -> None:
    from model.data import augment

    x = torch.randint(0, 256, (400, 3, 12, 12), dtype=torch.uint8)
    out = augment(x, "flip", torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())  # each image as it is or its exact mirror image
    assert 0.4 < float(mirrored.float().mean()) < 0.6


def test_zoom_turn_never_mirrors_a_digit() -> None:
    from model.data import augment

    x = torch.zeros(200, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 4:24, 4:8] = 255  # a bar on the left: a mirror image would put it on the right
    out = augment(x, "zoom-turn", torch.Generator().manual_seed(0)).float()
    left, right = out[..., :14].mean((1, 2, 3)), out[..., 14:].mean((1, 2, 3))
    assert bool((left > 4 * right).all())  # moved, enlarged and turned a little, never mirrored
    assert bool((out != x.float()).flatten(1).any(1).float().mean() > 0.9)  # and almost always changed


def test_recolour_shuffles_each_images_channels_and_inverts_about_half() -> None:
    from model.data import augment

    x = torch.randint(0, 256, (400, 3, 8, 8), dtype=torch.uint8)
    x[:, 0], x[:, 1] = 0, 128  # channels told apart by value: red 0, green 128, blue anything
    out = augment(x, "zoom-flip-recolour", torch.Generator().manual_seed(0))
    corner = out[:, :, 0, 0].long()
    inverted = (corner == 255).any(1) & (corner == 127).any(1)
    kept = (corner == 0).any(1) & (corner == 128).any(1)
    assert bool((inverted | kept).all()) and 0.4 < float(inverted.float().mean()) < 0.6
    red_moved = ~((corner[:, 0] == 0) | (corner[:, 0] == 255))
    assert 0.5 < float(red_moved.float().mean()) < 0.8  # red is elsewhere in 2 of 3 orders
    plain = augment(x, "zoom-flip", torch.Generator().manual_seed(0))
    assert bool((plain[:, 0] == 0).all() and (plain[:, 1] == 128).all())  # zoom-flip keeps colours


def test_colour_mix_gives_each_image_new_colours_and_keeps_its_pattern() -> None:
    from model.data import mix_colours

    pattern = torch.zeros(8, 8, dtype=torch.bool)
    pattern[::2] = True  # stripes in two colours
    x = torch.zeros(200, 3, 8, 8, dtype=torch.uint8)
    x[:, :, pattern] = torch.tensor([200, 40, 90], dtype=torch.uint8)[:, None]
    x[:, :, ~pattern] = torch.tensor([30, 160, 20], dtype=torch.uint8)[:, None]
    matrix = torch.rand(200, 3, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = mix_colours(x, matrix)
    on, off = out[:, :, pattern], out[:, :, ~pattern]
    assert bool((on == on[:, :, :1]).all() and (off == off[:, :, :1]).all())  # still two colours, the same stripes
    assert bool(((on[:, :, 0].int() - off[:, :, 0].int()).abs().sum(1) > 0).all())  # ... told apart in every image
    assert len({tuple(c) for c in on[:, :, 0].tolist()}) > 150  # and drawn anew for each
    assert out.amin() == 0 and out.amax() == 255
    grey = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(mix_colours(grey, matrix[:4]), grey)  # one channel: nothing to mix
