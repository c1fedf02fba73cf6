"""The training loop of one recipe stage: epochs, a validation figure after each, atomic saves,
exact resume. train.py chains the stages and makes the choices after them.

The loss, its class head and its batch sampler come from losses.make_loss; the figures from
evaluation.py, on the validation split (a recipe run) or on the test set (the paper's
protocol in results/reproduce.py, which makes no choices). With `choose_epoch` the stage
keeps the weights of its best validation epoch, which the next stage starts from.

Determinism: every epoch draws its batch order and augmentation from a generator seeded with
(seed, epoch), so a run resumed from the end of epoch n replays epochs n+1... exactly as an
uninterrupted run would (on the CPU; cuDNN may differ in the last bits).

A stage folder: model.safetensors and config.json (the last epoch's embedder), best.safetensors
(the chosen epoch's), metrics.json (per-epoch figures), resume/ (optimizer moments, class head,
epoch count, written beside the old one and swapped in by renames).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

from .checkpoint import WEIGHTS_NAME, load_model, save_checkpoint
from .data import ImageData, apply_draws, draw_offsets, normalize
from .evaluation import embedder_for, ms_loss, retrieval_metrics, view_embeddings
from .files import atomic_save_tensors, atomic_write_json
from .losses import (
    LossError,
    batch_order,
    check_class_sizes,
    make_loss,
    similarity_distillation_loss,
    teacher_targets,
)
from .networks import build_model, keras_param_count
from .recipe import PRECISIONS, Recipe, Stage, from_dict
from .run_folder import resume_state_dir


class TrainingError(Exception):
    """Training cannot go on; the message says why and what to do."""


def one_stage_recipe(dataset: str, **fields: Any) -> Recipe:
    """A one-stage recipe from flat fields, Recipe's and Stage's (train.py's flags-only form, the
    reproduction, the benchmarks), validated as a recipe file is."""
    stage_fields = {f.name for f in dataclasses.fields(Stage)}
    stage = {k: v for k, v in fields.items() if k in stage_fields}
    top = {k: v for k, v in fields.items() if k not in stage_fields}
    return from_dict({"dataset": dataset, **top, "stages": [stage]}).check()


def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks of up to 32 MiB for reuse instead of returning them to the OS.

    PyTorch's CPU tensors come from malloc, and glibc serves blocks above its mmap threshold
    (128 KiB, rising with what is freed) with fresh pages and trims the heap's free top. How
    that settles varies from one process to the next: in some, every training step faults its
    activations' pages in anew. Measured here (10 processes, CNN-3a and Hybrid-1 CE epochs taken
    in turn on 5,120 CIFAR-10 images, two threads): without this, 229k to 1.46M minor page
    faults per process and Hybrid-1's step 45-53 ms; with it, 227k-230k faults in every process
    and 44-49 ms. With the threshold fixed at glibc's maximum and trimming off, the heap grows
    to the step's peak once and is reused. Process-wide, like set_flush_denormal; a no-op
    where the C library has no mallopt (macOS, Windows) or ignores it (musl). Returns whether
    it applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA GPU is visible; use --device auto or cpu")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise TrainingError("--device mps: Apple MPS is not available here; use --device auto or cpu")
    if requested not in ("cuda", "mps", "cpu"):
        raise TrainingError(f"unknown device {requested!r}: use auto, cuda, mps or cpu")
    return torch.device(requested)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs on hardware built for it: a CUDA GPU with bf16 (Ampere and
    later), or a CPU with AVX512-BF16 or AMX-BF16, whose bf16 convolutions and matrix products
    oneDNN runs natively. Elsewhere bf16 is emulated, slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities()  # what torch's own CPU dispatch detected
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return False


def pick_precision(requested: str, device: torch.device) -> str:
    """The training step's precision: "bf16" (autocast: bf16 matrix products and convolutions,
    fp32 weights, optimizer and loss) or "fp32". "auto" is bf16 where it runs natively
    (native_bf16). Evaluation, the search views and the demo always embed in fp32."""
    if requested == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if requested not in PRECISIONS:
        raise TrainingError(f"unknown precision {requested!r}: use {', '.join(PRECISIONS)}")
    if requested == "bf16" and device.type == "mps":
        raise TrainingError("precision bf16: autocast on Apple MPS is not supported here; use fp32 or auto")
    return requested


def cpu_model() -> str:
    """The CPU's model name (benchmarks record it: on these machines bf16 and thread counts
    behave differently from one CPU to the next)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)" if device.type == "cpu" else device.type


class Trainer:
    """Owns the model, loss, optimizer and data of one stage and writes its folder."""

    def __init__(self, recipe: Recipe, data: ImageData, out: str | Path, device: torch.device, stage: int = 1,
                 compile_step: bool = False, eval_split: str = "val", evaluate_every_epoch: bool = True) -> None:
        """`compile_step`: run the training step (forward, loss, backward) through torch.compile,
        compiled before the clock starts (warm_up). `eval_split`: what each epoch is measured on;
        without `evaluate_every_epoch` only the stage's last epoch (or the one a time budget stops
        at) is, which a study that reads only the final figures runs faster (not with choose_epoch)."""
        self.recipe, self.stage, self.stage_number = recipe, recipe.stages[stage - 1], stage
        self.out, self.device, self.eval_split = Path(out), device, eval_split
        self.evaluate_every_epoch = evaluate_every_epoch
        self.compile_step, self.compile_seconds = compile_step, 0.0
        self.precision = pick_precision(recipe.precision, device)
        self.data = data.to(device)
        mean, std = data.mean_std()
        self.mean, self.std = torch.tensor(mean, device=device), torch.tensor(std, device=device)
        self.augment = data.augment if self.stage.augment == "auto" else self.stage.augment
        torch.manual_seed(recipe.seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
        if device.type == "cpu":
            # near convergence, gradients and Adam moments go denormal, which x86 handles far
            # slower (an MNIST run fell from 650 to 370 img/s): flush them to zero
            torch.set_flush_denormal(True)
            keep_freed_memory()
        try:
            net = build_model(recipe.model, data.channels, recipe.embedding_dim, recipe.activation, recipe.pretrained)
        except ValueError as e:
            raise TrainingError(str(e)) from None
        except Exception as e:  # a failed weights download
            raise TrainingError(f"could not get pretrained weights for {recipe.model} ({type(e).__name__}: {e}); "
                                "set pretrained = false") from None
        # channels_last: oneDNN's convolutions run ~25% faster on a CPU in this layout
        self.model = net.to(device, memory_format=torch.channels_last)
        s = self.stage
        self.loss = make_loss(s.loss, len(data.class_names), recipe.embedding_dim, s.label_smoothing, s.temperature,
                              (s.ms_alpha, s.ms_beta, s.ms_base, s.miner_epsilon))
        if self.loss.head is not None:
            self.loss.head.to(device)
        params = list(self.model.parameters()) + (list(self.loss.head.parameters()) if self.loss.head else [])
        self.optimizer = torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
        # static shapes: a graph for the full batch and one for a smaller last batch, both compiled in warm_up
        self.step_loss = torch.compile(self.loss_on, dynamic=False) if compile_step else self.loss_on
        self.epoch, self.history = 0, []
        self.best: dict[str, Any] | None = None  # {"epoch", "value", "state"}: the chosen epoch so far
        self.teachers: list[dict[str, Any]] | None = None
        self.teacher_targets: torch.Tensor | None = None  # (N_train, D_teachers), unit norm
        self.model_config = {"model": recipe.model, "in_channels": data.channels,
                             "embedding_dim": recipe.embedding_dim, "activation": recipe.activation,
                             "image_size": list(data.image_size), "mean": mean, "std": std,
                             "class_names": data.class_names, "dataset": data.name,
                             "flip_average": False, "shift_average": 0}

    def start_from(self, folder: str | Path) -> None:
        """Start from a checkpoint's embedder weights (fine-tuning); the class head and the
        optimizer start fresh. It must be the same architecture."""
        net, config = load_model(folder)
        keys = ("model", "in_channels", "embedding_dim", "activation")
        if wrong := [f"{k} {config.get(k)!r} (this run: {self.model_config[k]!r})" for k in keys
                     if config.get(k) != self.model_config[k]]:
            raise TrainingError(f"init_from {folder}: that checkpoint has {', '.join(wrong)}; use the same model "
                                "and activation, and a dataset with as many channels")
        self.model.load_state_dict(net.state_dict())

    def prepare_teachers(self, log=print) -> None:
        """The distillation targets of distill_from, computed once per process (see losses.teacher_targets)."""
        if self.stage.distill_from and self.teacher_targets is None:
            self.teacher_targets, self.teachers = teacher_targets(self.stage.distill_from, self.data, self.device, log)

    def check_data(self) -> None:
        """What would make an epoch fail or train wrongly, said before the first one."""
        if self.loss.balanced:
            try:
                check_class_sizes(self.data.train_y, self.data.class_names, self.stage.batch_size)
            except LossError as e:
                raise TrainingError(str(e)) from None

    # ----- one epoch ---------------------------------------------------------------
    def lr_at(self, epoch: int) -> float:
        if self.stage.schedule == "cosine":
            return self.stage.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.stage.epochs))
        return self.stage.lr

    def device_plan(self, epoch: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """The epoch's sample order and augmentation draws, from a generator seeded with (seed,
        epoch) on the CPU (resumable exactly), moved to the device in one copy."""
        g = torch.Generator().manual_seed(self.recipe.seed * 100_003 + epoch)
        labels = self.data.train_y.cpu()
        order = batch_order(labels, self.stage.batch_size, self.loss.balanced, len(self.data.class_names), g)
        offsets = draw_offsets(self.augment, len(order), g)
        return order.to(self.device), None if offsets is None else tuple(t.to(self.device) for t in offsets)

    def loss_on(self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """The batch's loss; `targets` (B, D_teachers) adds the distillation term."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            emb = self.model(x)
        loss = self.loss.criterion(emb.float(), y)
        if targets is not None:
            loss = loss + self.stage.distill_weight * similarity_distillation_loss(
                emb, targets, self.stage.distill_temperature)
        return loss

    def batch(self, order: torch.Tensor, offsets: tuple[torch.Tensor, ...] | None, step: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
        """Step `step` of an epoch plan: (normalised images, labels, teacher targets, size), on the device."""
        batch = slice(step * self.stage.batch_size, (step + 1) * self.stage.batch_size)
        idx = order[batch]
        x = self.data.train_x[idx]
        if offsets is not None:
            x = apply_draws(x, self.augment, tuple(t[batch] for t in offsets))
        x = normalize(x, self.mean, self.std).contiguous(memory_format=torch.channels_last)
        targets = None if self.teacher_targets is None else self.teacher_targets[idx]
        return x, self.data.train_y[idx], targets, len(idx)

    def modules(self) -> list[torch.nn.Module]:
        return [self.model] + ([self.loss.head] if self.loss.head is not None else [])

    def warm_up(self) -> float:
        """Compile the training step before the clock starts (the next epoch's first batch and a
        smaller last one), then undo what that touched (gradients, BatchNorm statistics, random
        generators), so the run is the one it would have been. Returns seconds."""
        start = time.perf_counter()
        buffers = [{k: v.clone() for k, v in m.named_buffers()} for m in self.modules()]
        rng = torch.get_rng_state(), (torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None)
        for m in self.modules():
            m.train()
        order, offsets = self.device_plan(self.epoch)
        last = math.ceil(len(order) / self.stage.batch_size) - 1
        for step in sorted({0, last} if len(order) % self.stage.batch_size else {0}):
            x, y, targets, _ = self.batch(order, offsets, step)
            self.step_loss(x, y, targets).backward()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for m, saved in zip(self.modules(), buffers, strict=True):
                for k, v in m.named_buffers():
                    v.copy_(saved[k])
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state_all(rng[1])
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch. The loss is summed on the device and read once at the end (a NaN stops the
        run before anything is saved); on a CPU the progress bar shows it as it goes."""
        for m in self.modules():
            m.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(epoch)
        order, offsets = self.device_plan(epoch)
        n_steps = math.ceil(len(order) / self.stage.batch_size)
        total, count, start = torch.zeros((), device=self.device), 0, time.perf_counter()
        bar = tqdm(range(n_steps), desc=f"stage {self.stage_number} epoch {epoch + 1}/{self.stage.epochs}",
                   leave=False, dynamic_ncols=True, disable=None)  # None: no bar when not a terminal (a log)
        for step in bar:
            x, y, targets, size = self.batch(order, offsets, step)
            loss = self.step_loss(x, y, targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach() * size
            count += size
            if self.device.type == "cpu" and (step % 20 == 0 or step == n_steps - 1):
                bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{count / (time.perf_counter() - start):.0f}")
        train_loss, seconds = float(total) / max(count, 1), time.perf_counter() - start
        if not math.isfinite(train_loss):
            raise TrainingError(f"the loss became {train_loss} in epoch {epoch + 1}; the last good checkpoint "
                                f"(epoch {self.epoch}) is kept in {self.out}. Try a lower lr.")
        return {"train_loss": train_loss, "seconds": seconds, "images_per_s": count / seconds}

    @torch.inference_mode()
    def evaluate(self) -> dict[str, float]:
        """The eval split's figures for the network's own embedding (one view): MS loss,
        retrieval metrics and, for a class head, its CE loss and accuracy."""
        x, y = self.data.split(self.eval_split)
        raw = view_embeddings(embedder_for(self.model, self.model_config, device=self.device), x)[0]
        y = y.cpu()
        split = self.eval_split
        figures = {f"{split}_ms_loss": ms_loss(F.normalize(raw, dim=1), y, self.stage.batch_size)}
        if self.loss.head is not None:
            self.loss.head.eval()
            logits = self.loss.logits(raw.to(self.device)).float().cpu()
            figures[f"{split}_ce_loss"] = float(F.cross_entropy(logits, y))
            figures["accuracy"] = float((logits.argmax(1) == y).float().mean())
        return {**figures, **retrieval_metrics(raw, y, self.device)}

    # ----- checkpoints -------------------------------------------------------------
    def save(self) -> None:
        """The resume state (built beside the old one, swapped in by renames), then the stage's
        published files; each file atomically."""
        self.out.mkdir(parents=True, exist_ok=True)
        resume, tmp, old = self.out / "resume", self.out / "resume.tmp", self.out / "resume.old"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.loss.head is not None:
            tensors.update({f"head.{k}": v for k, v in self.loss.head.state_dict().items()})
        opt = self.optimizer.state_dict()
        tensors.update({f"opt.{pid}.{k}": torch.as_tensor(v)
                        for pid, st in opt["state"].items() for k, v in st.items()})
        if self.best is not None:
            tensors.update({f"best.{k}": v for k, v in self.best["state"].items()})
        atomic_save_tensors(tmp / "state.safetensors", tensors)
        atomic_write_json(tmp / "state.json", {"epoch": self.epoch, "recipe": self.recipe.to_dict(),
                                               "stage": self.stage_number, "param_groups": opt["param_groups"],
                                               "history": self.history, "teachers": self.teachers,
                                               "best": self.best and {k: self.best[k] for k in ("epoch", "value")}})
        if resume.exists():
            shutil.rmtree(old, ignore_errors=True)
            resume.rename(old)
        tmp.rename(resume)
        shutil.rmtree(old, ignore_errors=True)
        save_checkpoint(self.out, self.model, self.model_config)
        atomic_write_json(self.out / "metrics.json", self.summary())

    def load(self) -> None:
        """Restore the state save() wrote."""
        folder = resume_state_dir(self.out)
        state = load_file(str(folder / "state.safetensors"), device=str(self.device))
        info = json.loads((folder / "state.json").read_text())
        part = lambda prefix: {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        self.model.load_state_dict(part("model."))
        if self.loss.head is not None:
            self.loss.head.load_state_dict(part("head."))
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in part("opt.").items():
            pid, name = k.split(".", 1)
            opt_state.setdefault(int(pid), {})[name] = v.cpu() if name == "step" else v
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": info["param_groups"]})
        self.epoch, self.history, self.teachers = info["epoch"], info["history"], info.get("teachers")
        if info.get("best"):
            self.best = {**info["best"], "state": {k: v.cpu() for k, v in part("best.").items()}}

    def chosen_state(self) -> dict[str, torch.Tensor]:
        """The embedder weights this stage hands on: its best validation epoch's with choose_epoch, else the last."""
        if self.stage.choose_epoch and self.best is not None:
            return self.best["state"]
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def summary(self) -> dict[str, Any]:
        seconds = [h["seconds"] for h in self.history]
        return {"dataset": self.data.name, "data_source": self.data.source, "model": self.recipe.model,
                "loss": self.stage.loss, "stage": self.stage_number, "epochs_done": self.epoch,
                "evaluated_on": self.eval_split,
                "train_config": {**{k: v for k, v in self.recipe.to_dict().items() if k != "stages"},
                                 **dataclasses.asdict(self.stage)},
                "chosen_epoch": (self.best or {}).get("epoch") if self.stage.choose_epoch else self.epoch,
                "teachers": self.teachers, "keras_param_count": keras_param_count(self.model),
                "weights_bytes": weights.stat().st_size if (weights := self.out / WEIGHTS_NAME).exists() else None,
                "device": describe_device(self.device), "precision": self.precision,
                "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
                "compile_seconds": self.compile_seconds if self.compile_step else None,
                "final": self.history[-1] if self.history else None, "epochs": self.history}

    # ----- the run -----------------------------------------------------------------
    def fit(self, log=print, stop_at: float | None = None) -> dict[str, Any]:
        """Train the remaining epochs; with `stop_at` (a time.time() value), stop after the first
        epoch that ends later, leaving a resumable stage (a time budget)."""
        self.check_data()
        self.prepare_teachers(log)
        if self.compile_step and self.epoch < self.stage.epochs and not self.compile_seconds:
            self.compile_seconds = self.warm_up()
            log(f"training step compiled in {self.compile_seconds:.1f} s (not counted in seconds per epoch)")
        metric = self.recipe.selection_metric
        for epoch in range(self.epoch, self.stage.epochs):
            row = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            stopping = stop_at is not None and time.time() >= stop_at
            if self.evaluate_every_epoch or self.stage.choose_epoch or stopping or epoch + 1 == self.stage.epochs:
                row.update(self.evaluate())
            self.epoch = epoch + 1
            self.history.append(row)
            if self.stage.choose_epoch and (self.best is None or row[metric] > self.best["value"]):
                state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                self.best = {"epoch": self.epoch, "value": row[metric], "state": state}
            self.save()
            log(format_epoch(row, self.stage.epochs, self.stage_number, self.eval_split))
            if stopping and self.epoch < self.stage.epochs:
                break
        return self.summary()


def format_epoch(row: dict[str, float], epochs: int, stage: int = 1, split: str = "val") -> str:
    parts = [f"stage {stage} epoch {row['epoch']:>3}/{epochs}", f"train {row['train_loss']:.4f}"]
    for key, label in ((f"{split}_ce_loss", f"{split} CE"), (f"{split}_ms_loss", f"{split} MS"), ("accuracy", "acc"),
                       ("precision_at_1", f"{split} P@1"), ("mean_average_precision_at_r", "MAP@R")):
        if key in row:
            parts.append(f"{label} {row[key]:.4f}")
    parts.append(f"{row['images_per_s']:.0f} img/s, {row['seconds']:.1f} s")
    return " | ".join(parts)
