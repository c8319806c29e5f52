"""The audio-visual sequence autoencoder: ConvLSTM2D, the three models, training, scoring, Ped2, CLI."""

import csv
import json
import os
import shutil
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from avar.cli import main
from avar.datasets.framefolders import load_video, open_frame_dataset, read_frame_labels
from avar.methods.autoencoder.evaluate import evaluate_autoencoder
from avar.features.spectral import FEATURE_NAMES, SPECTRAL_DIM, MinMaxNormalizer, spectral_features
from avar.methods.autoencoder import (
    AudioAEConfig,
    AudioSeq2SeqAE,
    ConvLSTM2D,
    ConvLSTM2DCell,
    JointFusionNet,
    SpaceToDepthConv2d,
    VideoSeq2SeqAE,
)
from avar.methods.autoencoder.config import AETrainConfig
from avar.methods.autoencoder.run import AERun, scoring_windows, smooth_scores
from avar.methods.autoencoder.train import train_autoencoder, training_windows

PED2 = Path(os.environ.get("AVAR_PED2", Path(__file__).resolve().parents[2] / "shared" / "data" / "ucsd-ped2"))
needs_ped2 = pytest.mark.skipif(not (PED2 / "training").is_dir(), reason=f"UCSD Ped2 not found at {PED2} (set AVAR_PED2)")
TINY_VIDEO = {"frame_size": 16, "encoder_channels": [4, 8], "lstm_channels": [8, 4, 8], "decoder_channels": [8, 4]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_convlstm_cell_and_layer_shapes_and_the_layer_is_the_cell_stepped():
    torch.manual_seed(0)
    cell = ConvLSTM2DCell(3, 5, kernel_size=3)
    x = torch.randn(2, 3, 6, 7)
    h, c = cell(x)
    assert h.shape == c.shape == (2, 5, 6, 7)
    assert torch.all(h.abs() < 1)  # h = o * tanh(c)
    layer = ConvLSTM2D(3, 5)
    seq = torch.randn(2, 4, 3, 6, 7)
    out = layer(seq)
    assert out.shape == (2, 4, 5, 6, 7)
    state = None
    for t in range(4):
        state = layer.cell(seq[:, t], state)
        assert torch.allclose(out[:, t], state[0], atol=1e-6)
    # Keras' unit_forget_bias: the forget gate starts open
    assert torch.all(cell.input_conv.bias[5:10] == 1) and torch.all(cell.input_conv.bias[:5] == 0)


def test_convlstm_cell_gradients_match_finite_differences():
    torch.manual_seed(0)
    cell = ConvLSTM2DCell(2, 3, kernel_size=3).double()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    h = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h, c: cell(x, (h, c)), (x, h, c), eps=1e-6, atol=1e-5)
    weights = (cell.input_conv.weight, cell.hidden_conv.weight)
    assert torch.autograd.gradcheck(
        lambda wi, wh: torch.func.functional_call(cell, {"input_conv.weight": wi, "hidden_conv.weight": wh,
                                                         "input_conv.bias": cell.input_conv.bias}, (x, (h, c))),
        tuple(w.detach().clone().requires_grad_() for w in weights), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("block,size", [(4, 24), (2, 10), (3, 12), (4, 10)])
def test_space_to_depth_prediction_conv_is_the_plain_convolution(block, size):
    torch.manual_seed(0)
    conv = SpaceToDepthConv2d(5, 2, 7, block).double()
    x = torch.randn(3, 5, size, size, dtype=torch.float64, requires_grad=True)
    out = conv(x)
    ref = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=3)
    assert torch.allclose(out, ref, atol=1e-12)
    grads = torch.autograd.grad(out.square().sum(), (x, conv.weight))
    ref_grads = torch.autograd.grad(ref.square().sum(), (x, conv.weight))
    assert all(torch.allclose(a, b, atol=1e-9) for a, b in zip(grads, ref_grads))
    assert set(conv.state_dict()) == {"weight", "bias"}


def test_video_model_follows_table_3():
    model = VideoSeq2SeqAE()
    seen = {}
    for name, module in model.named_modules():
        if isinstance(module, ConvLSTM2D):
            module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape)))
    with torch.no_grad():
        out = model(torch.rand(1, 2, 1, 240, 240))
    assert out.shape == (1, 2, 1, 240, 240) and 0 <= out.min() and out.max() <= 1
    # three ConvLSTM2D layers of 64, 32, 64 filters at 240 / (4 * 2) = 30 pixels
    assert list(seen.values()) == [(1, 2, 64, 30, 30), (1, 2, 32, 30, 30), (1, 2, 64, 30, 30)]
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
             and m.kernel_size != (3, 3)]
    assert [(m.out_channels, m.kernel_size[0], m.stride[0]) for m in convs] == [
        (32, 5, 4), (64, 5, 2), (64, 5, 2), (32, 5, 4), (1, 7, 1)]
    with pytest.raises(ValueError, match="240"):
        model(torch.rand(1, 2, 1, 64, 64))


def test_audio_model_follows_table_2_and_takes_any_length():
    model = AudioSeq2SeqAE(AudioAEConfig()).eval()
    assert model.config.n_features == SPECTRAL_DIM == len(FEATURE_NAMES) == 160
    assert [m.hidden_size for m in model.lstm_encoder] == [128, 64]
    assert [m.hidden_size for m in model.lstm_decoder] == [64, 128]
    assert model.prediction.out_channels == 160 and model.prediction.kernel_size == (9,)
    for t in (10, 12, 7):
        out = model(torch.rand(3, t, 160))
        assert out.shape == (3, t, 160) and 0 <= out.min() and out.max() <= 1


def test_joint_model_follows_table_4():
    net = JointFusionNet()
    widths = [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [8, 16, 32, 64, 128, 256, 512, 1024, 1]
    assert net(torch.rand(5, 2)).shape == (5,)


def test_smoothing_averages_the_frames_around_each_frame():
    scores = np.array([0.0, 0.0, 9.0, 0.0, 0.0, 3.0])
    assert np.allclose(smooth_scores(scores, 3), [0, 3, 3, 3, 1, 2])
    assert np.array_equal(smooth_scores(scores, 1), scores)


def test_training_windows_use_strides_one_two_three():
    windows = training_windows(40, 10, (1, 2, 3))
    steps = sorted({int(np.diff(w)[0]) for w in windows})
    assert steps == [1, 2, 3]
    assert all(len(w) == 10 and w.max() < 40 for w in windows)
    assert sum(np.diff(w)[0] == 3 for w in windows) == 2  # span 28: starts 0 and 10
    short = training_windows(4, 10, (1, 2, 3))
    assert len(short) == 1 and list(short[0]) == [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]
    covered = np.unique(np.concatenate(scoring_windows(23, 10, 5)))
    assert list(covered) == list(range(23))


def _write_toy_dataset(root: Path, rng: np.random.Generator) -> None:
    """Normal: a 3 px block walking right along row 6, 1 px per frame; anomaly: a block racing
    along row 1 at 5 px per frame (somewhere and at a speed never seen in training)."""
    def video(folder: Path, speed: int, row: int, n: int = 24) -> None:
        folder.mkdir(parents=True)
        start = int(rng.integers(0, 16))
        for t in range(n):
            image = np.full((16, 16), 40, np.uint8)
            x = (start + speed * t) % 14
            image[row : row + 3, x : x + 3] = 220
            cv2.imwrite(str(folder / f"{t:03d}.png"), image)
    for k in range(4):
        video(root / "training" / "frames" / f"{k:02d}", 1, 6)
    video(root / "testing" / "frames" / "00", 1, 6)
    video(root / "testing" / "frames" / "01", 5, 1)
    (root / "test_frame_labels.csv").write_text("video,num_frames,abnormal_start,abnormal_end\n00,24,,\n01,24,0,23\n")


def test_autoencoder_trained_on_normal_motion_flags_abnormal_motion(tmp_path):
    _write_toy_dataset(tmp_path / "toy", np.random.default_rng(0))
    config = AETrainConfig(epochs=60, lr=3e-3, batch_size=4, video=TINY_VIDEO, score="frame", precision="fp32")
    run = train_autoencoder(tmp_path / "toy", tmp_path / "run", config, progress=False)
    history = [r for r in json.loads((tmp_path / "run" / "history.json").read_text()) if r["model"] == "video"]
    assert len(history) == 60 and history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    dataset = open_frame_dataset(tmp_path / "toy")
    normal, abnormal = (run.frame_errors(load_video(v, 16)) for v in dataset.split("test"))
    assert abnormal["video_frame"].mean() > 2 * normal["video_frame"].mean()
    assert abnormal["video_motion"].mean() > 2 * normal["video_motion"].mean()
    assert all(len(v) == 24 for v in abnormal.values())
    # the run directory reloads to the same scores and holds no pickle
    again = AERun.load(tmp_path / "run").frame_errors(load_video(dataset.split("test")[1], 16))["video_frame"]
    assert np.allclose(again, abnormal["video_frame"], atol=1e-5)
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"video.safetensors", "config.json", "history.json"}


def test_spectral_features_are_160_finite_columns_normalised_on_training():
    rate = 22_050
    t = np.arange(rate * 2) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    feats = spectral_features(tone, rate, hop=2205, n_frames=20)
    assert feats.shape == (20, 160) and np.all(np.isfinite(feats))
    silence = spectral_features(np.zeros(rate, np.float32), rate, hop=2205)
    assert np.all(np.isfinite(silence))
    centroid = FEATURE_NAMES.index("centroid_khz")
    assert 0.3 < np.median(feats[:, centroid]) < 0.7  # a 440 Hz tone's centroid, in kHz
    norm = MinMaxNormalizer.fit([feats])
    scaled = norm.apply(feats)
    assert scaled.min() >= 0 and scaled.max() <= 1 + 1e-6


def test_audio_autoencoder_flags_an_unheard_sound():
    rate, rng = 22_050, np.random.default_rng(0)
    t = np.arange(rate * 6) / rate
    hum = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.normal(size=t.size)).astype(np.float32)
    chirp = (0.5 * np.sign(np.sin(2 * np.pi * (2000 + 800 * t) * t))).astype(np.float32)
    normal = spectral_features(hum, rate, hop=2205)
    abnormal = spectral_features(chirp, rate, hop=2205)
    norm = MinMaxNormalizer.fit([normal])
    torch.manual_seed(0)
    model = AudioSeq2SeqAE(AudioAEConfig(encoder_channels=(16, 16, 16), lstm_encoder=(16, 8), lstm_decoder=(8, 16),
                                         decoder_channels=(16, 16, 16)))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.from_numpy(norm.apply(normal))
    windows = torch.stack([x[s : s + 10] for s in range(0, len(x) - 10, 2)])
    for _ in range(150):
        loss = torch.nn.functional.mse_loss(model(windows), windows)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        err = lambda f: float((model(f[None, :10]) - f[None, :10]).square().mean())
        assert err(torch.from_numpy(norm.apply(abnormal))) > 5 * err(x)


@needs_ped2
def test_ped2_loader_reproduces_frame_counts_and_abnormal_ranges():
    dataset = open_frame_dataset(PED2)
    train, test = dataset.split("train"), dataset.split("test")
    assert (len(train), len(test)) == (16, 12)
    assert sum(v.n_frames for v in train) == 2550 and sum(v.n_frames for v in test) == 2010
    with (PED2 / "test_frame_labels.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    total = 0
    for row, video in zip(rows, test):
        assert video.video_id == f"testing/{row['video']}" and video.n_frames == int(row["num_frames"])
        labels = video.frame_labels(video.n_frames)
        start, end = int(row["abnormal_start"]), int(row["abnormal_end"])
        assert np.flatnonzero(labels).tolist() == list(range(start, end + 1))
        total += end - start + 1
    assert read_frame_labels(PED2 / "test_frame_labels.csv")["01"] == (180, [(60, 179)])
    assert total == 1648
    loaded = load_video(test[8], 240, keep_native=True)  # testing/09: 120 frames, all abnormal
    assert loaded.frames.shape == (120, 240, 240) and loaded.native.shape == (120, 240, 360)
    assert loaded.labels.all() and loaded.frames.dtype == np.uint8
    assert dataset.audio_pairing.startswith("none")


def _write_wav(path: Path, wave_data: np.ndarray, rate: int = 22_050) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.clip(wave_data, -1, 1) * 32767).astype(np.int16).tobytes())


@pytest.fixture(scope="module")
def mini_ped2(tmp_path_factory):
    """Two training and two test videos of 20 real Ped2 frames each, plus a paired audio folder."""
    if not (PED2 / "training").is_dir():
        pytest.skip(f"UCSD Ped2 not found at {PED2} (set AVAR_PED2)")
    root = tmp_path_factory.mktemp("ped2")
    data, audio = root / "data", root / "audio"
    rng = np.random.default_rng(0)
    for split, videos, first in (("training", ("01", "02"), 0), ("testing", ("01", "02"), 50)):
        for v in videos:
            folder = data / split / "frames" / v
            folder.mkdir(parents=True)
            for k, f in enumerate(sorted((PED2 / split / "frames" / v).iterdir())[first : first + 20]):
                shutil.copy(f, folder / f"{k:03d}.jpg")
            t = np.arange(22_050 * 2) / 22_050  # 2 s = 20 frames at 10 frames/s
            sound = 0.1 * np.sin(2 * np.pi * 300 * t) + 0.01 * rng.normal(size=t.size)
            if split == "testing" and v == "01":
                sound[t >= 1.0] += 0.5 * np.sign(np.sin(2 * np.pi * 1800 * t[t >= 1.0]))  # a loud buzz from frame 10
            _write_wav(audio / split / f"{v}.wav", sound)
    # testing/01 frames 50-69 hold the cyclist from frame 60 on: 10..19 here; testing/02's anomaly starts at 94
    (data / "test_frame_labels.csv").write_text("video,num_frames,abnormal_start,abnormal_end\n01,20,10,19\n02,20,,\n")
    return root


def test_cli_trains_and_evaluates_the_video_model_on_a_few_ped2_frames(mini_ped2, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--method", "autoencoder", "--data", str(mini_ped2 / "data"), "--out", str(run_dir),
                 "--epochs", "1", "--threads", "1", "-q"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data", str(mini_ped2 / "data"), "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"frame_auc", "eer", "floor_auc", "precision", "recall", "accuracy", "f1", "gamma"} <= set(report)
    assert report["n_frames"] == 40 and report["n_anomalous"] == 10 and report["n_videos"] == 2
    assert report["score"] == "video_motion" and report["smooth"] == 10
    assert {"video_frame", "video_patch", "video_motion", "floor", "floor_mean", "floor_smoothed",
            "calibrated"} <= set(report["scorers"])  # calibrated: as watch scores, on the 2 training videos
    assert 0 <= report["scorers"]["calibrated"]["auc"] <= 1
    # The motion term (optical flow against the training videos' speeds), alone and averaged with each scorer.
    assert {"flow", "video_frame_flow", "video_patch_flow", "video_motion_flow"} <= set(report["scorers"])
    assert 0 <= report["frame_auc"] <= 1 and 0 <= report["eer"] <= 1
    assert report["threshold_source"].startswith("paper Table 6") and report["audio_pairing"].startswith("none")
    plots = sorted(p.name for p in (run_dir / "plots").iterdir())
    assert plots == ["roc.png", "testing_01.png", "testing_02.png"]
    assert main(["report", str(run_dir)]) == 0  # every method has a report: this one from eval_frames.json
    page = (run_dir / "report.html").read_text()
    assert "calibrated" in page and page.count("<img") == 3
    assert (run_dir / "plots" / plots[0]).read_bytes()[:4] == b"\x89PNG"
    # regularity (1 - score) spans exactly [0, 1] within every video
    with (run_dir / "frame_scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for video in ("testing/01", "testing/02"):
        scores = np.array([float(r["video_motion"]) for r in rows if r["video"] == video])
        regularity = 1 - scores
        assert regularity.min() == pytest.approx(0) and regularity.max() == pytest.approx(1)


def test_audio_visual_run_states_its_pairing_and_fuses_late(mini_ped2, tmp_path):
    config = AETrainConfig(modality="av", epochs=1, audio_epochs=20, threads=1, video={"frame_size": 48})
    run = train_autoencoder(mini_ped2 / "data", tmp_path / "run", config, audio_dir=mini_ped2 / "audio", progress=False)
    assert run.record.audio_pairing.startswith("paired")
    report = evaluate_autoencoder(tmp_path / "run", mini_ped2 / "data", tmp_path / "eval", plots=False, progress=False)
    assert report.score == "joint" and report.audio_pairing.startswith("paired")
    assert {"audio_frame", "video_motion", "fused_mean", "joint", "joint_frame", "joint_patch"} <= set(report.scorers)
    assert report.threshold_source == "joint model probability 0.5"
    # the buzz from frame 10 of testing/01 is what the acoustic model cannot reconstruct
    assert report.scorers["audio_frame"]["auc"] > 0.8


def test_clear_errors_for_wrong_inputs(tmp_path, mini_ped2):
    with pytest.raises(FileNotFoundError, match="neither frame folders"):
        open_frame_dataset(tmp_path)
    assert main(["train", "--method", "autoencoder", "--out", str(tmp_path / "r")]) == 2
    with pytest.raises(ValueError, match="--audio AUDIO_DIR"):
        train_autoencoder(mini_ped2 / "data", tmp_path / "r", AETrainConfig(modality="a", threads=1), progress=False)
    with pytest.raises(FileNotFoundError, match="no audio for video"):
        open_frame_dataset(mini_ped2 / "data", audio_dir=tmp_path)


def test_class_folder_videos_train_on_normal_clips_and_read_intervals_and_sound(tmp_path):
    """Ordinary video files: normal/ clips train, labelled val/test clips are scored, audio is embedded."""
    from avar.media.synth import write_av_file

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    clips = {"normal/a.mp4": "train", "normal/b.mp4": "train", "normal/c.mp4": "test",
             "fight/d.mp4": "test", "fight/e.mp4": "val", "normal/f.mp4": "val"}
    for rel in clips:
        frames = np.full((20, 32, 32, 3), 60, np.uint8)
        sound = 0.1 * np.sin(2 * np.pi * 300 * np.arange(96_000) / 48_000)
        for t in range(20):
            x = t % 28
            frames[t, 14:18, x : x + 4] = 200
            if rel.startswith("fight") and t >= 10:
                frames[t, 2:12, 2:30] = 255 - frames[t, 2:12, 2:30]
                sound[t * 4800 : (t + 1) * 4800] += 0.6 * rng.standard_normal(4800)
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        write_av_file(data / rel, frames, 10, sound.astype(np.float32), 48_000)
    (data / "splits.csv").write_text("path,label,split\n" + "".join(
        f"{rel},{rel.split('/')[0]},{split}\n" for rel, split in clips.items()))
    (data / "metadata.json").write_text(json.dumps({"clips": [
        {"path": "fight/d.mp4", "interval": [1.0, 2.0]}, {"path": "fight/e.mp4", "interval": [1.0, 2.0]}]}))

    dataset = open_frame_dataset(data)
    assert dataset.layout == "class-folders" and dataset.audio_pairing.startswith("embedded")
    assert [v.video_id for v in dataset.split("train")] == ["normal__a.mp4", "normal__b.mp4"]
    loaded = load_video(next(v for v in dataset.split("test") if v.video_id == "fight__d.mp4"), 16, audio_rate=22_050)
    assert loaded.frames.shape == (20, 16, 16) and loaded.fps == pytest.approx(10)
    assert np.flatnonzero(loaded.labels).tolist() == list(range(10, 20))
    assert abs(len(loaded.audio) - 2 * 22_050) < 2_000

    config = AETrainConfig(modality="av", epochs=2, audio_epochs=5, threads=1, video=TINY_VIDEO)
    train_autoencoder(data, tmp_path / "run", config, progress=False)
    report = evaluate_autoencoder(tmp_path / "run", data, tmp_path / "eval", plots=False, progress=False)
    assert report.n_frames == 40 and report.n_anomalous == 10
    assert report.threshold_source == "validation videos (best F1)"  # the val split has both classes
    assert 0 <= report.gamma <= 1 and {"joint", "fused_mean", "audio_frame"} <= set(report.scorers)
