"""The motion stream: frame pairs from the decoding pass, flow descriptors, the cache, runs that
read it, and predict == watch with it."""

import numpy as np
import pytest

from avar.datasets.folders import discover
from avar.features import build_extractor, extractor_infos
from avar.features.cache import FeatureSet, extract_dataset
from avar.features.motion import GRID, MAGNITUDE_EDGES, ORIENTATIONS, PAIR_DIM, FlowHistExtractor
from avar.media.decode import MotionSampling, decode_steps, iter_steps
from avar.media.synth import write_av_file

FPS = 25
H, W = 64, 96


def square_clip(path, direction: int = 1, seconds: float = 2.0, speed: float = 40.0, frame_times=None):
    """A textured square sliding ``direction`` (+1 right, -1 left, 0 still) at ``speed`` px/s on
    a textured background; a 440 Hz tone."""
    rng = np.random.default_rng(0)
    background = rng.integers(40, 90, (H, W, 3), dtype=np.uint8)
    square = rng.integers(150, 255, (16, 16, 3), dtype=np.uint8)
    n = len(frame_times) if frame_times is not None else int(seconds * FPS)
    times = frame_times if frame_times is not None else np.arange(n) / FPS
    frames = np.repeat(background[None], n, axis=0)
    for i, t in enumerate(times):
        x = int(round(W / 2 - 8 + direction * (speed * (t % 1.0) - speed / 2)))
        frames[i, 24:40, x:x + 16] = square
    t = np.arange(int(max(seconds, times[-1] + 0.1) * 16000)) / 16000
    return write_av_file(path, frames, FPS, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000,
                         frame_times_s=frame_times)


def _orientations(vector: np.ndarray) -> np.ndarray:
    """The whole-frame orientation shares of a pair descriptor's mean (summed over the grid)."""
    cell = ORIENTATIONS + len(MAGNITUDE_EDGES) + 1 + 3
    return sum(vector[k * cell : k * cell + ORIENTATIONS] for k in range(GRID * GRID))


def _mean_magnitude(vector: np.ndarray) -> float:
    return float(vector[GRID * GRID * (ORIENTATIONS + len(MAGNITUDE_EDGES) + 1 + 3) + ORIENTATIONS])


def _flow(path, step=0.5):
    extractor = FlowHistExtractor()
    steps = decode_steps(path, step, (32, 32), extractor.sampling)
    return steps, extractor(steps.motion)


def test_flow_hist_is_listed_offline_and_motion():
    info = {i.name: i for i in extractor_infos()}["flow-hist"]
    assert (info.modality, info.dim, info.offline) == ("motion", 3 * PAIR_DIM, True)
    with pytest.raises(ValueError, match="no weights"):
        build_extractor("flow-hist", weights="x.pth")


def test_left_and_right_give_opposite_orientations_and_still_gives_none(tmp_path):
    _, right = _flow(square_clip(tmp_path / "right.mp4", 1))
    _, left = _flow(square_clip(tmp_path / "left.mp4", -1))
    _, still = _flow(square_clip(tmp_path / "still.mp4", 0))
    r, l_ = _orientations(right[1, :PAIR_DIM]), _orientations(left[1, :PAIR_DIM])
    # Rightward motion (angle 0) falls in bin 4, leftward (angle pi) in bin 0: opposite halves.
    assert int(np.argmax(r)) == 4 and int(np.argmax(l_)) == 0
    assert r[4] > 0.7 * r.sum() and l_[0] > 0.7 * l_.sum()  # still cells add a little noise
    np.testing.assert_allclose(r / r.sum(), np.roll(l_ / l_.sum(), 4), atol=0.1)
    moving = _mean_magnitude(right[1, :PAIR_DIM])
    assert moving > 0.02  # frame widths / s: the square covers 40/96 of the frame a second, over ~7% of it
    assert _mean_magnitude(still[1, :PAIR_DIM]) < 0.05 * moving


def test_pairs_come_from_the_same_pass_and_match_decoding_every_frame(tmp_path):
    path = square_clip(tmp_path / "clip.mp4", 1)
    sampling = MotionSampling(pairs=4, width=48)
    fast = list(iter_steps(path, 0.5, (32, 32), motion=sampling))
    full = list(iter_steps(path, 0.5, (32, 32), motion=sampling, decode_all=True))
    assert len(fast) == len(full) == 4
    for a, b in zip(fast, full):
        np.testing.assert_array_equal(a.frame, b.frame)
        np.testing.assert_array_equal(a.motion.frames, b.motion.frames)
        np.testing.assert_array_equal(a.motion.dt, b.motion.dt)
    assert fast[0].motion.frames.shape == (1, 4, 2, 32, 48)
    np.testing.assert_allclose(fast[0].motion.dt, 1 / FPS, atol=1e-3)  # consecutive frames
    plain = list(iter_steps(path, 0.5, (32, 32)))
    assert all(s.motion is None for s in plain)
    assert all(np.array_equal(a.frame, b.frame) for a, b in zip(plain, fast))


def test_a_timestamp_jump_and_a_single_frame_give_defined_outputs(tmp_path):
    times = np.r_[np.arange(25) / FPS, 40.0 + np.arange(25) / FPS]  # a 39-s jump in the middle
    with pytest.warns(UserWarning, match="timestamp_jump"):
        steps, jumped = _flow(square_clip(tmp_path / "jump.mp4", 1, seconds=2.0, frame_times=times))
    assert jumped.shape == (steps.n_steps, 3 * PAIR_DIM) and np.isfinite(jumped).all()
    assert (steps.motion.dt >= 0).all() and steps.motion.dt.max() < 1.0  # no pair spans the jump
    one = write_av_file(tmp_path / "one.mp4", np.full((1, H, W, 3), 80, np.uint8), FPS, None, 16000)
    with pytest.warns(UserWarning, match="no audio"):
        steps, single = _flow(one, step=0.5)
    assert single.shape == (steps.n_steps, 3 * PAIR_DIM)
    np.testing.assert_array_equal(single, 0)  # no pair: no motion known


def test_the_cache_keeps_motion_apart_and_old_caches_load(tmp_path):
    for name, direction in (("left", -1), ("right", 1)):
        for i in range(2):
            square_clip(tmp_path / "data" / name / f"{name}{i}.mp4", direction, speed=30.0 + 10 * i)
    entries = discover(tmp_path / "data", test_fraction=0, val_fraction=0)
    video, audio = build_extractor("efficientnet-lite0"), build_extractor("logmel")
    extract_dataset(entries, tmp_path / "with", video, audio, step=0.5, motion=FlowHistExtractor(), progress=False)
    extract_dataset(entries, tmp_path / "without", video, audio, step=0.5, progress=False)
    with_motion, without = FeatureSet.open(tmp_path / "with"), FeatureSet.open(tmp_path / "without")
    assert with_motion.has_motion and with_motion.manifest["motion"]["name"] == "flow-hist"
    assert not without.has_motion and without.manifest["motion"] is None
    a, b = with_motion.split("train")[0], without.split("train")[0]
    np.testing.assert_array_equal(a.video, b.video)  # appearance untouched by the motion stream
    assert a.motion.shape == (len(a.times), 3 * PAIR_DIM) and b.motion is None
    assert a.visual(True).shape[1] == a.video.shape[1] + a.motion.shape[1]
    with pytest.raises(ValueError, match="--motion none"):
        extract_dataset(entries, tmp_path / "without", video, audio, step=0.5, motion=FlowHistExtractor(),
                        progress=False)


@pytest.fixture(scope="module")
def motion_run(tmp_path_factory):
    """A small supervised run on a cache with a motion stream: ``normal`` clips hold a still square,
    ``moving`` clips one sliding left or right; one clip of each class in val."""
    from avar.methods.avarnet.train import TrainConfig, train_head

    root = tmp_path_factory.mktemp("motion")
    for i in range(3):
        square_clip(root / "data" / "normal" / f"n{i}.mp4", 0)
        square_clip(root / "data" / "moving" / f"m{i}.mp4", 1 if i % 2 else -1, speed=30.0 + 10 * i)
    entries = discover(root / "data", test_fraction=0, val_fraction=0.34)
    extract_dataset(entries, root / "feat", build_extractor("efficientnet-lite0"), build_extractor("logmel"),
                    step=0.5, motion=FlowHistExtractor(), progress=False)
    head = {"num_stages": 1, "num_layers": 2, "num_f_maps": 8, "attention": False}
    train_head(FeatureSet.open(root / "feat"), root / "run", TrainConfig(epochs=3, min_steps=20, seq_len=4, head=head),
               progress=False)
    return root


def test_a_run_names_its_streams_and_stores_an_event_threshold(motion_run):
    from avar.runs import load_run

    run = load_run(motion_run / "run")
    # Every clip has the same tone: the selection leaves the audio out and keeps motion.
    assert run.record.streams == ["video", "motion"] and run.reads_motion
    assert run.record.motion_selection["modality"] == "vm"
    assert run.config.motion_dim == 3 * PAIR_DIM
    assert run.config.video_dim == run.extractors["video"]["dim"] + 3 * PAIR_DIM
    calibration = run.record.event_calibration
    assert run.record.thresholds["threshold"] == calibration["threshold"]
    assert calibration["resolved"] is False and "cannot resolve" in calibration["note"]  # 2 s of normal footage
    # The lowest threshold at which the normal validation clip raises no event exists (below 1).
    assert calibration["met"] is True


def test_predict_equals_watch_with_motion_and_both_use_the_run_threshold(motion_run):
    from avar.serve.predict import Predictor
    from avar.serve.watch import Watcher

    media = square_clip(motion_run / "probe.mp4", 1, seconds=2.0)
    watcher = Watcher(motion_run / "run")
    assert watcher.motion is not None and watcher.events_config.threshold == \
        watcher.run.record.thresholds["threshold"]
    records = list(watcher.watch(media))
    expected = Predictor(motion_run / "run").predict(media)
    assert [(r.time, r.end) for r in records] == [(e.time, e.end) for e in expected.steps]
    for r, e in zip(records, expected.steps):
        assert abs(r.anomaly_score - e.anomaly_score) < 1e-4
    assert [(e.start, e.end) for e in watcher.events] == [(e["start"], e["end"]) for e in expected.events]


def report_threshold(root) -> float:
    import json

    return json.loads((root / "run" / "config.json").read_text())["thresholds"]["threshold"]


def test_evaluate_reports_event_figures(motion_run):
    from avar.methods.avarnet.evaluate import evaluate_run

    report = evaluate_run(motion_run / "run", motion_run / "feat", split="val")
    events = report.events
    assert events["anomalous_clips"] == 1 and events["normal_hours"] == pytest.approx(2 / 3600, rel=0.01)
    assert events["recall"] == events["detected"] / 1 and events["threshold"] == report_threshold(motion_run)
    assert events["false_events_per_hour"] == pytest.approx(events["false_events"] / events["normal_hours"], rel=1e-3)
    assert "false events per hour" in report.to_markdown()


def test_a_run_without_motion_refuses_nothing_and_one_with_it_needs_it(motion_run, tmp_path):
    from avar.features.cache import StepFeatures
    from avar.runs import load_run

    run = load_run(motion_run / "run")
    clip = FeatureSet.open(motion_run / "feat").split("train")[0]
    with pytest.raises(ValueError, match="--motion flow-hist"):
        run.read([StepFeatures(clip.clip_id, clip.label, clip.split, clip.video, clip.audio, clip.times)])
    assert run.read([clip])[0].video.shape[1] == run.config.video_dim


def test_video_motion_and_a_motion_stream_are_refused_together(motion_run, tmp_path):
    from avar.methods.avarnet.train import TrainConfig, train_head

    features = FeatureSet.open(motion_run / "feat")
    with pytest.raises(ValueError, match="--no-motion, or drop --video-motion"):
        train_head(features, tmp_path / "run", TrainConfig(epochs=1, video_motion=2), progress=False)
    head = {"num_stages": 1, "num_layers": 2, "num_f_maps": 8, "attention": False}
    run = train_head(features, tmp_path / "run", TrainConfig(epochs=1, min_steps=0, seq_len=4, video_motion=2,
                                                             motion=False, head=head), progress=False)
    assert not run.reads_motion and run.config.video_dim == 2 * run.extractors["video"]["dim"]


def test_flow_normality_scores_fast_motion_above_the_speeds_it_was_fitted_on():
    from avar.methods.autoencoder.flow_normality import FlowNormality, cell_speeds

    rng = np.random.default_rng(0)
    background = rng.integers(40, 90, (48, 72), dtype=np.uint8)
    square = rng.integers(150, 255, (12, 12), dtype=np.uint8)

    def walk(speed: int, n: int = 12) -> np.ndarray:
        frames = np.repeat(background[None], n, axis=0)
        for t in range(n):
            frames[t, 18:30, 4 + speed * t:16 + speed * t] = square
        return frames

    normal = FlowNormality.fit([walk(1), walk(1)])
    assert FlowNormality.from_dict(normal.to_dict()).top.shape == normal.top.shape
    slow, fast = normal.scores(walk(1)), normal.scores(walk(4))
    assert fast[1:].mean() > 2 * slow[1:].mean()
    assert cell_speeds(walk(1)[:1]).shape == (1, 12, 18) and not cell_speeds(walk(1)[:1]).any()  # one frame: no flow
