"""Anonymisation: regions covered and nothing else touched, persistence over missed
detections, timing and audio kept through re-encoding, plug-in ONNX detectors, and no raw
frame on disk when the pipeline anonymises."""

import json
import os
from pathlib import Path

import av
import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from avar.anonymize.cover import AnonymizeConfig, Anonymizer, Persistence, cover
from avar.anonymize.detect import Box, build_detector
from avar.anonymize.files import anonymize_file
from avar.cli import main
from avar.media.synth import write_av_file

FIGHT = Path(os.environ.get("AVAR_FIGHT", Path(__file__).resolve().parents[2] / "shared" / "data" / "fight-dev"))
BOX = (40, 30, 88, 78)  # x0, y0, x1, y1 of the drawn region in the 160 x 120 test frames


def noisy_frames(n: int, seed: int = 0) -> np.ndarray:
    """Smooth gradient frames with a high-variance patch at BOX (the thing to hide)."""
    rng = np.random.default_rng(seed)
    base = np.tile(np.linspace(40, 200, 160, dtype=np.float32), (120, 1))
    frames = np.repeat(np.stack([base, base[::-1], base], -1)[None], n, 0).astype(np.uint8)
    x0, y0, x1, y1 = BOX
    frames[:, y0:y1, x0:x1] = rng.integers(0, 256, (n, y1 - y0, x1 - x0, 3), dtype=np.uint8)
    return frames


class Fixed:
    """A detector that finds BOX, except in the frames listed in ``miss``."""

    name, kind = "fixed", "face"

    def __init__(self, miss=()):
        self.miss, self.calls = set(miss), 0

    def __call__(self, frame):
        self.calls += 1
        return [] if self.calls - 1 in self.miss else [Box(*BOX, "face", 0.9)]


def inside_std(frame: np.ndarray) -> float:
    x0, y0, x1, y1 = BOX
    return float(frame[y0:y1, x0:x1].astype(float).std())


@pytest.mark.parametrize("mode", ["blur", "pixelate", "fill"])
def test_cover_hides_the_region_and_leaves_the_rest(mode):
    frame = noisy_frames(1)[0]
    out = cover(frame, [Box(*BOX, "face")], mode, margin=0.0)
    assert inside_std(out) < 0.25 * inside_std(frame)
    mask = np.ones(frame.shape[:2], bool)
    mask[BOX[1]:BOX[3], BOX[0]:BOX[2]] = False
    assert np.array_equal(out[mask], frame[mask])


def test_the_margin_grows_the_region():
    frame = noisy_frames(1)[0]
    out = cover(frame, [Box(*BOX, "face")], "fill", margin=0.25)
    assert (out[BOX[1] - 10:BOX[1], BOX[0]:BOX[2]] == 0).all()  # 12 px above the box
    assert np.array_equal(out[:BOX[1] - 13], frame[:BOX[1] - 13])


def test_persistence_covers_missed_frames_and_frames_before_the_first_detection():
    frames = noisy_frames(12)
    # Found in frames 3-5 and 8 only: 6 and 7 are held, 1 and 2 covered ahead (lead 2).
    detector = Fixed(miss={0, 1, 2, 6, 7, 9, 10, 11})
    anonymizer = Anonymizer([detector], hold=2, lead=2)
    out = [c for f in frames for c in anonymizer.push(f)] + anonymizer.finish()
    assert [c.index for c in out] == list(range(12))
    covered = [inside_std(c.frame) < 0.25 * inside_std(frames[c.index]) for c in out]
    assert covered == [False, True, True, True, True, True, True, True, True, True, True, False]
    sources = [sorted({r["source"] for r in c.regions}) for c in out]
    assert sources[1] == ["lead"] and sources[6] == ["held"] and sources[3] == ["detected"]


def test_tracks_follow_a_moving_region():
    p = Persistence(hold=3, lead=0)
    p.update(0, [Box(0, 0, 10, 10, "face")])
    boxes, born = p.update(1, [Box(3, 0, 13, 10, "face")])  # moved, same track
    assert born == [] and len(p.tracks) == 1
    boxes, _ = p.update(2, [])
    assert [(b.x0, b.score) for b in boxes] == [(3, 0.0)]  # carried at its last place


def write_clip(path: Path, n: int = 20, fps: int = 10, seconds_audio: float = 2.0):
    t = np.arange(int(seconds_audio * 48000)) / 48000
    return write_av_file(path, noisy_frames(n), fps, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 48000)


def test_anonymized_file_keeps_timing_and_audio_bit_exact(tmp_path):
    source = write_clip(tmp_path / "in.mp4")
    result = anonymize_file(source, tmp_path / "out.mp4", Anonymizer([Fixed()]))
    assert result.frames == 20 and result.frames_with_regions == 20 and result.audio == "copied"
    with av.open(str(source)) as a, av.open(str(tmp_path / "out.mp4")) as b:
        va, vb = a.streams.video[0], b.streams.video[0]
        assert vb.average_rate == va.average_rate
        assert abs(float(b.duration - a.duration) / 1e6) <= 1 / float(va.average_rate)
        pa = [bytes(p) for p in a.demux(a.streams.audio[0]) if p.size]
        pb = [bytes(p) for p in b.demux(b.streams.audio[0]) if p.size]
        assert pa == pb  # the audio packets are copied, not re-encoded
    with av.open(str(tmp_path / "out.mp4")) as b:
        frames = [f.to_ndarray(format="rgb24") for f in b.decode(video=0)]
    assert len(frames) == 20 and all(inside_std(f) < 20 for f in frames)
    sidecar = json.loads((tmp_path / "out.mp4.regions.json").read_text())
    assert len(sidecar["frames"]) == 20 and sidecar["frames"][0]["regions"][0]["box"][:4] == list(map(float, BOX))


def test_mute_speech_reencodes_the_audio_at_its_rate(tmp_path):
    source = write_clip(tmp_path / "in.mp4")
    result = anonymize_file(source, tmp_path / "out.mp4", Anonymizer([Fixed()]), mute_speech=True)
    assert result.audio.startswith("muted speech")
    with av.open(str(source)) as a, av.open(str(tmp_path / "out.mp4")) as b:
        assert b.streams.audio[0].codec_context.sample_rate == a.streams.audio[0].codec_context.sample_rate
        samples = sum(f.samples for f in b.decode(audio=0))
    assert abs(samples - 2 * 48000) <= 2048  # AAC priming and the last partial frame


def constant_box_model(path: Path, box=(0.25, 0.25, 0.55, 0.65, 0.9)) -> Path:
    """An ONNX model with the plug-in contract that always finds one box."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])
    y = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 5])
    nodes = [
        helper.make_node("ReduceSum", ["image"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "box"], ["boxes"]),
    ]
    graph = helper.make_graph(nodes, "constant-box", [x], [y], initializer=[
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("box", TensorProto.FLOAT, [1, 5], list(box)),
    ])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_user_onnx_detector_plugs_in(tmp_path):
    detector = build_detector(f"onnx:{constant_box_model(tmp_path / 'm.onnx')}#plate")
    boxes = detector(noisy_frames(1)[0])
    assert [(round(b.x0), round(b.y0), round(b.x1), round(b.y1), b.kind) for b in boxes] == [(40, 30, 88, 78, "plate")]
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        (tmp_path / "bad.onnx").write_bytes(b"not onnx")
        build_detector(f"onnx:{tmp_path / 'bad.onnx'}")
    with pytest.raises(ValueError, match="unknown detector"):
        build_detector("yolo")


def test_haar_plate_detector_finds_a_drawn_plate():
    frame = np.random.default_rng(0).integers(60, 120, (360, 640, 3), dtype=np.uint8)
    cv2.rectangle(frame, (192, 170), (370, 210), (250, 250, 250), -1)
    cv2.rectangle(frame, (192, 170), (370, 210), (0, 0, 0), 2)
    cv2.putText(frame, "A123BC77", (200, 200), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    boxes = build_detector("haar-plate")(frame)
    assert len(boxes) == 1
    plate = Box(192, 170, 370, 210, "plate")
    out = cover(frame, boxes, "blur", 0.2)
    x0, y0, x1, y1 = 192, 170, 370, 210
    assert out[y0:y1, x0:x1].std() < 0.25 * frame[y0:y1, x0:x1].std(), plate


@pytest.mark.skipif(not (FIGHT / "fight" / "fi051.mp4").is_file(), reason=f"fight-dev not found at {FIGHT}")
def test_centerface_finds_a_real_face():
    with av.open(str(FIGHT / "fight" / "fi051.mp4")) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    faces = build_detector("centerface")(frame)
    # The man on the right: his head is at about (685, 160)-(729, 206) in the 1280 x 720 frame.
    assert any(b.x0 < 707 < b.x1 and b.y0 < 183 < b.y1 and b.score > 0.4 for b in faces)


def test_anonymize_command_on_a_folder_survives_a_bad_file(tmp_path, capsys):
    model = constant_box_model(tmp_path / "m.onnx", box=(40 / 160, 30 / 120, 88 / 160, 78 / 120, 0.9))
    write_clip(tmp_path / "in" / "cam1" / "a.mp4")
    (tmp_path / "in" / "cam1" / "broken.mp4").write_bytes(b"\0" * 300)
    code = main(["anonymize", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--faces", f"onnx:{model}",
                 "--plates", "none", "-q", "--json"])
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert [Path(f["output"]).name for f in report["files"]] == ["a.mp4"]
    assert [Path(f["path"]).name for f in report["failures"]] == ["broken.mp4"]
    assert sorted(p.name for p in (tmp_path / "out" / "cam1").iterdir()) == ["a.mp4", "a.mp4.regions.json"]


class Recording:
    """A video extractor that keeps every frame it is given (what the backbone would see)."""

    name, version, dim, input_size = "recording", "1", 4, None

    def __init__(self):
        self.frames = []

    def __call__(self, batch):
        self.frames.extend(batch)
        return np.zeros((len(batch), self.dim), np.float32)


def test_extract_with_anonymize_covers_frames_before_features(tmp_path, capsys):
    from avar.datasets.folders import discover
    from avar.features import build_extractor
    from avar.features.cache import extract_dataset

    model = constant_box_model(tmp_path / "m.onnx", box=(40 / 160, 30 / 120, 88 / 160, 78 / 120, 0.9))
    data = tmp_path / "data"
    for label in ("normal", "fight"):
        write_clip(data / label / "c.mp4")
    video = Recording()
    config = AnonymizeConfig(faces=f"onnx:{model}", plates="none")
    summary = extract_dataset(discover(data), tmp_path / "feat", video, build_extractor("logmel"), progress=False,
                              anonymize=config)
    assert summary.done == 2 and len(video.frames) == 4
    raw = noisy_frames(1)[0]
    assert all(inside_std(f) < 0.25 * inside_std(raw) for f in video.frames)
    # Scan every file written for rows of the raw pixels of the region.
    rows = [raw[BOX[1] + r, BOX[0]:BOX[2]].tobytes() for r in range(0, BOX[3] - BOX[1], 8)]
    for path in (p for p in (tmp_path / "feat").rglob("*") if p.is_file()):
        assert not any(row in path.read_bytes() for row in rows), path
    manifest = json.loads((tmp_path / "feat" / "manifest.json").read_text())
    assert manifest["anonymize"]["faces"] == f"onnx:{model}"
    with pytest.raises(ValueError, match="other settings"):  # a raw rerun cannot resume an anonymised cache
        extract_dataset(discover(data), tmp_path / "feat", video, build_extractor("logmel"), progress=False)


def test_config_needs_a_detector():
    with pytest.raises(ValueError, match="nothing to anonymise"):
        AnonymizeConfig(faces="none", plates="none").build()


def test_watch_with_anonymize_writes_no_raw_frame(tmp_path):
    """Thumbnails, store and event log of an anonymised watch, scanned for the raw region."""
    from avar.datasets.folders import discover
    from avar.features import build_extractor
    from avar.features.cache import FeatureSet, extract_dataset
    from avar.methods.avarnet.train import TrainConfig, train_head
    from avar.serve.events import EventConfig
    from avar.serve.store import EventStore
    from avar.serve.watch import Watcher

    data = tmp_path / "data"
    for k, label in enumerate(("normal", "normal", "fight", "fight")):
        write_clip(data / label / f"c{k}.mp4")
    video, audio = build_extractor("efficientnet-lite0"), build_extractor("logmel")
    extract_dataset(discover(data, test_fraction=0, val_fraction=0), tmp_path / "feat", video, audio, progress=False)
    head = {"num_stages": 1, "num_layers": 2, "num_f_maps": 8, "attention": False}
    # The paper recipe: no minimum number of optimiser steps, this run only needs to exist.
    train_head(FeatureSet.open(tmp_path / "feat"), tmp_path / "run", TrainConfig(epochs=2, head=head, recipe="paper"),
               progress=False)

    model = constant_box_model(tmp_path / "m.onnx", box=(40 / 160, 30 / 120, 88 / 160, 78 / 120, 0.9))
    out = tmp_path / "out"
    store = EventStore(out / "events.db")
    watcher = Watcher(tmp_path / "run", events=EventConfig(threshold=0.0, release=0.0, min_duration=0.0), store=store,
                      jsonl=out / "events.jsonl", thumbnails=out / "thumbs", runtime="torch",
                      anonymize=AnonymizeConfig(faces=f"onnx:{model}", plates="none"))
    records = list(watcher.watch(str(write_clip(tmp_path / "scene.mp4"))))
    store.close()
    assert len(records) == 2 and watcher.events and all(e.thumbnail for e in watcher.events)
    raw = noisy_frames(1)[0]
    rows = [raw[BOX[1] + r, BOX[0]:BOX[2]].tobytes() for r in range(0, BOX[3] - BOX[1], 8)]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jpg" for p in written)
    for path in written:
        assert not any(row in path.read_bytes() for row in rows), path
        if path.suffix == ".jpg":
            image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            sx, sy = image.shape[1] / 160, image.shape[0] / 120
            region = image[int(BOX[1] * sy):int(BOX[3] * sy), int(BOX[0] * sx):int(BOX[2] * sx)]
            assert region.std() < 0.25 * inside_std(raw), path
