"""The Hugging Face side without a network: checkpoints loaded as hf://USER/NAME through
huggingface_hub's own cache lookup, and scripts/publish_space.py and publish_models.py driving a
recording stand-in for HfApi (arguments, repository types, the exact files uploaded). The Space
simulation (tests/test_space.py) proves the Space's file list is complete."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import shutil
import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
from conftest import ROOT, free_port, load_script
from huggingface_hub.errors import HfHubHTTPError

from model import export
from model.checkpoint import CheckpointError
from model.embedder import Embedder, load_embedder

SHIPPED = ROOT / "assets" / "mnist-hybrid1"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty huggingface_hub cache, offline: only what a test puts there can be loaded."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_repo(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> None:
    """Lay out files as huggingface_hub leaves a downloaded model repository: content-addressed
    blobs, a snapshot folder of links to them, and refs/main naming the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../..") / "blobs" / blob.name)


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: records every call and what upload_folder would send."""

    def __init__(self, existing: set[str] = frozenset(), refuse: int | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: dict[str, bytes] = {}
        self.existing, self.refuse = existing, refuse

    def _maybe_refuse(self) -> None:
        if self.refuse:
            import httpx

            request = httpx.Request("POST", "https://huggingface.co/api/repos/create")
            response = httpx.Response(self.refuse, request=request)
            raise HfHubHTTPError(f"{self.refuse} Client Error: refused by the stand-in", response=response)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        self._maybe_refuse()

    def repo_exists(self, repo_id, **kwargs):
        self.calls.append(("repo_exists", {"repo_id": repo_id, **kwargs}))
        return repo_id in self.existing

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        folder = Path(kwargs["folder_path"])
        self.uploaded = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    def call(self, name: str) -> dict:
        (found,) = [kw for n, kw in self.calls if n == name]
        return found


def test_hf_reference_loads_through_the_hub_cache(hub_cache) -> None:
    files = {name: (SHIPPED / name).read_bytes() for name in ("model.safetensors", "config.json", "metrics.json")}
    cache_repo(hub_cache, "someone/involution-mnist-hybrid1", files)
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    expected = load_embedder(SHIPPED).embed(images)
    for embedder in (load_embedder("hf://someone/involution-mnist-hybrid1"),
                     load_embedder(f"hf://someone/involution-mnist-hybrid1@{COMMIT}"),
                     Embedder.from_pretrained("someone/involution-mnist-hybrid1"),
                     Embedder.from_pretrained(SHIPPED)):  # a local folder stays a folder
        np.testing.assert_array_equal(embedder.embed(images), expected)


@pytest.mark.parametrize(("reference", "message"), [
    ("hf://someone/not-downloaded", "not in the local Hugging Face cache and the Hub cannot be reached"),
    ("hf://no-slash", "is not a Hub repository id: write USER/NAME"),
    ("hf://a/b/c", "is not a Hub repository id"),
    ("hf://someone/../x", "is not a Hub repository id"),
])
def test_bad_hub_references_are_one_line(hub_cache, reference, message) -> None:
    with pytest.raises(CheckpointError, match=message) as e:
        load_embedder(reference)
    assert "\n" not in str(e.value)


def test_a_repository_without_a_checkpoint_is_named(hub_cache) -> None:
    cache_repo(hub_cache, "someone/readme-only", {"README.md": b"# nothing here"})
    with pytest.raises(CheckpointError, match="holds no config.json"):
        load_embedder("hf://someone/readme-only")


@pytest.fixture
def token(monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")


@pytest.mark.slow
def test_publish_space_static_uploads_the_static_site(token, capsys) -> None:
    """--hardware static creates an `sdk: static` Space (no hardware to ask for) and uploads the
    files its dry run lists, replacing whatever the Space held before."""
    publish_space = load_script("publish_space")
    api = RecordingHfApi(existing={"someone/involution-mnist-hybrid1"})
    assert publish_space.main(["--repo-id", "someone/involution-search", "--hardware", "static"], api=api) == 0
    assert "published https://huggingface.co/spaces/someone/involution-search" in capsys.readouterr().out
    assert api.call("create_repo") == {"repo_id": "someone/involution-search", "repo_type": "space",
                                       "space_sdk": "static", "private": False, "exist_ok": True}
    upload = api.call("upload_folder")
    assert upload["delete_patterns"] == ["*"]
    assert sorted(api.uploaded) == publish_space.static_files()
    readme = api.uploaded["README.md"].decode()
    assert "sdk: static" in readme and "  - someone/involution-mnist-hybrid1" in readme
    assert "involution-cifar10-hybrid1" not in readme  # only the model repositories that exist


def test_publish_space_uploads_exactly_the_space(token, capsys) -> None:
    publish_space = load_script("publish_space")
    api = RecordingHfApi(existing={"someone/involution-cifar10-hybrid1"})
    assert publish_space.main(["--repo-id", "someone/involution-demo", "--hardware", "zerogpu", "--private"],
                              api=api) == 0
    assert "published https://huggingface.co/spaces/someone/involution-demo" in capsys.readouterr().out
    create = api.call("create_repo")
    assert create == {"repo_id": "someone/involution-demo", "repo_type": "space", "space_sdk": "gradio",
                      "private": True, "exist_ok": True, "space_hardware": "zero-a10g"}
    upload = api.call("upload_folder")
    assert upload["repo_id"] == "someone/involution-demo" and upload["repo_type"] == "space"
    assert set(upload["delete_patterns"]) == {"*.py", "model/*", "assets/*"}
    files = publish_space.space_files()
    assert set(api.uploaded) == {*files, "README.md", "requirements.txt"}
    for rel in files:  # copied as they are
        assert api.uploaded[rel] == (ROOT / rel).read_bytes()
    readme = api.uploaded["README.md"].decode()
    assert "sdk: gradio" in readme and 'python_version: "3.12"' in readme
    # only the model repositories that exist are linked
    assert "models:\n  - someone/involution-cifar10-hybrid1\n---" in readme
    requirements = api.uploaded["requirements.txt"].decode().splitlines()
    assert {"torch==2.11.0", "torchvision==0.26.0", "spaces"} <= set(requirements)
    assert not any(line.startswith(("gradio", "pytorch-metric-learning")) for line in requirements)


def test_publish_space_dry_run_needs_no_token(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    publish_space = load_script("publish_space")
    assert publish_space.main(["--repo-id", "someone/involution-demo", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == publish_space.space_files()
    assert "app.py" in out.splitlines() and "model/hub.py" in out.splitlines()
    assert "model/training.py" not in out and "curves.png" not in out  # not needed by the app
    sdk_version = next(line.split("==")[1] for line in (ROOT / "requirements.txt").read_text().splitlines()
                       if line.startswith("gradio=="))
    assert f"sdk_version: {sdk_version}" in err and "--- requirements.txt (generated, cpu-basic) ---" in err
    # without --dry-run, no token is one clear line before anything is sent
    api = RecordingHfApi()
    assert publish_space.main(["--repo-id", "someone/involution-demo"], api=api) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no Hugging Face token: set HF_TOKEN") and err.count("\n") == 1
    assert api.calls == []


def test_a_refused_request_is_one_line(token, capsys) -> None:
    publish_space = load_script("publish_space")
    assert publish_space.main(["--repo-id", "someone/involution-demo"], api=RecordingHfApi(refuse=402)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HTTP 402" in err and "try --hardware zerogpu" in err
    publish_models = load_script("publish_models")
    assert publish_models.main(["--repo-id", "someone/x", str(SHIPPED)], api=RecordingHfApi(refuse=403)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HTTP 403" in err and "write access" in err


def test_an_unreachable_hub_is_one_line(token, capsys) -> None:
    from huggingface_hub import HfApi

    closed = HfApi(endpoint=f"http://127.0.0.1:{free_port()}", token="hf_test_token_not_real")  # nothing listens
    publish_space = load_script("publish_space")
    assert publish_space.main(["--repo-id", "someone/involution-demo"], api=closed) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not reach the Hub to create the Space") and err.count("\n") == 1


def test_published_model_loads_back_as_hf_reference(token, hub_cache, capsys) -> None:
    publish_models = load_script("publish_models")
    api = RecordingHfApi()
    assert publish_models.main(["--repo-id", "someone/involution-mnist-hybrid1", str(SHIPPED)], api=api) == 0
    assert api.call("create_repo") == {"repo_id": "someone/involution-mnist-hybrid1", "repo_type": "model",
                                       "private": False, "exist_ok": True}
    assert api.call("upload_folder")["repo_type"] == "model"
    assert set(api.uploaded) == {"model.safetensors", "config.json", "metrics.json", "recipe.toml", "curves.png",
                                 "index.json", "index.npz", "model.onnx", "README.md"}
    card = api.uploaded["README.md"].decode()
    assert card.startswith("---\nlicense: mit\n") and "ylecun/mnist" in card
    assert 'load_embedder("hf://someone/involution-mnist-hybrid1")' in card and "## Limits" in card
    t = json.loads((SHIPPED / "metrics.json").read_text())["test"]  # the shipped metrics.json's figures
    figures = f"{t['precision_at_1']:.4f} | {t['r_precision']:.4f} | {t['mean_average_precision_at_r']:.4f}"
    assert f"| {figures} | 116,344 |" in card
    assert "was made on 5,000 training images held out as a validation split" in card
    # what was uploaded, once downloaded, is the same checkpoint
    cache_repo(hub_cache, "someone/involution-mnist-hybrid1", api.uploaded)
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(load_embedder("hf://someone/involution-mnist-hybrid1").embed(images),
                                  load_embedder(SHIPPED).embed(images))


def test_a_compact_models_card_says_it_is_this_projects_not_the_papers() -> None:
    publish_models = load_script("publish_models")
    folder = ROOT / "assets" / "mnist-compact-conv"
    card = publish_models.model_card("someone/involution-mnist-compact-conv", folder,
                                     json.loads((folder / "config.json").read_text()),
                                     publish_models.read_metrics(folder))
    assert "# Compact-Conv on MNIST: a " in card
    assert "this project's compact residual network, not the paper's" in card
    assert "it is not the paper's model" in card and "The paper this model reproduces" not in card


def test_the_model_cards_onnx_snippet_runs_with_onnxruntime_alone(token, hub_cache, tmp_path) -> None:
    """The card's first snippet, run as it is printed in a fresh interpreter that cannot import this
    project (python -I, another working folder), offline, on the repository as a download leaves it:
    it gives the embeddings of the PyTorch route."""
    import subprocess

    publish_models = load_script("publish_models")
    api = RecordingHfApi()
    repo = "someone/involution-mnist-hybrid1"
    assert publish_models.main(["--repo-id", repo, str(SHIPPED)], api=api) == 0
    cache_repo(hub_cache, repo, api.uploaded)
    card = api.uploaded["README.md"].decode()
    section = card.split("## Run it with onnxruntime", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    imported = {n.names[0].name if isinstance(n, ast.Import) else n.module
                for n in ast.walk(ast.parse(snippet)) if isinstance(n, (ast.Import, ast.ImportFrom))}
    assert imported == {"numpy", "onnxruntime", "huggingface_hub"}
    # the printed placeholder (blank images) says little about a batch of real ones, so the card's own
    # `vectors = ...` line is run once more, on test images (no choice was made on them) in place of it
    (run_line,) = [line for line in snippet.splitlines() if line.startswith("vectors = ")]
    real = export.gallery_images(SHIPPED)[:16]
    np.save(tmp_path / "real.npy", real)
    out, out_real = tmp_path / "vectors.npy", tmp_path / "vectors-real.npy"
    code = (f"{snippet}\nnp.save({str(out)!r}, vectors)\n"
            f"images = np.load({str(tmp_path / 'real.npy')!r})\n{run_line}\nnp.save({str(out_real)!r}, vectors)")
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-I", "-c", code],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    embedder = load_embedder(SHIPPED)
    for got, images in ((np.load(out), np.zeros((2, 28, 28), dtype=np.uint8)), (np.load(out_real), real[..., 0])):
        assert got.shape == (len(images), 256) and got.dtype == np.float32
        np.testing.assert_allclose(got, embedder.embed(images), atol=1e-5)
    assert "import model" not in snippet and "torch" not in snippet


def test_publish_models_refuses_what_is_not_a_checkpoint(tmp_path, token, capsys) -> None:
    publish_models = load_script("publish_models")
    api = RecordingHfApi()
    assert publish_models.main(["--repo-id", "someone/x", str(tmp_path)], api=api) == 2
    assert "config.json is missing" in capsys.readouterr().err
    folder = tmp_path / "no-metrics"
    shutil.copytree(SHIPPED, folder)
    (folder / "metrics.json").unlink()
    assert publish_models.main(["--repo-id", "someone/x", str(folder), "--dry-run"]) == 2
    assert "has no metrics.json" in capsys.readouterr().err
    (folder / "metrics.json").write_text("{not json")
    assert publish_models.main(["--repo-id", "someone/x", str(folder)], api=api) == 2
    err = capsys.readouterr().err
    assert "is not a finished run's metrics" in err and err.count("\n") == 1
    assert publish_models.main(["--repo-id", "not an id", str(SHIPPED), "--dry-run"]) == 2
    assert "is not a Hub repository id" in capsys.readouterr().err
    assert api.calls == []


def _third_party_imports(files: list[Path]) -> set[str]:
    names = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("model", "__future__")}


@pytest.mark.parametrize("hardware", ["cpu-basic", "zerogpu"])
def test_space_requirements_cover_every_import_of_the_space(hardware) -> None:
    publish_space = load_script("publish_space")
    files = [ROOT / f for f in publish_space.space_files() if f.endswith(".py")]
    required = {publish_space.requirement_name(line)
                for line in publish_space.space_requirements(hardware).splitlines()}
    required.add("gradio")  # installed by the Space from sdk_version
    distributions = importlib.metadata.packages_distributions()
    for module in _third_party_imports(files):
        if module == "spaces":  # imported on ZeroGPU only, where it is required
            assert ("spaces" in required) == (hardware == "zerogpu")
            continue
        names = {publish_space.requirement_name(d) for d in distributions.get(module, [])}
        assert names & required, f"the Space imports {module} but its requirements install none of {names}"
    for package in publish_space.TRAINING_ONLY:  # dropped from the Space: no Space file may import them
        modules = {m for m, dists in distributions.items()
                   if package in {publish_space.requirement_name(d) for d in dists}}
        assert not modules & _third_party_imports(files), package


def test_the_demo_serves_a_model_repository_in_place_of_the_shipped_weights(assets, hub_cache, token) -> None:
    """INVOLUTION_MODELS names repositories; the shipped MNIST Hybrid-1 published from ROOT/assets replaces
    the synthetic one of the test assets, and its bundle, made for another gallery, is rebuilt in the
    demo's own folder, never in the Hugging Face cache."""
    from model.demo import Demo
    from model.files import sha256_file

    publish_models = load_script("publish_models")
    api = RecordingHfApi()
    assert publish_models.main(["--repo-id", "someone/involution-mnist-hybrid1", str(SHIPPED)], api=api) == 0
    cache_repo(hub_cache, "someone/involution-mnist-hybrid1", api.uploaded)
    before = {p: p.read_bytes() for p in hub_cache.rglob("*") if p.is_file()}
    messages: list[str] = []
    demo = Demo(assets=assets, log=messages.append,
                hub_models=["hf://someone/involution-mnist-hybrid1", "hf://someone/never-published"])
    assert "mnist-hybrid1: serving hf://someone/involution-mnist-hybrid1" in messages
    assert any(m.startswith("hf://someone/never-published not loaded, keeping the shipped weights: ")
               for m in messages)
    folder = demo.checkpoint("MNIST", "Hybrid-1")
    assert folder != assets / "mnist-hybrid1" and sha256_file(folder / "model.safetensors") == sha256_file(
        SHIPPED / "model.safetensors")
    assert demo.checkpoint("MNIST", "CNN-3a") == assets / "mnist-cnn3a"  # not named: shipped
    index = demo.index("MNIST", "Hybrid-1")
    assert any("rebuilding it once" in m for m in messages)  # rebuilt for the test gallery
    result = demo.search("MNIST", "Hybrid-1", index.images[4], 3)
    assert result.hits[0].index == 4 and result.hits[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert {p: p.read_bytes() for p in hub_cache.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_the_space_files_alone_build_the_page(tmp_path) -> None:
    """What the Gradio Space is sent is enough for app.py: the page is built from a folder holding
    only space_files() (a file app.py reads but the upload leaves out fails here, not on the Space)."""
    import subprocess

    publish_space = load_script("publish_space")
    for rel in publish_space.space_files():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, tmp_path / rel)
    proc = subprocess.run([sys.executable, "-c", "import app; app.build(); print('built')"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "built" in proc.stdout, proc.stderr[-2000:]
