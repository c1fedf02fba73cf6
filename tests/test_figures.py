"""Figure 3 from a (tiny, synthetic) Hybrid-3 checkpoint, against the shipped CIFAR-10 gallery."""

from conftest import load_script
from PIL import Image

import train
from model.demo import Demo


def test_figure3_shows_each_involution_layer(data_dir, tmp_path) -> None:
    figures = load_script("figures")
    ckpt = tmp_path / "h3"
    assert train.main(["--dataset", "cifar10", "--model", "hybrid3", "--loss", "ce", "--epochs", "1",
                       "--batch-size", "25", "--device", "cpu", "--no-index", "--data-dir", str(data_dir),
                       "--out", str(ckpt)]) == 0
    figures.figure3(ckpt, Demo(), tmp_path / "figure3.png")
    width, height = Image.open(tmp_path / "figure3.png").size
    assert width > height > 200  # 3 rows: input + 3 involution outputs per row
