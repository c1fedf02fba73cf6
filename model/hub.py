"""Checkpoints on the Hugging Face Hub: `hf://USER/NAME` (or `hf://USER/NAME@REVISION`) wherever
`load_embedder` takes a checkpoint folder.

A model repository written by scripts/publish_models.py holds what a checkpoint folder holds
(model.safetensors, config.json, metrics.json and the recipe), so loading one is: download
those files once into huggingface_hub's cache, then load the cached folder as a folder. Only
safetensors and JSON are read, so a repository cannot run code on the machine that loads it.
Offline, a repository downloaded before loads from the cache.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError

HUB_PREFIX = "hf://"
METRICS_NAME, RECIPE_NAME = "metrics.json", "recipe.toml"
# what a model repository holds for loading and describing a checkpoint (the model card aside)
CHECKPOINT_FILES = (WEIGHTS_NAME, CONFIG_NAME, METRICS_NAME, RECIPE_NAME)
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_hub_reference(path: str | Path) -> bool:
    return isinstance(path, str) and path.startswith(HUB_PREFIX)


def check_repo_id(repo_id: str) -> str:
    """USER/NAME as the Hub spells repositories, or CheckpointError naming the expected form."""
    if not _REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise CheckpointError(f"{repo_id!r} is not a Hub repository id: write USER/NAME "
                              "(letters, digits, '-', '_' and '.')")
    return repo_id


def parse_hub_reference(reference: str) -> tuple[str, str | None]:
    """'hf://USER/NAME@REVISION' -> ('USER/NAME', 'REVISION'); the revision is optional."""
    body = reference[len(HUB_PREFIX):] if is_hub_reference(reference) else reference
    repo_id, _, revision = body.partition("@")
    return check_repo_id(repo_id), revision or None


def download_checkpoint(reference: str, cache_dir: str | Path | None = None,
                        files: Sequence[str] = CHECKPOINT_FILES) -> Path:
    """Fetch a model repository's checkpoint `files` (those it has) into huggingface_hub's cache
    (once) and return the cached folder; every failure is one CheckpointError that says what to do."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = parse_hub_reference(reference)
    try:
        folder = snapshot_download(repo_id, revision=revision, repo_type="model", cache_dir=cache_dir,
                                   allow_patterns=list(files))
    except RevisionNotFoundError:
        raise CheckpointError(f"{reference}: the repository has no revision {revision!r}; "
                              f"drop '@{revision}' or name a branch, tag or commit it has") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise CheckpointError(f"{reference}: no such model repository on the Hub, or it is private or gated "
                              "(set HF_TOKEN to a token that can read it)") from None
    except LocalEntryNotFoundError:
        raise CheckpointError(f"{reference} is not in the local Hugging Face cache and the Hub cannot be reached "
                              "(no network, or HF_HUB_OFFLINE is set): connect once to download it") from None
    except (HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"{reference}: the download failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no message'}); try again") from None
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"{reference} holds no {CONFIG_NAME}: it is not a checkpoint published with "
                              "scripts/publish_models.py")
    return folder


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder for a local path or an hf:// reference."""
    return download_checkpoint(path) if is_hub_reference(path) else Path(path)
