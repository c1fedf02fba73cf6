"""The paper's Figures 2 and 3, from trained weights.

    python scripts/figures.py [--hybrid3 results/runs/cifar10-hybrid3-ce-gelu-s0]

Figure 2: for each dataset, a test query and its top-5 gallery neighbours (shipped Hybrid-1).
Figure 3: CIFAR-10 images after one, two and three involution layers of a Hybrid-3 model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.data import normalize  # noqa: E402
from model.demo import Demo  # noqa: E402
from model.embedder import load_embedder  # noqa: E402


def figure2(demo: Demo, path: Path, queries: dict[str, int]) -> None:
    datasets = [d for d in demo.datasets() if "Hybrid-1" in demo.models(d)]
    fig, axes = plt.subplots(len(datasets), 6, figsize=(9, 1.8 * len(datasets)), squeeze=False)
    for row, dataset in enumerate(datasets):
        index = demo.index(dataset, "Hybrid-1")
        q = queries.get(dataset, 0)
        result = demo.search(dataset, "Hybrid-1", index.images[q], 5, int(index.labels[q]), exclude=q)
        shown = [(index.images[q], f"query: {index.class_names[index.labels[q]]}")]
        shown += [(index.images[h.index], f"{index.class_names[h.label]} {h.similarity:.2f}") for h in result.hits]
        for col, (img, title) in enumerate(shown):
            ax = axes[row, col]
            ax.imshow(np.squeeze(img), cmap="gray" if img.shape[-1] == 1 else None, interpolation="nearest")
            ax.set_title(title, fontsize=7, color="black" if col == 0 else "green" if title.split()[0] ==
                         index.class_names[index.labels[q]] else "red")
            ax.axis("off")
    fig.suptitle("Figure 2: query (left) and its top-5 neighbours, shipped Hybrid-1", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.inference_mode()
def figure3(checkpoint: Path, demo: Demo, path: Path, picks: tuple[int, ...] = (0, 700, 1400)) -> None:
    embedder = load_embedder(checkpoint)
    index = demo.index("CIFAR-10", "Hybrid-1")
    x_u8 = embedder.to_uint8([index.images[i] for i in picks])
    x = normalize(x_u8, embedder.mean, embedder.std)
    outs, h = [], x
    with torch.inference_mode():
        for block in embedder.model.involutions:
            h = block(h)
            outs.append(h)
    fig, axes = plt.subplots(len(picks), 1 + len(outs), figsize=(2 * (1 + len(outs)), 2 * len(picks)))
    for r in range(len(picks)):
        axes[r, 0].imshow(x_u8[r].permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[r, 0].set_title("input", fontsize=8)
        for c, out in enumerate(outs):
            img = out[r].permute(1, 2, 0).numpy()
            img = (img - img.min()) / (img.max() - img.min() + 1e-8)  # per-image min-max for display
            axes[r, c + 1].imshow(img, interpolation="nearest")
            axes[r, c + 1].set_title(f"after involution {c + 1}", fontsize=8)
        for ax in axes[r]:
            ax.axis("off")
    trained = ""
    if (checkpoint / "metrics.json").is_file():  # say how far the model was trained
        m = json.loads((checkpoint / "metrics.json").read_text())
        if "recipe" in m:  # a train.py checkpoint
            stages = " + ".join(f"{s['loss'].upper()} {s['epochs_done']}" for s in m["training"]["stages"])
            trained = f", {stages} epochs, {m['training']['device']}"
        else:  # a cell of the paper's reproduction (results/reproduce.py)
            trained = f", {m['loss'].upper()} {m['epochs_done']} of {m['train_config']['epochs']} epochs, {m['device']}"
    fig.suptitle(f"Figure 3: CIFAR-10 after each involution layer ({checkpoint.name}{trained})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "results"))
    p.add_argument("--hybrid3", help="a hybrid3 CIFAR-10 checkpoint folder (for Figure 3)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    demo = Demo()
    figure2(demo, out / "figure2.png", {"MNIST": 0, "FashionMNIST": 0, "CIFAR-10": 0})
    print(f"wrote {out / 'figure2.png'}")
    if args.hybrid3:
        figure3(Path(args.hybrid3), demo, out / "figure3.png")
        print(f"wrote {out / 'figure3.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
