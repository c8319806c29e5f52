"""A deterministic synthetic audio-visual anomaly benchmark, written as real MP4 files.

Ten classes named after the VAAR dataset of the AVAR-Net paper. Every clip is a surveillance
scene (per-clip background, static texture, sensor noise, a few small walking pedestrians,
ambient noise and faint babble); an anomaly fills a random 2.5-4 s interval of it, and the
rest of the clip stays normal. The classes are built so that each modality matters:

* audio-only classes change the sound only, video-only classes the picture only;
* the four joint classes are the XOR of two visual patterns and two sound patterns
  (``brawling`` = struggle + thuds, ``abuse`` = struggle + rumble, ``crash`` = impact + thuds,
  ``explosion`` = impact + rumble), so no single modality can tell all four apart.

Files go to ``OUT_DIR/<class>/<class>_<k:03d>.mp4`` (H.264 yuv420p + AAC mono 48 kHz) with
``OUT_DIR/metadata.json``::

    {"generator", "seed", "clips_per_class", "seconds", "size": [w, h], "fps", "audio_rate",
     "weak": bool, "anomaly_seconds": [lo, hi], "clip_counts": {class: n},
     "classes": [...],                        # label order, "normal" first
     "groups": {"normal", "audio_only", "video_only", "joint": [class, ...]},
     "design": {class: {"visual", "audio", "group"}},
     "patterns": {"visual": {name: description}, "audio": {name: description}},
     "clips": [{"path": "<class>/<class>_000.mp4", "class", "label", "seed", "duration",
                "interval": [start_s, end_s] or null, "visual", "audio"}, ...]}

Clip ``k`` of class number ``c`` draws from ``clip_seed(seed, c, k)`` (a child
``SeedSequence(seed, spawn_key=(c, k))``, recorded as the clip's "seed"), so it is the same
clip however many clips are asked for, and ``render_clip(class, seed)`` re-renders it.

``synthesize(weak=True)`` (``avar synth --weak``) writes the weakly labelled variant for
AVACA-style training: 30 s clips whose anomaly fills 3-9 s, and as many normal clips as
anomalous ones. The class folders and the metadata layout are the same; a trainer reads only
"normal" vs anything else per clip, and ``interval`` is the frame-level truth for evaluation.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import scipy.fft
from scipy import signal
from tqdm.auto import tqdm

from avar.files import atomic_path, write_json_atomic

AUDIO_RATE = 48_000
"""Sample rate (Hz) of the synthetic clips' audio."""

AAC_FRAME = 1024
"""Samples per AAC frame: the encoder takes audio in blocks of this size."""

VIDEO_TICKS = 90_000
"""Video ticks per second: fine enough for any frame rate and explicit variable frame times."""

VISUAL_PATTERNS: dict[str, str] = {
    "background": "normal scene only: static wall and floor, sensor noise, 1-3 small pedestrians",
    "intruder": "one large dark human silhouette (head, body, swinging legs) walking across",
    "vandalism": "bright multi-coloured spray strokes accumulating on the wall, flickering",
    "struggle": "two medium, brightly dressed figures overlapping and jittering violently",
    "impact": "a full-frame flash, then a large pulsing orange/white fireball throwing sparks",
}
"""Every visual pattern a class can use, with what it looks like."""

AUDIO_PATTERNS: dict[str, str] = {
    "ambient": "normal sound only: coloured noise at a random level, faint modulated babble",
    "baby_cry": "harmonic tone, f0 350-500 Hz, 5-8 Hz vibrato, ~0.6 s pulses",
    "siren": "sine (+ weak harmonics) sweeping ~650-1500 Hz, wail period 1-2 s",
    "scream": "loud noisy harmonic bursts, f0 900-1300 Hz with rapid pitch jitter, clipped",
    "thuds": "repeated broadband impact thuds at 3-5 Hz (noise burst + low thump)",
    "rumble": "loud low rumble (noise band-passed to 40-200 Hz) with sparse crackle",
}
"""Every sound pattern a class can use, with what it sounds like."""


@dataclass(frozen=True)
class ClassDesign:
    """Which visual and which sound pattern make up a class."""

    visual: str
    audio: str

    @property
    def group(self) -> str:
        """``normal``, ``audio_only``, ``video_only`` or ``joint``."""
        odd_picture = self.visual != "background"
        odd_sound = self.audio != "ambient"
        if odd_picture and odd_sound:
            return "joint"
        if odd_picture:
            return "video_only"
        return "audio_only" if odd_sound else "normal"


DESIGN: dict[str, ClassDesign] = {
    "normal": ClassDesign("background", "ambient"),
    "baby_cry": ClassDesign("background", "baby_cry"),
    "police_siren": ClassDesign("background", "siren"),
    "pain": ClassDesign("background", "scream"),
    "intruder": ClassDesign("intruder", "ambient"),
    "vandalism": ClassDesign("vandalism", "ambient"),
    "brawling": ClassDesign("struggle", "thuds"),
    "abuse": ClassDesign("struggle", "rumble"),
    "crash": ClassDesign("impact", "thuds"),
    "explosion": ClassDesign("impact", "rumble"),
}
"""Class name -> (visual, audio) pattern; the order is the label order."""

CLASSES: list[str] = list(DESIGN)
"""Class names in label order, ``normal`` first."""

AUDIO_ONLY = tuple(c for c, d in DESIGN.items() if d.group == "audio_only")
VIDEO_ONLY = tuple(c for c, d in DESIGN.items() if d.group == "video_only")
JOINT = tuple(c for c, d in DESIGN.items() if d.group == "joint")


@dataclass(frozen=True)
class SynthSummary:
    """What ``synthesize`` wrote."""

    out_dir: Path
    n_clips: int
    classes: list[str]
    metadata: Path
    """``out_dir / "metadata.json"``."""


@dataclass
class SynthClip:
    """One rendered clip before encoding.

    ``frames`` is ``uint8 [T, H, W, 3]`` RGB at ``fps``; ``audio`` is ``float32 [S]`` mono in
    [-1, 1] at ``audio_rate`` Hz; ``interval`` is the anomaly's ``(start_s, end_s)``, or None
    for a normal clip.
    """

    frames: np.ndarray
    audio: np.ndarray
    fps: float
    audio_rate: int
    interval: tuple[float, float] | None


# --------------------------------------------------------------------------- writing


_CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def write_av_file(
    path: Path | str,
    frames_rgb: np.ndarray,
    fps: float,
    audio: np.ndarray | None,
    audio_rate: int,
    *,
    video_start_s: float = 0.0,
    audio_start_s: float = 0.0,
    frame_times_s: np.ndarray | None = None,
) -> Path:
    """Write H.264 video (+ AAC audio) to ``path`` (.mp4, .m4v, .mov or .mkv).

    ``frames_rgb`` is ``uint8 [T, H, W, 3]`` with even H and W (yuv420p needs them).
    Frame ``i`` is shown at ``video_start_s + i / fps`` seconds, or at ``frame_times_s[i]``
    when given (variable frame rate; ``fps`` is then only the nominal rate and
    ``video_start_s`` is ignored). ``audio`` is
    ``float32 [S]`` (mono) or ``[C, S]`` with C in {1, 2}, in [-1, 1] (clipped), starting at
    ``audio_start_s``; None writes a file without an audio stream. The file appears
    atomically: it is written next to ``path`` and renamed when complete.
    """
    path = Path(path)
    fmt = _CONTAINER_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: cannot write '{path.suffix}' files; use one of {sorted(_CONTAINER_FORMATS)}"
        )
    frames_rgb = np.asarray(frames_rgb)
    if frames_rgb.dtype != np.uint8 or frames_rgb.ndim != 4 or frames_rgb.shape[-1] != 3:
        raise ValueError(
            f"{path}: frames must be uint8 [T, H, W, 3] RGB, got {frames_rgb.dtype} "
            f"{list(frames_rgb.shape)}"
        )
    n, height, width, _ = frames_rgb.shape
    if n == 0 or height % 2 or width % 2:
        raise ValueError(
            f"{path}: need at least one frame with even height and width for yuv420p, got "
            f"{n} frames of {width}x{height}; crop or pad the frames by one pixel"
        )
    if frame_times_s is None:
        frame_times_s = video_start_s + np.arange(n) / fps
    frame_times_s = np.asarray(frame_times_s, dtype=np.float64)
    pts = np.round(frame_times_s * VIDEO_TICKS).astype(np.int64)
    if pts.shape != (n,) or pts[0] < 0 or np.any(np.diff(pts) <= 0):
        raise ValueError(
            f"{path}: frame times must be {n} non-negative, strictly increasing seconds "
            f"(distinct at 1/90000 s)"
        )
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2 or audio.shape[0] not in (1, 2):
            raise ValueError(f"{path}: audio must be [S] or [C, S] with C in (1, 2), got {list(audio.shape)}")
        if audio_start_s < 0:
            raise ValueError(f"{path}: audio_start_s must be >= 0, got {audio_start_s}")
        audio = np.ascontiguousarray(np.clip(audio, -1.0, 1.0))

    with atomic_path(path) as partial:
        _encode(partial, fmt, frames_rgb, fps, pts, audio, audio_rate, audio_start_s)
    return path


def _encode(
    path: Path,
    fmt: str,
    frames: np.ndarray,
    fps: float,
    pts: np.ndarray,
    audio: np.ndarray | None,
    audio_rate: int,
    audio_start_s: float,
) -> None:
    options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
    with av.open(str(path), "w", format=fmt, container_options=options) as container:
        video = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, VIDEO_TICKS)
        # A keyframe every ~2 s keeps seeking by timestamp cheap in long files.
        video.codec_context.gop_size = max(1, round(2 * fps))
        # ultrafast: encoding dominates the benchmark's cost, and crf 25 still keeps most of
        # the synthetic sensor noise. One thread: x264's output depends on its thread count,
        # and the same frames must give the same file on any machine.
        video.options = {"preset": "ultrafast", "crf": "25"}
        video.codec_context.thread_count = 1

        chunks: list[av.AudioFrame] = []
        if audio is not None:
            layout = "mono" if audio.shape[0] == 1 else "stereo"
            sound = container.add_stream("aac", rate=audio_rate, layout=layout)
            # The fast coder halves AAC encoding time for a slight loss of quality.
            sound.options = {"aac_coder": "fast"}
            offset = int(round(audio_start_s * audio_rate))
            for s in range(0, audio.shape[1], AAC_FRAME):
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(audio[:, s : s + AAC_FRAME]), format="fltp", layout=layout
                )
                chunk.sample_rate = audio_rate
                chunk.time_base = Fraction(1, audio_rate)
                chunk.pts = offset + s
                chunks.append(chunk)

        # Feed both encoders in presentation order so the muxer interleaves without
        # buffering a whole stream.
        next_chunk = 0
        for frame_rgb, tick in zip(frames, pts):
            while next_chunk < len(chunks) and chunks[next_chunk].time <= tick / VIDEO_TICKS:
                container.mux(sound.encode(chunks[next_chunk]))
                next_chunk += 1
            # OpenCV's BT.601 conversion matches swscale's default and is several times faster.
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            frame.pts, frame.time_base = int(tick), Fraction(1, VIDEO_TICKS)
            container.mux(video.encode(frame))
        for chunk in chunks[next_chunk:]:
            container.mux(sound.encode(chunk))
        container.mux(video.encode(None))
        if audio is not None:
            container.mux(sound.encode(None))


# --------------------------------------------------------------------------- scene


def clip_seed(seed: int, class_index: int, k: int) -> int:
    """The seed of clip ``k`` of class ``class_index``: independent of how many are made."""
    child = np.random.SeedSequence(seed, spawn_key=(class_index, k))
    return int(child.generate_state(1, np.uint64)[0])


def anomaly_interval(
    rng: np.random.Generator, seconds: float, length_s: tuple[float, float] = (2.5, 4.0)
) -> tuple[float, float]:
    """An interval of ``length_s`` seconds (default 2.5-4 s) inside the clip, shortened to 80%
    of clips under ~5 s.

    Rounded to milliseconds so that ``metadata.json`` holds exactly what was rendered.
    """
    margin = min(0.5, 0.1 * seconds)
    length = min(rng.uniform(*length_s), 0.8 * seconds)
    start = rng.uniform(margin, max(margin, seconds - margin - length))
    return round(start, 3), round(start + length, 3)


Painter = Callable[[np.ndarray, float], None]
"""Draws one pattern onto an RGB uint8 frame in place, given the frame's time (s)."""


def _dark_colour(rng: np.random.Generator, low: int, high: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, 3))


def _bright_colour(rng: np.random.Generator, value: float = 255) -> tuple[int, int, int]:
    """A saturated colour of random hue."""
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(170, 256), value]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A static wall-and-floor scene: gradient, a few fixtures, low-frequency texture."""
    top, bottom = rng.uniform(50, 180, 3), rng.uniform(40, 170, 3)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).copy()
    horizon = int(height * rng.uniform(0.45, 0.6))
    image[horizon:] *= rng.uniform(0.6, 0.9)
    for _ in range(rng.integers(1, 4)):  # doors, windows, signs on the wall
        x0, y0 = rng.integers(0, width - width // 8), rng.integers(height // 10, horizon - height // 8)
        x1, y1 = x0 + rng.integers(width // 16, width // 5), y0 + rng.integers(height // 12, height // 3)
        fill = rng.uniform(30, 200, 3).tolist()
        cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(min(y1, horizon))), fill, -1)
    texture = cv2.resize(
        rng.normal(0, 1, (height // 16 + 2, width // 16 + 2)).astype(np.float32),
        (width, height),
        interpolation=cv2.INTER_CUBIC,
    )
    image += (rng.uniform(3, 9) * texture)[..., None]
    return image


def _pedestrians(rng: np.random.Generator, width: int, height: int) -> Painter:
    """1-3 small dark figures walking across the floor, wrapping around at the edges."""
    walkers = []
    for _ in range(rng.integers(1, 4)):
        feet = rng.uniform(0.62, 0.95) * height
        tall = height * (0.06 + 0.1 * (feet / height - 0.5) / 0.5)  # farther is smaller
        speed = rng.uniform(0.03, 0.12) * width * rng.choice([-1, 1])
        walkers.append((feet, tall, rng.uniform(0, width), speed, _dark_colour(rng, 15, 90)))

    def paint(frame: np.ndarray, t: float) -> None:
        span = width + 40
        for feet, tall, x0, speed, colour in walkers:
            x = (x0 + speed * t) % span - 20
            cx, body_y = int(x), int(feet - 0.38 * tall)
            cv2.ellipse(frame, (cx, body_y), (max(2, int(0.16 * tall)), int(0.38 * tall)), 0, 0, 360, colour, -1)
            cv2.circle(frame, (cx, int(feet - 0.86 * tall)), max(2, int(0.11 * tall)), colour, -1)

    return paint


def _figure(
    frame: np.ndarray, cx: int, feet: float, tall: float, colour: tuple[int, int, int],
    tilt_deg: float, arms: tuple[float, float], stride: float,
) -> None:
    """A standing human shape: head, body, two legs and two arms (angles in degrees)."""
    thick = max(2, int(0.07 * tall))
    hip = (cx, int(feet - 0.45 * tall))
    for side in (-1, 1):
        foot = (int(cx + side * stride * 0.2 * tall), int(feet))
        cv2.line(frame, hip, foot, colour, thick)
    body = (cx, int(feet - 0.62 * tall))
    cv2.ellipse(frame, body, (max(3, int(0.14 * tall)), int(0.2 * tall)), tilt_deg, 0, 360, colour, -1)
    shoulder = (cx, int(feet - 0.76 * tall))
    for angle in arms:
        rad = np.deg2rad(angle)
        hand = (int(shoulder[0] + 0.35 * tall * np.sin(rad)), int(shoulder[1] + 0.35 * tall * np.cos(rad)))
        cv2.line(frame, shoulder, hand, colour, thick)
    head_x = int(cx + 0.1 * tall * np.sin(np.deg2rad(tilt_deg)))
    cv2.circle(frame, (head_x, int(feet - 0.9 * tall)), max(3, int(0.1 * tall)), colour, -1)


def _intruder(rng: np.random.Generator, width: int, height: int, start: float, end: float) -> Painter:
    tall = rng.uniform(0.55, 0.75) * height
    feet = rng.uniform(0.86, 0.98) * height
    x_in, x_out = 0.1 * width, 0.9 * width
    if rng.random() < 0.5:
        x_in, x_out = x_out, x_in
    colour = _dark_colour(rng, 5, 40)
    step_hz = rng.uniform(1.5, 2.5)

    def paint(frame: np.ndarray, t: float) -> None:
        u = (t - start) / (end - start)
        swing = np.sin(2 * np.pi * step_hz * (t - start))
        bob = 0.02 * tall * abs(swing)
        x = int(x_in + u * (x_out - x_in))
        _figure(frame, x, feet - bob, tall, colour, 0, (25 * swing, -25 * swing), swing)

    return paint


def _vandalism(rng: np.random.Generator, width: int, height: int, start: float, end: float) -> Painter:
    strokes = []
    for _ in range(rng.integers(5, 10)):
        n = rng.integers(6, 11)
        steps = rng.normal(0, 1, (n, 2)) * [0.06 * width, 0.05 * height]
        first = rng.uniform([0.1 * width, 0.12 * height], [0.9 * width, 0.45 * height])
        points = np.clip(first + np.cumsum(steps, axis=0), 0, [width - 1, 0.55 * height])
        thick = max(2, round(rng.uniform(5, 10) * height / 240))
        strokes.append((points.astype(np.int32), np.array(_bright_colour(rng), np.float64), thick))
    # Strokes appear over the first 30% of the interval, starting a quarter drawn, so that
    # every part of the interval shows paint.
    reveal = 0.3 * (end - start)

    def paint(frame: np.ndarray, t: float) -> None:
        done = (0.25 + 0.75 * min(1.0, (t - start) / reveal)) * len(strokes)
        flicker = rng.uniform(0.7, 1.0)
        for i, (points, colour, thick) in enumerate(strokes[: int(np.ceil(done))]):
            keep = len(points) if i + 1 <= done else max(2, int((done - i) * len(points)))
            # A wide dim halo under a bright core reads as spray paint without a blur.
            cv2.polylines(frame, [points[:keep]], False, (0.5 * flicker * colour).tolist(), thick + 4, cv2.LINE_AA)
            cv2.polylines(frame, [points[:keep]], False, (flicker * colour).tolist(), thick, cv2.LINE_AA)

    return paint


def _struggle(rng: np.random.Generator, width: int, height: int, start: float, end: float) -> Painter:
    tall = rng.uniform(0.32, 0.42) * height
    feet = rng.uniform(0.75, 0.95) * height
    cx = rng.uniform(0.25, 0.75) * width
    drift = rng.uniform(-0.05, 0.05) * width
    colours = (_bright_colour(rng, 200), _bright_colour(rng, 160))

    def paint(frame: np.ndarray, t: float) -> None:
        u = (t - start) / (end - start)
        x = cx + drift * u
        for side, colour in zip((-1, 1), colours):
            dx, dy = rng.normal(0, 0.08 * tall, 2)
            arms = rng.uniform(-180, 180, 2)
            tilt = rng.uniform(-35, 35)
            stride = rng.uniform(0.5, 1.5)
            _figure(frame, int(x + side * 0.15 * tall + dx), feet + dy, tall, colour, tilt, arms, stride)

    return paint


def _fireball_sprite(radius: int, core: np.ndarray, rim: np.ndarray) -> np.ndarray:
    """float32 [2r+1, 2r+1, 4]: RGB shading white core -> orange -> red rim, plus alpha."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    d = np.sqrt(xx**2 + yy**2) / radius
    white = np.clip(1 - d / 0.45, 0, 1)[..., None]
    rgb = white * np.array([255, 250, 235]) + (1 - white) * (core * (1 - d[..., None]) + rim * d[..., None])
    alpha = np.clip(1.25 - d**2 * 1.25, 0, 1)
    return np.dstack([rgb, alpha]).astype(np.float32)


def _impact(rng: np.random.Generator, width: int, height: int, start: float, end: float) -> Painter:
    radius = int(rng.uniform(0.3, 0.45) * height)
    cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.35, 0.7) * height
    orange, red = np.array([255, rng.uniform(120, 180), 20]), np.array([rng.uniform(170, 230), 40, 10])
    sprite = _fireball_sprite(radius, orange, red)
    sparks = rng.uniform(0, 2 * np.pi, 24), rng.uniform(0.5, 1.5, 24)

    def paint(frame: np.ndarray, t: float) -> None:
        age = t - start
        if age < 0.25:  # the flash of the hit lights the whole frame
            lift = 1 - age / 0.25
            np.copyto(frame, (frame + lift * (255 - frame.astype(np.float32)) * 0.8).astype(np.uint8))
        r = max(4, int(radius * min(1.0, 0.3 + age / 0.4) * rng.uniform(0.85, 1.05)))
        ball = cv2.resize(sprite, (2 * r + 1, 2 * r + 1))
        x0, y0 = int(cx) - r, int(cy) - r
        fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(width, x0 + 2 * r + 1), min(height, y0 + 2 * r + 1)
        part = ball[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
        alpha = part[..., 3:] * rng.uniform(0.85, 1.0)
        region = frame[fy0:fy1, fx0:fx1]
        region[:] = (region * (1 - alpha) + part[..., :3] * alpha).astype(np.uint8)
        angle, speed = sparks
        reach = radius * (0.9 + speed * ((age * 2.0) % 1.0))
        for a, rr in zip(angle, reach):
            spark = (int(cx + rr * np.cos(a)), int(cy + rr * np.sin(a)))
            cv2.circle(frame, spark, max(1, height // 120), (255, 230, 150), -1)

    return paint


WEAK_SECONDS = 30.0
"""Default clip length of the weakly labelled variant (``synthesize(weak=True)``)."""

WEAK_ANOMALY_FRACTION = (0.1, 0.3)
"""In the weakly labelled variant the anomaly lasts this fraction of the clip (3-9 s of 30 s)."""

_PAINTERS = {"intruder": _intruder, "vandalism": _vandalism, "struggle": _struggle, "impact": _impact}


def render_frames(
    rng: np.random.Generator, width: int, height: int, fps: float, seconds: float,
    visual: str, interval: tuple[float, float] | None,
) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` RGB frames of a scene with ``visual`` painted during ``interval``."""
    events = [(visual, interval)] if interval and visual != "background" else []
    return render_scene(rng, width, height, fps, seconds, events)


def render_scene(
    rng: np.random.Generator, width: int, height: int, fps: float, seconds: float,
    events: list[tuple[str, tuple[float, float]]],
) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` RGB frames of one scene with each visual pattern of ``events``
    (``(pattern, (start_s, end_s))``) painted during its interval."""
    n = max(1, round(seconds * fps))
    scene = _background(rng, width, height)
    walkers = _pedestrians(rng, width, height)
    painters = [(_PAINTERS[visual](rng, width, height, *interval), interval) for visual, interval in events
                if visual != "background"]
    # Per-frame sensor noise comes from a small bank of fields, split into positive and
    # negative uint8 parts so that OpenCV's saturating add/subtract apply it cheaply.
    sigma = rng.uniform(1.5, 3.0)
    fields = [sigma * rng.standard_normal((height, width, 3), np.float32) for _ in range(6)]
    bank = [(np.clip(f, 0, 255).astype(np.uint8), np.clip(-f, 0, 255).astype(np.uint8)) for f in fields]
    base = np.clip(scene, 0, 255).astype(np.uint8)
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        t = i / fps
        frame = base.copy()
        walkers(frame, t)
        for paint, (start, end) in painters:
            if start <= t < end:
                paint(frame, t)
        brighter, darker = bank[rng.integers(len(bank))]
        frames[i] = cv2.subtract(cv2.add(frame, brighter), darker)
    return frames


# --------------------------------------------------------------------------- sound


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _bandpass(x: np.ndarray, low: float, high: float, rate: int, order: int = 4) -> np.ndarray:
    sos = signal.butter(order, [low, high], btype="bandpass", fs=rate, output="sos")
    return signal.sosfilt(sos, x)


def _ambient(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """Coloured (pink to brown) noise at a random level plus, usually, faint babble."""
    spectrum = scipy.fft.rfft(rng.normal(0, 1, n))
    freqs = scipy.fft.rfftfreq(n, 1 / rate)
    tilt = rng.uniform(0.5, 1.8)  # power ~ 1 / f**tilt
    spectrum *= np.where(freqs > 20, np.maximum(freqs, 20) ** (-tilt / 2), 0)
    sound = rng.uniform(0.004, 0.02) * _unit_rms(scipy.fft.irfft(spectrum, n))
    if rng.random() < 0.7:
        # Syllable-rate (2-6 Hz) loudness, computed every ~1 ms: plenty for so slow a curve.
        hop = max(1, rate // 1000)
        t = np.arange(-(-n // hop)) * hop / rate
        syllables = sum(np.sin(2 * np.pi * rng.uniform(2, 6) * t + rng.uniform(0, 2 * np.pi)) for _ in range(3))
        loudness = np.repeat(1 + syllables / 3, hop)[:n]
        babble = _unit_rms(_bandpass(rng.normal(0, 1, n), 300, 3000, rate)) * loudness
        sound += rng.uniform(0.002, 0.008) * babble
    return sound


def _pulses(
    rng: np.random.Generator, n: int, rate: int, on_s: tuple[float, float], off_s: tuple[float, float]
) -> np.ndarray:
    """A 0/1 gate of bursts lasting ``on_s`` with gaps of ``off_s`` (ranges), with soft edges."""
    gate = np.zeros(n)
    pos = int(rng.uniform(0, 0.1) * rate)
    while pos < n:
        length = int(rng.uniform(*on_s) * rate)
        gate[pos : pos + length] = signal.windows.tukey(length, 0.3)[: n - pos]
        pos += length + int(rng.uniform(*off_s) * rate)
    return gate


def _baby_cry(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    f0 = rng.uniform(350, 500) * (1 + rng.uniform(0.015, 0.03) * np.sin(2 * np.pi * rng.uniform(5, 8) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    tone = sum(0.6 ** (k - 1) * np.sin(k * phase) for k in range(1, 7))
    gate = _pulses(rng, n, rate, (0.45, 0.75), (0.12, 0.3))
    return rng.uniform(0.25, 0.45) * gate * tone / 2.5


def _siren(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    low, high, period = rng.uniform(650, 800), rng.uniform(1300, 1500), rng.uniform(1.0, 2.0)
    f = low + (high - low) * (0.5 - 0.5 * np.cos(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(f) / rate
    return rng.uniform(0.2, 0.4) * (np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.1 * np.sin(3 * phase)) / 1.4


def _scream(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    # Pitch jitter: random values at 40 Hz, interpolated, +-6%.
    knots = rng.normal(0, 0.06, int(n / rate * 40) + 2)
    jitter = np.interp(t, np.arange(len(knots)) / 40, knots)
    f0 = rng.uniform(900, 1300) * (1 + jitter)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 5))
    breath = 0.6 * _unit_rms(_bandpass(rng.normal(0, 1, n), 800, 4000, rate))
    gate = _pulses(rng, n, rate, (0.3, 0.9), (0.08, 0.25))
    return rng.uniform(0.45, 0.6) * gate * np.tanh(1.5 * (voice + breath))


def _thuds(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    out = np.zeros(n)
    hit_rate = rng.uniform(3, 5)
    tail = np.arange(int(0.2 * rate)) / rate
    pos = rng.uniform(0, 0.1)
    while (start := int(pos * rate)) < n:
        burst = rng.normal(0, 1, len(tail)) * np.exp(-tail / rng.uniform(0.012, 0.03))
        thump = np.sin(2 * np.pi * rng.uniform(70, 140) * tail) * np.exp(-tail / 0.05)
        hit = rng.uniform(0.7, 1.0) * (0.5 * burst + thump)
        out[start : start + len(tail)] += hit[: n - start]
        pos += (1 + rng.uniform(-0.15, 0.15)) / hit_rate
    return rng.uniform(0.4, 0.65) * out / (np.abs(out).max() + 1e-12)


def _rumble(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    swell = 1 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 2 * np.pi))
    low = _unit_rms(_bandpass(rng.normal(0, 1, n), 40, 200, rate)) * swell
    clicks = np.zeros(n)
    count = rng.poisson(rng.uniform(25, 60) * n / rate)
    clicks[rng.integers(0, n, count)] = rng.uniform(0.1, 0.35, count) * rng.choice([-1, 1], count)
    kernel = rng.normal(0, 1, int(0.002 * rate)) * np.exp(-np.arange(int(0.002 * rate)) / (0.0005 * rate))
    return rng.uniform(0.15, 0.25) * low + signal.fftconvolve(clicks, kernel)[:n]


_SOUND_MAKERS = {"baby_cry": _baby_cry, "siren": _siren, "scream": _scream, "thuds": _thuds, "rumble": _rumble}


def render_audio(
    rng: np.random.Generator, rate: int, seconds: float, pattern: str,
    interval: tuple[float, float] | None,
) -> np.ndarray:
    """``float32 [S]`` mono in [-1, 1]: ambient sound with ``pattern`` during ``interval``."""
    return render_soundtrack(rng, rate, seconds, [(pattern, interval)] if interval and pattern != "ambient" else [])


def render_soundtrack(
    rng: np.random.Generator, rate: int, seconds: float, events: list[tuple[str, tuple[float, float]]],
) -> np.ndarray:
    """``float32 [S]`` mono in [-1, 1]: ambient sound with each sound pattern of ``events``
    (``(pattern, (start_s, end_s))``) during its interval."""
    n = round(seconds * rate)
    sound = _ambient(rng, n, rate)
    for pattern, interval in events:
        if pattern == "ambient":
            continue
        a, b = round(interval[0] * rate), min(n, round(interval[1] * rate))
        event = _SOUND_MAKERS[pattern](rng, b - a, rate)
        ramp = min(int(0.03 * rate), (b - a) // 2)  # 30 ms fades: no clicks at the edges
        fade = np.ones(b - a)
        fade[:ramp], fade[len(fade) - ramp :] = np.linspace(0, 1, ramp), np.linspace(1, 0, ramp)
        sound[a:b] += event * fade
    peak = np.abs(sound).max()
    if peak > 0.95:
        sound *= 0.95 / peak
    return sound.astype(np.float32)


# --------------------------------------------------------------------------- benchmark


def render_clip(
    name: str,
    seed: int,
    *,
    seconds: float = 8.0,
    size: tuple[int, int] = (320, 240),
    fps: float = 12.5,
    audio_rate: int = AUDIO_RATE,
    anomaly_s: tuple[float, float] = (2.5, 4.0),
) -> SynthClip:
    """Render one clip of class ``name`` from its own seed (see ``clip_seed``); the anomaly
    lasts ``anomaly_s`` seconds (a range)."""
    if name not in DESIGN:
        raise ValueError(f"unknown synthetic class '{name}'; choose one of {CLASSES}")
    design = DESIGN[name]
    rng = np.random.default_rng(seed)
    interval = None if name == "normal" else anomaly_interval(rng, seconds, anomaly_s)
    # Picture and sound draw from separate streams so neither depends on the other's draws.
    picture_rng, sound_rng = rng.spawn(2)
    width, height = size
    frames = render_frames(picture_rng, width, height, fps, seconds, design.visual, interval)
    audio = render_audio(sound_rng, audio_rate, seconds, design.audio, interval)
    return SynthClip(frames, audio, fps, audio_rate, interval)


@dataclass(frozen=True)
class _Job:
    """One clip to render and write; a picklable unit of work for the process pool."""

    out_dir: Path
    name: str
    label: int
    k: int
    seed: int
    seconds: float
    size: tuple[int, int]
    fps: float
    anomaly_s: tuple[float, float] = (2.5, 4.0)


def _make_clip(job: _Job) -> dict:
    """Render and write one clip; returns its ``metadata.json`` entry."""
    clip = render_clip(job.name, job.seed, seconds=job.seconds, size=job.size, fps=job.fps, anomaly_s=job.anomaly_s)
    rel = f"{job.name}/{job.name}_{job.k:03d}.mp4"
    write_av_file(job.out_dir / rel, clip.frames, job.fps, clip.audio, clip.audio_rate)
    return {
        "path": rel,
        "class": job.name,
        "label": job.label,
        "seed": job.seed,
        "duration": len(clip.frames) / job.fps,
        "interval": list(clip.interval) if clip.interval else None,
        "visual": DESIGN[job.name].visual,
        "audio": DESIGN[job.name].audio,
    }


def _quiet_worker() -> None:
    # Each worker encodes whole clips, so nested thread pools would only contend for cores.
    cv2.setNumThreads(1)


def synthesize(
    out_dir: Path,
    *,
    seed: int = 0,
    clips_per_class: int = 24,
    seconds: float | None = None,
    size: tuple[int, int] = (320, 240),
    fps: float = 12.5,
    progress: bool = True,
    workers: int | None = None,
    weak: bool = False,
    normal_clips: int | None = None,
) -> SynthSummary:
    """Write the benchmark: ``clips_per_class`` clips of every class plus ``metadata.json``.

    ``size`` is (width, height), both even. Clips are made by ``workers`` processes (default:
    one per CPU core) started with ``spawn``, so a script calling this needs the usual
    ``if __name__ == "__main__":`` guard; ``workers=1`` stays in this process. The output does
    not depend on the number of workers: the same arguments give the same decoded content.

    ``weak=True`` writes the weakly labelled variant: longer clips (default 30 s instead of 8 s)
    in which the anomaly fills 10-30% of the clip, so a video-level label ("somewhere in here")
    leaves most of an anomalous clip normal; ``normal_clips`` (default: as many as all the
    anomalous clips together, about half of XD-Violence's training videos are normal too)
    normal clips. Every clip's ``interval`` in ``metadata.json`` is the frame-level truth.
    """
    weak_default = WEAK_SECONDS if weak else 8.0
    seconds = weak_default if seconds is None else seconds
    if seconds < 2.0:
        raise ValueError(f"seconds must be at least 2 to hold an anomaly interval, got {seconds}")
    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"size must be an even (width, height) for H.264 yuv420p, got {size}")
    out_dir = Path(out_dir)
    anomaly_s = (WEAK_ANOMALY_FRACTION[0] * seconds, WEAK_ANOMALY_FRACTION[1] * seconds) if weak else (2.5, 4.0)
    counts = {name: clips_per_class for name in CLASSES}
    if weak:
        counts["normal"] = (len(CLASSES) - 1) * clips_per_class if normal_clips is None else normal_clips
    elif normal_clips is not None:
        raise ValueError("normal_clips applies to the weakly labelled variant only (weak=True)")
    jobs = [
        _Job(out_dir, name, c, k, clip_seed(seed, c, k), seconds, tuple(size), fps, anomaly_s)
        for c, name in enumerate(CLASSES)
        for k in range(counts[name])
    ]
    workers = min(workers or len(os.sched_getaffinity(0)), len(jobs))
    bar = tqdm(total=len(jobs), desc="synth", unit="clip", disable=not progress)
    with bar, ExitStack() as stack:
        if workers > 1:
            # spawn, not fork: a forked child can inherit locked thread pools from the parent.
            context = multiprocessing.get_context("spawn")
            pool = stack.enter_context(ProcessPoolExecutor(workers, context, initializer=_quiet_worker))
            entries = pool.map(_make_clip, jobs)
        else:
            entries = map(_make_clip, jobs)
        clips = []
        for entry in entries:
            clips.append(entry)
            bar.update()
    metadata = {
        "generator": "avar.media.synth",
        "seed": seed,
        "clips_per_class": clips_per_class,
        "seconds": seconds,
        "weak": weak,
        "anomaly_seconds": [round(v, 3) for v in anomaly_s],
        "clip_counts": counts,
        "size": list(size),
        "fps": fps,
        "audio_rate": AUDIO_RATE,
        "classes": CLASSES,
        "groups": {
            "normal": ["normal"],
            "audio_only": list(AUDIO_ONLY),
            "video_only": list(VIDEO_ONLY),
            "joint": list(JOINT),
        },
        "design": {name: {"visual": d.visual, "audio": d.audio, "group": d.group} for name, d in DESIGN.items()},
        "patterns": {"visual": VISUAL_PATTERNS, "audio": AUDIO_PATTERNS},
        "clips": clips,
    }
    path = out_dir / "metadata.json"
    write_json_atomic(path, metadata)
    return SynthSummary(out_dir, len(clips), list(CLASSES), path)


# --------------------------------------------------------------------------- bench clip


def write_bench_clip(
    path: Path | str,
    *,
    seconds: float = 60.0,
    size: tuple[int, int] = (1280, 720),
    fps: int = 25,
    audio_rate: int = 48_000,
    bitrate: int = 2_000_000,
    seed: int = 0,
) -> Path:
    """Write the standard clip that ``avar bench`` times: H.264 + AAC, rendered frame by frame.

    Defaults: 60 s of 1280x720 at 25 fps, x264 ``veryfast`` at 2 Mbit/s with a keyframe every
    2 s (a typical IP camera's main stream; B-frames on), AAC mono at 48 kHz. The scene is
    the synthetic walkway with sensor noise and a siren from 20 s to 30 s. The noise makes the
    encoder spend its bit rate as on real footage, so decoding costs what a camera's stream
    costs (a clean synthetic picture at the same settings decodes several times faster).
    Frames are encoded as they are drawn, so memory stays small at any length.
    """
    path = Path(path)
    width, height = size
    rng = np.random.default_rng(seed)
    scene = np.clip(_background(rng, width, height), 0, 255).astype(np.uint8)
    walkers = _pedestrians(rng, width, height)
    fields = [2.0 * rng.standard_normal((height, width, 3), np.float32) for _ in range(6)]
    bank = [(np.clip(f, 0, 255).astype(np.uint8), np.clip(-f, 0, 255).astype(np.uint8)) for f in fields]
    sound = render_audio(rng, audio_rate, seconds, "siren", (min(20.0, seconds / 3), min(30.0, seconds / 2)))
    with atomic_path(path) as partial:
        with av.open(str(partial), "w", format="mp4") as container:
            video = container.add_stream("libx264", rate=fps)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.bit_rate = bitrate
            video.codec_context.gop_size = 2 * fps
            video.options = {"preset": "veryfast"}
            audio = container.add_stream("aac", rate=audio_rate, layout="mono")
            next_sample = 0

            def sound_until(t: float) -> None:
                # Interleave by time so the muxer never buffers a whole stream.
                nonlocal next_sample
                while next_sample < len(sound) and next_sample / audio_rate <= t:
                    chunk = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(sound[None, next_sample : next_sample + AAC_FRAME]), format="fltp",
                        layout="mono",
                    )
                    chunk.sample_rate, chunk.pts, chunk.time_base = audio_rate, next_sample, Fraction(1, audio_rate)
                    container.mux(audio.encode(chunk))
                    next_sample += AAC_FRAME

            for i in range(int(round(seconds * fps))):
                t = i / fps
                sound_until(t)
                frame = scene.copy()
                walkers(frame, t)
                brighter, darker = bank[rng.integers(len(bank))]
                frame = cv2.subtract(cv2.add(frame, brighter), darker)
                picture = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
                picture.pts = i
                container.mux(video.encode(picture))
            sound_until(seconds)
            container.mux(video.encode(None))
            container.mux(audio.encode(None))
    return path
