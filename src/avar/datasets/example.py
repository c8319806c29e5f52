"""``avar dataset example``: long recordings with known events and two annotators' CSVs of
them, generated offline, to try ``avar dataset cut | check | stats | agree`` on (the README's
walk-through; docs/datasets.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avar.media.synth import AUDIO_RATE, DESIGN, render_scene, render_soundtrack, write_av_file

CLASSES = ("brawling", "pain", "crash", "intruder")
"""The synthetic classes the example's events are drawn from (picture, sound or both differ)."""


@dataclass(frozen=True)
class Example:
    """What :func:`write_example` wrote: the ``recordings`` (relative to its folder), the true
    events (``annotations``: file,start,end,label) and a second annotator's take on them
    (``second``: boundaries off by up to 0.4 s, one label changed, one event missed, one added)."""

    root: Path
    recordings: list[str]
    annotations: Path
    second: Path


def write_example(out_dir: Path | str, *, seed: int = 0, recordings: int = 4, seconds: float = 60.0,
                  events: int = 3, size: tuple[int, int] = (256, 192), fps: float = 10.0) -> Example:
    """Write ``recordings`` recordings of ``seconds`` each (four: enough for a recording in each
    split), ``events`` events apiece (4-7 s long, at least 6 s apart), and the two annotation
    files into ``out_dir``."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    truth, names = [], []
    for k in range(recordings):
        name = f"camera{k + 1}.mp4"
        lengths = rng.uniform(4.0, 7.0, events)
        spare = seconds - lengths.sum() - 6.0 * (events + 1)
        if spare < 0:
            raise ValueError(f"{events} events of 4-7 s, 6 s apart, do not fit in {seconds:g} s")
        gaps = 6.0 + spare * rng.dirichlet(np.ones(events + 1))[:events]
        starts = np.round(np.cumsum(gaps) + np.concatenate([[0], np.cumsum(lengths)[:-1]]), 1)
        chosen = [(CLASSES[int(rng.integers(len(CLASSES)))], (float(s), float(round(s + d, 1))))
                  for s, d in zip(starts, lengths)]
        picture, sound = np.random.default_rng([seed, k]).spawn(2)
        frames = render_scene(picture, *size, fps, seconds, [(DESIGN[c].visual, iv) for c, iv in chosen])
        audio = render_soundtrack(sound, AUDIO_RATE, seconds, [(DESIGN[c].audio, iv) for c, iv in chosen])
        write_av_file(out_dir / name, frames, fps, audio, AUDIO_RATE)
        truth += [(name, s, e, c) for c, (s, e) in chosen]
        names.append(name)
    second = [(f, round(s + rng.uniform(-0.4, 0.4), 1), round(e + rng.uniform(-0.4, 0.4), 1), c)
              for f, s, e, c in truth]
    f, s, e, c = second[1]
    second[1] = (f, s, e, next(x for x in CLASSES if x != c))
    del second[-2]
    second.append((names[0], round(seconds - 4.0, 1), round(seconds - 1.5, 1), CLASSES[0]))
    paths = out_dir / "events.csv", out_dir / "events_second_annotator.csv"
    for path, rows in zip(paths, (truth, second)):
        path.write_text("file,start,end,label\n" + "".join(f"{f},{s:g},{e:g},{c}\n" for f, s, e, c in rows))
    return Example(out_dir, names, *paths)
