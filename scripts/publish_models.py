"""Publish a checkpoint as a Hugging Face model repository, with a generated model card.

    python scripts/publish_models.py --repo-id USER/NAME CHECKPOINT [--private] [--dry-run]

e.g. `--repo-id USER/involution-cifar10-hybrid1 assets/cifar10-hybrid1` (the names the Space's
front matter expects: scripts/publish_space.py). It uploads model.safetensors, config.json,
metrics.json, the recipe (recipe.toml, where the checkpoint has one; older checkpoints record
theirs in metrics.json), curves.png, the demo's search bundle (index.json, index.npz) and a
README.md model card: what the model is, its test figures, how to load it, the paper, and its
limits. It also exports the checkpoint to model.onnx (model/export.py), so the repository is
usable on its own: the card's first snippet runs it with onnxruntime, numpy and huggingface_hub,
without this project or torch. With this project's `model` package it loads with
`load_embedder("hf://USER/NAME")`, and the demo serves it with INVOLUTION_MODELS=hf://USER/NAME.

--dry-run needs no network and no token: it prints the files to upload, one path per line, and
writes the model card to stderr. The token comes from HF_TOKEN or a saved `hf auth login`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from huggingface_hub import HfApi

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from publish_space import LICENSE, PublishError, hub_request, hub_token  # noqa: E402

from model.checkpoint import CheckpointError, load_model  # noqa: E402
from model.data import KNOWN  # noqa: E402
from model.export import INPUT_NAME, OUTPUT_NAME, export_onnx  # noqa: E402
from model.hub import CHECKPOINT_FILES, METRICS_NAME, check_repo_id  # noqa: E402
from model.networks import PAPER_MODELS, model_title  # noqa: E402
from model.record import summarize  # noqa: E402

# shown in the card; the demo's search bundle for the project's gallery (a Space serving this
# repository through INVOLUTION_MODELS then needs no rebuild)
EXTRA_FILES = ("curves.png", "index.json", "index.npz")
ONNX_NAME = "model.onnx"  # written by publish from the weights (model/export.py), not kept in the checkpoint
DATASET_NAMES = {name: info.title for name, info in KNOWN.items()}
HUB_DATASETS = {name: info.hub_id for name, info in KNOWN.items()}
DESCRIPTIONS = {
    "hybrid1": "one involution layer on the raw image (a 3x3 kernel generated for every pixel from the pixel "
               "itself), then a small CNN (16, 64 and 128 filters), global average pooling and a 256-d embedding, "
               "with GELU: the paper's proposed model",
    "cnn3a": "the paper's plain three-layer CNN baseline (16, 64 and 128 filters), global average pooling and a "
             "256-d embedding, with GELU: Hybrid-1 without its involution layer",
    "compact-conv": "this project's compact residual network, not the paper's: a 24-filter stem, then stages of 48 "
                    "and 96 channels, each with two residual blocks of a grouped 3x3 convolution and a 1x1 "
                    "convolution, global average pooling and a 256-d embedding, with GELU, in the paper's "
                    "size budget",
    "compact-inv": "this project's compact residual network, not the paper's, with involution (channel groups, "
                   "a kernel generated for every pixel) as the spatial mixer of its residual blocks, global average "
                   "pooling and a 256-d embedding, with GELU, in the paper's size budget",
}
CITATION = """@misc{spatially_optimized_compact_dml,
  title = {Spatially Optimized Compact Deep Metric Learning Model for Similarity Search},
}
@inproceedings{li2021involution,
  title = {Involution: Inverting the Inherence of Convolution for Visual Recognition},
  author = {Li, Duo and Hu, Jie and Wang, Changhu and Li, Xiangtai and She, Qi and Zhu, Lei and Zhang, Tong
            and Chen, Qifeng},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages = {12321--12330},
  year = {2021}
}"""


def checkpoint_files(folder: Path) -> list[Path]:
    """The checkpoint's files a model repository holds: weights and config (required), then the
    metrics, the recipe, the curves and the search bundle where they exist."""
    load_model(folder)  # refuses a folder that does not load, before anything is uploaded
    if not (folder / METRICS_NAME).is_file():
        raise PublishError(f"{folder} has no {METRICS_NAME}: the model card's figures come from it "
                           "(publish a checkpoint written by train.py)")
    return [folder / f for f in (*CHECKPOINT_FILES, *EXTRA_FILES) if (folder / f).is_file()]


def read_metrics(folder: Path) -> dict:
    """The checkpoint's metrics.json, refused (one PublishError) unless it holds a finished run's
    figures: the card is written from them, so a half-written run must not be published."""
    try:
        metrics = json.loads((folder / METRICS_NAME).read_text())
        summarize(metrics)  # the card's figures must be there
        return metrics
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise PublishError(f"{folder / METRICS_NAME} is not a finished run's metrics ({type(e).__name__}: {e}); "
                           "publish a checkpoint written by train.py") from None


def model_card(repo_id: str, folder: Path, config: dict, metrics: dict) -> str:
    """The repository's README.md: generated from the checkpoint's own config and metrics, so the
    figures, sizes and repository id it shows cannot drift from the files uploaded beside it."""
    summary = summarize(metrics, ROOT)
    dataset, model = summary.dataset or config.get("dataset", ""), config["model"]
    dname, mname = DATASET_NAMES.get(dataset, dataset), model_title(model)
    f, stages, views, whitening = summary.test, summary.stages, summary.views, summary.whitening
    training = summary.training
    front = ["---", f"license: {LICENSE}", "library_name: pytorch", "pipeline_tag: image-feature-extraction",
             "tags:", "  - metric-learning", "  - image-similarity", "  - involution", "  - safetensors"]
    if dataset in HUB_DATASETS:
        front += ["datasets:", f"  - {HUB_DATASETS[dataset]}"]
    front.append("---")
    h, w = config["image_size"]
    dim = config["embedding_dim"]
    lines = [
        "", f"# {mname} on {dname}: a {summary.params:,}-parameter image embedding", "",
        f"{mname} is {DESCRIPTIONS.get(model, f'the {model} architecture')}. It maps a {h}x{w} "
        f"{'greyscale' if config['in_channels'] == 1 else 'colour'} image to a unit-length {dim}-d vector; images "
        f"of the same {dname} class lie close together, so cosine similarity ranks a gallery for similarity "
        f"search. Weights: {summary.weights_bytes / 1024:.1f} KiB of safetensors.", "",
        "## Figures", "",
        f"Measured on the {dname} test set, each test image queried against the rest of the test set:", "",
        "| precision@1 | R-precision | MAP@R | parameters (Keras count) |", "|---|---|---|---|",
        f"| {f['precision_at_1']:.4f} | {f['r_precision']:.4f} | {f['mean_average_precision_at_r']:.4f} | "
        f"{summary.params:,} |", "",
        f"Training: {training} ({len(stages)} stage{'s' if len(stages) > 1 else ''}, each fine-tuning the "
        f"one before; " + (f"the recipe is in `{METRICS_NAME}`, under `train_config` and `init_from`). "
                           if summary.legacy else "the resolved recipe is `recipe.toml`: `python train.py "
                           "recipe.toml` in the project replays it). ")
        + f"Search: {views}."
        + (f" The embedding is whitened ({summary.whitening_text}) and folded into its last layer." if whitening
           else ""), "",
        "## Run it with onnxruntime", "",
        f"`{ONNX_NAME}` is the whole search embedding in one graph: uint8 images in, at {h}x{w} with "
        f"{config['in_channels']} channel{'s' if config['in_channels'] > 1 else ''}, and the unit vectors the "
        "demo searches with out (normalisation, search views and whitening inside). It needs onnxruntime, "
        "numpy and huggingface_hub, not this model's source code or torch:", "",
        *onnx_snippet(repo_id, config), "",
        f"Resize other images to {h}x{w} first"
        + (" (greyscale, white object on black)." if config["in_channels"] == 1 else " (RGB).")
        + " The vectors are those of the PyTorch route below to within 1e-6.", "",
        "## Load it with PyTorch", "",
        "With the project's `model` package (from its source repository, or the demo Space's files):", "",
        "```python", "from model import load_embedder", "",
        f'embedder = load_embedder("hf://{repo_id}")   # downloaded once into the Hugging Face cache',
        f"vectors = embedder.embed(images)   # PIL images or uint8 arrays -> (N, {dim}) float32, L2-normalised",
        "```", "",
        "`Embedder.from_pretrained(\"" + repo_id + "\")` does the same. Only safetensors and JSON are read: "
        "loading runs no code from the repository. `embed` applies the checkpoint's own preprocessing "
        "(mode, size, normalisation and search views, from `config.json`). The demo serves it in place of "
        f"its shipped weights with the environment variable `INVOLUTION_MODELS=hf://{repo_id}` (a Space "
        "variable); `index.json` and `index.npz` are its search bundle for the demo's gallery.", "",
    ]
    if (folder / "curves.png").is_file():
        lines += ["![Training curves](curves.png)", ""]
    lines += [
        "## Limits", "",
        f"- It knows {dname}'s ten classes ({', '.join(config['class_names'])}) at {h}x{w} pixels. Other "
        "images are resized to that and embed poorly: it is not a general-purpose image embedding.",
        "- The figures come from one training run (one seed).",
    ]
    if summary.legacy and (len(stages) > 1 or views != "one view"):
        lines.append("- Its later training stages and its search views were chosen by their test-set figures "
                     "(it was trained before the project held a validation split out), so these figures are "
                     "somewhat optimistic.")
    elif not summary.legacy:
        lines.append(f"- Every choice (the epoch each stage kept, the search views, the whitening) was made on "
                     f"{summary.validation_images:,} training images held out as a validation split; the test set "
                     "was measured once, at the end.")
    if dataset == "cifar10":
        lines.append("- It was trained and measured on a lossy JPEG copy of CIFAR-10 (quality 75); figures on the "
                     "original images will differ slightly.")
    if dataset in ("mnist", "fashion_mnist"):
        lines.append("- Digits and clothes are white on black, centred, as in the dataset; a dark object on a "
                     "light background must be inverted first.")
    paper = ("The paper this model reproduces, and the involution operator:" if model in PAPER_MODELS else
             "The paper whose size budget this model keeps (it is not the paper's model), and the involution operator:")
    lines += ["", "## Citation", "", paper, "",
              "```bibtex", CITATION, "```", ""]
    return "\n".join(front + lines)


def onnx_snippet(repo_id: str, config: dict) -> list[str]:
    """The card's onnxruntime example, as lines of a fenced block (tests run it offline)."""
    h, w = config["image_size"]
    c, dim = config["in_channels"], config["embedding_dim"]
    return [
        "```python", "import numpy as np", "import onnxruntime as ort", "from huggingface_hub import hf_hub_download",
        "", f'session = ort.InferenceSession(hf_hub_download("{repo_id}", "{ONNX_NAME}"))',
        f"images = np.zeros((2, {h}, {w}, {c}), dtype=np.uint8)   # your images: uint8, (N, {h}, {w}, {c})",
        f'vectors = session.run(["{OUTPUT_NAME}"], {{"{INPUT_NAME}": images}})[0]   # (N, {dim}) float32, '
        "unit length",
        "similarity = vectors @ vectors.T   # cosine similarity: rank a gallery by it", "```"]


def publish(repo_id: str, folder: Path, private: bool, api: HfApi | None = None) -> str:
    """Create the model repository (if needed) and upload the checkpoint with its card; returns the URL.
    Everything is staged in a temporary folder first (the checkpoint folder is never written to),
    and before the repository is created, so a failed ONNX export leaves no empty repository."""
    from huggingface_hub import HfApi

    files = checkpoint_files(folder)
    card = model_card(repo_id, folder, load_model(folder)[1], read_metrics(folder))
    token = hub_token()
    with tempfile.TemporaryDirectory(prefix="model-") as tmp:
        for file in files:
            shutil.copy2(file, Path(tmp) / file.name)
        export_onnx(folder, Path(tmp) / ONNX_NAME)
        (Path(tmp) / "README.md").write_text(card)
        api = api or HfApi(token=token)
        with hub_request(f"create the model repository {repo_id}"):
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        with hub_request(f"upload to {repo_id}"):
            api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=tmp,
                              commit_message=f"Upload {folder.name} (scripts/publish_models.py)")
    return f"https://huggingface.co/{repo_id}"


def main(argv: list[str] | None = None, api: HfApi | None = None) -> int:
    """The command line; `api` lets tests drive a stand-in for HfApi. Returns 2, after one line on
    stderr, for what the user can fix (not a checkpoint, a bad repository id, no token, a refusal)."""
    p = argparse.ArgumentParser(description="Publish a checkpoint as a Hugging Face model repository.")
    p.add_argument("checkpoint", help="a checkpoint folder, e.g. assets/cifar10-hybrid1")
    p.add_argument("--repo-id", required=True, help="USER/NAME, e.g. USER/involution-cifar10-hybrid1")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--dry-run", action="store_true", help="print the files and the model card; no network, no token")
    args = p.parse_args(argv)
    folder = Path(args.checkpoint)
    try:
        check_repo_id(args.repo_id)
        if args.dry_run:
            files = checkpoint_files(folder)
            card = model_card(args.repo_id, folder, load_model(folder)[1], read_metrics(folder))
            print("\n".join([*(f.name for f in files), ONNX_NAME, "README.md"]))
            print(f"--- README.md (generated model card) ---\n{card}", end="", file=sys.stderr)
            return 0
        url = publish(args.repo_id, folder, args.private, api=api)
    except (PublishError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"published {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
