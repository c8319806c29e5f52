"""``avar anonymize``: a file or a folder of files, every frame covered where a face or a plate is.

The video is re-encoded (H.264) with every frame at its source timestamp, so the output keeps
the source's frame rate and duration; the audio packets are copied as they are (bit-exact),
unless ``mute_speech`` silences the segments a voice-activity detector marks as speech, which
re-encodes the audio (AAC) at its source rate and layout. Next to each output a JSON sidecar
lists the covered regions of every frame and where each came from (``detected``, ``held`` over
a missed detection, ``lead`` before the first one). Outputs appear atomically (a ``.partial``
file renamed when complete), and a folder's batch survives a bad file.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from avar.anonymize.cover import Anonymizer, Covered
from avar.files import atomic_path, write_json_atomic
from avar.media.decode import MEDIA_EXTENSIONS, VIDEO_EXTENSIONS, MediaError

log = logging.getLogger(__name__)

WRITABLE = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "matroska",
            ".avi": "matroska", ".ts": "mpegts", ".flv": "matroska", ".mpg": "matroska", ".mpeg": "matroska",
            ".wmv": "matroska", ".3gp": "mp4"}
"""Source extension -> output container; formats whose muxers cannot take H.264 become Matroska
(the output is then named ``.mkv``)."""

SIDECAR_SUFFIX = ".regions.json"


@dataclass
class AnonymizeResult:
    source: str
    output: str
    sidecar: str
    frames: int
    frames_with_regions: int
    regions: int
    audio: str
    """'copied' (bit-exact), 'muted speech (S s)', or 'none'."""
    seconds: float


@dataclass
class BatchResult:
    results: list[AnonymizeResult] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)


def output_name(source: Path) -> str:
    suffix = source.suffix.lower()
    fmt = WRITABLE.get(suffix, "matroska")
    return source.name if fmt != "matroska" or suffix in (".mkv",) else source.stem + ".mkv"


def anonymize_file(source: Path | str, output: Path | str, anonymizer: Anonymizer, *, mute_speech: bool = False,
                   progress: bool = False) -> AnonymizeResult:
    """Write ``output`` (and ``output`` + ``.regions.json``): ``source`` with every region covered."""
    source, output = Path(source), Path(output)
    if source.suffix.lower() not in VIDEO_EXTENSIONS:
        raise MediaError(source, f"not a video file (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    fmt = WRITABLE.get(output.suffix.lower())
    if fmt is None:
        raise ValueError(f"{output}: cannot write '{output.suffix}' files; use one of {sorted(WRITABLE)}")
    started = time.perf_counter()
    with atomic_path(output) as partial:
        try:
            container = av.open(str(source))
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(source, f"cannot open as media ({exc})") from None
        with container:
            frames_log, audio_note = _transcode(container, source, partial, fmt, anonymizer, mute_speech, progress)
    sidecar = output.with_name(output.name + SIDECAR_SUFFIX)
    write_json_atomic(sidecar, {"source": str(source), "output": str(output),
                                "detectors": [d.name for d in anonymizer.detectors], "mode": anonymizer.mode,
                                "margin": anonymizer.margin, "frames": frames_log})
    return AnonymizeResult(str(source), str(output), str(sidecar), len(frames_log),
                           sum(1 for f in frames_log if f["regions"]), sum(len(f["regions"]) for f in frames_log),
                           audio_note, round(time.perf_counter() - started, 3))


def _transcode(container, source: Path, partial: Path, fmt: str, anonymizer: Anonymizer, mute_speech: bool,
               progress: bool) -> tuple[list[dict], str]:
    if not container.streams.video:
        raise MediaError(source, "no video stream; nothing to anonymise")
    in_video = container.streams.video[0]
    in_audio = container.streams.audio[0] if container.streams.audio else None
    rate = in_video.average_rate or in_video.guessed_rate or Fraction(25)
    frames_log: list[dict] = []
    times: dict[int, tuple[int, float]] = {}  # frame index -> (pts in the output's ticks, seconds)
    options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
    speech = _speech_mask(source, in_audio) if mute_speech and in_audio is not None else None
    with av.open(str(partial), "w", format=fmt, container_options=options) as out:
        video = out.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = in_video.codec_context.width, in_video.codec_context.height, "yuv420p"
        video.time_base = video.codec_context.time_base = in_video.time_base or Fraction(1, 90_000)
        video.options = {"preset": "veryfast", "crf": "20"}
        audio_out = None
        if in_audio is not None:
            if speech is None:
                audio_out = out.add_stream_from_template(in_audio)
            else:
                audio_out = out.add_stream("aac", rate=in_audio.codec_context.sample_rate,
                                           layout=in_audio.codec_context.layout.name)
                to_encoder = av.AudioResampler(format="fltp", layout=in_audio.codec_context.layout.name,
                                               rate=in_audio.codec_context.sample_rate)

        def write(done: list[Covered]) -> None:
            for item in done:
                pts, seconds = times.pop(item.index)
                frame = av.VideoFrame.from_ndarray(item.frame, format="rgb24")
                frame.pts, frame.time_base = pts, video.time_base
                out.mux(video.encode(frame))
                frames_log.append({"index": item.index, "time": round(seconds, 6), "regions": item.regions})

        bar = tqdm(total=in_video.frames or None, desc=source.name, unit="frame", disable=not progress, leave=False)
        streams = [s for s in (in_video, in_audio) if s is not None]
        last_pts = None
        try:
            for packet in container.demux(*streams):
                if packet.stream is in_audio and speech is None:
                    if packet.dts is None:
                        continue  # the demuxer's flush packet
                    packet.stream = audio_out
                    out.mux(packet)
                    continue
                for decoded in packet.decode():
                    if packet.stream is in_audio:
                        for chunk in to_encoder.resample(_muted(decoded, speech)):
                            out.mux(audio_out.encode(chunk))
                        continue
                    pts = decoded.pts if decoded.pts is not None else (0 if last_pts is None else last_pts + 1)
                    if last_pts is not None and pts <= last_pts:
                        pts = last_pts + 1  # the encoder needs strictly increasing timestamps
                    last_pts = pts
                    times[anonymizer.count] = (pts, float(pts * video.time_base))
                    write(anonymizer.push(decoded.to_ndarray(format="rgb24")))
                    bar.update(1)
        except av.error.FFmpegError as exc:
            raise MediaError(source, f"decoding failed ({exc}); the file may be truncated") from None
        finally:
            bar.close()
        write(anonymizer.finish())
        out.mux(video.encode(None))
        if audio_out is not None and speech is not None:
            for chunk in to_encoder.resample(None):
                out.mux(audio_out.encode(chunk))
            out.mux(audio_out.encode(None))
    if speech is None:
        note = "copied" if in_audio is not None else "none"
    else:
        note = f"muted speech ({speech.seconds:.1f} s)"
    return frames_log, note


@dataclass
class _SpeechMask:
    rate: int
    speech: np.ndarray
    """bool per 30 ms frame at ``rate``: True where the detector heard speech."""
    frame: int

    @property
    def seconds(self) -> float:
        return float(self.speech.sum() * self.frame / self.rate)


VAD_RATE = 16_000
VAD_FRAME = 480  # 30 ms at 16 kHz, one of the frame lengths the WebRTC detector takes


def _speech_mask(source: Path, stream) -> _SpeechMask:
    """Where ``source``'s first audio stream holds speech, from the WebRTC voice-activity
    detector (its model is compiled into the ``webrtcvad-wheels`` wheel), in its most
    aggressive mode, widened by 0.3 s on each side so word edges are silenced too."""
    import webrtcvad

    wave = []
    resampler = av.AudioResampler(format="s16", layout="mono", rate=VAD_RATE)
    with av.open(str(source)) as container:
        for frame in container.decode(audio=0):
            for chunk in resampler.resample(frame):
                wave.append(chunk.to_ndarray().reshape(-1))
        for chunk in resampler.resample(None):
            wave.append(chunk.to_ndarray().reshape(-1))
    pcm = np.concatenate(wave) if wave else np.zeros(0, np.int16)
    vad = webrtcvad.Vad(3)
    n = len(pcm) // VAD_FRAME
    flags = np.array([vad.is_speech(pcm[i * VAD_FRAME:(i + 1) * VAD_FRAME].tobytes(), VAD_RATE) for i in range(n)],
                     bool)
    pad = 10  # frames of 30 ms
    widened = np.convolve(flags.astype(int), np.ones(2 * pad + 1, int), mode="same") > 0 if n else flags
    return _SpeechMask(VAD_RATE, widened, VAD_FRAME)


def _muted(frame: av.AudioFrame, mask: _SpeechMask) -> av.AudioFrame:
    """``frame`` with the samples inside speech set to zero (same format, rate and layout)."""
    data = frame.to_ndarray()
    start = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
    rate = frame.sample_rate
    planar = frame.format.is_planar
    n = data.shape[-1] if planar else data.shape[-1] // len(frame.layout.channels)
    seconds = start + np.arange(n) / rate
    index = np.clip((seconds * mask.rate / mask.frame).astype(int), 0, max(0, len(mask.speech) - 1))
    silent = mask.speech[index] if len(mask.speech) else np.zeros(n, bool)
    if planar:
        data[:, silent] = 0
    else:
        data = data.reshape(-1, len(frame.layout.channels))
        data[silent] = 0
        data = data.reshape(1, -1)
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name, layout=frame.layout.name)
    out.sample_rate, out.pts, out.time_base = rate, frame.pts, frame.time_base
    return out


def anonymize_path(source: Path | str, out: Path | str, make_anonymizer, *, mute_speech: bool = False,
                   progress: bool = True) -> BatchResult:
    """A file to ``out`` (a file path or an existing folder), or every video below a folder to
    the same relative paths below ``out``. A file that fails is reported; the rest go on."""
    source, out = Path(source), Path(out)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if source.is_file():
        target = out / output_name(source) if out.is_dir() else out
        jobs = [(source, target)]
    else:
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out}: --out must be a folder when INPUT is a folder")
        if out.resolve().is_relative_to(source.resolve()):
            raise ValueError(f"{out}: --out must not be inside INPUT {source} (outputs would be read as inputs)")
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)
        if not files:
            raise FileNotFoundError(f"{source}: no video files (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
        jobs = [(p, out / p.relative_to(source).parent / output_name(p)) for p in files]
    batch = BatchResult()
    for path, target in tqdm(jobs, desc="anonymize", unit="file", disable=not progress or len(jobs) < 2):
        try:
            batch.results.append(anonymize_file(path, target, make_anonymizer(), mute_speech=mute_speech,
                                                progress=progress))
        except MediaError as exc:
            batch.failures.append({"path": str(path), "reason": exc.reason})
            log.error("%s: %s", path, exc.reason)
    return batch


def results_json(batch: BatchResult) -> dict:
    return {"files": [r.__dict__ for r in batch.results], "failures": batch.failures}


__all__ = ["AnonymizeResult", "BatchResult", "anonymize_file", "anonymize_path", "results_json"]
