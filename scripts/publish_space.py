"""Publish the demo as a Hugging Face Space, with exactly the files the app needs.

    python scripts/publish_space.py --repo-id USER/NAME [--hardware static|zerogpu|cpu-basic] [--private]
                                    [--dry-run] [--stage DIR]

It creates the Space if needed and uploads app.py, the library modules app.py imports, the
shipped checkpoints' weights, configs, metrics and search bundles, the galleries, and a
generated README.md (the Space's front matter) and requirements.txt, with huggingface_hub's
`upload_folder`: the Hub stores the binary files (safetensors, npz) through Xet/LFS itself,
which a plain `git push` of this repository would not (its weights are ordinary git files).

Hardware: `static` (free, no server) publishes the search as a static site that runs in the
visitor's browser: each checkpoint as ONNX run by onnxruntime-web (vendored from npm, so the page
requests nothing but its own files), the galleries as sprites, their embeddings and UMAP maps,
and the page of model/demo/static/ (its preprocessing a port of the server's, tested equal).
`cpu-basic` (2 vCPU, 16 GB; a paid plan since mid-2026) runs the pinned torch;
`zerogpu` (free accounts) gets torch 2.11.0 / torchvision 0.26.0, the newest ZeroGPU supports,
Python 3.12 and the `spaces` package; app.py then declares its one GPU function.

--dry-run needs no network and no token: it prints the files to upload, one path per line
(relative to the repository root; for `static`, to the Space's root), and writes the generated
README.md (and requirements.txt) to stderr. --stage DIR writes the Space's folder exactly as it
would be uploaded, with or without --dry-run (no upload then); neither needs a token.
The token comes from HF_TOKEN or a saved `hf auth login`.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = "app.py"
WEB = "model/demo/web"  # the page's JavaScript and CSS, which app.py reads
# what the demo reads of a shipped checkpoint (model/demo/service.py, model/index.py, app.py's About tab)
CHECKPOINT_FILES = ("config.json", "model.safetensors", "metrics.json", "index.json", "index.npz")
HARDWARE = {"cpu-basic": "cpu-basic", "zerogpu": "zero-a10g", "static": None}  # ours -> huggingface_hub's
STATIC_PAGE = "model/demo/static"  # the static Space's page (model/demo/static_site.py writes the site)
PYTHON = {"cpu-basic": "3.11", "zerogpu": "3.12"}  # ZeroGPU runs Python 3.10 or 3.12
ZEROGPU_PINS = {"torch": "torch==2.11.0", "torchvision": "torchvision==0.26.0"}  # the newest ZeroGPU supports
# in requirements.txt for train.py and the ONNX export only; tests check that no Space file imports them
# (tqdm is not among them: the demo serves collections, and model/collection.py's build uses it)
TRAINING_ONLY = ("pytorch-metric-learning", "onnx", "onnxscript", "onnxruntime")
# modules app.py's imports reach only through a path the Space never takes: `collection build --ray` (Ray)
NOT_SERVED = ("model/collection_ray.py",)
TITLE, EMOJI = "Involution Similarity Search", "🔎"
SHORT_DESCRIPTION = "116k-parameter involution + CNN model for image search"  # the Hub allows 60 characters
LICENSE = "mit"


class PublishError(Exception):
    """Publishing cannot go on; the message says why and what to do."""


def local_imports(path: Path, root: Path = ROOT) -> set[Path]:
    """The project's own .py files that `path` imports, directly or through each other."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        package = file.parent.relative_to(root).parts
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            names: list[tuple[str, ...]] = []
            if isinstance(node, ast.Import):
                names = [tuple(a.name.split(".")) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else ()
                module = (*base, *(node.module or "").split(".")) if node.module else base
                names = [module] + [(*module, a.name) for a in node.names]
            for parts in names:
                for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
                    if parts and candidate.is_file():
                        todo.append(candidate)
                # importing a submodule runs its packages' __init__.py first
                for i in range(1, len(parts)):
                    init = root.joinpath(*parts[:i], "__init__.py")
                    if init.is_file():
                        todo.append(init)
    return seen


def space_files(root: Path = ROOT) -> list[str]:
    """Every repository file the Space needs, relative to `root`, sorted: app.py, the modules it
    imports, the page's JavaScript and CSS, and for each shipped checkpoint what the demo reads,
    plus the galleries."""
    files = {p.relative_to(root).as_posix() for p in local_imports(root / APP, root)} - set(NOT_SERVED)
    files |= {p.relative_to(root).as_posix() for p in sorted((root / WEB).glob("*")) if p.is_file()}
    files.add(f"{STATIC_PAGE}/spec.json")  # the pages' specification, read by model/demo/spec.py
    files.add(f"{STATIC_PAGE}/sketch.js")  # the sketchpad both pages draw on, which app.py inlines
    assets = root / "assets"
    for config in sorted(assets.glob("*/config.json")):
        if "." in config.parent.name:  # a leftover (name.replaced), which the demo does not serve either
            continue
        if not (config.parent / "model.safetensors").is_file():
            raise PublishError(f"{config.parent} has config.json but no model.safetensors: restore or remove it")
        files |= {(config.parent / f).relative_to(root).as_posix() for f in CHECKPOINT_FILES
                  if (config.parent / f).is_file()}
    galleries = sorted(assets.glob("gallery/*.npz"))
    if not galleries:
        raise PublishError(f"no galleries in {assets / 'gallery'}: build them with `python -m model.index`")
    files |= {p.relative_to(root).as_posix() for p in galleries}
    return sorted(files)


def requirement_name(line: str) -> str:
    """'torch==2.14.0' -> 'torch' (normalised as pip compares names)."""
    return re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pinned_gradio(root: Path = ROOT) -> str:
    for line in (root / "requirements.txt").read_text().splitlines():
        if requirement_name(line) == "gradio" and "==" in line:
            return line.split("==", 1)[1].strip()
    raise PublishError("requirements.txt pins no gradio version (gradio==X.Y.Z): the Space's sdk_version needs one")


def space_requirements(hardware: str, root: Path = ROOT) -> str:
    """requirements.txt for the Space: the project's runtime pins less gradio (the Space's sdk_version
    installs it) and the training-only packages; ZeroGPU gets the torch it supports and `spaces`."""
    lines = []
    for line in (root / "requirements.txt").read_text().splitlines():
        name = requirement_name(line)
        if not line.strip() or line.lstrip().startswith("#") or name == "gradio" or name in TRAINING_ONLY:
            continue
        if hardware == "zerogpu" and name in ZEROGPU_PINS:
            line = ZEROGPU_PINS[name]
        lines.append(line.strip())
    if hardware == "zerogpu":
        lines.append("spaces")
    return "\n".join(lines) + "\n"


def model_repos(owner: str, root: Path = ROOT) -> list[str]:
    """The model repositories named by publish_models.py's convention, USER/involution-<checkpoint>."""
    return [f"{owner}/involution-{c.parent.name}" for c in sorted((root / "assets").glob("*/config.json"))
            if "." not in c.parent.name]


def space_readme(hardware: str, models: list[str], root: Path = ROOT) -> str:
    front = ["---", f"title: {TITLE}", f"emoji: {EMOJI}", "colorFrom: indigo", "colorTo: green", "sdk: gradio",
             f"sdk_version: {pinned_gradio(root)}", f"app_file: {APP}", f'python_version: "{PYTHON[hardware]}"',
             f"short_description: {SHORT_DESCRIPTION}", f"license: {LICENSE}"]
    if models:
        front += ["models:", *(f"  - {m}" for m in models)]
    front.append("---")
    body = [
        "", f"# {TITLE}", "",
        "Image similarity search with a 116k-parameter model (under 0.5 MB of weights): one involution layer "
        "in front of a small CNN, the Hybrid-1 of *Spatially Optimized Compact Deep Metric Learning Model for "
        "Similarity Search*, beside the plain CNN-3a, on MNIST, FashionMNIST and CIFAR-10.", "",
        "Query by upload, gallery example or drawing; see the top-k most similar gallery images, a UMAP map of "
        "the embedding space, and the involution layer's feature maps beside a plain convolution's.", "",
    ]
    if models:
        body += ["The weights are also on the Hub as model repositories: "
                 + ", ".join(f"[{m}](https://huggingface.co/{m})" for m in models) + ".", ""]
    body += [f"This Space was generated by `scripts/publish_space.py --hardware {hardware}` from the project's "
             "source; the API endpoint `/search` takes (dataset, image file, k).", ""]
    return "\n".join(front + body)


def stage(files: list[str], readme: str, requirements: str, folder: Path, root: Path = ROOT) -> None:
    """Lay the Space out in `folder`: the files, then the generated README.md and requirements.txt."""
    for rel in files:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, folder / rel)
    (folder / "README.md").write_text(readme)
    (folder / "requirements.txt").write_text(requirements)


# ------------------------------------------------------------------ the static Space (sdk: static)

def _site():
    sys.path.insert(0, str(ROOT))
    from model.demo import static_site

    return static_site


def static_files(root: Path = ROOT, collection: Path | None = None) -> list[str]:
    """Every file of the static Space, relative to its root, sorted (model/demo/static_site.py)."""
    site = _site()
    try:
        return site.site_files(root / "assets", collection)
    except site.SiteError as e:
        raise PublishError(str(e)) from None


def stage_static(folder: Path, models: list[str], root: Path = ROOT, collection: Path | None = None) -> list[str]:
    """Write the static Space into `folder` (model/demo/static_site.py's write_site, with the
    Space's README.md); returns the files written, relative to `folder`."""
    site = _site()
    try:
        return site.write_site(folder, root / "assets", static_readme(models), collection)
    except site.SiteError as e:
        raise PublishError(str(e)) from None


def static_readme(models: list[str]) -> str:
    front = ["---", f"title: {TITLE}", f"emoji: {EMOJI}", "colorFrom: indigo", "colorTo: green", "sdk: static",
             "app_file: index.html", f"short_description: {SHORT_DESCRIPTION}", f"license: {LICENSE}"]
    if models:
        front += ["models:", *(f"  - {m}" for m in models)]
    body = ["---", "", f"# {TITLE}", "",
            "Image similarity search with a 116k-parameter model (under 0.5 MB of weights), running entirely in "
            "your browser: each model is an ONNX file run by onnxruntime-web, searched against precomputed "
            "gallery embeddings, with a UMAP map of the gallery. No server, no upload leaves your machine.", "",
            "Generated by `scripts/publish_space.py --hardware static` from the project's source.", ""]
    return "\n".join(front + body)


def hub_token() -> str:
    from huggingface_hub import get_token  # reads HF_TOKEN, then the token saved by `hf auth login`

    token = get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN to a token with write access, "
                           "or run `hf auth login` once")
    return token


@contextlib.contextmanager
def hub_request(action: str):
    """Turn a refused or failed Hub request into one PublishError line: the HTTP status, the Hub's
    own message and a hint; or, when the Hub cannot be reached at all, the network error."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        message = (str(e).strip().splitlines() or [type(e).__name__])[0]
        hint = {401: "the token is invalid or expired: make a new one at https://huggingface.co/settings/tokens",
                402: "this hardware needs a paid plan: try --hardware zerogpu",
                403: "the token cannot write there: use a token with write access to that namespace"}.get(status)
        raise PublishError(f"the Hub refused to {action}{f' (HTTP {status})' if status else ''}: {message}"
                           f"{f'; {hint}' if hint else ''}") from None
    except Exception as e:  # connection refused, DNS, TLS, timeouts: each HTTP client names them its own way
        message = (str(e).strip().splitlines() or ["no message"])[0]
        raise PublishError(f"could not reach the Hub to {action} "
                           f"({type(e).__name__}: {message}); check the network and try again") from None


def publish(repo_id: str, hardware: str, private: bool, models: list[str], api=None, root: Path = ROOT,
            collection: Path | None = None) -> str:
    """Create the Space (if needed) and upload it; returns its URL. `api` is an HfApi (tests pass a stand-in)."""
    from huggingface_hub import HfApi

    files = space_files(root) if hardware != "static" else static_files(root, collection)
    token = hub_token()  # no token: refused before any request
    api = api or HfApi(token=token)
    with hub_request(f"create the Space {repo_id}"):
        if hardware == "static":
            api.create_repo(repo_id, repo_type="space", space_sdk="static", private=private, exist_ok=True)
        else:
            api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True,
                            space_hardware=HARDWARE[hardware])
    if models:  # list only the model repositories that exist, so the Space page links to no 404
        with hub_request("look up the model repositories"):
            models = [m for m in models if api.repo_exists(m, repo_type="model")]
    if hardware == "static":
        with tempfile.TemporaryDirectory(prefix="space-") as tmp:
            files = stage_static(Path(tmp), models, root, collection)
            with hub_request(f"upload to the Space {repo_id}"):
                api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=tmp, delete_patterns=["*"],
                                  commit_message=f"Update the static demo ({len(files)} files, "
                                                 "scripts/publish_space.py --hardware static)")
        return f"https://huggingface.co/spaces/{repo_id}"
    with tempfile.TemporaryDirectory(prefix="space-") as tmp:
        stage(files, space_readme(hardware, models, root), space_requirements(hardware, root), Path(tmp), root)
        with hub_request(f"upload to the Space {repo_id}"):
            api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=tmp,
                              commit_message=f"Update the demo ({len(files)} files, scripts/publish_space.py)",
                              delete_patterns=["*.py", "model/*", "assets/*"])  # files the app no longer needs
    return f"https://huggingface.co/spaces/{repo_id}"


def main(argv: list[str] | None = None, api=None) -> int:
    p = argparse.ArgumentParser(description="Publish the demo as a Hugging Face Space.")
    p.add_argument("--repo-id", required=True, help="USER/NAME of the Space")
    p.add_argument("--hardware", choices=sorted(HARDWARE), default="cpu-basic",
                   help="static (free: the search runs in the visitor's browser), zerogpu (free accounts, "
                        "a Gradio server) or cpu-basic (a paid plan); default cpu-basic")
    p.add_argument("--private", action="store_true", help="create the Space private")
    p.add_argument("--models", nargs="*", metavar="USER/NAME",
                   help="model repositories for the Space's front matter "
                        "(default: USER/involution-<checkpoint> for each shipped checkpoint, where they exist)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the files and the generated README.md and requirements.txt; no network, no token")
    p.add_argument("--stage", metavar="DIR", help="write the Space's folder, exactly as it would be uploaded, "
                                                  "into DIR (must be empty or new); with --dry-run, nothing else")
    p.add_argument("--collection", metavar="DIR", help=f"static only: publish this collection (built with `python "
                   f"-m model.collection build`, at most {_site().STATIC_COLLECTION_MAX:,} images) as one more dataset")
    p.add_argument("--print-requirements", action="store_true",
                   help="print only the generated requirements.txt (CI installs the ZeroGPU one)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from model.checkpoint import CheckpointError
    from model.hub import check_repo_id

    try:
        check_repo_id(args.repo_id)
        models = args.models if args.models is not None else model_repos(args.repo_id.split("/")[0])
        for m in models:
            check_repo_id(m)
        if args.stage and Path(args.stage).exists() and any(Path(args.stage).iterdir()):
            raise PublishError(f"--stage {args.stage} is not empty: give a new or empty folder")
        collection = Path(args.collection) if args.collection else None
        if collection is not None:
            if args.hardware != "static":
                raise PublishError("--collection publishes with --hardware static only")
            if not (collection / _site().RECORD_FILE).is_file():
                raise PublishError(f"{collection} is not a collection (no collection.json): build it with "
                                   f"`python -m model.collection build FOLDER --checkpoint CKPT --out {collection}`")
        if args.hardware == "static":
            if args.print_requirements:
                raise PublishError("a static Space has no requirements.txt: it runs no Python")
            if args.stage:
                written = stage_static(Path(args.stage), models, collection=collection)
                print(f"staged {len(written)} files in {args.stage}", file=sys.stderr)
            if args.dry_run:
                print("\n".join(static_files(collection=collection)))
                if not args.stage:
                    print(f"--- README.md (generated) ---\n{static_readme(models)}", end="", file=sys.stderr)
                return 0
            if args.stage:
                return 0
        if args.print_requirements:
            print(space_requirements(args.hardware), end="")
            return 0
        if args.stage and args.hardware != "static":
            files = space_files()
            stage(files, space_readme(args.hardware, models), space_requirements(args.hardware), Path(args.stage))
            print(f"staged {len(files) + 2} files in {args.stage}", file=sys.stderr)
            if args.dry_run:
                print("\n".join(space_files()))
            return 0
        if args.dry_run:
            print("\n".join(space_files()))
            print(f"--- README.md (generated) ---\n{space_readme(args.hardware, models)}"
                  f"--- requirements.txt (generated, {args.hardware}) ---\n{space_requirements(args.hardware)}",
                  end="", file=sys.stderr)
            return 0
        url = publish(args.repo_id, args.hardware, args.private, models, api=api, collection=collection)
    except (PublishError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"published {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
