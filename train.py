"""Train an embedding model: `python train.py --dataset cifar10 --model hybrid1 --loss ms`.

Defaults follow the paper's protocol (Adam, lr 1e-3, 20 epochs for the digits and
FashionMNIST, 25 for CIFAR-10).  The output folder holds model.safetensors, config.json,
metrics.json and curves.png; `--resume` continues an interrupted run in the same folder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from model.data import AUGMENTATIONS, DataError, canonical_name, load_dataset
from model.embedder import CheckpointError
from model.networks import REGISTRY
from model.training import (
    LOSSES,
    TrainConfig,
    Trainer,
    TrainingError,
    describe_output_folder,
    format_epoch,
    pick_device,
    remove_leftovers,
    saved_train_config,
)
from model.visualize import plot_training_curves

PAPER_EPOCHS = {"mnist": 20, "fashion_mnist": 20, "cifar10": 25}
# options that define a run (TrainConfig fields): --resume refuses any that contradicts the saved run
RUN_OPTIONS = ("dataset", "model", "loss", "epochs", "batch_size", "lr", "weight_decay", "schedule", "augment",
               "label_smoothing", "temperature", "activation", "pretrained", "flip_average", "shift_average",
               "init_from", "distill_from", "distill_weight", "distill_temperature", "seed", "max_train_samples")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="mnist, fashion_mnist, cifar10, or a folder with train/ and test/ subfolders")
    p.add_argument("--model", default="hybrid1", choices=list(REGISTRY))
    p.add_argument("--loss", default="ms", choices=list(LOSSES),
                   help="ce: cross-entropy through a linear head (the paper); normsoftmax: cross-entropy over "
                        "cosine similarities to learned class proxies; ms: Multi-Similarity (the paper)")
    p.add_argument("--epochs", type=int, help="default: 20 (MNIST, FashionMNIST, folders) or 25 (CIFAR-10)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine"])
    p.add_argument("--augment", default="auto", choices=["auto", *AUGMENTATIONS],
                   help="auto: crop-flip for CIFAR-10 and folders, none for MNIST and FashionMNIST; "
                        "flip: mirror only; shift: translate by up to 2 px; shift-flip: and mirror")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="ce and normsoftmax only")
    p.add_argument("--temperature", type=float, default=0.05, help="normsoftmax only: softmax temperature")
    p.add_argument("--activation", default="gelu", choices=["gelu", "relu"])
    p.add_argument("--pretrained", action="store_true",
                   help="ImageNet weights for the torchvision baselines (downloads them; not for the paper's models)")
    p.add_argument("--flip-average", action="store_true",
                   help="search with the mean embedding of an image and its mirror image (test-time augmentation, "
                        "twice the embedding cost; needs training with flips; not for digits)")
    p.add_argument("--shift-average", type=int, default=0, metavar="PX",
                   help="also average over the image moved by PX pixels left, right, up and down (test-time "
                        "augmentation, 5 views, 10 with --flip-average; for models trained with crops)")
    p.add_argument("--init-from", metavar="FOLDER",
                   help="start from the weights of this checkpoint folder (e.g. assets/mnist-hybrid1): fine-tuning")
    p.add_argument("--distill-from", nargs="+", metavar="FOLDER",
                   help="teacher checkpoint folder(s) trained on the same dataset: add a loss that pulls this "
                        "model's in-batch similarities towards the teachers' (knowledge distillation)")
    p.add_argument("--distill-weight", type=float, default=1.0, help="weight of the distillation term")
    p.add_argument("--distill-temperature", type=float, default=0.1,
                   help="softmax temperature of the distillation term's similarity distributions")
    p.add_argument("--image-size", type=int, default=32, help="image folders only: side of the resized images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile the training step (forward, loss, backward); auto: on for CUDA, "
                        "off elsewhere (scripts/bench_train.py measures both)")
    p.add_argument("--data-dir", help="folder with mnist.npz / fashion_mnist.npz / cifar10.npz, or where to download")
    p.add_argument("--out", help="output folder (default runs/<dataset>-<model>-<loss>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out with its saved settings")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds; the old folder is kept as OUT.replaced until the new run completes")
    p.add_argument("--max-train-samples", type=int, help="train on a random subset (quick runs)")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="stop at the first epoch end after this many minutes (a lent GPU's limit); --resume continues")
    p.add_argument("--no-index", action="store_true", help="skip building the demo's search bundle at the end")
    args = p.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    args.explicit = {a.dest for a in p._actions for flag in a.option_strings
                     if any(g == flag or g.startswith(flag + "=") for g in given)}
    return args


def contradictions(args: argparse.Namespace, cfg: TrainConfig) -> list[str]:
    """The run-defining options given with --resume whose value differs from the saved run's."""
    wrong = []
    for dest in sorted(args.explicit & set(RUN_OPTIONS)):
        given, saved = getattr(args, dest), getattr(cfg, dest)
        if dest == "augment" and given == "auto":
            given = None
        if dest == "dataset":
            given, saved = canonical_name(given), canonical_name(saved)
        if given != saved:
            wrong.append(f"--{dest.replace('_', '-')} {given} (the run has {saved})")
    return wrong


def claim_output_folder(out: Path, args: argparse.Namespace) -> Path | None:
    """Make sure a new run writes nowhere it was not asked to: refuse an --out that holds a
    checkpoint, a run or a torn save unless --overwrite, which moves it to OUT.replaced (kept
    until the new run completes). Returns that folder, if any."""
    held = describe_output_folder(out)
    if held is None:
        return None
    if not args.overwrite:
        raise TrainingError(f"{out} already holds {held}: pass --resume to continue a run, --overwrite to replace "
                            "it (the old folder is kept until the new run completes), or choose another --out")
    replaced = out.with_name(out.name + ".replaced")
    if replaced.exists():
        raise TrainingError(f"{replaced} is left from an earlier --overwrite that did not complete: "
                            "restore it or delete it first")
    out.rename(replaced)
    print(f"--overwrite: {out} ({held}) moved to {replaced}, deleted when this run completes")
    return replaced


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = pick_device(args.device)
        if args.resume:
            if not args.out:
                raise TrainingError("--resume needs --out, the folder of the run to continue")
            cfg = saved_train_config(Path(args.out))
            if wrong := contradictions(args, cfg):
                raise TrainingError(f"--resume continues the saved run in {args.out} with its own settings: "
                                    f"{'; '.join(wrong)}. Drop those options, or start a new run with another --out")
            if args.overwrite:
                raise TrainingError("--resume and --overwrite contradict each other: pass one of them")
            if removed := remove_leftovers(Path(args.out)):
                print(f"removed what an interrupted save left: {', '.join(removed)}")
            print(f"resuming {args.out}: {cfg.model} on {cfg.dataset}, {cfg.loss} loss (saved settings)")
        else:
            if not args.dataset:
                raise TrainingError("--dataset is required (mnist, fashion_mnist, cifar10, or an image folder)")
            name = canonical_name(args.dataset)
            cfg = TrainConfig(
                dataset=args.dataset, model=args.model, loss=args.loss,
                epochs=args.epochs if args.epochs is not None else PAPER_EPOCHS.get(name, 20),
                batch_size=args.batch_size, lr=args.lr,
                weight_decay=args.weight_decay, schedule=args.schedule,
                augment=None if args.augment == "auto" else args.augment,
                label_smoothing=args.label_smoothing, temperature=args.temperature,
                activation=args.activation, pretrained=args.pretrained,
                seed=args.seed,
                max_train_samples=args.max_train_samples,
                flip_average=args.flip_average,
                shift_average=args.shift_average,
                init_from=args.init_from,
                distill_from=args.distill_from,
                distill_weight=args.distill_weight,
                distill_temperature=args.distill_temperature,
            )
        out = Path(args.out or f"runs/{Path(cfg.dataset).name}-{cfg.model}-{cfg.loss}")
        data = load_dataset(cfg.dataset, args.data_dir, cfg.max_train_samples, args.image_size)
        cfg.data_source = data.source
        compile_step = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
        trainer = Trainer(cfg, data, out, device, compile_step=compile_step)
        if args.resume:
            trainer.load()
            for row in trainer.history:
                print(format_epoch(row, cfg.epochs))
        elif cfg.init_from:
            trainer.start_from(cfg.init_from)
            print(f"starting from the weights in {cfg.init_from}")
        trainer.check_data()
        if not args.resume:  # once the data and settings are checked: nothing moves for a run that cannot start
            claim_output_folder(out, args)
        print(f"{cfg.model} ({cfg.activation}) on {data.name}: {len(data.train_y)} train / {len(data.test_y)} test "
              f"images, {cfg.loss} loss, {cfg.epochs} epochs, device {device}")
        try:
            stop_at = None if args.time_budget is None else time.time() + 60 * args.time_budget
            summary = trainer.fit(stop_at=stop_at)
        except KeyboardInterrupt:
            print(f"\ninterrupted: the checkpoint after epoch {trainer.epoch} is in {out}; "
                  f"continue with `python train.py --resume --out {out}`", file=sys.stderr)
            return 130
        plot_training_curves(trainer.history, out / "curves.png", f"{cfg.model} / {data.name} / {cfg.loss}")
        if trainer.epoch < cfg.epochs:
            print(f"time budget spent after epoch {trainer.epoch}/{cfg.epochs}; "
                  f"continue with `python train.py --resume --out {out}`")
            return 0
        final = summary["final"]
        print(f"done: {out} | P@1 {final['precision_at_1']:.4f} | MAP@R {final['mean_average_precision_at_r']:.4f}"
              f" | {summary['keras_param_count']:,} params | {summary['weights_bytes']:,} bytes")
        if not args.no_index:
            from model.index import build_bundle

            bundle = build_bundle(out, data_dir=args.data_dir, dataset=cfg.dataset, image_size=args.image_size)
            print(f"search bundle: {bundle}")
        replaced = out.with_name(out.name + ".replaced")
        if replaced.is_dir():  # the run that replaced it is complete
            shutil.rmtree(replaced)
            print(f"deleted {replaced}, the folder this run replaced")
    except (DataError, TrainingError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
