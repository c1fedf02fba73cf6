"""The checkpoint format: a folder with two files, safetensors and JSON only (nothing is ever
unpickled, so a checkpoint handed over by a stranger cannot run code):

    model.safetensors  the embedding network's state_dict
    config.json        what rebuilds it and its preprocessing: architecture name and
                       arguments, input size and channels, normalisation, class names,
                       the dataset, and the search views: flip_average and shift_average
                       (optional, default off: see search_views.py)

That is the layout of huggingface_hub's PyTorchModelHubMixin: scripts/publish_models.py
pushes a folder to a model repository, and `load_embedder("hf://USER/NAME")` (model/hub.py)
loads it back through huggingface_hub's cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .files import atomic_save_tensors, atomic_write_json
from .networks import build_model

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
CONFIG_KEYS = ("model", "in_channels", "embedding_dim", "activation", "image_size", "mean", "std", "class_names")


class CheckpointError(Exception):
    """A checkpoint folder is missing, incomplete or inconsistent; the message says which."""


def save_checkpoint(folder: str | Path, model: nn.Module, config: dict[str, Any]) -> None:
    """Write model.safetensors and config.json atomically (weights first, so a config
    on disk never describes weights that are not there yet)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f"checkpoint config lacks {missing}")
    atomic_save_tensors(folder / WEIGHTS_NAME, model.state_dict())
    atomic_write_json(folder / CONFIG_NAME, config)


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a checkpoint: {CONFIG_NAME} is missing (train one with train.py)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); retrain or restore the file") from None
    missing = [k for k in CONFIG_KEYS if k not in config] if isinstance(config, dict) else list(CONFIG_KEYS)
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: it was not written by this project's train.py")
    return config


def build_from_config(config: dict[str, Any]) -> nn.Module:
    try:
        return build_model(config["model"], config["in_channels"], config["embedding_dim"], config["activation"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"config.json describes no buildable model: {e}") from None


def load_model(folder: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from config.json and load model.safetensors into it (strictly)."""
    folder = Path(folder)
    config = read_config(folder)
    model = build_from_config(config)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{folder} has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({e})") from None
    expected = model.state_dict()
    problems = sorted(set(expected) ^ set(state))
    problems += [k for k in expected if k in state and expected[k].shape != state[k].shape]
    if problems:
        raise CheckpointError(
            f"{weights} does not match config.json (model {config['model']!r}, "
            f"{config['in_channels']} input channels): mismatched tensors {problems[:5]}"
            f"{' ...' if len(problems) > 5 else ''}"
        )
    model.load_state_dict(state)
    return model.eval(), config
