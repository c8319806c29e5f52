"""The README's quick start, run as written (issue 31): its shell lines, in order, in a folder of
generated clips (``my-clips/<class>/clip-NN.mp4``), with the installed ``avar`` command. The
last line, ``avar serve``, runs until it answers a page, then is stopped."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from avar.media.synth import render_clip, write_av_file

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"normal": "normal", "fight": "brawling"}  # folder: the synthetic class rendered into it


def commands(section: str) -> list[str]:
    """The command lines of the first shell block after the README heading ``section`` (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    block = text.split(f"## {section}\n", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line]


def quick_start() -> list[str]:
    return commands("Quick start on your own footage")


def avar_env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "AVAR_PROGRESS": "0"}


def test_the_dataset_walk_through_runs_as_written(tmp_path):
    lines = commands("From long recordings to a dataset")
    assert [shlex.split(line)[:3] for line in lines] == [["avar", "dataset", a] for a in
                                                         ("example", "cut", "check", "stats", "agree")]
    for line in lines:
        done = subprocess.run(line, shell=True, cwd=tmp_path, env=avar_env(), capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (tmp_path / "data" / "splits.csv").is_file() and (tmp_path / "balance.png").is_file()
    assert "Cohen's kappa" in done.stdout


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_quick_start_runs_as_written(tmp_path):
    lines = quick_start()
    assert [shlex.split(line)[:2] for line in lines] == [["avar", "extract"], ["avar", "train"], ["avar", "evaluate"],
                                                         ["avar", "predict"], ["avar", "watch"], ["avar", "serve"]]
    for folder, name in CLASSES.items():
        for i in range(6):
            clip = render_clip(name, i, seconds=4, anomaly_s=(2.0, 3.0))
            write_av_file(tmp_path / "my-clips" / folder / f"clip-{i:02d}.mp4", clip.frames, clip.fps, clip.audio,
                          clip.audio_rate)
    env = avar_env()
    for line in lines[:-1]:
        done = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (tmp_path / "events.db").is_file() and (tmp_path / "my-run" / "config.json").is_file()

    serve = lines[-1]
    if not port_free(8080):  # the line as written, on another port when this machine's 8080 is taken
        serve += " --port 18931"
    port = int(serve.rsplit(" ", 1)[1]) if "--port" in serve else 8080
    server = subprocess.Popen(serve, shell=True, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/sources", timeout=5)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"{serve} did not answer: {server.stdout.read().decode()[-2000:]}")
                time.sleep(0.2)
        assert page.status_code == 200 and "clip-00.mp4" in page.text
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
