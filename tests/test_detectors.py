"""One detector interface (issue 12): every feature-scoring method loads with ``load_run`` and
runs through predict, watch and events with the same windows."""

import json

import numpy as np
import pytest

from avar.cli import main
from avar.serve.predict import Predictor
from avar.serve.events import EventConfig
from avar.serve.store import EventStore
from avar.serve.watch import Watcher
from avar.runs import load_run, run_method
from avar.methods.avarnet.train import TrainConfig, train_head
from avar.training.sequences import centred_start, make_sequences, pad_windows
from avar.methods.avaca.train import WeakTrainConfig, train_weak
from test_watch import _clip, tone_cache

SEQ_LEN = 4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A supervised and a weakly supervised run on the same small cache, windows of 4 steps."""
    root = tmp_path_factory.mktemp("detectors")
    features = tone_cache(root, per_class=3, tone=(1, 3))
    head = {"num_stages": 1, "num_layers": 2, "num_f_maps": 8, "attention": False}
    train_head(features, root / "avarnet", TrainConfig(epochs=3, min_steps=0, seq_len=SEQ_LEN, head=head,
                                                       select_streams=False), progress=False)
    train_head(features, root / "motion", TrainConfig(epochs=3, min_steps=0, seq_len=SEQ_LEN, head=head, video_motion=3,
                                                      select_streams=False), progress=False)
    train_weak(features, root / "avaca", WeakTrainConfig(epochs=3, batch_size=4, window=SEQ_LEN,
                                                         model={"hidden": 16, "num_heads": 2, "ffn_dim": 16}),
               progress=False)
    return {"avarnet": root / "avarnet", "avaca": root / "avaca", "motion": root / "motion"}


@pytest.fixture(scope="module")
def long_media(tmp_path_factory):
    """14 steps: several times the window, with a loud bright event in the middle."""
    return _clip(tmp_path_factory.mktemp("long") / "long.mp4", seconds=14, tone=(6, 9), seed=3)


def test_one_padding_and_one_centred_window():
    x = np.arange(6, dtype=np.float32)[:, None]
    (windows,), mask = pad_windows([x], [(0, 4), (4, 6)], 4)
    assert windows[:, :, 0].tolist() == [[0, 1, 2, 3], [4, 5, 0, 0]] and mask.sum(1).tolist() == [4, 2]
    batch = make_sequences([x], [x], [0], 4, stride=4)  # training windows: the same padding
    assert batch.start.tolist() == [0, 2] and batch.mask.all()
    assert [centred_start(t, 6, 4) for t in range(6)] == [0, 0, 1, 2, 2, 2]
    assert [centred_start(t, 3, 4) for t in range(3)] == [0, 0, 0]


@pytest.mark.parametrize("method", ["avarnet", "avaca", "motion"])
def test_watch_equals_predict_on_a_file_longer_than_the_window(runs, long_media, method):
    # "motion": a supervised run reading the video as motion over 3 steps; watched in batches of
    # 3 steps, each batch's first steps read the raw steps of the batch before
    run = load_run(runs[method])
    assert run.method == method.replace("motion", "avarnet") and run.seq_len == SEQ_LEN
    assert run_method(runs[method]) == run.method and run.context_steps == (2 if method == "motion" else 0)
    predicted = Predictor(runs[method]).predict(long_media)
    watched = list(Watcher(runs[method], batch=3).watch(long_media))
    assert len(watched) == len(predicted.steps) == 14
    for w, p in zip(watched, predicted.steps):
        assert (w.time, w.end, w.predicted) == (p.time, p.end, p.predicted)
        assert abs(w.anomaly_score - p.anomaly_score) <= 1e-4
        assert max(abs(w.probabilities[c] - p.probabilities[c]) for c in run.classes) <= 1e-4
        assert 0.0 <= w.anomaly_score <= 1.0


def test_a_weak_run_scores_anomaly_against_normal_and_opens_anomaly_events(runs, long_media, tmp_path):
    run = load_run(runs["avaca"])
    assert run.learning == "weak" and run.classes == ["normal", "anomaly"]
    config = EventConfig(threshold=0.0, release=0.0, min_duration=0.0)  # every step is one event
    with EventStore(tmp_path / "events.db") as store:
        records = list(Watcher(runs["avaca"], events=config, store=store).watch(long_media))
        rows = store.query()
    assert all(abs(r.anomaly_score - r.probabilities["anomaly"]) < 1e-9 for r in records)
    assert [r["label"] for r in rows] == ["anomaly"]


def test_cli_predict_and_bench_take_a_weak_run(runs, long_media, tmp_path, capsys):
    assert main(["predict", str(runs["avaca"]), str(long_media), "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["clip_class"] in ("normal", "anomaly") and len(out["steps"]) == 14
    assert main(["bench", "--run", str(runs["avaca"]), "--media", str(long_media), "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["steps"] == 14 and bench["head"] == "trained avaca"


def test_report_of_a_weak_run_shows_its_frame_metrics_and_curves(runs, tmp_path):
    assert main(["report", str(runs["avaca"]), "--out", str(tmp_path / "report.html"), "--split", "train"]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "method (weakly supervised)" in page and "frame_auc" in page
    assert page.count("<img") == 4 and "Anomaly score over time" in page


def test_an_unknown_method_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"method": "teleport"}))
    with pytest.raises(ValueError, match="unknown method 'teleport'"):
        load_run(tmp_path)


def _block_video(path, n_frames, anomaly=None, seed=0):
    """A 4 px block walking right (the normal motion); during ``anomaly`` (frames) a region flickers."""
    from avar.media.synth import write_av_file

    rng = np.random.default_rng(seed)
    frames = np.full((n_frames, 32, 32, 3), 60, np.uint8)
    start = int(rng.integers(0, 28))
    for t in range(n_frames):
        x = (start + t) % 28
        frames[t, 14:18, x : x + 4] = 200
        if anomaly and anomaly[0] <= t < anomaly[1]:
            frames[t, 2:12, 2:30] = 255 * (t % 2)
    sound = (0.01 * rng.standard_normal(n_frames * 4800)).astype(np.float32)
    return write_av_file(path, frames, 10, sound, 48_000)


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory):
    from avar.methods.autoencoder.config import AETrainConfig
    from avar.methods.autoencoder.train import train_autoencoder
    from test_seq2seq_ae import TINY_VIDEO

    root = tmp_path_factory.mktemp("ae")
    for i in range(5):
        _block_video(root / "data" / "normal" / f"n{i}.mp4", 30, seed=i)
    config = AETrainConfig(epochs=8, lr=3e-3, batch_size=4, video=TINY_VIDEO, precision="fp32", threads=1)
    train_autoencoder(root / "data", root / "run", config, progress=False)
    media = _block_video(root / "long.mp4", 60, anomaly=(30, 45), seed=9)
    return root / "run", media


def test_an_autoencoder_run_is_calibrated_on_held_out_normal_videos(autoencoder_run):
    run_dir, _ = autoencoder_run
    run = load_run(run_dir)
    assert run.learning == "unsupervised" and run.classes == ["normal", "anomaly"]
    calibration = run.stream["calibration"]
    assert run.stream["fps"] == pytest.approx(10) and run.step == pytest.approx(0.1)
    assert calibration["held_out"] and calibration["videos"] == 1 and calibration["frames"] == 30
    quantiles = np.array(calibration["quantiles"])
    assert len(quantiles) == 201 and np.all(np.diff(quantiles) >= 0)
    assert run.record.thresholds == {"threshold": 0.99, "release": 0.95}
    assert run.calibrated(np.array([quantiles[0] - 1, quantiles[-1] + 1])).tolist() == [0.0, 1.0]
    levels = run.calibrated(np.linspace(quantiles[0], quantiles[-1], 50))
    assert np.all(np.diff(levels) >= 0) and 0.3 < run.calibrated(np.array([np.median(quantiles)]))[0] < 0.7


def test_an_autoencoder_run_watches_a_file_as_predict_scores_it(autoencoder_run, tmp_path):
    run_dir, media = autoencoder_run
    predicted = Predictor(run_dir).predict(media).steps
    with EventStore(tmp_path / "events.db") as store:
        run = load_run(run_dir)
        watched = list(Watcher(run, store=store, events=EventConfig(**run.record.thresholds,
                                                                    min_duration=0.3)).watch(media))
        rows = store.query()
    assert len(watched) == len(predicted) == 60
    for w, p in zip(watched, predicted):
        assert (w.time, w.end) == (p.time, p.end) and abs(w.anomaly_score - p.anomaly_score) <= 1e-4
    scores = np.array([p.anomaly_score for p in predicted])
    # the flicker is beyond every normal held-out step; the walking block mostly is not
    assert scores[31:45].min() >= 0.99 and np.median(scores[:25]) < 0.9
    assert rows and all(r["label"] == "anomaly" for r in rows)
    assert any(r["start"] < 4.5 and r["end"] > 3.0 for r in rows)


def test_upgrade_calibrates_an_autoencoder_run_saved_without_calibration(autoencoder_run, tmp_path, capsys):
    import shutil

    run_dir, media = autoencoder_run
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    config = json.loads((old / "config.json").read_text())
    del config["stream"], config["thresholds"]
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="avar upgrade"):
        Predictor(old).predict(media)
    assert main(["upgrade", str(old), "--data", str(run_dir.parent / "data"), "--json"]) == 0
    stream = json.loads(capsys.readouterr().out)
    assert stream["calibration"]["videos"] == 3 and not stream["calibration"]["held_out"]  # the train split of 5
    assert len(Predictor(old).predict(media).steps) == 60


def test_cli_train_takes_its_defaults_from_the_configs(runs, tmp_path, capsys):
    feat = runs["avaca"].parent / "feat"
    assert main(["train", str(feat), "--method", "avaca", "--out", str(tmp_path / "weak"), "--epochs", "1",
                 "--window", "6", "--hidden", "16", "--json", "-q"]) == 0
    assert main(["train", str(feat), "--out", str(tmp_path / "sup"), "--epochs", "1", "--stages", "1", "--layers", "2",
                 "--f-maps", "8", "--json", "-q"]) == 0
    capsys.readouterr()
    weak, supervised = load_run(tmp_path / "weak"), load_run(tmp_path / "sup")
    assert weak.seq_len == 6 and weak.record.train.seed == 0
    assert supervised.seq_len == 10 and supervised.record.train.recipe == "robust"
    assert supervised.record.train.head_type == "mtcn" and supervised.record.train.modality == "av"
