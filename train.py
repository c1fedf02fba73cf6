"""Train a checkpoint from its recipe: `python train.py recipes/cifar10-hybrid1.toml`.

One command runs every stage of the recipe (each starts from the weights the one before
chose), chooses the search views and the whitening, all on a validation split held out of
the training set, measures the test set once at the end, and writes the checkpoint folder:
model.safetensors, config.json, recipe.toml (the resolved recipe: replay it with
`python train.py OUT/recipe.toml --out DIR`), metrics.json (recipe, training, validation,
test), curves.png and the demo's search bundle (index.npz, index.json).

    --set stages.1.epochs=5   change any recipe field (see model/recipe.py)
    --quick                   the whole chain on a small subset, one epoch a stage (a smoke test)
    --resume --out DIR        continue an interrupted run (also after --time-budget)

Without a recipe file, flags build a one-stage recipe:
`python train.py --dataset mnist --model hybrid1 --loss ms --epochs 20`.

Your own images: `python train.py --dataset FOLDER --out assets/NAME`, FOLDER holding <class>/
subfolders (split here into train, validation and test, recorded in OUT/split.json) or train/
and test/ ones. The network is Compact-Conv, started from its shipped CIFAR-10 checkpoint; the
loss, batch size, epochs and image size are chosen from the folder's size
(recipe.folder_defaults); any flag overrides them. `--init CHECKPOINT` starts from a trained
checkpoint's weights.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from model.checkpoint import CheckpointError, save_checkpoint
from model.data import KNOWN, DataError, canonical_name, load_dataset, unknown_dataset
from model.embedder import load_embedder
from model.evaluation import choose_views, embedder_for, embedding_check, evaluate, view_embeddings
from model.files import atomic_save_tensors, atomic_write_bytes, atomic_write_json
from model.losses import LossError, check_class_sizes, check_teacher, make_loss
from model.networks import build_model, keras_param_count
from model.recipe import FOLDER_MODEL, Recipe, RecipeError, folder_defaults, from_dict, load_recipe, quick
from model.run_folder import (
    WORK,
    FolderError,
    check_output_folder,
    claim_output_folder,
    find_resume_state,
    release_replaced,
    remove_leftovers,
)
from model.training import (
    Trainer,
    TrainingError,
    describe_device,
    one_stage_recipe,
    pick_device,
    pick_precision,
)
from model.visualize import plot_training_curves
from model.whitening import Whitening, candidates, choose_whitening, fit_whitening, fold_whitening

# flags of the one-stage form -> recipe fields (Recipe's or Stage's)
FLAGS = {"model": "model", "loss": "loss", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
         "weight_decay": "weight_decay", "schedule": "schedule", "augment": "augment",
         "label_smoothing": "label_smoothing", "temperature": "temperature", "activation": "activation",
         "pretrained": "pretrained", "init_from": "init_from", "distill_from": "distill_from",
         "distill_weight": "distill_weight", "distill_temperature": "distill_temperature", "seed": "seed",
         "max_train_samples": "max_train_samples", "image_size": "image_size"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", nargs="?",
                   help="a recipe file: recipes/<dataset>-<model>.toml or a checkpoint's recipe.toml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a recipe field: --set stages.1.epochs=5, --set validation.size=2000")
    p.add_argument("--quick", action="store_true",
                   help="a smoke test of the whole chain: small subsets, 1 epoch a stage")
    p.add_argument("--data-dir", help="folder with mnist.npz / fashion_mnist.npz / cifar10.npz, or where to download")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile the training step; auto: on for CUDA (scripts/bench_train.py measures both)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="the training step's (the recipe's precision field, auto unless it says otherwise): bf16 "
                        "autocast, or fp32; auto is bf16 on a GPU or a CPU that runs it natively (AVX512-BF16, AMX)")
    p.add_argument("--out", help="output folder (default runs/<dataset>-<model>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out with its saved recipe")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds; the old folder is kept as OUT.replaced until the new run completes")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="stop at the first epoch end after this many minutes; --resume continues")
    p.add_argument("--no-index", action="store_true", help="skip building the demo's search bundle at the end")
    one = p.add_argument_group("one-stage form, without a recipe file")
    one.add_argument("--dataset", help="mnist, fashion_mnist, cifar10, or an image folder: <class>/ subfolders "
                                       "(split into train, validation and test here) or train/ and test/ ones")
    one.add_argument("--model", help="networks.REGISTRY: hybrid1 (the default), cnn3a, compact-conv (an image "
                                      "folder's default)...")
    one.add_argument("--loss", help="ce, normsoftmax or ms (model/losses.py)")
    one.add_argument("--epochs", type=int, help="default: the paper's (20; 25 for CIFAR-10)")
    for flag, kind in (("batch-size", int), ("lr", float), ("weight-decay", float), ("schedule", str),
                       ("augment", str), ("label-smoothing", float), ("temperature", float), ("activation", str),
                       ("init-from", str), ("distill-weight", float), ("distill-temperature", float),
                       ("seed", int), ("max-train-samples", int), ("image-size", int)):
        one.add_argument(f"--{flag}", type=kind)
    one.add_argument("--init", dest="init_from", metavar="CHECKPOINT",
                     help="start from a trained checkpoint's weights (the same model), e.g. assets/cifar10-hybrid1; an "
                          "image folder starts from the shipped CIFAR-10 one of its model unless --init none")
    one.add_argument("--pretrained", action="store_true", default=None)
    one.add_argument("--distill-from", nargs="+", metavar="FOLDER")
    one.add_argument("--flip-average", action="store_true", help="search with the mirror image averaged in")
    one.add_argument("--shift-average", type=int, default=0, metavar="PX", help="and the image moved by PX px")
    return p.parse_args(argv)


def build_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe file with --set applied, or the one-stage recipe the flags describe; --quick last."""
    if args.init_from is not None and args.init_from.lower() in ("none", ""):
        args.init_from = ""  # --init none: from scratch
    given = {k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None}
    if args.max_train_samples is not None and args.max_train_samples < 1:
        raise RecipeError(f"--max-train-samples must be at least 1 (got {args.max_train_samples}); drop it to train "
                          "on every image")
    if args.recipe:
        if given or args.dataset or args.flip_average or args.shift_average:
            named = ", ".join(f"--{k.replace('_', '-')}" for k in [*given, *(["dataset"] if args.dataset else [])])
            raise RecipeError(f"{named or '--flip-average/--shift-average'} with a recipe file: change its fields "
                              "with --set instead (e.g. --set stages.1.epochs=5)")
        recipe = load_recipe(args.recipe, args.set)
    else:
        if not args.dataset:
            raise RecipeError("give a recipe file (recipes/*.toml) or --dataset (mnist, fashion_mnist, cifar10, "
                              "or an image folder)")
        name = canonical_name(args.dataset)
        if name not in KNOWN:  # a folder, "~" expanded even where the shell did not
            if not Path(args.dataset).expanduser().is_dir():
                raise unknown_dataset(args.dataset)
            args.dataset = str(Path(args.dataset).expanduser())
        folder = name not in KNOWN
        if folder:  # chosen from the folder's size; the flags given win
            model = given.get("model", FOLDER_MODEL)
            start = "" if given.get("init_from") is not None else photo_checkpoint(model)
            defaults, args.defaults_note = describe_folder(args.dataset, start, model)
            for key, value in defaults.items():
                given.setdefault(key, value)
        given.setdefault("epochs", KNOWN[name].epochs if name in KNOWN else 20)
        given["dataset"] = name if name in KNOWN else str(Path(args.dataset).resolve()) if folder else args.dataset
        base = one_stage_recipe(**given).to_dict()
        if folder:  # a validation split every choice is made on: the best epoch and the search views
            base["validation"]["size"] = 0.2
        else:
            for s in base["stages"]:  # trained for the epochs the flags say: no epoch choice unless --set asks
                s["choose_epoch"] = False
        if folder and not (args.flip_average or args.shift_average):
            base["search"]["views"] = [{"flip": False, "shift": 0}, {"flip": True, "shift": 0},
                                       {"flip": True, "shift": 1}]
        else:
            base["search"]["views"] = [{"flip": bool(args.flip_average), "shift": args.shift_average}]
        recipe = load_recipe(None, args.set, base=base)
    return quick(recipe) if args.quick else recipe


FIRM_VALIDATION = 5  # validation images in the smallest class below which its choices are rough


def validation_note(val_y: torch.Tensor | None, n_classes: int) -> str:
    """A line for a validation split too small to choose on (fewer than FIRM_VALIDATION images in
    some class), else ""."""
    if val_y is None or not len(val_y):
        return ""
    smallest = int(torch.bincount(val_y, minlength=n_classes).min())
    if smallest >= FIRM_VALIDATION:
        return ""
    return (f"note: the validation split holds {len(val_y)} images, {smallest} in its smallest class: too few to "
            "choose the epoch, the augmentation and the search views with confidence (the first candidate wins a "
            "tie); a few dozen images a class make these choices firm")


def photo_checkpoint(model: str) -> str:
    """The shipped CIFAR-10 checkpoint of `model` (a photo model at 32 px), which an image folder's
    run starts from by default; "" where there is none."""
    folder = Path(__file__).resolve().parent / "assets" / f"cifar10-{model}"
    return str(folder) if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file() else ""


def describe_folder(path: str, init_from: str = "", model: str = FOLDER_MODEL) -> tuple[dict[str, Any], str]:
    """The one-stage defaults for an image folder (recipe.folder_defaults) from a scan of it (file
    names and image headers only), and the line that says what they are; a folder that cannot be
    trained on is refused here, before anything is decoded."""
    from model import image_folder as fo

    try:
        scanned = fo.scan(path)
    except fo.FolderError as e:
        raise DataError(str(e)) from None
    files = scanned.files["all"] if scanned.layout == "classes" else scanned.files["train"]
    counts = [sum(1 for _, label in files if label == c) for c in range(len(scanned.classes))]
    train = [round(n * (1 - fo.TEST_FRACTION)) for n in counts] if scanned.layout == "classes" else counts
    return folder_defaults(sum(train), len(scanned.classes), min(train), fo.typical_side(scanned.root, files),
                           init_from, model)


def dataset_identity(dataset: str) -> str:
    """A dataset argument as a run records it: a known name canonically, a folder by its resolved path."""
    name = canonical_name(dataset)
    return name if name in KNOWN or not Path(dataset).is_dir() else str(Path(dataset).resolve())


def resolved(recipe: Recipe, data_augment: str) -> Recipe:
    """"auto" made explicit, the dataset named canonically: what recipe.toml records."""
    r = from_dict(recipe.to_dict())
    r.dataset = dataset_identity(r.dataset)
    for stage in r.stages:
        if isinstance(stage.augment, list):
            stage.augment = [data_augment if mode == "auto" else mode for mode in stage.augment]
            stage.augment = list(dict.fromkeys(stage.augment))  # "auto" may name a listed mode
        else:
            stage.augment = data_augment if stage.augment == "auto" else stage.augment
    return r.check()


def check_before_training(recipe: Recipe, data: Any) -> None:
    """What would fail after an epoch or more, said before the first one (and before --out is touched)."""
    try:
        build_model(recipe.model, data.channels, recipe.embedding_dim, recipe.activation, pretrained=False)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    side = min(data.image_size)
    for v in recipe.search.views:
        if 2 * v.shift >= side:
            raise TrainingError(f"search.views: a shift of {v.shift} px is too large for {side}x{side} images")
    for i, stage in enumerate(recipe.stages, 1):
        if make_loss(stage.loss, len(data.class_names), recipe.embedding_dim).balanced:
            try:
                check_class_sizes(data.train_y, data.class_names, stage.batch_size)
            except LossError as e:
                raise TrainingError(f"stages.{i}: {e}") from None
        for folder in stage.distill_from:
            try:
                check_teacher(folder, data.channels, data.image_size)
            except LossError as e:
                raise TrainingError(f"stages.{i}.{e}") from None
    if recipe.init_from and not (Path(recipe.init_from) / "config.json").is_file():
        raise TrainingError(f"init_from: {recipe.init_from} is not a checkpoint folder")


def saved_recipe(out: Path) -> Recipe:
    path = out / WORK / "recipe.toml"
    if not path.is_file():
        raise FolderError(f"{out} holds no run to resume ({WORK}/recipe.toml is missing); start a new run "
                          "without --resume")
    return load_recipe(path)


def flag_contradictions(args: argparse.Namespace, saved: Recipe) -> list[str]:
    """The one-stage flags given with --resume (without --dataset) whose value differs from the saved run's."""
    stage_fields = set(saved.stages[0].__dataclass_fields__)
    wrong = []
    for key in FLAGS:
        value = getattr(args, key)
        if value is None:
            continue
        if key in stage_fields:
            if len(saved.stages) > 1:
                wrong.append(f"--{key.replace('_', '-')} (the run has {len(saved.stages)} stages: use --set "
                             f"stages.N.{key}=...)")
                continue
            have = getattr(saved.stages[0], key)
        else:
            have = getattr(saved, key)
        if value != have and not (key == "augment" and value == "auto"):
            wrong.append(f"--{key.replace('_', '-')} {value} (the run has {have})")
    return wrong


def resume_contradictions(args: argparse.Namespace, saved: Recipe, data_augment: str) -> list[str]:
    """What --resume was given that the saved run disagrees with: a recipe file is compared whole;
    --set, --quick and one-stage flags field by field."""
    if args.recipe:
        return contradictions(resolved(build_recipe(args), data_augment), saved)
    wrong = flag_contradictions(args, saved)
    if args.dataset and dataset_identity(args.dataset) != dataset_identity(saved.dataset):
        wrong.append(f"--dataset {args.dataset} (the run has {saved.dataset})")
    if args.flip_average or args.shift_average:
        asked = (bool(args.flip_average), args.shift_average)
        if [(v.flip, v.shift) for v in saved.search.views] != [asked]:
            views = saved.to_dict()["search"]["views"]
            wrong.append(f"--flip-average/--shift-average (the run searches with views {views})")
    if args.set or args.quick:
        changed = load_recipe(None, args.set, base=saved.to_dict())
        wrong += contradictions(resolved(quick(changed) if args.quick else changed, data_augment), saved)
    return wrong


def contradictions(given: Recipe, saved: Recipe, prefix: str = "") -> list[str]:
    """Fields where the recipe --resume was given differs from the run's saved one."""
    a, b = given.to_dict(), saved.to_dict()
    out: list[str] = []

    def walk(x: Any, y: Any, where: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{where}.{k}" if where else k)
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y) and all(isinstance(e, dict) for e in x):
            for i, (e, f) in enumerate(zip(x, y, strict=True), 1):
                walk(e, f, f"{where}.{i}")
        elif x != y:
            out.append(f"{where} = {x!r} (the run has {y!r})")

    walk(a, b, prefix)
    return out


def train_stages(recipe: Recipe, data: Any, out: Path, device: torch.device, compile_step: bool,
                 stop_at: float | None, log=print) -> tuple[dict[str, torch.Tensor] | None, list[dict], dict]:
    """Run or resume every stage in OUT/work; returns (the last stage's chosen weights or None when
    the time budget stopped a stage, each stage's summary, the checkpoint config). A stage whose
    augment lists candidates is trained once with each (in OUT/work/stage-N/<mode>), from the same
    start, and the candidate with the best validation figure is handed on."""
    state, summaries, config = None, [], {}
    for i, stage in enumerate(recipe.stages, 1):
        folder = out / WORK / f"stage-{i}"
        candidates = stage.augment if isinstance(stage.augment, list) else None
        if candidates is None:
            state, summary, config = train_stage(recipe, i, data, folder, device, compile_step, stop_at, state, log)
        else:
            state, summary, config = choose_augmentation(recipe, i, candidates, data, folder, device, compile_step,
                                                         stop_at, state, log)
        summaries.append(summary)
        if state is None:
            return None, summaries, config
    return state, summaries, config


def train_stage(recipe: Recipe, i: int, data: Any, folder: Path, device: torch.device, compile_step: bool,
                stop_at: float | None, start: dict[str, torch.Tensor] | None, log=print, note: str = ""
                ) -> tuple[dict[str, torch.Tensor] | None, dict, dict]:
    """Stage i in `folder`, run or resumed from `start` (the weights the stage before chose, or
    None); returns (its chosen weights, or None when the time budget stopped it; its summary; the
    checkpoint config)."""
    stage = recipe.stages[i - 1]
    trainer = Trainer(recipe, data, folder, device, stage=i, compile_step=compile_step,
                      eval_split="val" if data.val_y is not None else "test")
    if (folder / "chosen.safetensors").is_file():  # finished before a resume
        trainer.load()
        return load_file(str(folder / "chosen.safetensors")), trainer.summary(), trainer.model_config
    if find_resume_state(folder):
        trainer.load()
        log(f"stage {i}{note}: resuming after epoch {trainer.epoch}/{stage.epochs}")
    elif start is not None:
        trainer.model.load_state_dict(start)
    elif recipe.init_from:
        trainer.start_from(recipe.init_from)
    log(f"stage {i}/{len(recipe.stages)}{note}: {stage.loss}, {stage.epochs} epochs, lr {stage.lr:g} {stage.schedule}, "
        f"batch {stage.batch_size}, {trainer.augment} augmentation")
    summary = trainer.fit(log=log, stop_at=stop_at)
    if trainer.epoch < stage.epochs:
        return None, summary, trainer.model_config
    state = trainer.chosen_state()
    atomic_save_tensors(folder / "chosen.safetensors", state)
    if stage.choose_epoch:
        log(f"stage {i}{note}: epoch {trainer.best['epoch']} chosen on validation "
            f"({recipe.selection_metric} {trainer.best['value']:.4f})")
    return state, trainer.summary(), trainer.model_config


def choose_augmentation(recipe: Recipe, i: int, candidates: list[str], data: Any, folder: Path,
                        device: torch.device, compile_step: bool, stop_at: float | None,
                        start: dict[str, torch.Tensor] | None, log=print) -> tuple[dict[str, torch.Tensor] | None,
                                                                                   dict, dict]:
    """Stage i trained with each augmentation candidate from the same start; the one whose kept
    epoch scores highest on validation (the first on a tie) is handed on, and its summary records
    every candidate's figure."""
    metric = recipe.selection_metric
    results = []
    for mode in candidates:
        one = from_dict(recipe.to_dict())
        one.stages[i - 1].augment = mode
        state, summary, config = train_stage(one, i, data, folder / mode, device, compile_step, stop_at, start, log,
                                             note=f" ({mode})")
        if state is None:
            return None, summary, config
        kept = summary["chosen_epoch"] or summary["epochs_done"]
        results.append((summary["epochs"][kept - 1][metric], mode, state, summary, config))
    best = max(results, key=lambda r: r[0])  # max keeps the first of equals
    figures = {mode: round(value, 4) for value, mode, *_ in results}
    log(f"stage {i}: {best[1]} augmentation chosen on validation ({metric} "
        + ", ".join(f"{mode} {value:.4f}" for mode, value in figures.items()) + ")")
    return best[2], {**best[3], "augment_candidates": figures}, best[4]


def make_choices(recipe: Recipe, model: torch.nn.Module, config: dict, data: Any, device: torch.device,
                 log=print) -> dict[str, Any]:
    """Search views, then whitening, each scored on the validation split; the whitening is
    folded into `model` in place. Returns the validation record of both."""
    metric, record = recipe.selection_metric, {}
    if data.val_y is None:
        v = recipe.search.views[0]
        return {"search_views": {"chosen": {"flip": v.flip, "shift": v.shift}, "candidates": []}, "whitening": None}
    views = choose_views(model, config, data.val_x, data.val_y, [(v.flip, v.shift) for v in recipe.search.views],
                         metric, device)
    chosen = views["chosen"]
    log(f"search views chosen on validation: {chosen['views']} ({metric} {chosen[metric]:.4f})")
    record["search_views"] = views
    grid = candidates(recipe.whitening.powers, recipe.whitening.shrinkages)
    if not grid:
        record["whitening"] = None
        return record
    embedder = embedder_for(model, config, (chosen["flip"], chosen["shift"]), device)
    n = min(recipe.whitening.fit_images, len(data.train_y))
    keep = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(recipe.seed))[:n]
    fit_views = view_embeddings(embedder, data.train_x[keep])
    val_views = view_embeddings(embedder, data.val_x)
    result = choose_whitening(fit_views, val_views, data.val_y.cpu(), grid, metric)
    w = result["chosen"]["whitening"]
    log(f"whitening chosen on validation: {w or 'none'} ({metric} {result['chosen'][metric]:.4f})")
    if w is not None:
        mean, matrix = fit_whitening(fit_views, Whitening(**w))
        fold_whitening(model.embed, mean.to(device), matrix.to(device))
    record["whitening"] = {**result, "fitted_on": f"{n:,} training images x {len(fit_views)} views"}
    return record


def write_checkpoint(out: Path, recipe: Recipe, model: torch.nn.Module, config: dict, data: Any,
                     summaries: list[dict], choices: dict, device: torch.device, build_index: bool,
                     data_dir: str | None, log=print) -> dict[str, Any]:
    """The finished folder, each file atomically and metrics.json last; the test set measured
    once, by the served embedder loaded back from the written files."""
    views = choices["search_views"]["chosen"]
    config = {**config, "flip_average": views["flip"], "shift_average": views["shift"]}
    split = data.split_record()
    if split is not None:  # an image folder: its own gallery, named by what it holds, and its split
        from model.image_folder import SPLIT_JSON, dataset_key, gallery_file
        from model.index import default_gallery_dir, write_gallery

        key = dataset_key(Path(split["root"]), data.class_names, [f for f, _ in data.files["test"]],
                          data.test_x.cpu().numpy(), data.test_y.cpu().numpy())
        config = {**config, "dataset_path": split["root"], "gallery": gallery_file(data.name, key)}
        gallery = default_gallery_dir(out) / config["gallery"]
        if build_index and not gallery.is_file():
            from model.image_folder import DISPLAY_SIDE, decode

            # the demo shows the photos at DISPLAY_SIDE px, as the model sees them but sharper
            display = decode(Path(split["root"]), data.files["test"], DISPLAY_SIDE)[0]
            write_gallery(gallery, data.test_x, data.test_y, data.class_names,
                          display=display if len(display) == len(data.test_y) else None)
        atomic_write_json(out / SPLIT_JSON, split)
    save_checkpoint(out, model, config)
    atomic_write_bytes(out / "recipe.toml", recipe.dumps().encode())
    history = [row for s in summaries for row in s["epochs"]]
    ends = [sum(len(s["epochs"]) for s in summaries[: i + 1]) for i in range(len(summaries) - 1)]
    split = "val" if data.val_y is not None else "test"
    plot_training_curves(history, out / "curves.png", f"{recipe.model} / {data.name}", split, ends)
    served = load_embedder(out, device)
    test = evaluate(served, data.test_x, data.test_y)
    test = {"ms_loss": test.pop("ms_loss"), **test}
    check_x, check_y = (data.val_x, data.val_y) if data.val_y is not None else (data.test_x, data.test_y)
    check = embedding_check(torch.from_numpy(served.embed_uint8(check_x)), check_y.cpu(),
                            "validation" if data.val_y is not None else "test")
    if build_index:
        from model.index import build_bundle

        bundle = build_bundle(out, data_dir=data_dir, dataset=recipe.dataset, image_size=recipe.image_size)
        log(f"search bundle: {bundle}")
    validation = {"split": {"images": 0 if data.val_y is None else len(data.val_y), "size": recipe.validation.size,
                            "seed": recipe.validation.seed, "held_out_of": "the training set, class-stratified"},
                  "selection_metric": recipe.selection_metric,
                  "stages": [{"stage": s["stage"], "chosen_epoch": s["chosen_epoch"],
                              **({"augment": s["train_config"]["augment"],
                                  "augment_candidates": s["augment_candidates"]} if "augment_candidates" in s else {}),
                              "epochs": [{k: v for k, v in r.items() if k not in ("train_loss", "seconds",
                                                                                 "images_per_s")}
                                         for r in s["epochs"]]} for s in summaries],
                  **choices}
    training = {"dataset": data.name, "data_source": data.source, "train_images": len(data.train_y),
                "device": describe_device(device), "precision": summaries[-1]["precision"],
                "keras_param_count": keras_param_count(model),
                "weights_bytes": (out / "model.safetensors").stat().st_size,
                "stages": [{"stage": s["stage"], "loss": s["loss"], "epochs_done": s["epochs_done"],
                            "precision": s["precision"],
                            "seconds_per_epoch": s["seconds_per_epoch"], "teachers": s["teachers"],
                            "epochs": [{k: r[k] for k in ("epoch", "train_loss", "seconds", "images_per_s")}
                                       for r in s["epochs"]]} for s in summaries]}
    metrics = {"recipe": recipe.to_dict(), "training": training, "validation": validation,
               "test": {"images": test.pop("images"), "views": test.pop("views"), **test}, "check": check}
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.precision:  # a recipe field like any other, so --resume compares it with the run's
        args.set.append(f"precision={args.precision}")
    try:
        device = pick_device(args.device)
        if args.resume:
            if not args.out:
                raise FolderError("--resume needs --out, the folder of the run to continue")
            if args.overwrite:
                raise FolderError("--resume and --overwrite contradict each other: pass one of them")
            out = Path(args.out)
            recipe = saved_recipe(out)
        else:
            recipe = build_recipe(args)
            out = Path(args.out or f"runs/{recipe.name}")
            check_output_folder(out, args.overwrite)  # before anything is decoded
        if note := getattr(args, "defaults_note", ""):
            print(note)
        data = load_dataset(recipe.dataset, args.data_dir, image_size=recipe.image_size)
        data = data.hold_out_validation(recipe.validation.size, recipe.validation.seed)
        data = data.train_subset(recipe.max_train_samples or None).test_subset(recipe.max_test_samples)
        recipe = resolved(recipe, data.augment)
        if args.resume and (wrong := resume_contradictions(args, recipe, data.augment)):
            raise FolderError(f"--resume continues the run in {out} with its saved recipe, which differs: "
                              f"{'; '.join(wrong[:4])}. Drop those options, or start a new run with another --out")
        check_before_training(recipe, data)
        precision = pick_precision(recipe.precision, device)
        if args.resume:
            if removed := remove_leftovers(out):
                print(f"removed what an interrupted save left: {', '.join(removed)}")
        else:  # once the data and recipe are checked: nothing moves for a run that cannot start
            claim_output_folder(out, args.overwrite)
            atomic_write_bytes(out / WORK / "recipe.toml", recipe.dumps().encode())
        val = f"{len(data.val_y):,} validation / " if data.val_y is not None else ""
        print(f"{recipe.model} ({recipe.activation}) on {data.name}: {len(data.train_y):,} train / {val}"
              f"{len(data.test_y):,} test images, {len(recipe.stages)} stage(s), device {device}, {precision} "
              "training steps")
        if note := validation_note(data.val_y, len(data.class_names)):
            print(note)
        compile_step = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
        stop_at = None if args.time_budget is None else time.time() + 60 * args.time_budget
        try:
            state, summaries, config = train_stages(recipe, data, out, device, compile_step, stop_at)
        except KeyboardInterrupt:
            print(f"\ninterrupted: continue with `python train.py --resume --out {out}`", file=sys.stderr)
            return 130
        if state is None:
            print(f"time budget spent; continue with `python train.py --resume --out {out}`")
            return 0
        model = build_model(recipe.model, data.channels, recipe.embedding_dim, recipe.activation)
        model.load_state_dict(state)
        choices = make_choices(recipe, model.to(device).eval(), config, data, device)
        metrics = write_checkpoint(out, recipe, model, config, data, summaries, choices, device,
                                   not args.no_index, args.data_dir)
        shutil.rmtree(out / WORK, ignore_errors=True)
        if replaced := release_replaced(out):
            print(f"deleted {replaced}, the folder this run replaced")
        t = metrics["test"]
        print(f"done: {out} | test P@1 {t['precision_at_1']:.4f} | R-precision {t['r_precision']:.4f} | "
              f"MAP@R {t['mean_average_precision_at_r']:.4f} | {t['views']} | "
              f"{metrics['training']['keras_param_count']:,} params")
        if metrics["check"]["verdict"] != "ok":
            print(f"warning: {metrics['check']['advice']} (metrics.json: check)", file=sys.stderr)
    except (DataError, TrainingError, CheckpointError, RecipeError, FolderError, LossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
