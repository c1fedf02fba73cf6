"""Plots written next to a run: the training curves."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .files import atomic_write_bytes


def plot_training_curves(history: list[dict[str, Any]], path: str | Path, title: str = "", split: str = "test",
                         stage_ends: list[int] = ()) -> None:
    """Losses (train, `split` CE, `split` MS) and `split` retrieval metrics per epoch, as one PNG;
    a dotted line after each stage's last epoch but the final one."""
    epochs = list(range(1, len(history) + 1))
    fig, (ax_loss, ax_ret) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax in (ax_loss, ax_ret):
        for end in stage_ends:
            ax.axvline(end + 0.5, color="grey", linestyle=":", linewidth=1)
    for key, label in (("train_loss", "train loss"), (f"{split}_ce_loss", f"{split} CE"),
                       (f"{split}_ms_loss", f"{split} MS")):
        if any(key in h for h in history):  # a stage without a class head has no CE loss
            ax_loss.plot(epochs, [h.get(key, float("nan")) for h in history], marker=".", label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    for key, label in (("precision_at_1", "precision@1"), ("r_precision", "R-precision"),
                       ("mean_average_precision_at_r", "MAP@R"), ("accuracy", "accuracy")):
        if any(key in h for h in history):
            ax_ret.plot(epochs, [h.get(key, float("nan")) for h in history], marker=".", label=label)
    ax_ret.set_xlabel("epoch")
    ax_ret.set_ylabel("validation split" if split == "val" else f"{split} set")
    ax_ret.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
