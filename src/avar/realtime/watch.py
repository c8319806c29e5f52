"""Watch a file, a folder of files or a live stream and turn it into step records and events.

``iter_steps`` decodes in one demux pass and hands over each time step as soon as its media is
complete, with the same timestamps as ``avar.media.decode.decode_steps`` (whose helpers it
reuses): for a regular file, its steps equal ``decode_steps``'s. ``Watcher`` runs a trained
run's extractors on each step (batch of 1), keeps a sliding window of the last ``seq_len``
step features for the head, and feeds the records to an ``EventDetector``.

Two ways to place the head's window around step ``t`` (``L = seq_len``):

* **causal**: the window ``[t - L + 1, t]`` (fewer steps at the start), real steps first and
  right padding as in training; the record is ready as soon as step ``t`` is, and never depends
  on later media.
* **centred** (default): the window of ``L`` steps starting at ``t - (L - 1) // 2`` (shifted to
  stay inside the stream), so the record waits for step ``t + L // 2`` (for the first steps:
  step ``L - 1``) or the end of the stream. A stream of at most ``L`` steps is thus seen in one
  window, exactly as ``Predictor.predict`` sees it; longer ones differ from ``predict``, which
  averages half-overlapping windows.
"""

from __future__ import annotations

import collections
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
import torch

from avar.features import build_extractor
from avar.media.decode import AUDIO_RATE, MEDIA_EXTENSIONS, MediaError, CentreFrames, stream_start, n_steps_for
from avar.predict import StepRecord
from avar.realtime.events import Event, EventConfig, EventDetector, save_thumbnail
from avar.realtime.store import EventStore, write_jsonl
from avar.training.run import Run

BACKOFF_START = 0.5
"""Seconds before the first reconnection attempt; doubled after each failed one."""
BACKOFF_MAX = 8.0
"""Seconds; the back-off stops doubling here."""

Opener = Callable[[str], "av.container.InputContainer"]


@dataclass
class StepMedia:
    """One time step's media as soon as it is complete.

    ``time``/``end`` in seconds from the source's start (``end`` is ``time + step``, except for
    the steps handed over after the stream ended, which stop at its duration); ``frame`` is
    ``uint8 [H, W, 3]`` RGB, the frame on screen at the step's centre; ``audio`` is
    ``float32 [S]`` mono at 16 kHz, ``S = round(step * 16000)``, zeros where the source had none.
    """

    time: float
    end: float
    frame: np.ndarray
    audio: np.ndarray
    audio_missing: bool = False


def iter_steps(
    source: str | Path,
    step: float = 1.0,
    frame_size: tuple[int, int] | None = None,
    *,
    opener: Opener = av.open,
) -> Iterator[StepMedia]:
    """Stream ``source`` (a file, URL or device FFmpeg can open) as ``StepMedia``, one per step.

    A step is handed over once the first frame after its centre has arrived and the audio has
    reached its end, or the stream has ended. ``frame_size`` (width, height) resizes frames.
    Raises ``MediaError`` naming the source when it cannot be opened or decoding fails.
    """
    if step <= 0:
        raise ValueError(f"step must be positive seconds, got {step}")
    try:
        container = opener(str(source))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(source, f"cannot open as media ({exc}); is it a video file, URL or device FFmpeg can read?")
    with container:
        try:
            yield from _stream(container, str(source), step, frame_size)
        except (av.error.FFmpegError, ValueError, MemoryError) as exc:
            raise MediaError(source, f"decoding failed ({exc}); the file may be truncated or the stream dropped")


def _stream(container, source: str, step: float, frame_size) -> Iterator[StepMedia]:
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    if video is None and audio is None:
        raise MediaError(source, "no video or audio stream")
    starts = [s for s in (stream_start(video) if video else None, stream_start(audio) if audio else None) if s is not None]
    origin = min(starts) if starts else 0.0
    per_step = int(round(step * AUDIO_RATE))

    frames = CentreFrames(origin, step, frame_size) if video is not None else None
    if video is not None:
        video.thread_type = "AUTO"
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE) if audio else None
    # The track from ``base`` (a sample index on the source's timeline, 0 = origin) onwards;
    # samples of steps already handed over are dropped, so memory stays bounded on live streams.
    track = np.zeros(0, np.float32)
    base = 0
    audio_start: float | None = None
    written = 0  # samples of the resampled wave so far
    black = None if video is not None else np.zeros(((frame_size or (64, 64))[1], (frame_size or (64, 64))[0], 3), np.uint8)
    done = 0  # steps handed over

    def add_audio(chunks) -> None:
        nonlocal track, written
        for chunk in chunks:
            wave = chunk.to_ndarray().reshape(-1).astype(np.float32)
            # Sample k of the wave sits at audio_start + k / 16 kHz, as in decode_steps.
            offset = int(round((audio_start - origin) * AUDIO_RATE)) + written
            written += len(wave)
            lo = max(offset, base)
            if offset + len(wave) <= lo:
                continue
            need = offset + len(wave) - base
            if need > len(track):
                track = np.concatenate([track, np.zeros(need - len(track), np.float32)])
            track[lo - base : offset + len(wave) - base] = wave[lo - offset :]

    def take(i: int, end: float, frame: np.ndarray, missing: bool) -> StepMedia:
        nonlocal track, base
        lo, hi = i * per_step - base, (i + 1) * per_step - base
        clip = np.zeros(per_step, np.float32)
        part = track[max(lo, 0) : hi]
        clip[: len(part)] = part
        track, base = track[max(hi, 0) :], max(base, (i + 1) * per_step)
        return StepMedia(round(i * step, 6), round(end, 6), frame, clip, missing)

    def frame_of(i: int) -> np.ndarray:
        if frames is None:
            return black
        shown, frames.kept[i] = frames.kept[i], None  # hand it over, keep the index
        return shown

    def audio_ready(i: int) -> bool:
        return audio is None or (audio_start is not None and base + len(track) >= (i + 1) * per_step)

    streams = [s for s in (video, audio) if s is not None]
    for packet in container.demux(*streams):
        for frame in packet.decode():
            if packet.stream is video:
                frames.push(frame)
            else:
                if audio_start is None:
                    audio_start = frame.time if frame.time is not None else origin
                add_audio(resampler.resample(frame))
        while (frames is None or len(frames.kept) > done) and audio_ready(done):
            yield take(done, (done + 1) * step, frame_of(done), audio is None)
            done += 1

    if resampler is not None and audio_start is not None:
        add_audio(resampler.resample(None))
    audio_end = origin if audio_start is None else audio_start + written / AUDIO_RATE
    video_end = origin
    if frames is not None and frames.last_time is not None:
        rate = video.average_rate or video.guessed_rate
        video_end = frames.last_time + (1.0 / float(rate) if rate else 0.0)
    duration = max(video_end, audio_end) - origin
    if duration <= 0:
        raise MediaError(source, "no decodable frames or samples")
    n = n_steps_for(duration, step)
    if frames is not None and frames.prev is None:
        warnings.warn(f"{source}: no video frames; using black frames (video_missing)", stacklevel=2)
        w, h = frame_size or (64, 64)
        frames, black = None, np.zeros((h, w, 3), np.uint8)
    audio_missing = audio is None or written == 0
    if audio_missing:
        warnings.warn(f"{source}: no audio; using zero audio (audio_missing)", stacklevel=2)
    if frames is not None:
        while len(frames.kept) < n:
            frames.kept.append(frames.rgb(frames.prev))
    for i in range(done, n):
        yield take(i, min((i + 1) * step, duration), frame_of(i), audio_missing)


class Watcher:
    """A trained run applied to live media: step records as they become known, events as they close.

    ``events`` turns records into events (default ``EventConfig()``); closed events are added to
    ``store`` and/or appended to ``jsonl``, with a JPEG of the peak step's frame in
    ``thumbnails`` when given (the frame must still be among the last ``ring`` steps).
    A dropped stream is reopened with ``opener`` after 0.5, 1, 2, 4, 8, 8... seconds, at most
    ``max_retries`` times in a row; the hole is recorded as a gap of the source.
    """

    def __init__(
        self,
        run_dir: Path | str,
        *,
        causal: bool = False,
        events: EventConfig | None = None,
        store: EventStore | None = None,
        jsonl: Path | None = None,
        thumbnails: Path | None = None,
        max_retries: int = 5,
        opener: Opener = av.open,
        ring: int = 64,
        device: str = "cpu",
    ):
        self.run = Run.load(run_dir)
        ex = self.run.extractors
        self.video = build_extractor(ex["video"]["name"], ex["video"].get("weights"), device)
        self.audio = build_extractor(ex["audio"]["name"], ex["audio"].get("weights"), device)
        self.causal = causal
        self.events_config = events or EventConfig()
        self.store, self.jsonl, self.thumbnails = store, jsonl, thumbnails
        self.max_retries, self.opener, self.ring = max_retries, opener, ring
        self.events: list[Event] = []
        """Every event closed so far, across sources."""
        self.failures: list[dict] = []
        """``{"source", "reason"}`` for each source that failed to decode."""

    def watch(self, source: str | Path, *, realtime: bool = False, reconnect: bool | None = None) -> Iterator[StepRecord]:
        """Step records of ``source`` in time order (a folder: each media file in name order).

        ``realtime`` paces the source at its own speed (for files; live sources pace
        themselves). ``reconnect`` (default: for anything that is not a local file) reopens
        a dropped stream. A folder's file that fails is warned about, listed in ``failures``
        and the store's sources (kind ``"error"``), and the next file goes on.
        """
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)
            if not files:
                raise FileNotFoundError(f"{path}: no media files (extensions: {', '.join(sorted(MEDIA_EXTENSIONS))})")
            for f in files:
                try:
                    yield from self._watch_one(str(f), realtime, bool(reconnect))
                except MediaError as exc:
                    self._fail(str(f), exc.reason)
            return
        is_file = path.is_file()
        try:
            yield from self._watch_one(str(source), realtime, (not is_file) if reconnect is None else reconnect)
        except MediaError as exc:
            self._fail(str(source), exc.reason)
            raise

    def _fail(self, uri: str, reason: str) -> None:
        warnings.warn(f"{uri}: {reason}; skipped", stacklevel=3)
        self.failures.append({"source": uri, "reason": reason})
        if self.store is not None:
            self.store.add_source(uri, "error")

    def _watch_one(self, uri: str, realtime: bool, reconnect: bool) -> Iterator[StepRecord]:
        detector = EventDetector(self.events_config, uri, self.run.classes[self.run.normal_index or 0])
        frames: collections.deque = collections.deque(maxlen=self.ring)
        registered = False
        offset = 0.0  # seconds added to the current connection's times (after reconnections)
        last_end: float | None = None
        dropped_at: float | None = None  # wall clock of the last drop
        retries = 0
        t0 = time.monotonic()
        while True:
            window = _Window(self)
            try:
                for media in iter_steps(uri, self.run.step, getattr(self.video, "input_size", None), opener=self.opener):
                    if dropped_at is not None:
                        # The hole lasts as long as the outage in wall-clock seconds (to the ms,
                        # like record times).
                        offset = round(last_end + (time.monotonic() - dropped_at) - media.time, 3)
                        if self.store is not None:
                            self.store.record_gap(uri, last_end, round(media.time + offset, 6))
                        dropped_at, retries = None, 0
                    if offset:
                        media = replace(media, time=round(media.time + offset, 6), end=round(media.end + offset, 6))
                    if not registered and self.store is not None:
                        self.store.add_source(uri, "file" if Path(uri).is_file() else "stream")
                    registered = True
                    if realtime:
                        time.sleep(max(0.0, media.end - (time.monotonic() - t0)))
                    last_end = media.end
                    frames.append((media.time, media.frame))
                    for record in window.push(media):
                        yield self._emit(record, detector, frames)
                for record in window.finish():
                    yield self._emit(record, detector, frames)
                break
            except MediaError as exc:
                for record in window.finish():
                    yield self._emit(record, detector, frames)
                if not reconnect or retries >= self.max_retries:
                    self._close(detector.flush(), frames)
                    raise
                delay = min(BACKOFF_START * 2**retries, BACKOFF_MAX)
                retries += 1
                warnings.warn(f"{uri}: {exc.reason}; reconnecting in {delay:g}s (attempt {retries}/{self.max_retries})",
                              stacklevel=2)
                if dropped_at is None:
                    dropped_at = time.monotonic()
                if last_end is None:
                    last_end = offset
                time.sleep(delay)
        self._close(detector.flush(), frames)

    def _emit(self, record: StepRecord, detector: EventDetector, frames) -> StepRecord:
        self._close(detector.push(record), frames)
        return record

    def _close(self, events: list[Event], frames) -> None:
        if not events:
            return
        if self.thumbnails is not None:
            shown = dict(frames)
            for e in events:
                if e.peak_time in shown:
                    name = f"{Path(e.source).stem}_{e.start:09.3f}_{e.label}.jpg"
                    e.thumbnail = str(save_thumbnail(shown[e.peak_time], Path(self.thumbnails) / name))
        if self.store is not None:
            self.store.add_events(events)
        if self.jsonl is not None:
            write_jsonl(events, self.jsonl)
        self.events.extend(events)


class _Window:
    """The features of one connection's steps so far, and the records not yet emitted."""

    def __init__(self, watcher: Watcher):
        self.w = watcher
        self.run = watcher.run
        self.video: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self.spans: list[tuple[float, float]] = []
        self.first = 0  # global index of self.video[0]; older features are dropped
        self.next = 0  # next step to emit

    def push(self, media: StepMedia) -> list[StepRecord]:
        v, a = self.run.norm.apply(self.w.video(media.frame[None]), self.w.audio(media.audio[None]))
        self.video.append(v[0])
        self.audio.append(a[0])
        self.spans.append((media.time, media.end))
        n, L = self.first + len(self.video), self.run.seq_len
        out = []
        while self.next < n:
            t = self.next
            if self.w.causal:
                start, stop = max(0, t - L + 1), t + 1
            else:
                start = max(0, t - (L - 1) // 2)
                stop = start + L
                if stop > n:
                    break
            out.append(self._record(t, start, stop))
            self.next += 1
        self._trim()
        return out

    def finish(self) -> list[StepRecord]:
        n, L = self.first + len(self.video), self.run.seq_len
        out = []
        for t in range(self.next, n):
            start = max(0, min(t - (L - 1) // 2, n - L))
            out.append(self._record(t, start, min(n, start + L)))
        self.next = n
        return out

    def _trim(self) -> None:
        # Keep what the pending records' windows may still need.
        keep_from = max(0, self.next - self.run.seq_len)
        drop = keep_from - self.first
        if drop > 0:
            del self.video[:drop], self.audio[:drop], self.spans[:drop]
            self.first = keep_from

    @torch.inference_mode()
    def _record(self, t: int, start: int, stop: int) -> StepRecord:
        run, L = self.run, self.run.seq_len
        lo, hi = start - self.first, stop - self.first
        k = hi - lo
        video = np.zeros((1, L, self.video[0].shape[0]), np.float32)
        audio = np.zeros((1, L, self.audio[0].shape[0]), np.float32)
        mask = np.zeros((1, L), bool)
        video[0, :k], audio[0, :k], mask[0, :k] = self.video[lo:hi], self.audio[lo:hi], True
        run.head.eval()
        out = run.head(torch.from_numpy(video), torch.from_numpy(audio), torch.from_numpy(mask))
        p = torch.softmax(out.step_logits[0, t - start], -1).numpy().astype(np.float64)
        score = float(run.anomaly_score(p[None])[0])
        time_, end = self.spans[t - self.first]
        return StepRecord(
            time=round(float(time_), 3),
            end=round(float(end), 3),
            predicted=run.classes[int(p.argmax())],
            probabilities={c: round(float(x), 5) for c, x in zip(run.classes, p)},
            anomaly_score=round(score, 5),
        )
