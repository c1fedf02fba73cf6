"""Training throughput of every model in the sweep on this machine, to tell which cells fit.

    python scripts/cpu_throughput.py [--threads 1] [--batch-size 64] [--models resnet50 vgg16]

One CE training step (forward, backward, Adam) on random CIFAR-10-sized images (3x32x32),
timed after two warm-up steps; prints images per second and the minutes one CIFAR-10 epoch
(50,000 images) and the paper's 25 epochs would take at that rate. Random pixels cost the
same as real ones, so no dataset is needed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model import REGISTRY, build_model, keras_param_count

CIFAR_TRAIN = 50_000


def images_per_second(net: torch.nn.Module, batch_size: int, steps: int, device: str) -> float:
    net = net.to(device)
    head = torch.nn.Linear(256, 10).to(device)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-3)
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def step() -> None:
        loss = F.cross_entropy(head(net(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch_size * steps / (time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the sweep uses 1 per cell)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="*", default=list(REGISTRY))
    args = p.parse_args()
    unknown = [m for m in args.models if m not in REGISTRY]
    if unknown:
        print(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(REGISTRY)}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, {args.threads} thread(s), batch {args.batch_size}, 3x32x32, CE step")
    print("| model | params | img/s | min per CIFAR-10 epoch | min for 25 epochs |")
    print("|---|---|---|---|---|")
    for name in args.models:
        net = build_model(name, 3)
        params = keras_param_count(net)  # before training: Adam's state is not a parameter
        rate = images_per_second(net, args.batch_size, args.steps, args.device)
        epoch_min = CIFAR_TRAIN / rate / 60
        print(f"| {name} | {params:,} | {rate:.0f} | {epoch_min:.1f} | {25 * epoch_min:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
