"""Every method in the one table (issue 31), on tiny data, through the same calls: fit ->
evaluate -> load -> predict -> watch; and the command line built from the table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avar.cli import main
from avar.datasets.folders import discover
from avar.features import build_extractor
from avar.features.cache import extract_dataset
from avar.media.synth import write_av_file
from avar.methods.table import METHODS
from avar.runs import load_run, run_method
from avar.serve.predict import predict_files
from avar.serve.watch import Watcher

TINY = {
    "avarnet": dict(epochs=2, head={"num_stages": 1, "num_layers": 2, "num_f_maps": 8}),
    "avaca": dict(epochs=2, model={"hidden": 16}),
    "mil": dict(epochs=2, model={"num_stages": 1, "num_layers": 2, "num_f_maps": 8}),
    "autoencoder": dict(epochs=1, audio_epochs=1, threads=1, precision="fp32",
                        video={"frame_size": 16, "encoder_channels": [4, 8], "lstm_channels": [8, 4, 8],
                               "decoder_channels": [8, 4]}),
}
CLIPS = {"normal/a.mp4": "train", "normal/b.mp4": "train", "normal/c.mp4": "train", "normal/d.mp4": "val",
         "normal/e.mp4": "test", "fight/f.mp4": "train", "fight/g.mp4": "train", "fight/h.mp4": "val",
         "fight/i.mp4": "test"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Class folders of 3-s clips (a square moving; in fight/, a flash and noise from 1 s on),
    their splits and intervals, and their feature cache."""
    root = tmp_path_factory.mktemp("methods")
    rng = np.random.default_rng(0)
    for rel in CLIPS:
        frames = np.full((30, 32, 32, 3), 60, np.uint8)
        sound = 0.1 * np.sin(2 * np.pi * 300 * np.arange(3 * 48_000) / 48_000)
        for t in range(30):
            frames[t, 14:18, t % 28 : t % 28 + 4] = 200
            if rel.startswith("fight") and t >= 10:
                frames[t, 2:12] = 255 - frames[t, 2:12]
                sound[t * 4800 : (t + 1) * 4800] += 0.6 * rng.standard_normal(4800)
        write_av_file(root / "data" / rel, frames, 10, sound.astype(np.float32), 48_000)
    (root / "data" / "splits.csv").write_text("path,label,split\n" + "".join(
        f"{rel},{rel.split('/')[0]},{split}\n" for rel, split in CLIPS.items()))
    (root / "data" / "metadata.json").write_text(json.dumps({"clips": [
        {"path": rel, "interval": [1.0, 3.0]} for rel in CLIPS if rel.startswith("fight")]}))
    extract_dataset(discover(root / "data"), root / "features", build_extractor("efficientnet-lite0"),
                    build_extractor("logmel"), progress=False)
    return root


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_trains_evaluates_predicts_and_watches_through_the_same_calls(data, tmp_path, name):
    method = METHODS[name]
    source = data / ("features" if method.reads == "features" else "data")
    run_dir = tmp_path / "run"
    method.fit(source, run_dir, method.train_config(**TINY[name]), progress=False)
    assert run_method(run_dir) == name
    report = method.evaluate(run_dir, source, out_dir=tmp_path / "eval", plots=False, progress=False)
    headline = getattr(report, method.headline[0])
    assert 0.0 <= headline <= 1.0 and json.dumps(report.to_dict(), allow_nan=False) and report.to_markdown()
    run = load_run(run_dir)
    assert isinstance(run, method.run_class()) and run.learning == method.learning
    clip = data / "data" / "fight" / "i.mp4"
    (prediction,), failures = predict_files(run_dir, [clip], progress=False)
    watched = list(Watcher(run_dir).watch(clip))
    assert not failures and [s.time for s in prediction.steps] == [r.time for r in watched]
    assert [s.anomaly_score for s in prediction.steps] == pytest.approx([r.anomaly_score for r in watched], abs=1e-4)


def test_the_command_line_has_one_train_command_per_method_and_keeps_the_old_spelling(data, tmp_path, capsys):
    for name, method in METHODS.items():
        with pytest.raises(SystemExit):
            main(["train", name, "--help"])
        assert f"{name} ({method.learning})" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "avaca", str(data / "features"), "--out", str(tmp_path / "x"), "--head", "gru"])
    assert "--head" in capsys.readouterr().err  # a supervised head's option is not AVACA's
    assert main(["train", str(data / "features"), "--out", str(tmp_path / "old"), "--method", "avaca",
                 "--epochs", "1", "--hidden", "16", "-q"]) == 0
    assert "old spelling" in capsys.readouterr().err and run_method(tmp_path / "old") == "avaca"
    assert main(["evaluate", str(tmp_path / "old"), str(data / "features"), "--no-plots", "--json", "-q"]) == 0
    assert "video_auc" in json.loads(capsys.readouterr().out)


def test_train_options_are_generated_from_the_config_fields_and_build_the_same_config():
    from avar.cli import build_parser
    from avar.methods.avaca.train import WeakTrainConfig
    from avar.methods.avarnet.options import head_values
    from avar.methods.avarnet.train import TrainConfig
    from avar.methods.config_base import config_values

    parser = build_parser()
    args = parser.parse_args(["train", "avarnet", "F", "--out", "R", "--modality", "v", "--no-stream-selection",
                              "--no-motion", "--stages", "3", "--no-attention", "--hidden", "64", "--lr", "0.02",
                              "--false-events-per-hour", "2"])
    config = TrainConfig(**config_values(args, TrainConfig), head=head_values(args))
    assert config == TrainConfig(modality="v", select_streams=False, motion=False, lr=0.02, false_events_per_hour=2.0,
                                 head={"num_stages": 3, "attention": False, "hidden": 64})
    assert TrainConfig(**config_values(parser.parse_args(["train", "avarnet", "F", "--out", "R"]), TrainConfig)) \
        == TrainConfig()  # no option given: the config's own defaults
    args = parser.parse_args(["train", "avaca", "F", "--out", "R", "--lambda", "0.5", "--zero-audio", "--threads", "1"])
    assert WeakTrainConfig(**config_values(args, WeakTrainConfig)) == WeakTrainConfig(lam=0.5, zero_audio=True,
                                                                                      threads=1)


def test_every_option_field_of_a_methods_train_config_is_on_its_command_line_and_no_other(capsys):
    from dataclasses import fields

    from avar.methods.table import resolve

    for name, method in METHODS.items():
        with pytest.raises(SystemExit):
            main(["train", name, "--help"])
        text = capsys.readouterr().out
        for f in fields(resolve(method.config)):
            spec = f.metadata.get("option")
            if spec:
                flag = spec["flag"] or "--" + f.name.replace("_", "-")
                assert (f"{flag} " in text or f"{flag}\n" in text) == (not spec["only"] or name in spec["only"]), \
                    (name, flag)
