"""Training speed of Hybrid-1 on CIFAR-10: our pipeline against a naive one, in one run on one device.

    python scripts/bench_train.py --data-dir DIR [--device auto|cpu|cuda] [--precision auto|fp32|bf16]
                                  [--quick] [--out FILE]

Measured, each as images per second of training steps (warm-up steps and compilation excluded):
- naive: a torchvision-style Dataset of PIL images with torchvision transforms and a DataLoader
  (2 workers on a CPU, 8 on a GPU), pytorch-metric-learning's MS loss and miner (MPerClassSampler
  batches), fp32, eager: the pipeline a first version would have;
- today: our pipeline (uint8 data resident on the device, augmentation as one gather, bf16
  autocast on CUDA, channels_last) with pytorch-metric-learning's MS loss and miner, eager: the
  trainer before model/losses.py;
- ours: the trainer as it is: the sync-free MultiSimilarity loss, the training step at --precision
  (auto: bf16 autocast where the device runs it natively, training.pick_precision) and, on CUDA,
  the compiled step.
Then, each a ratio of variants measured in this run, alternating epochs so that a change of load
on a shared machine falls on both: `bf16_over_fp32` (ours MS images/s in bf16 over fp32),
`hybrid1_over_cnn3a_step` (the seconds of a Hybrid-1 CE training step over CNN-3a's, at --precision;
on a CPU also on one thread, `_1_thread`, the way two runs share two cores)
and `bf16_vs_fp32_p_at_1_delta` (the same seed trained a few epochs in bf16 and in fp32: validation
P@1 of the first minus the second, on a split held out of the training images).
Then an epoch of CE and of MS with ours (`ce_epoch_s`, `ms_epoch_s`), the paper's protocol (MS,
Adam 1e-3, 25 epochs, each followed by the test-set evaluation) as wall-clock seconds from start
to the last checkpoint, compilation included, and N runs of ours at once, each in its own process
started together, against one alone (`parallel_runs_img_s`). On CUDA, one training step also runs
under torch.cuda.set_sync_debug_mode("error"): `sync_free_step` says whether it waited for the host.

Every figure is measured in this run; none is estimated. The JSON records how much was measured
(`epoch_images`, `protocol_epochs`). --quick is a short CPU version for the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars between the figures

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.data import ImageData, load_dataset  # noqa: E402
from model.training import Trainer, describe_device, one_stage_recipe, pick_device, pick_precision  # noqa: E402

MODEL, DATASET, BATCH = "hybrid1", "cifar10", 256


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----- the naive pipeline -----------------------------------------------------------------
def naive_img_s(data: ImageData, device: torch.device, loss: str, steps: int, workers: int) -> float:
    """Images/s of the pipeline a first version would have: PIL images through torchvision transforms."""
    import torchvision.transforms as T
    from PIL import Image
    from pytorch_metric_learning import losses, miners, samplers

    from model.networks import build_model

    mean, std = data.mean_std()
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])

    class PILImages(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.images = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in data.train_x]
            self.labels = data.train_y.tolist()

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int):
            return transform(self.images[i]), self.labels[i]

    dataset = PILImages()
    if loss == "ms":  # class-balanced batches, as the trainer's: 32 images of each of 8 classes
        sampler = samplers.MPerClassSampler(dataset.labels, m=32, batch_size=BATCH, length_before_new_iter=len(dataset))
        loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=workers,
                                             pin_memory=device.type == "cuda", drop_last=True)
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                                             pin_memory=device.type == "cuda", drop_last=True)
    torch.manual_seed(0)
    model = build_model(MODEL, 3, 256, "gelu").to(device)
    head = torch.nn.Linear(256, 10).to(device)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-3)
    ms, miner = losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner()
    warm, timed, start = 2, 0, 0.0
    while timed < steps:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            emb = model(x)
            value = torch.nn.functional.cross_entropy(head(emb), y) if loss == "ce" else ms(emb, y, miner(emb, y))
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            if warm:
                warm -= 1
                if not warm:
                    sync(device)
                    start = time.perf_counter()
                continue
            timed += 1
            if timed == steps:
                break
    sync(device)
    return steps * BATCH / (time.perf_counter() - start)


# ----- our trainer --------------------------------------------------------------------------
def trainer_for(data: ImageData, device: torch.device, loss: str, out: Path, compile_step: bool,
                today: bool = False, epochs: int = 2, precision: str = "auto", model: str = MODEL) -> Trainer:
    recipe = one_stage_recipe(DATASET, model=model, loss=loss, epochs=epochs, batch_size=BATCH, augment="crop-flip",
                              choose_epoch=False, validation={"size": 0}, precision=precision)
    trainer = Trainer(recipe, data, out, device, compile_step=compile_step, eval_split="test")
    if today:  # the trainer before the dense MS loss: pytorch-metric-learning's loss and miner
        from pytorch_metric_learning import losses, miners

        stage = recipe.stages[0]
        miner = miners.MultiSimilarityMiner(epsilon=stage.miner_epsilon)
        pml = losses.MultiSimilarityLoss(alpha=stage.ms_alpha, beta=stage.ms_beta, base=stage.ms_base)
        trainer.loss.criterion = lambda emb, y: pml(emb, y, miner(emb, y))
    return trainer


def ours_epoch(data: ImageData, device: torch.device, loss: str, compile_step: bool, today: bool = False,
               precision: str = "auto") -> dict[str, float]:
    """One timed epoch after a warm-up epoch (and, compiled, after the compilation)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(data, device, loss, Path(tmp), compile_step, today, precision=precision)
        if compile_step:
            trainer.warm_up()
        trainer.train_epoch(0)
        return trainer.train_epoch(1)


def alternating_epochs(data: ImageData, device: torch.device, variants: dict[str, dict], rounds: int
                       ) -> dict[str, float]:
    """Seconds per training step of each variant (trainer_for's keyword arguments), the median
    over `rounds` epochs taken in turn (A, B, A, B, ...) after one warm-up epoch each: the ratio
    of two variants then holds under the load swings of a shared machine."""
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: trainer_for(data, device, out=Path(tmp) / name, compile_step=False, epochs=rounds + 1,
                                      **kw) for name, kw in variants.items()}
        for trainer in trainers.values():
            trainer.train_epoch(0)
        seconds: dict[str, list[float]] = {name: [] for name in trainers}
        for epoch in range(1, rounds + 1):
            for name, trainer in trainers.items():
                stats = trainer.train_epoch(epoch)
                seconds[name].append(stats["seconds"] / math.ceil(len(data.train_y) / BATCH))
    return {name: statistics.median(s) for name, s in seconds.items()}


def precision_ab(data: ImageData, device: torch.device, epochs: int) -> dict[str, float]:
    """The same seed and batches trained `epochs` MS epochs in fp32 and in bf16: the validation
    P@1 of each (the split is held out of `data`'s training images, so no test image is seen)."""
    p_at_1 = {}
    for precision in ("fp32", "bf16"):
        with tempfile.TemporaryDirectory() as tmp:
            recipe = one_stage_recipe(DATASET, model=MODEL, loss="ms", epochs=epochs, batch_size=BATCH,
                                      augment="crop-flip", choose_epoch=False, precision=precision)
            summary = Trainer(recipe, data, Path(tmp), device, eval_split="val").fit(log=lambda _: None)
            p_at_1[precision] = summary["final"]["precision_at_1"]
    return p_at_1


def sync_free_step(data: ImageData, device: torch.device, compile_step: bool) -> tuple[bool, str]:
    """Three MS training steps under set_sync_debug_mode("error"): does any wait for the host?"""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(data, device, "ms", Path(tmp), compile_step)
        order, offsets = trainer.device_plan(0)
        for step in range(4):  # the first step runs outside the check: compilation and lazy set-up
            if step == 1:
                torch.cuda.set_sync_debug_mode("error")
            try:
                x, y, targets, _ = trainer.batch(order, offsets, step)
                loss = trainer.step_loss(x, y, targets)
                trainer.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                trainer.optimizer.step()
            except RuntimeError as e:
                return False, str(e).splitlines()[0]
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return True, "no synchronisation in steps 2-4"


def protocol_seconds(data: ImageData, device: torch.device, epochs: int, compile_step: bool, precision: str
                     ) -> float:
    """The paper's protocol, wall clock: MS, Adam 1e-3, `epochs` epochs each with its test-set
    evaluation and checkpoint, compilation included."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        recipe = one_stage_recipe(DATASET, model=MODEL, loss="ms", epochs=epochs, batch_size=BATCH, augment="auto",
                                  choose_epoch=False, validation={"size": 0}, precision=precision)
        Trainer(recipe, data, Path(tmp) / "run", device, compile_step=compile_step,
                eval_split="test").fit(log=lambda _: None)
        sync(device)
    return time.perf_counter() - start


def parallel_img_s(args: argparse.Namespace, n: int) -> float:
    """n copies of `ours` MS, each in its own process, released together once all are warm:
    total images over the wall clock from the release to the last one's end."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--worker", tmp, "--device", args.device, "--images", str(args.images or 0),
               "--precision", args.precision]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if args.device_type == "cpu" else None
        procs = [subprocess.Popen([*cmd, "--rank", str(i)], env=env, stdout=subprocess.PIPE) for i in range(n)]
        while len(list(Path(tmp).glob("ready-*"))) < n:
            if any(p.poll() not in (None, 0) for p in procs):
                raise RuntimeError("a parallel worker failed")
            time.sleep(0.2)
        start = time.time()
        (Path(tmp) / "go").touch()
        reports = [json.loads(p.communicate()[0].decode().strip().splitlines()[-1]) for p in procs]
        return sum(r["images"] for r in reports) / (max(r["end"] for r in reports) - start)


def worker(args: argparse.Namespace) -> int:
    """One of parallel_img_s's runs: warm up, say ready, wait for go, train one timed epoch."""
    device = pick_device(args.device)
    data = load_dataset(DATASET, args.data_dir, args.images or None).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(data, device, "ms", Path(tmp), device.type == "cuda", precision=args.precision)
        if trainer.compile_step:
            trainer.warm_up()
        trainer.train_epoch(0)
        (Path(args.worker) / f"ready-{args.rank}").touch()
        while not (Path(args.worker) / "go").exists():
            time.sleep(0.01)
        stats = trainer.train_epoch(1)
    print(json.dumps({"images": stats["images_per_s"] * stats["seconds"], "end": time.time()}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", help="folder with cifar10.npz")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="of ours and the parallel runs (the naive pipeline is fp32)")
    p.add_argument("--quick", action="store_true", help="a short CPU version: 512 images, 1 protocol epoch")
    p.add_argument("--images", type=int, help="training images per measured epoch (default: all on CUDA, "
                                              "5,120 on a CPU, 512 with --quick)")
    p.add_argument("--naive-steps", type=int, help="timed steps of the naive pipeline (default 40; 2 with --quick)")
    p.add_argument("--protocol-epochs", type=int, help="epochs of the paper-protocol run (default 25; 1 with --quick)")
    p.add_argument("--parallel", type=int, help="runs at once (default 8 on CUDA, 2 on a CPU)")
    p.add_argument("--rounds", type=int, help="alternating epochs per variant for the ratios (default 5; 1 with "
                                              "--quick)")
    p.add_argument("--ab-images", type=int, help="training images of the precision A/B (default 20,000 and 2,000 "
                                                 "held out; 1,000 and 200 with --quick)")
    p.add_argument("--ab-epochs", type=int, help="epochs of the precision A/B (default 4; 1 with --quick)")
    p.add_argument("--out", help="default: results/bench_train.json (CUDA) or results/bench_train_cpu.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    device = pick_device(args.device)
    args.device_type = device.type
    cuda = device.type == "cuda"
    images = args.images or (512 if args.quick else None if cuda else 5120)
    args.images = images
    naive_steps = args.naive_steps or (2 if args.quick else 40)
    protocol_epochs = args.protocol_epochs or (1 if args.quick else 25)
    parallel = args.parallel or (8 if cuda else 2)
    full = load_dataset(DATASET, args.data_dir)
    if args.quick:
        full = dataclasses.replace(full, test_x=full.test_x[:256], test_y=full.test_y[:256])
    data = dataclasses.replace(full.train_subset(images)).to(device)  # `full` stays on the CPU for the naive pipeline
    workers = 8 if cuda else 2
    log = print
    precision = pick_precision(args.precision, device)
    rounds = args.rounds or (1 if args.quick else 5)
    log(f"{MODEL} on {DATASET}: {len(data.train_y):,} images per measured epoch, device {describe_device(device)}, "
        f"ours in {precision}")

    result: dict = {"device": describe_device(device), "torch": torch.__version__,
                    "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
                    "epoch_images": len(data.train_y), "batch_size": BATCH, "compiled": cuda, "precision": precision}
    for loss in ("ce", "ms"):
        result[f"naive_{loss}_img_s"] = naive_img_s(full.train_subset(images), device, loss, naive_steps, workers)
        log(f"naive {loss}: {result[f'naive_{loss}_img_s']:,.0f} img/s")
    result["today_ms_img_s"] = ours_epoch(data, device, "ms", False, today=True, precision=precision)["images_per_s"]
    log(f"today ms (pytorch-metric-learning's loss and miner in our pipeline): {result['today_ms_img_s']:,.0f} img/s")
    for loss in ("ce", "ms"):
        stats = ours_epoch(data, device, loss, cuda, precision=precision)
        result[f"ours_{loss}_img_s"], result[f"{loss}_epoch_s"] = stats["images_per_s"], stats["seconds"]
        log(f"ours {loss}: {stats['images_per_s']:,.0f} img/s, {stats['seconds']:.2f} s per epoch")
    result["ms_over_ce_epoch"] = result["ms_epoch_s"] / result["ce_epoch_s"]
    result["speedup_vs_naive"] = result["ours_ms_img_s"] / result["naive_ms_img_s"]
    result["speedup_vs_today"] = result["ours_ms_img_s"] / result["today_ms_img_s"]
    step = alternating_epochs(data, device, {"fp32": {"loss": "ms", "precision": "fp32"},
                                             "bf16": {"loss": "ms", "precision": "bf16"}}, rounds)
    result["bf16_over_fp32"] = step["fp32"] / step["bf16"]  # images/s of bf16 over fp32
    log(f"ours ms, alternating epochs: fp32 {BATCH / step['fp32']:,.0f} img/s, bf16 {BATCH / step['bf16']:,.0f} img/s "
        f"(bf16 over fp32 {result['bf16_over_fp32']:.2f}x)")
    models = {m: {"loss": "ce", "precision": precision, "model": m} for m in ("cnn3a", "hybrid1")}
    step = alternating_epochs(data, device, models, rounds)
    result["cnn3a_ce_step_s"], result["hybrid1_ce_step_s"] = step["cnn3a"], step["hybrid1"]
    result["hybrid1_over_cnn3a_step"] = step["hybrid1"] / step["cnn3a"]
    log(f"ce step in {precision}, alternating epochs: cnn3a {1000 * step['cnn3a']:.1f} ms, hybrid1 "
        f"{1000 * step['hybrid1']:.1f} ms (hybrid1 over cnn3a {result['hybrid1_over_cnn3a_step']:.2f})")
    if device.type == "cpu":  # and on one thread, as the runs train (two at once: parallel_over_one_run)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            step = alternating_epochs(data, device, models, rounds)
        finally:
            torch.set_num_threads(threads)
        result["hybrid1_over_cnn3a_step_1_thread"] = step["hybrid1"] / step["cnn3a"]
        log(f"the same on one thread: cnn3a {1000 * step['cnn3a']:.1f} ms, hybrid1 {1000 * step['hybrid1']:.1f} ms "
            f"(hybrid1 over cnn3a {result['hybrid1_over_cnn3a_step_1_thread']:.2f})")
    ab_held_out = min(200 if args.quick else 2000, len(full.train_y) // 3)
    ab_images = min(args.ab_images or (1000 if args.quick else 20_000), len(full.train_y) - ab_held_out)
    ab_data = full.train_subset(ab_images + ab_held_out).hold_out_validation(ab_held_out, 0)
    ab = precision_ab(ab_data.to(device), device, args.ab_epochs or (1 if args.quick else 4))
    result["precision_ab"] = {"train_images": ab_images, "validation_images": ab_held_out,
                              "epochs": args.ab_epochs or (1 if args.quick else 4), "val_p_at_1": ab}
    result["bf16_vs_fp32_p_at_1_delta"] = ab["bf16"] - ab["fp32"]
    log(f"precision A/B, the same seed: validation P@1 fp32 {ab['fp32']:.4f}, bf16 {ab['bf16']:.4f}")
    if cuda:
        result["sync_free_step"], result["sync_check"] = sync_free_step(data, device, cuda)
        log(f"sync-free step: {result['sync_free_step']} ({result['sync_check']})")
    result["parallel_runs"] = parallel
    result["parallel_runs_img_s"] = parallel_img_s(args, parallel)
    result["parallel_over_one_run"] = result["parallel_runs_img_s"] / result["ours_ms_img_s"]
    log(f"{parallel} runs at once: {result['parallel_runs_img_s']:,.0f} img/s in all")
    protocol_data = dataclasses.replace(full).to(device) if not args.quick else data
    result["protocol_epochs"] = protocol_epochs
    seconds = protocol_seconds(protocol_data, device, protocol_epochs, cuda, precision)
    result[f"paper_protocol_{protocol_epochs}_epochs_s"] = seconds
    result.setdefault("paper_protocol_25_epochs_s", None)  # measured only when 25 epochs ran
    log(f"paper protocol, {protocol_epochs} epochs with evaluation: {seconds:.1f} s")
    out = Path(args.out or ROOT / "results" / ("bench_train.json" if cuda else "bench_train_cpu.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
