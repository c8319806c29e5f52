"""How fast ``avar dataset cut`` cuts long recordings, and whether its memory stays flat (issue 32).

    .venv/bin/python benchmarks/dataset_cut.py --hours 2 --events 50

Writes a ``--hours`` long 1280x720 25-fps H.264 recording with 48-kHz AAC sound (one 1.92-s
segment of a moving pattern and a tone, encoded once and its packets repeated: a key frame
every 1.92 s, the AAC frames aligned with it), annotations of ``--events`` events of 4 to 8
segments placed on key frames, and cuts it in a child process four ways: events only
(``--normals 0``: every cut can copy the stream), events and as many normal clips (placed on
key frames: copied too), the events 0.52 s later (off key frames: every cut re-encoded), and,
for the memory comparison, events only on a recording of ``--short-minutes``. Each child
reports its wall time and its peak resident memory (``ru_maxrss``). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FPS, SEGMENT_FRAMES, RATE, AAC = 25, 48, 48_000, 1024
SEGMENT = SEGMENT_FRAMES / FPS  # 1.92 s = 90 AAC frames of 1024 samples at 48 kHz
AAC_PER_SEGMENT = round(SEGMENT * RATE / AAC)


def segment_packets(width: int, height: int, path: Path) -> tuple[list[tuple], Fraction]:
    """One segment encoded into ``path``: ``(kind, pts, duration, key, payload)`` per packet (AAC
    priming left out) and the video stream's time base."""
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "30", "keyint": str(SEGMENT_FRAMES),
                         "min-keyint": str(SEGMENT_FRAMES), "scenecut": "0"}
        audio = out.add_stream("aac", rate=RATE, layout="mono")
        y, x = np.mgrid[0:height, 0:width]
        for i in range(SEGMENT_FRAMES):
            image = ((x + 8 * i) // 64 + y // 64) % 2 * 120 + 40
            frame = av.VideoFrame.from_ndarray(np.repeat(image[..., None], 3, -1).astype(np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        t = np.arange((AAC_PER_SEGMENT + 1) * AAC) / RATE
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for k in range(AAC_PER_SEGMENT + 1):
            frame = av.AudioFrame.from_ndarray(tone[None, k * AAC : (k + 1) * AAC], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = RATE, k * AAC
            out.mux(audio.encode(frame))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    with av.open(str(path)) as source:
        video_tb = source.streams.video[0].time_base
        packets = []
        for p in source.demux():
            if p.pts is None or p.size == 0:
                continue
            kind = p.stream.type
            if kind == "audio" and not 0 <= p.pts < AAC_PER_SEGMENT * AAC:
                continue
            packets.append((kind, int(p.pts), int(p.duration), bool(p.is_keyframe), bytes(p)))
    return packets, video_tb


def write_recording(path: Path, seconds: float, width: int, height: int, work: Path) -> float:
    """The recording: the segment's packets repeated; returns its length in seconds."""
    segment = work / "segment.mp4"
    packets, video_tb = segment_packets(width, height, segment)
    repeats = int(seconds // SEGMENT)
    with av.open(str(segment)) as template, av.open(str(path), "w", format="mp4") as out:
        streams = {"video": out.add_stream_from_template(template.streams.video[0]),
                   "audio": out.add_stream_from_template(template.streams.audio[0])}
        ticks = {"video": round(SEGMENT / video_tb), "audio": AAC_PER_SEGMENT * AAC}
        bases = {"video": video_tb, "audio": Fraction(1, RATE)}
        for k in range(repeats):
            for kind, pts, duration, key, payload in packets:
                packet = av.Packet(payload)
                packet.pts = packet.dts = pts + k * ticks[kind]
                packet.duration, packet.time_base, packet.is_keyframe = duration, bases[kind], key
                packet.stream = streams[kind]
                out.mux(packet)
    return repeats * SEGMENT


def annotations(path: Path, seconds: float, events: int, seed: int, shift: float = 0.0) -> None:
    """``events`` events of 4-8 segments on key frames (``shift`` seconds later: off them), spread
    over the recording, none overlapping."""
    rng = np.random.default_rng(seed)
    slots = int(seconds // SEGMENT)
    starts = np.sort(rng.choice(np.arange(2, slots - 10, 12), size=events, replace=False))
    rows = ["file,start,end,label"]
    for i, start in enumerate(starts):
        length = int(rng.integers(4, 9))
        rows.append(f"recording.mp4,{start * SEGMENT + shift:.2f},{(start + length) * SEGMENT + shift:.2f},"
                    f"{('fight', 'scream')[i % 2]}")
    path.write_text("\n".join(rows) + "\n")


CHILD = """
import json, resource, sys, time
from avar.datasets.recordings import cut_dataset
started = time.perf_counter()
normals = None if sys.argv[4] == "default" else int(sys.argv[4])
report = cut_dataset(sys.argv[1], sys.argv[2], sys.argv[3], normals=normals, progress=False)
print(json.dumps({"seconds": round(time.perf_counter() - started, 1),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "clips": len(report.clips), "copied": sum(c["copied"] for c in report.clips),
                  "problems": len(report.problems)}))
"""


def run_cut(raw: Path, out: Path, normals: str, events: str = "events.csv") -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(raw), str(raw / events), str(out), normals],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--short-minutes", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = {"width": args.width, "height": args.height, "fps": FPS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, seconds, events in (("short", args.short_minutes * 60, max(1, round(args.events * args.short_minutes
                                                                                    / (60 * args.hours)))),
                                      ("long", args.hours * 3600, args.events)):
            raw = work / name
            raw.mkdir()
            started = time.perf_counter()
            length = write_recording(raw / "recording.mp4", seconds, args.width, args.height, work)
            annotations(raw / "events.csv", length, events, args.seed)
            entry = {"recording_seconds": round(length, 1), "events": events,
                     "recording_mib": round((raw / "recording.mp4").stat().st_size / 2**20, 1),
                     "write_seconds": round(time.perf_counter() - started, 1),
                     "events_only": run_cut(raw, work / f"{name}-events", "0")}
            if name == "long":
                entry["with_normals"] = run_cut(raw, work / f"{name}-normals", "default")
                annotations(raw / "shifted.csv", length, events, args.seed, shift=0.52)
                entry["events_off_key_frames"] = run_cut(raw, work / f"{name}-shifted", "0", "shifted.csv")
            result[name] = entry
    result["rss_ratio_long_to_short"] = round(result["long"]["events_only"]["peak_rss_mib"]
                                              / result["short"]["events_only"]["peak_rss_mib"], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
