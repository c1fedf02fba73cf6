"""Shared fixtures: small synthetic datasets in the offline .npz format, so no test needs the network."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

import train

torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parents[1]
# search bundles rebuilt for read-only checkpoints go to a cache folder: the tests' own, not ~/.cache
os.environ.setdefault("INVOLUTION_CACHE", tempfile.mkdtemp(prefix="involution-test-cache-"))


def load_script(name: str, folder: str = "scripts") -> ModuleType:
    """Import <folder>/<name>.py (scripts/ by default), which is not a package module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def synthetic_arrays(n_train: int, n_test: int, size: int = 28, channels: int = 1, seed: int = 0):
    """Ten classes, each a grating of its own orientation, frequency and brightness,
    plus noise: learnable in a few epochs by a small CNN."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    protos = np.stack([
        (0.5 + 0.5 * np.sin(2 * np.pi * (2 + c % 3) * (np.cos(c) * xx + np.sin(c) * yy))) * (120 + 13 * c)
        for c in range(10)
    ])[..., None].repeat(channels, axis=-1)

    def make(n):
        y = np.arange(n) % 10
        rng.shuffle(y)
        x = protos[y] * 0.7 + rng.uniform(0, 255, size=(n, size, size, channels)) * 0.3
        x = x.round().clip(0, 255).astype(np.uint8)
        return (x[..., 0] if channels == 1 else x), y.astype(np.uint8)

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    return xtr, ytr, xte, yte


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A --data-dir holding a synthetic mnist.npz (300 train / 100 test) and cifar10.npz."""
    folder = tmp_path_factory.mktemp("data")
    for name, size, ch in (("mnist", 28, 1), ("cifar10", 32, 3)):
        xtr, ytr, xte, yte = synthetic_arrays(300, 100, size, ch)
        np.savez(folder / f"{name}.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return folder


@pytest.fixture(scope="session")
def assets(data_dir, tmp_path_factory) -> Path:
    """assets/ with MNIST Hybrid-1 and CNN-3a checkpoints (1 epoch on synthetic data) and their bundles."""
    folder = tmp_path_factory.mktemp("assets")
    threads = torch.get_num_threads()
    for model in ("hybrid1", "cnn3a"):
        out = folder / f"mnist-{model}"
        args = ["--dataset", "mnist", "--model", model, "--loss", "ce", "--epochs", "1", "--batch-size", "50",
                "--device", "cpu", "--data-dir", str(data_dir), "--out", str(out)]
        torch.set_num_threads(1)  # trained on one thread: metrics.json must say so (test_recorded_device...)
        try:
            assert train.main(args) == 0  # also builds the bundle, as train.py does by default
        finally:
            torch.set_num_threads(threads)
        assert (out / "index.npz").is_file() and (folder / "gallery" / "mnist.npz").is_file()
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
