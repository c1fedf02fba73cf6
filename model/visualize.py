"""Plots written next to a run: the training curves."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .embedder import atomic_write_bytes


def plot_training_curves(history: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Losses (train, test CE, test MS) and retrieval metrics per epoch, as one PNG."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_ret) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("train_loss", "train loss"), ("test_ce_loss", "test CE"), ("test_ms_loss", "test MS")):
        if history and key in history[0]:
            ax_loss.plot(epochs, [h[key] for h in history], marker=".", label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    for key, label in (("precision_at_1", "precision@1"), ("r_precision", "R-precision"),
                       ("mean_average_precision_at_r", "MAP@R"), ("accuracy", "accuracy")):
        if history and key in history[0]:
            ax_ret.plot(epochs, [h[key] for h in history], marker=".", label=label)
    ax_ret.set_xlabel("epoch")
    ax_ret.set_ylabel("test set")
    ax_ret.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
