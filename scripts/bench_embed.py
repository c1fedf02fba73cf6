"""What each model costs on this machine, measured in one run: parameters, FLOPs per image, the
training step against CNN-3a's, and embedding throughput in torch and in onnxruntime.

    python scripts/bench_embed.py [--models hybrid1 cnn3a compact-inv compact-conv] [--repeats 5]
                                  [--out results/bench_embed.json]

Every model sees CIFAR-10's input (32 x 32 x 3, uint8). The shipped CIFAR-10 checkpoint is used
where there is one; otherwise the network with its initial weights (speed does not depend on
the weights). Embedding is one view (the image alone) and each checkpoint's own search views,
batches of 256, in torch on all cores and in onnxruntime (the exported graph, default threads).
The training step is a cross-entropy step (forward, backward, Adam) on a batch of 256 in fp32,
the median of --repeats after two warm-up steps, each model's ratio to CNN-3a's measured in the
same run. Figures are medians over --repeats. The collection build and the demo quote them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.checkpoint import read_config, save_checkpoint  # noqa: E402
from model.embedder import load_embedder  # noqa: E402
from model.export import export_onnx  # noqa: E402
from model.networks import build_model, keras_param_count, model_title  # noqa: E402
from model.search_views import describe_views  # noqa: E402
from model.training import cpu_model  # noqa: E402


def checkpoint_for(model: str, tmp: Path) -> Path:
    shipped = ROOT / "assets" / f"cifar10-{model}"
    if (shipped / "config.json").is_file():
        return shipped
    config = dict(read_config(ROOT / "assets" / "cifar10-hybrid1"), model=model)
    folder = tmp / f"cifar10-{model}"
    torch.manual_seed(0)
    save_checkpoint(folder, build_model(model, 3), config)
    return folder


def flops_per_image(model: torch.nn.Module) -> int:
    """Floating-point operations (a multiply-add is 2) of one 32x32x3 image: torch's counter for
    convolutions and matrix products, plus what it does not see, involution's own work (each
    output pixel's K*K weighted taps, and its 1x1 kernel generators where they run as
    broadcast multiply-sums rather than convolutions: model/involution.py _channel_mix)."""
    from torch.utils.flop_counter import FlopCounterMode

    from model.involution import Involution

    extra = []

    def count(module: Involution, inputs: tuple, output: torch.Tensor) -> None:
        _, c, h, w = output.shape
        k2 = module.kernel_size ** 2
        extra.append(2 * k2 * c * h * w)
        for conv in (module.reduce, module.span):
            o, i = conv.weight.shape[:2]
            if not (o > 1 and i > 3):  # a broadcast multiply-sum: not a counted convolution
                extra.append(2 * o * i * h * w)

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, Involution)]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, 32, 32))
    finally:
        for hook in hooks:
            hook.remove()
    return int(counter.get_total_flops()) + sum(extra)


def step_seconds(name: str, repeats: int, batch: int = 256) -> float:
    torch.manual_seed(0)
    model, head = build_model(name, 3), torch.nn.Linear(256, 10)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-3)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(head(model(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(n / _timed(fn) for _ in range(repeats))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["hybrid1", "cnn3a", "compact-inv", "compact-conv"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--out", default=str(ROOT / "results" / "bench_embed.json"))
    args = p.parse_args(argv)
    import onnxruntime as ort

    x = np.random.default_rng(0).integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    record: dict = {"command": "python scripts/bench_embed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "onnxruntime": ort.__version__, "input": "32x32x3 uint8",
                    "batch": 256, "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        tmp = Path(tmp)
        cnn_step = step_seconds("cnn3a", args.repeats)
        for name in args.models:
            folder = checkpoint_for(name, tmp)
            embedder = load_embedder(folder)
            own = (embedder.flip_average, embedder.shift_average)
            row = {"title": model_title(name), "weights": "shipped" if folder.parent == ROOT / "assets" else "initial",
                   "parameters": keras_param_count(embedder.model),
                   "weight_bytes": sum(t.numel() * t.element_size() for t in embedder.model.state_dict().values()),
                   "flops_per_image": flops_per_image(embedder.model.eval())}
            step = step_seconds(name, args.repeats)
            row.update(train_step_s=round(step, 4), train_step_over_cnn3a=round(step / cnn_step, 2))
            for views, (flip, shift) in (("one_view", (False, 0)), ("own_views", own)):
                embedder.flip_average, embedder.shift_average = flip, shift
                row[f"torch_img_s_{views}"] = round(rate(lambda e=embedder: e.embed(x, batch_size=256),
                                                         len(x), args.repeats), 1)
                cfg = json.loads((folder / "config.json").read_text())
                one = tmp / f"{name}-{views}"
                save_checkpoint(one, embedder.model, {**cfg, "flip_average": flip, "shift_average": shift})
                path = export_onnx(one, tmp / f"{name}-{views}.onnx")
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                feed = session.get_inputs()[0].name

                def run(s=session, f=feed) -> None:
                    for i in range(0, len(x), 256):
                        s.run(None, {f: x[i:i + 256]})

                row[f"onnx_img_s_{views}"] = round(rate(run, len(x), args.repeats), 1)
            row["own_views"] = describe_views(*own)
            record["models"][name] = row
            print(name, row, flush=True)
    record["cnn3a_train_step_s"] = round(cnn_step, 4)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
