"""The training loop: CE, normalized-softmax or Multi-Similarity loss, retrieval metrics
every epoch, atomic checkpoints and exact resume.

Losses: "ce" (the paper) is softmax cross-entropy through a linear head on the embedding;
"normsoftmax" is cross-entropy over the cosine similarities between the L2-normalised
embedding and one learned proxy per class, divided by a temperature (pytorch-metric-learning's
NormalizedSoftmaxLoss; Zhai & Wu, "Classification is a strong baseline for deep metric
learning", 2019): it trains the angular geometry that cosine search uses, where a linear
head leaves it loose; "ms" is Multi-Similarity on class-balanced batches (the paper). The
class heads of ce and normsoftmax are dropped for search.

Distillation (`distill_from`): teacher checkpoints embed every training image once, with
their own search views, before the first epoch; each batch then adds a relational term
that pulls the student's matrix of in-batch cosine similarities towards the teachers'
(see similarity_distillation_loss). It is how a small model learns from an ensemble of
models that retrieves better than any one of them, with no change to its architecture.

Determinism: every epoch draws its batch order and augmentation from a generator seeded
with (seed, epoch), so a run resumed from the end of epoch n replays epochs n+1... exactly
as an uninterrupted run would (on the CPU; cuDNN may differ in the last bits).

Layout of an output folder:
    model.safetensors, config.json   the embedder (see embedder.py), updated every epoch
    metrics.json                     settings, per-epoch and final metrics
    curves.png                       training curves
    resume/                          optimizer moments, class head, epoch count: for --resume
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from .data import AUGMENTATIONS, CROP_FLIP, ImageData, crop_flip, draw_offsets, load_dataset, normalize
from .embedder import (
    WEIGHTS_NAME,
    CheckpointError,
    atomic_save_tensors,
    atomic_write_json,
    load_embedder,
    load_model,
    read_config,
    save_checkpoint,
    search_views,
    sha256_file,
    view_averaged,
)
from .losses import MultiSimilarity
from .networks import build_model, keras_param_count

RETRIEVAL_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
# images per evaluation batch: a GPU embeds a whole test set in a few large batches
EVAL_BATCH = {"cuda": 8192}
LOSSES = ("ce", "normsoftmax", "ms")


class TrainingError(Exception):
    """Training cannot go on; the message says why and what to do."""


@dataclass
class TrainConfig:
    dataset: str
    model: str = "hybrid1"
    loss: str = "ms"  # see LOSSES
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant" (the paper) or "cosine"
    augment: str | None = None  # one of data.AUGMENTATIONS; None: the dataset's default
    label_smoothing: float = 0.0  # ce and normsoftmax
    temperature: float = 0.05  # normsoftmax: NormalizedSoftmaxLoss's default and Zhai & Wu's
    activation: str = "gelu"
    pretrained: bool = False  # ImageNet weights for the torchvision baselines (needs internet)
    embedding_dim: int = 256
    seed: int = 0
    max_train_samples: int | None = None
    ms_alpha: float = 2.0  # MultiSimilarityLoss defaults of pytorch-metric-learning / Wang et al.
    ms_beta: float = 50.0
    ms_base: float = 0.5
    miner_epsilon: float = 0.1
    flip_average: bool = False  # search with the mean embedding of an image and its mirror image
    shift_average: int = 0  # and of the image moved by this many px each way (embedder.search_views)
    init_from: str | None = None  # a checkpoint folder whose weights the run starts from (fine-tuning)
    distill_from: list[str] | None = None  # teacher checkpoint folders (see similarity_distillation_loss)
    distill_weight: float = 1.0
    distill_temperature: float = 0.1
    data_source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise TrainingError(f"unknown loss {self.loss!r}: use one of {', '.join(LOSSES)}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise TrainingError(f"--temperature must be a positive number (got {self.temperature})")
        if isinstance(self.augment, bool):  # settings saved before augmentation had modes
            self.augment = "crop-flip" if self.augment else "none"
        if self.augment is not None and self.augment not in AUGMENTATIONS:
            raise TrainingError(f"unknown augmentation {self.augment!r}: use one of {', '.join(AUGMENTATIONS)}")
        if self.schedule not in ("constant", "cosine"):
            raise TrainingError(f"unknown schedule {self.schedule!r}: use constant or cosine")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.loss == "ms" and self.batch_size < 2:
            raise TrainingError(f"--loss ms compares images within a batch: --batch-size {self.batch_size} holds no "
                                "pair; use at least 2 (256 is the default)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainingError(f"--lr must be a positive number (got {self.lr})")
        if self.distill_from is not None and not self.distill_from:
            self.distill_from = None
        for name in ("distill_weight", "distill_temperature"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise TrainingError(f"--{name.replace('_', '-')} must be a positive number (got {getattr(self, name)})")
        if self.shift_average < 0:
            raise TrainingError(f"--shift-average must be 0 (off) or a number of pixels (got {self.shift_average})")
        if self.init_from and self.pretrained:
            raise TrainingError("--init-from and --pretrained both choose the starting weights: pass one of them")


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA GPU is visible; use --device auto or cpu")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise TrainingError("--device mps: Apple MPS is not available here; use --device auto or cpu")
    if requested not in ("cuda", "mps", "cpu"):
        raise TrainingError(f"unknown device {requested!r}: use auto, cuda, mps or cpu")
    return torch.device(requested)


def images_per_class(labels: torch.Tensor, batch_size: int) -> int:
    """m, the images of one class in a class-balanced batch: the smallest divisor of batch_size
    that lets the classes fill a batch."""
    n_classes = int(labels.max()) + 1
    return next(d for d in range(2, batch_size + 1) if batch_size % d == 0 and d * n_classes >= batch_size)


def check_class_sizes(labels: torch.Tensor, class_names: list[str], batch_size: int) -> None:
    """Before the first epoch: every class must fill its share of a class-balanced MS batch, or
    class_balanced_order would leave it out of training without a word."""
    m = images_per_class(labels, batch_size)
    counts = torch.bincount(labels.cpu(), minlength=len(class_names))
    small = [(class_names[c], int(n)) for c, n in enumerate(counts.tolist()) if n < m]
    if small:
        named = ", ".join(f"{name!r} ({n})" for name, n in small[:5]) + (" ..." if len(small) > 5 else "")
        raise TrainingError(f"too few images per class for class-balanced batches of {batch_size} ({m} per class): "
                            f"{named}. Lower --batch-size, add images, or use --loss ce")


def class_balanced_order(labels: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Batches of `m` same-class samples per class, the sampling MS loss needs (as
    pytorch-metric-learning's MPerClassSampler does), drawn from `generator`.

    m is the smallest divisor of batch_size that lets the classes fill a batch, so
    every batch holds batch_size / m classes with m images each.
    """
    n_classes = int(labels.max()) + 1
    m = images_per_class(labels, batch_size)
    chunks = []
    for c in range(n_classes):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        usable = len(idx) // m * m
        chunks.append(idx[:usable].view(-1, m))
    chunks = torch.cat(chunks)
    chunks = chunks[torch.randperm(len(chunks), generator=generator)]
    per_batch = batch_size // m
    n_batches = len(chunks) // per_batch
    if n_batches == 0:
        raise TrainingError(
            f"too few images per class for class-balanced batches of {batch_size} ({m} per class): "
            "lower --batch-size or use --loss ce"
        )
    return chunks[: n_batches * per_batch].reshape(n_batches, batch_size)


class Trainer:
    """Owns the model, optimizer and data for one run and writes its output folder."""

    def __init__(self, cfg: TrainConfig, data: ImageData, out: str | Path, device: torch.device,
                 compile_step: bool = False) -> None:
        """`compile_step`: run the training step (forward, loss, backward) through torch.compile;
        compiled before the clock starts (warm_up), so seconds per epoch leave compilation out."""
        self.cfg, self.out, self.device = cfg, Path(out), device
        self.compile_step, self.compile_seconds = compile_step, 0.0
        self.data = data.to(device)
        mean, std = data.mean_std()
        self.mean, self.std = torch.tensor(mean, device=device), torch.tensor(std, device=device)
        self.augment = data.augment if cfg.augment is None else cfg.augment
        if cfg.flip_average and not CROP_FLIP.get(self.augment, (0, False))[1]:
            raise TrainingError(f"--flip-average needs a model trained with flips (augmentation {self.augment!r} "
                                "has none): add --augment flip, shift-flip or crop-flip, or drop --flip-average")
        if cfg.shift_average * 2 >= min(data.image_size):
            raise TrainingError(f"--shift-average {cfg.shift_average} px is too large for {data.image_size[0]}x"
                                f"{data.image_size[1]} images: use 1 or 2")
        torch.manual_seed(cfg.seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
        if device.type == "cpu":
            # near convergence, gradients and Adam moments go denormal, which x86 handles
            # far slower (an MNIST run fell from 650 to 370 img/s): flush them to zero
            torch.set_flush_denormal(True)
        try:
            net = build_model(cfg.model, data.channels, cfg.embedding_dim, cfg.activation, cfg.pretrained)
        except ValueError as e:
            raise TrainingError(str(e)) from None
        except Exception as e:  # a failed weights download
            raise TrainingError(f"could not get pretrained weights for {cfg.model} ({type(e).__name__}: {e}); "
                                "drop --pretrained to start from random weights") from None
        # channels_last: oneDNN's convolutions run ~25% faster on a CPU in this layout
        self.model = net.to(device, memory_format=torch.channels_last)
        n_classes = len(data.class_names)
        self.head: nn.Module | None = None  # the class head of ce / normsoftmax runs, dropped for search
        if cfg.loss == "ce":
            self.head = nn.Linear(cfg.embedding_dim, n_classes).to(device)
        elif cfg.loss == "normsoftmax":
            self.head = losses.NormalizedSoftmaxLoss(n_classes, cfg.embedding_dim, cfg.temperature).to(device)
        params = list(self.model.parameters()) + (list(self.head.parameters()) if self.head else [])
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        # training: the mined MS loss with static shapes (model/losses.py); the test MS loss of
        # evaluate() is pytorch-metric-learning's over all pairs, as the paper's test loss
        self.ms_criterion = MultiSimilarity(cfg.ms_alpha, cfg.ms_beta, cfg.ms_base, cfg.miner_epsilon)
        self.ms_loss = losses.MultiSimilarityLoss(alpha=cfg.ms_alpha, beta=cfg.ms_beta, base=cfg.ms_base)
        # static shapes: a graph for the full batch and one for a smaller last batch, both compiled in warm_up
        self.step_loss = torch.compile(self.loss_on, dynamic=False) if compile_step else self.loss_on
        self.accuracy, self.knn_device = retrieval_calculator(device)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.parent: dict[str, Any] | None = None  # the run a fine-tuning run started from (init_from)
        self.teachers: list[dict[str, Any]] | None = None  # what the teachers were (distill_from)
        self.teacher_targets: torch.Tensor | None = None  # (N_train, D_teachers), unit norm
        self.model_config = {
            "model": cfg.model,
            "in_channels": data.channels,
            "embedding_dim": cfg.embedding_dim,
            "activation": cfg.activation,
            "image_size": list(data.image_size),
            "mean": mean,
            "std": std,
            "class_names": data.class_names,
            "dataset": data.name,
            "flip_average": cfg.flip_average,
            "shift_average": cfg.shift_average,
        }

    def start_from(self, folder: str | Path) -> None:
        """Load a checkpoint's weights into the model before epoch 1 (fine-tuning), and
        keep its recipe and final metrics, so that metrics.json records the whole chain.

        Only the embedder starts from the checkpoint; the class head and the optimizer
        start fresh. The checkpoint must be the same architecture: model, input channels,
        embedding size and activation.
        """
        net, config = load_model(folder)
        ours = {k: self.model_config[k] for k in ("model", "in_channels", "embedding_dim", "activation")}
        theirs = {k: config.get(k) for k in ours}
        if ours != theirs:
            wrong = ", ".join(f"{k} {theirs[k]!r} (this run: {ours[k]!r})" for k in ours if ours[k] != theirs[k])
            raise TrainingError(f"--init-from {folder}: that checkpoint has {wrong}; "
                                "pass the same --model and --activation, and a dataset with as many channels")
        self.model.load_state_dict(net.state_dict())
        parent_metrics = Path(folder) / "metrics.json"
        info = _read_json(parent_metrics) if parent_metrics.is_file() else {}
        # the path says where the weights were; their hash says which they were, should that
        # folder later hold the fine-tuned ones (as assets/ does once they ship)
        self.parent = {"path": str(folder), "weights_sha256": sha256_file(Path(folder) / WEIGHTS_NAME),
                       **{k: info.get(k) for k in ("dataset", "loss", "epochs_done", "device", "seconds_per_epoch",
                                                   "train_config", "init_from", "final")}}

    def prepare_teachers(self, log=print) -> None:
        """Embed the training images with every teacher in `distill_from`, each with its own
        preprocessing and search views, and keep the unit-norm concatenation as the targets.

        The targets are computed once per process (a few seconds to minutes on a CPU) and
        never saved: a resumed run recomputes the same ones from the same teacher files,
        whose hashes metrics.json records.
        """
        if not self.cfg.distill_from or self.teacher_targets is not None:
            return
        parts, teachers = [], []
        for folder in self.cfg.distill_from:
            teacher = load_embedder(folder, self.device)
            if teacher.channels != self.data.channels or tuple(teacher.image_size) != tuple(self.data.image_size):
                raise TrainingError(
                    f"--distill-from {folder}: that checkpoint takes {teacher.channels}-channel "
                    f"{teacher.image_size[0]}x{teacher.image_size[1]} images, this run's data is "
                    f"{self.data.channels}-channel {self.data.image_size[0]}x{self.data.image_size[1]}: "
                    "distil from a checkpoint trained on the same dataset")
            start = time.perf_counter()
            parts.append(torch.from_numpy(teacher.embed_uint8(self.data.train_x, batch_size=512)).to(self.device))
            log(f"teacher {folder}: {len(self.data.train_x):,} training images embedded in "
                f"{time.perf_counter() - start:.0f} s")
            info_path = Path(folder) / "metrics.json"
            final = (_read_json(info_path).get("final") or {}) if info_path.is_file() else {}
            teachers.append({"path": str(folder), "weights_sha256": sha256_file(Path(folder) / WEIGHTS_NAME),
                             "model": teacher.config["model"],
                             **{k: final[k] for k in RETRIEVAL_METRICS if k in final}})
        self.teacher_targets = F.normalize(torch.cat(parts, dim=1), dim=1)
        self.teachers = teachers

    def check_data(self) -> None:
        """What would make an epoch fail or train wrongly, said before the first one."""
        if self.cfg.loss == "ms":
            check_class_sizes(self.data.train_y, self.data.class_names, self.cfg.batch_size)

    # ----- one epoch ---------------------------------------------------------------
    def lr_at(self, epoch: int) -> float:
        if self.cfg.schedule == "cosine":
            return self.cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.cfg.epochs))
        return self.cfg.lr

    def epoch_plan(self, epoch: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """The epoch's sample order (consecutive batch_size slices are its batches) and its
        augmentation draws, from a generator seeded with (seed, epoch): resumable exactly."""
        g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        labels = self.data.train_y.cpu()
        if self.cfg.loss == "ms":
            order = class_balanced_order(labels, self.cfg.batch_size, g).flatten()
        else:
            order = torch.randperm(len(labels), generator=g)
        return order, draw_offsets(self.augment, len(order), g)

    def logits(self, emb: torch.Tensor) -> torch.Tensor:  # (B, D) float32 -> (B, classes)
        if isinstance(self.head, losses.NormalizedSoftmaxLoss):
            # get_logits, not the loss's forward, which would cast the proxies to the
            # embedding's dtype in place (bf16 under autocast) behind Adam's back
            return self.head.get_logits(emb)
        return self.head(emb)

    def loss_on(self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """The batch's loss; `targets` (B, D_teachers) adds the distillation term."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            emb = self.model(x)
        emb = emb.float()
        if self.head is not None:
            loss = F.cross_entropy(self.logits(emb), y, label_smoothing=self.cfg.label_smoothing)
        else:
            loss = self.ms_criterion(emb, y)
        if targets is not None:
            loss = loss + self.cfg.distill_weight * similarity_distillation_loss(
                emb, targets, self.cfg.distill_temperature)
        return loss

    def batch(self, order: torch.Tensor, offsets: tuple[torch.Tensor, ...] | None, step: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
        """Step `step` of an epoch plan: (normalised images, labels, teacher targets, size), on the device."""
        batch = slice(step * self.cfg.batch_size, (step + 1) * self.cfg.batch_size)
        idx = order[batch]
        x = self.data.train_x[idx]
        if offsets is not None:
            x = crop_flip(x, *(t[batch] for t in offsets), pad=CROP_FLIP[self.augment][0])
        x = normalize(x, self.mean, self.std).contiguous(memory_format=torch.channels_last)
        targets = None if self.teacher_targets is None else self.teacher_targets[idx]
        return x, self.data.train_y[idx], targets, len(idx)

    def device_plan(self, epoch: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """epoch_plan on the device: one host-to-device copy per epoch."""
        order, offsets = self.epoch_plan(epoch)
        return order.to(self.device), None if offsets is None else tuple(t.to(self.device) for t in offsets)

    def warm_up(self) -> float:
        """Compile the training step before the clock starts: a forward and backward on the next
        epoch's first batch (and on its last, when that one is smaller), then undo everything they
        touched (gradients, BatchNorm statistics, the random number generators), so that the run is
        the one it would have been. Returns seconds."""
        start = time.perf_counter()
        modules = [self.model] + ([self.head] if self.head is not None else [])
        buffers = [{k: v.clone() for k, v in m.named_buffers()} for m in modules]
        rng = torch.get_rng_state(), (torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None)
        for m in modules:
            m.train()
        order, offsets = self.device_plan(self.epoch)
        last = math.ceil(len(order) / self.cfg.batch_size) - 1
        for step in sorted({0, last} if len(order) % self.cfg.batch_size else {0}):
            x, y, targets, _ = self.batch(order, offsets, step)
            self.step_loss(x, y, targets).backward()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for m, saved in zip(modules, buffers, strict=True):
                for k, v in m.named_buffers():
                    v.copy_(saved[k])
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state_all(rng[1])
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch. The loop never waits for the device: the loss is summed on the device and
        read once at the end (where a NaN stops the run before anything is saved); on a CPU,
        where reading it costs nothing, the progress bar shows it as it goes."""
        self.model.train()
        if self.head is not None:
            self.head.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(epoch)
        order, offsets = self.device_plan(epoch)
        n_steps = math.ceil(len(order) / self.cfg.batch_size)
        total, count, start = torch.zeros((), device=self.device), 0, time.perf_counter()
        show_loss = self.device.type == "cpu"
        bar = tqdm(range(n_steps), desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False, dynamic_ncols=True)
        for step in bar:
            x, y, targets, size = self.batch(order, offsets, step)
            loss = self.step_loss(x, y, targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach() * size
            count += size
            if show_loss and (step % 20 == 0 or step == n_steps - 1):
                bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{count / (time.perf_counter() - start):.0f}")
        train_loss = float(total) / max(count, 1)  # the epoch's one synchronisation
        seconds = time.perf_counter() - start
        if not math.isfinite(train_loss):
            raise TrainingError(f"the loss became {train_loss} in epoch {epoch + 1}; the last good checkpoint "
                                f"(epoch {self.epoch}) is kept in {self.out}. Try a lower --lr.")
        return {"train_loss": train_loss, "seconds": seconds, "images_per_s": count / seconds}

    # ----- evaluation --------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(self) -> dict[str, float]:
        """Test-set losses and retrieval metrics (queries against the rest of the test set)."""
        self.model.eval()
        if self.head is not None:
            self.head.eval()
        x_all, y_all = self.data.test_x, self.data.test_y
        per_view: list[list[torch.Tensor]] = []  # the search views' embeddings, the image itself first
        step = EVAL_BATCH.get(self.device.type, 1024)
        for i in range(0, len(x_all), step):
            x = normalize(x_all[i : i + step], self.mean, self.std)
            views = search_views(x, self.cfg.flip_average, self.cfg.shift_average)
            per_view = per_view or [[] for _ in views]
            for out, view in zip(per_view, views, strict=True):
                view = view.contiguous(memory_format=torch.channels_last)  # the model's layout: faster on a CPU
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                    out.append(self.model(view).float())
        emb = torch.cat(per_view[0])  # the network's own output on the image itself: the losses are about it
        metrics: dict[str, float] = {}
        if self.head is not None:
            logits = self.logits(emb)
            metrics["test_ce_loss"] = float(F.cross_entropy(logits, y_all))
            metrics["accuracy"] = float((logits.argmax(1) == y_all).float().mean())
        # MS loss on test batches of the training batch size, in a fixed shuffled order
        # (the test files are sorted by class: unshuffled batches would hold one class).
        order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(0)).to(self.device)
        ms = [float(self.ms_loss(emb[idx], y_all[idx])) for idx in order.split(self.cfg.batch_size) if len(idx) > 1]
        metrics["test_ms_loss"] = float(np.mean(ms))
        labels = y_all.to(self.knn_device)
        normed = F.normalize(emb, dim=1).to(self.knn_device)
        acc = self.accuracy.get_accuracy(normed, labels)
        if len(per_view) > 1:  # the search's own embedding first; single-view figures beside them
            metrics.update({f"{k}_single_view": float(acc[k]) for k in RETRIEVAL_METRICS})
            averaged = view_averaged([torch.cat(out) for out in per_view])
            acc = self.accuracy.get_accuracy(averaged.to(self.knn_device), labels)
        metrics.update({k: float(acc[k]) for k in RETRIEVAL_METRICS})
        return metrics

    # ----- checkpoints -------------------------------------------------------------
    def save(self) -> None:
        """Write the resume state, then the published files; each file atomically.

        The resume folder is built beside the old one and swapped in with renames, so
        an interruption at any point leaves one complete resume state on disk.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        resume, tmp, old = self.out / "resume", self.out / "resume.tmp", self.out / "resume.old"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.head is not None:
            tensors.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        opt = self.optimizer.state_dict()
        for pid, state in opt["state"].items():
            for k, v in state.items():
                tensors[f"opt.{pid}.{k}"] = torch.as_tensor(v)
        atomic_save_tensors(tmp / "state.safetensors", tensors)
        atomic_write_json(tmp / "state.json", {
            "epoch": self.epoch,
            "train_config": dataclasses.asdict(self.cfg),
            "param_groups": opt["param_groups"],
            "history": self.history,
            "parent": self.parent,
            "teachers": self.teachers,
        })
        if resume.exists():
            shutil.rmtree(old, ignore_errors=True)
            resume.rename(old)
        tmp.rename(resume)
        shutil.rmtree(old, ignore_errors=True)
        save_checkpoint(self.out, self.model, self.model_config)
        atomic_write_json(self.out / "metrics.json", self.metrics_summary())

    def load(self) -> None:
        """Restore the state written by save(); see resume_state_dir for torn writes."""
        folder = resume_state_dir(self.out)
        state = load_file(str(folder / "state.safetensors"), device=str(self.device))
        info = _read_json(folder / "state.json")
        self.model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        if self.head is not None:
            self.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in state.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                opt_state.setdefault(int(pid), {})[name] = v.cpu() if name == "step" else v
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": info["param_groups"]})
        self.epoch, self.history = info["epoch"], info["history"]
        self.parent = info.get("parent")
        self.teachers = info.get("teachers")

    def metrics_summary(self) -> dict[str, Any]:
        seconds = [h["seconds"] for h in self.history]
        return {
            "dataset": self.data.name,
            "data_source": self.cfg.data_source,
            "model": self.cfg.model,
            "loss": self.cfg.loss,
            "epochs_done": self.epoch,
            "train_config": dataclasses.asdict(self.cfg),
            "init_from": self.parent,
            "teachers": self.teachers,
            "keras_param_count": keras_param_count(self.model),
            "weights_bytes": (self.out / WEIGHTS_NAME).stat().st_size if (self.out / WEIGHTS_NAME).exists() else None,
            "device": describe_device(self.device),
            "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
            "train_images_per_s": float(np.mean([h["images_per_s"] for h in self.history])) if seconds else None,
            "compiled_step": self.compile_step,
            "compile_seconds": self.compile_seconds if self.compile_step else None,
            "final": self.history[-1] if self.history else None,
            "epochs": self.history,
        }

    # ----- the run -----------------------------------------------------------------
    def fit(self, log=print, stop_at: float | None = None) -> dict[str, Any]:
        """Train the remaining epochs; with `stop_at` (a time.time() value), stop after the
        first epoch that ends later, leaving a resumable checkpoint (a sweep's time budget)."""
        self.check_data()
        self.prepare_teachers(log)
        if self.compile_step and self.epoch < self.cfg.epochs and not self.compile_seconds:
            self.compile_seconds = self.warm_up()
            log(f"training step compiled in {self.compile_seconds:.1f} s (not counted in seconds per epoch)")
        for epoch in range(self.epoch, self.cfg.epochs):
            stats = self.train_epoch(epoch)
            metrics = self.evaluate()
            self.epoch = epoch + 1
            self.history.append({"epoch": self.epoch, **stats, **metrics})
            self.save()
            log(format_epoch(self.history[-1], self.cfg.epochs))
            if stop_at is not None and time.time() >= stop_at and self.epoch < self.cfg.epochs:
                log(f"time budget reached after epoch {self.epoch}/{self.cfg.epochs}; --resume continues")
                break
        return self.metrics_summary()


def similarity_distillation_loss(student: torch.Tensor, teacher: torch.Tensor,
                                 temperature: float = 0.1) -> torch.Tensor:
    """Relational distillation: (B, D) student and (B, D') teacher embeddings -> a scalar.

    For each image in the batch, the softmax over its cosine similarities to the other
    images (divided by `temperature`) is a distribution over "which images are like me";
    the loss is the mean KL divergence of the student's from the teacher's. Only the
    geometry is matched, not the coordinates, so the teacher may have any dimension, or be
    several models' embeddings concatenated (Park et al., "Relational Knowledge
    Distillation", CVPR 2019; Yu et al., "Learning Metrics from Teachers", CVPR 2019).
    """
    s = F.normalize(student.float(), dim=1)
    t = F.normalize(teacher.float(), dim=1)
    mask = torch.eye(len(s), dtype=torch.bool, device=s.device)  # an image's similarity to itself says nothing
    s_logits = (s @ s.T / temperature).masked_fill(mask, float("-inf"))
    t_logits = (t @ t.T / temperature).masked_fill(mask, float("-inf"))
    t_prob = t_logits.softmax(dim=1)
    log_ratio = (t_logits.log_softmax(dim=1) - s_logits.log_softmax(dim=1)).masked_fill(mask, 0.0)
    return (t_prob * log_ratio).sum(dim=1).mean()


def retrieval_calculator(device: torch.device, knn: str = "auto") -> tuple[AccuracyCalculator, torch.device]:
    """AccuracyCalculator for P@1, R-precision and MAP@R (k = the largest class), and the device
    it runs on: faiss on a CPU; on a GPU, or where faiss is missing, pytorch-metric-learning's
    exact torch k-NN on that device (a 10,000 x 10,000 similarity matrix is nothing to a GPU), so
    the embeddings never leave it. `knn` "faiss" or "torch" forces one (the tests compare them)."""
    try:
        import faiss  # noqa: F401

        has_faiss = True
    except ImportError:
        has_faiss = False
    if knn == "faiss" or (knn == "auto" and device.type == "cpu" and has_faiss):
        return AccuracyCalculator(include=RETRIEVAL_METRICS, k="max_bin_count", device=device), device
    knn_device = device if device.type == "cuda" else torch.device("cpu")
    return AccuracyCalculator(include=RETRIEVAL_METRICS, k="max_bin_count", device=knn_device,
                              knn_func=CustomKNN(CosineSimilarity())), knn_device


def format_epoch(row: dict[str, float], epochs: int) -> str:
    parts = [f"epoch {row['epoch']:>3}/{epochs}", f"train {row['train_loss']:.4f}"]
    for key, label in (("test_ce_loss", "test CE"), ("test_ms_loss", "test MS"), ("accuracy", "acc"),
                       ("precision_at_1", "P@1"), ("r_precision", "R-P"), ("mean_average_precision_at_r", "MAP@R")):
        if key in row:
            parts.append(f"{label} {row[key]:.4f}")
    parts.append(f"{row['images_per_s']:.0f} img/s, {row['seconds']:.1f} s")
    return " | ".join(parts)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def find_resume_state(out: Path) -> Path | None:
    """The complete resume state in `out`: resume/, or resume.old/ if a save was torn
    between its two renames; None if there is neither."""
    for name in ("resume", "resume.old"):
        folder = out / name
        if (folder / "state.json").is_file() and (folder / "state.safetensors").is_file():
            return folder
    return None


def leftover_files(out: Path) -> list[Path]:
    """What a save killed half-way leaves in `out`: atomic writes' temporary files (".NAME.XXXX")
    and the resume folder being built (resume.tmp)."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if (p.name.startswith(".") and p.is_file()) or p.name == "resume.tmp")


def remove_leftovers(out: Path) -> list[str]:
    """Delete leftover_files; returns their names."""
    names = []
    for p in leftover_files(out):
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        names.append(p.name)
    return names


def describe_output_folder(out: Path) -> str | None:
    """None when `out` is free for a new run (missing or empty); else what it holds, in words:
    a finished checkpoint, a run in progress, a torn save, or other files."""
    if not out.is_dir() or not any(out.iterdir()):
        return None
    metrics = out / "metrics.json"
    if metrics.is_file():
        try:
            m = _read_json(metrics)
            done, planned = m["epochs_done"], m["train_config"]["epochs"]
            final = m.get("final") or {}
            p1 = f", P@1 {final['precision_at_1']:.4f}" if "precision_at_1" in final else ""
            if done >= planned:
                return f"a finished checkpoint ({m.get('model')} on {m.get('dataset')}, {done} epochs{p1})"
            return f"a run in progress (epoch {done} of {planned})"
        except (ValueError, KeyError, TypeError):
            return "a checkpoint whose metrics.json cannot be read"
    if find_resume_state(out):
        return "a run in progress"
    if leftover_files(out) or (out / "resume.old").exists():
        return f"a torn save ({', '.join(p.name for p in leftover_files(out)) or 'resume.old'})"
    if (out / "config.json").exists() or (out / "model.safetensors").exists():
        return "a checkpoint"
    return f"other files ({', '.join(sorted(p.name for p in out.iterdir())[:3])} ...)"


def resume_state_dir(out: Path) -> Path:
    """find_resume_state, or one clear error when there is nothing to resume."""
    if folder := find_resume_state(out):
        return folder
    raise TrainingError(f"{out} holds no resume state (resume/state.json); start a new run without --resume")


def train_config_from(saved: dict[str, Any], **overrides: Any) -> TrainConfig:
    """A TrainConfig from a saved train_config dict (state.json, metrics.json), ignoring keys
    this version no longer has."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{**{k: v for k, v in saved.items() if k in fields}, **overrides})


def saved_train_config(out: Path) -> TrainConfig:
    return train_config_from(_read_json(resume_state_dir(out) / "state.json")["train_config"])


def load_trained_run(checkpoint: str | Path, data_dir: str | Path | None = None, dataset: str | None = None
                     ) -> tuple[nn.Module, dict[str, Any], dict[str, Any], ImageData]:
    """A train.py checkpoint folder -> (model, config.json, metrics.json, its dataset): what a
    script that changes a trained checkpoint and re-measures it (remeasure) starts from.
    `dataset` defaults to the run's own (an image folder run records only the folder's name)."""
    checkpoint = Path(checkpoint)
    model, config = load_model(checkpoint)
    metrics_path = checkpoint / "metrics.json"
    if not metrics_path.is_file():
        raise CheckpointError(f"{checkpoint} has no metrics.json: this script updates the figures of a train.py run")
    metrics = _read_json(metrics_path)
    data = load_dataset(dataset or config.get("dataset") or metrics["train_config"]["dataset"], data_dir,
                        image_size=config["image_size"][0])
    return model, config, metrics, data


def remeasure(model: nn.Module, config: dict[str, Any], metrics: dict[str, Any], data: ImageData,
              **overrides: Any) -> dict[str, float]:
    """The test figures Trainer.evaluate gives a published model: for scripts that change a
    trained checkpoint (set_search_views.py, whiten.py) and must measure it as train.py does.

    `config` and `metrics` are the checkpoint's config.json and metrics.json: the search
    views are config.json's (they may have been set after training), the rest of the
    settings the run's train_config; `overrides` change them. A published checkpoint has no
    class head, so the figures are those every run has: test MS loss and retrieval metrics.
    """
    views = {k: config[k] for k in ("flip_average", "shift_average") if k in config}
    cfg = train_config_from(metrics["train_config"], **{"loss": "ms", "init_from": None, "distill_from": None,
                                                        "pretrained": False, **views, **overrides})
    # checks the views against the augmentation; its output folder is written only by save(), never called here
    trainer = Trainer(cfg, data, "unsaved", torch.device("cpu"))
    trainer.model.load_state_dict(model.state_dict())
    return trainer.evaluate()


def remeasured_final(metrics: dict[str, Any], measured: dict[str, float], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """metrics["final"] with the new test figures: the training figures kept, the old
    single-view figures and the `drop`ped keys (figures that no longer hold) removed."""
    final = {k: v for k, v in metrics["final"].items() if not k.endswith("_single_view") and k not in drop}
    return {**final, **measured}


__all__ = ["TrainConfig", "Trainer", "TrainingError", "pick_device", "saved_train_config", "read_config"]
