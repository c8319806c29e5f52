"""Shared by the dashboard tests: a generated event store over a real media file, and the
dashboard served by uvicorn on 127.0.0.1 in a thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from avar.serve.events import Event
from avar.serve.predict import StepRecord
from avar.serve.store import EventStore
from avar.media.synth import render_clip, write_av_file

CLIP_SECONDS = 20


def generated_store(root: Path, cameras: int = 0, per_camera: int = 0) -> dict:
    """``root/media/scene.mp4`` (20 s of the synthetic benchmark's 'explosion' class, H.264 +
    AAC) with a step per second scored around its anomaly and one event over it, thumbnail
    included; plus ``cameras`` stream sources with ``per_camera`` events each (no media).
    Returns the paths, the file's uri and the event's (start, end)."""
    media = root / "media"
    scene = render_clip("explosion", 3, seconds=CLIP_SECONDS, anomaly_s=(4.0, 5.0))
    clip = write_av_file(media / "scene.mp4", scene.frames, scene.fps, scene.audio, scene.audio_rate)
    uri = str(clip.resolve())
    start, end = (float(round(t)) for t in scene.interval)
    thumbnails = root / "thumbnails"
    thumbnails.mkdir(parents=True, exist_ok=True)
    thumb = thumbnails / "scene.jpg"
    peak = (start + end) / 2
    cv2.imwrite(str(thumb), cv2.cvtColor(scene.frames[int(peak * scene.fps)], cv2.COLOR_RGB2BGR))
    with EventStore(root / "events.db") as store:
        store.add_source(uri, "file")
        records = []
        for t in range(CLIP_SECONDS):
            score = float(1 / (1 + np.exp(-3 * (min(t + 0.5 - start, end - t - 0.5)))))
            p = {"normal": 1 - score, "explosion": 0.8 * score, "crash": 0.2 * score}
            records.append(StepRecord(float(t), float(t + 1), max(p, key=p.get), p, score))
        store.add_steps(uri, records)
        store.add_events([Event(uri, start, end, "explosion", 0.97, peak, str(thumb))])
        labels = ("fight", "crash", "scream")
        for cam in range(cameras):
            store.add_source(f"rtsp://cam{cam}/live", "stream")
            store.add_events([Event(f"rtsp://cam{cam}/live", float(i), float(i + 2), labels[i % 3],
                                    0.5 + 0.05 * (i % 10), float(i + 1)) for i in range(per_camera)])
    return {"db": root / "events.db", "media": media, "clip": clip, "uri": uri, "thumbnails": thumbnails,
            "event": (start, end)}


class ServerThread:
    """The dashboard of ``config`` served on 127.0.0.1 (a free port) while in the ``with`` block."""

    def __init__(self, config, log_level: str = "warning"):
        from avar.serve.dashboard.app import make_server

        self.server = make_server(config, 0, log_level=log_level)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
