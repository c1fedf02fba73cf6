"""Data flows one way (model/__init__.py): the library never imports the demo, which is UI
wiring above it. An import of model.demo from a library module pulls in the page, Gradio's
helpers and pandas (half a second): a collection build paid it on its first image."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import ROOT


def imported_modules(path) -> set[str]:
    """Every module a file imports, relative imports resolved against model/."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "model" if node.level == 1 else "" if node.level == 0 else "<above model>"
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names |= {f"{module}.{a.name}" for a in node.names}
    return names


def test_the_library_never_imports_the_demo():
    offenders = {}
    for path in sorted((ROOT / "model").glob("*.py")):
        bad = sorted(n for n in imported_modules(path) if n == "model.demo" or n.startswith("model.demo."))
        if bad:
            offenders[path.name] = bad
    assert not offenders, f"library modules importing the demo: {offenders}"


def test_a_collection_build_loads_no_demo_module(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 48), (40 * i, 90, 200 - 40 * i)).save(folder / f"{i}.jpg")
    script = ("import sys; from model import collection as c; "
              f"c.build({str(folder)!r}, {str(ROOT / 'assets' / 'cifar10-hybrid1')!r}, {str(tmp_path / 'out')!r}, "
              "log=lambda m: None, progress=False); "
              "print(sorted(m for m in sys.modules if m.startswith('model.demo') or m in ('pandas', 'gradio')))")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
