"""The Space, simulated: the files `scripts/publish_space.py --dry-run` lists, copied into an empty
folder with the generated README.md and requirements.txt, started as Hugging Face Spaces starts
an app (`python app.py`, GRADIO_SERVER_NAME=0.0.0.0, GRADIO_SERVER_PORT, a fresh HOME, no
repository around it), and queried on /search. A missing file fails here, not on the Hub."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from conftest import free_port, load_script
from PIL import Image

START_TIMEOUT_S = 180


@pytest.mark.slow
def test_the_listed_files_make_a_working_space(tmp_path, capsys) -> None:
    from gradio_client import Client, handle_file

    publish_space = load_script("publish_space")
    assert publish_space.main(["--repo-id", "someone/involution-demo", "--dry-run"]) == 0
    files = capsys.readouterr().out.splitlines()
    space = tmp_path / "space"
    readme = publish_space.space_readme("cpu-basic", [])
    publish_space.stage(files, readme, publish_space.space_requirements("cpu-basic"), space)
    assert sorted(p.relative_to(space).as_posix() for p in space.rglob("*") if p.is_file()) == sorted(
        [*files, "README.md", "requirements.txt"])
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GRADIO_SERVER_NAME": "0.0.0.0",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "space.log"
    with open(log, "w") as out:
        # -E: no PYTHONPATH, so nothing can be imported from the repository; only the Space's own folder
        server = subprocess.Popen([sys.executable, "-E", "app.py"], cwd=space, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert server.poll() is None, f"the Space exited:\n{log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"no answer on {url}:\n{log.read_text()[-3000:]}"
                time.sleep(1)
        client = Client(url, verbose=False)
        gallery = np.load(space / "assets" / "gallery" / "fashion_mnist.npz", allow_pickle=False)
        names = [str(c) for c in gallery["class_names"]]
        for i in (3, 250):
            query = tmp_path / f"q{i}.png"
            Image.fromarray(gallery["images"][i].squeeze()).save(query)
            results, table = client.predict("FashionMNIST", handle_file(str(query)), 4, api_name="/search")
            assert len(results) == 4
            rows = table["data"]
            assert rows[0][0] == i and rows[0][1] == names[gallery["labels"][i]]  # the image finds itself first
            assert rows[0][2] > 0.999
        text = log.read_text()
        assert "rebuilding" not in text, "a shipped search bundle was stale in the Space"
    finally:
        server.terminate()
        server.wait(timeout=30)
