"""Hostile input and broken runs (issue 13): damaged weights, configs, labels and cache entries
are one clear error naming the file and the fix; a failed training leaves no half-written run;
training options out of range are refused; predict's outputs never overwrite each other."""

import errno
import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from scipy.io import wavfile

import avar.training.run as run_format
from avar.cli import main
from avar.datasets.folders import discover
from avar.features import build_extractor
from avar.features.cache import FeatureSet, extract_dataset
from avar.methods.autoencoder.config import AETrainConfig
from avar.methods.autoencoder.train import train_autoencoder
from avar.methods.avaca.train import WeakTrainConfig, train_weak
from avar.methods.avarnet.train import TrainConfig, train_head
from avar.runs import load_run
from avar.training.seeding import KERNEL_PINS, describe_numerics, numerics
from avar.serve.predict import output_names
from test_detectors import _block_video
from test_seq2seq_ae import TINY_VIDEO
from test_watch import _clip, tone_cache

METHODS = ("avarnet", "avaca", "autoencoder")
WEIGHTS = {"avarnet": "model.safetensors", "avaca": "model.safetensors", "autoencoder": "video.safetensors"}
HEAD = {"num_stages": 1, "num_layers": 2, "num_f_maps": 8, "attention": False}
TINY_TRAIN = ["--epochs", "1", "--stages", "1", "--layers", "2", "--f-maps", "8", "--seq-len", "4", "-q"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One small run of each method, the feature cache and data they came from, and a clip."""
    root = tmp_path_factory.mktemp("integrity")
    features = tone_cache(root, per_class=3, tone=(1, 3))
    with pytest.warns(UserWarning, match="no val clips"):
        train_head(features, root / "avarnet", TrainConfig(epochs=2, min_steps=0, seq_len=4, head=HEAD,
                                                           select_streams=False), progress=False)
    with pytest.warns(UserWarning, match="no val clips"):
        train_weak(features, root / "avaca", WeakTrainConfig(epochs=2, batch_size=4, window=4,
                                                             model={"hidden": 16, "num_heads": 2, "ffn_dim": 16}),
                   progress=False)
    for i in range(5):
        _block_video(root / "ae-data" / "normal" / f"n{i}.mp4", 20, seed=i)
    train_autoencoder(root / "ae-data", root / "autoencoder", AETrainConfig(
        epochs=1, batch_size=4, video=TINY_VIDEO, precision="fp32", threads=1), progress=False)
    return {"root": root, "avarnet": root / "avarnet", "avaca": root / "avaca", "autoencoder": root / "autoencoder",
            "media": _clip(root / "scene.mp4", seconds=4, seed=5)}


def _copy(runs, method, tmp_path):
    return shutil.copytree(runs[method], tmp_path / method)


def _one_line_error(capsys) -> str:
    """The one ``error: ...`` line a failed command ends with (warnings may come before it)."""
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert out == "" and len(errors) == 1 and err.endswith(errors[0] + "\n") and "Traceback" not in err, (out, err)
    return errors[0]


def _config(run_dir) -> dict:
    return json.loads((run_dir / "config.json").read_text())


# 1. damaged weights never give a confident answer


def test_every_run_records_the_digest_of_each_weights_file(runs):
    for method in METHODS:
        digests = _config(runs[method])["weights"]
        assert list(digests) == [WEIGHTS[method]], method
        assert digests[WEIGHTS[method]] == hashlib.sha256((runs[method] / WEIGHTS[method]).read_bytes()).hexdigest()
        assert not hasattr(load_run(runs[method]).record, "weights")  # the digests are not training record


def test_every_run_records_the_libraries_and_cpu_kernels_it_was_trained_with(runs, monkeypatch):
    for method in METHODS:
        recorded = load_run(runs[method]).record.numerics
        assert recorded["torch"] == torch.__version__ and recorded["numpy"] == np.__version__, method
        assert recorded["cpu_capability"] == torch.backends.cpu.get_cpu_capability(), method
    for name in KERNEL_PINS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    assert numerics()["kernel_pins"] == {"MKL_CBWR": "AVX2"}
    assert describe_numerics(numerics()).endswith(" kernels; pinned: MKL_CBWR=AVX2")
    assert describe_numerics(None) == "not recorded"  # a run saved before the record existed


@pytest.mark.parametrize("method", METHODS)
def test_flipped_bytes_in_the_weights_stop_predict_with_one_line(runs, method, tmp_path, capsys):
    run_dir = _copy(runs, method, tmp_path)
    path = run_dir / WEIGHTS[method]
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    for i in range(header + 3, len(data), 61):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    safetensors.torch.load(bytes(data))  # the header is intact: the file still parses
    assert main(["predict", str(run_dir), str(runs["media"]), "--json", "-q"]) == 2
    err = _one_line_error(capsys)
    assert str(path) in err and "SHA-256" in err and "retrain" in err


def test_a_run_saved_before_digests_loads_unchecked_but_never_with_nan_weights(runs, tmp_path):
    run_dir = _copy(runs, "avarnet", tmp_path)
    config = _config(run_dir)
    del config["weights"]
    (run_dir / "config.json").write_text(json.dumps(config))
    video, audio = np.random.default_rng(0).normal(size=(6, 1280)), np.random.default_rng(1).normal(size=(6, 192))
    before, after = load_run(runs["avarnet"]), load_run(run_dir)
    assert np.array_equal(before.step_probabilities(video, audio), after.step_probabilities(video, audio))
    tensors = safetensors.torch.load((run_dir / "model.safetensors").read_bytes())
    name = next(k for k in tensors if not k.startswith("norm."))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    safetensors.torch.save_file(tensors, str(run_dir / "model.safetensors"))
    with pytest.raises(ValueError, match="NaN or infinite") as caught:
        load_run(run_dir)
    assert str(run_dir / "model.safetensors") in str(caught.value) and name in str(caught.value)


@pytest.mark.parametrize("method", ["avarnet", "avaca"])
def test_finite_weights_that_score_nan_are_an_error_not_invalid_json(runs, method, tmp_path, capsys):
    run = load_run(runs[method])
    model = run.head if method == "avarnet" else run.model
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e30)  # finite, so they load, but the forward pass overflows
    run.save(tmp_path / "run")
    assert main(["predict", str(tmp_path / "run"), str(runs["media"]), "--json", "-q"]) == 2
    err = _one_line_error(capsys)
    assert f"{tmp_path / 'run'}: the run scored NaN or infinite probabilities" in err


# 2. damaged or foreign weights, configs and labels


class _Tripwire:
    """Unpickling this creates ``path``: proof that a loader unpickled a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("digest", [True, False], ids=["digest", "no-digest"])
@pytest.mark.parametrize("damage", ["truncated", "empty", "pickle"])
@pytest.mark.parametrize("method", METHODS)
def test_damaged_or_foreign_weights_are_one_clear_error(runs, method, damage, digest, tmp_path):
    run_dir = _copy(runs, method, tmp_path)
    path = run_dir / WEIGHTS[method]
    trap = tmp_path / "unpickled"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        payload = pickle.dumps({"weight": _Tripwire(trap)})
        pickle.loads(pickle.dumps(_Tripwire(tmp_path / "control")))
        assert (tmp_path / "control").exists()  # the trap works
        path.write_bytes(payload)
    if not digest:
        config = _config(run_dir)
        del config["weights"]
        (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as caught:
        load_run(run_dir)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "retrain" in message and "\n" not in message
    assert ("SHA-256" if digest else "not a readable safetensors file") in message
    assert not trap.exists()


def _damaged_config(method: str, case: str, config: dict) -> bytes:
    if case == "garbage":
        return b"\x00\xff{not json"
    if case == "list":
        return b"[1, 2, 3]"
    if case == "missing-key":
        key = {"avarnet": "head", "avaca": "model", "autoencoder": "train"}[method]
        return json.dumps({k: v for k, v in config.items() if k != key}).encode()
    if method == "autoencoder":  # a value of the wrong type
        return json.dumps({**config, "stream": {"fps": 10, "calibration": {"quantiles": [0, None]}}}).encode()
    return json.dumps({**config, "seq_len": "ten"}).encode()


@pytest.mark.parametrize("case", ["garbage", "list", "missing-key", "wrong-type"])
@pytest.mark.parametrize("method", METHODS)
def test_a_damaged_config_is_one_clear_error(runs, method, case, tmp_path):
    run_dir = _copy(runs, method, tmp_path)
    (run_dir / "config.json").write_bytes(_damaged_config(method, case, _config(run_dir)))
    with pytest.raises(ValueError) as caught:
        load_run(run_dir)
    message = str(caught.value)
    assert message.startswith(f"{run_dir / 'config.json'}: ") and "retrain" in message and "\n" not in message


@pytest.mark.parametrize("labels, expected", [
    (b"\xffnope", "not valid JSON"),
    (b'{"normal": 0, "tone": 1}', "a JSON list of class names"),
    (b'["normal"]', "1 class names for a model with 2 outputs"),
    (b'["normal", "tone", "siren"]', "3 class names for a model with 2 outputs"),
    (b'["tone", "tone"]', "class names repeat (tone)"),
])
def test_damaged_labels_are_one_clear_error(runs, labels, expected, tmp_path, capsys):
    run_dir = _copy(runs, "avarnet", tmp_path)
    (run_dir / "labels.json").write_bytes(labels)
    assert main(["predict", str(run_dir), str(runs["media"]), "-q"]) == 2
    err = _one_line_error(capsys)
    assert f"{run_dir / 'labels.json'}: " in err and expected in err and "retrain" in err


# 3. a damaged cache entry


def test_a_damaged_cache_entry_names_its_file_and_extract_repairs_it(runs, tmp_path, capsys):
    feat = shutil.copytree(runs["root"] / "feat", tmp_path / "feat")
    entry = sorted((feat / "clips").iterdir())[0]
    entry.write_bytes(entry.read_bytes()[:200])
    args = ["evaluate", str(runs["avarnet"]), str(feat), "--split", "train", "--out", str(tmp_path / "eval"), "--json"]
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert str(entry) in err and "damaged" in err and f"`avar extract` on the same data with --out {feat}" in err
    summary = extract_dataset(discover(runs["root"] / "data", test_fraction=0, val_fraction=0), feat,
                              build_extractor("efficientnet-lite0"), build_extractor("logmel"), progress=False)
    assert summary.done == 1 and summary.skipped == 5
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= 0


# 4. training never leaves a half-written run


@pytest.mark.parametrize("method", METHODS)
def test_train_refuses_an_out_that_is_a_file(runs, method, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("mine")
    source = ["--data", str(runs["root"] / "ae-data")] if method == "autoencoder" else [str(runs["root"] / "feat")]
    assert main(["train", *source, "--method", method, "--out", str(target), "--epochs", "1", "-q"]) == 2
    err = _one_line_error(capsys)
    assert f"{target}: exists and is a file" in err and "--out" in err
    assert target.read_text() == "mine"


def test_train_refuses_a_directory_of_other_files(runs, tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("mine")
    assert main(["train", str(runs["root"] / "feat"), "--out", str(tmp_path), *TINY_TRAIN]) == 2
    assert "holding other files but no run" in _one_line_error(capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def _disk_full_at(monkeypatch, suffix: str, error: BaseException):
    real = run_format.write_synced

    def write(path, data):
        if path.name.endswith(suffix):
            real(path, data[: len(data) // 2])
            raise error
        real(path, data)

    monkeypatch.setattr(run_format, "write_synced", write)


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


@pytest.mark.filterwarnings("ignore:.*no val clips")
def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_run(runs, tmp_path, monkeypatch, capsys):
    _disk_full_at(monkeypatch, ".safetensors", OSError(errno.ENOSPC, "No space left on device"))
    feat = str(runs["root"] / "feat")
    assert main(["train", feat, "--out", str(tmp_path / "new"), *TINY_TRAIN]) == 2
    err = _one_line_error(capsys)
    assert f"{tmp_path / 'new' / 'model.safetensors'}: no space left on the device" in err
    assert "nothing was saved" in err and _siblings(tmp_path / "new") == []
    old = _copy(runs, "avarnet", tmp_path)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    assert main(["train", feat, "--out", str(old), *TINY_TRAIN]) == 2
    assert "the run that was there is unchanged" in _one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before and _siblings(old) == ["avarnet"]


def test_an_interrupted_save_keeps_the_previous_run_and_a_finished_one_replaces_it(runs, tmp_path, monkeypatch):
    old = _copy(runs, "avaca", tmp_path)
    (old / "eval_test.json").write_text("{}")  # an evaluation of the old run
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    config = WeakTrainConfig(epochs=1, batch_size=4, window=4, model={"hidden": 16, "num_heads": 2, "ffn_dim": 16})
    features = FeatureSet.open(runs["root"] / "feat")
    with monkeypatch.context() as patch:
        _disk_full_at(patch, "config.json", KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="no val clips"):
            train_weak(features, old, config, progress=False)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before and _siblings(old) == ["avaca"]
    with pytest.warns(UserWarning, match="no val clips"):
        train_weak(features, old, config, progress=False)
    assert sorted(p.name for p in old.iterdir()) == ["config.json", "history.json", "model.safetensors"]
    assert _config(old)["train"]["epochs"] == 1 and _siblings(old) == ["avaca"]
    assert len(json.loads((old / "history.json").read_text())) == 1


@pytest.mark.parametrize("method, option, value, expected", [
    ("avarnet", "--seq-len", "0", "integer >= 1"),
    ("avarnet", "--epochs", "0", "integer >= 1"),
    ("avarnet", "--batch-size", "-3", "integer >= 1"),
    ("avarnet", "--lr", "0", "finite number > 0"),
    ("avarnet", "--lr", "nan", "finite number > 0"),
    ("avaca", "--epochs", "0", "integer >= 1"),
    ("avaca", "--batch-size", "1", "integer >= 2"),
    ("avaca", "--lr", "inf", "finite number > 0"),
    ("avaca", "--window", "0", "integer >= 1"),
    ("autoencoder", "--epochs", "0", "integer >= 1"),
    ("autoencoder", "--lr", "-0.001", "finite number > 0"),
])
def test_training_options_out_of_range_name_the_option(runs, method, option, value, expected, tmp_path, capsys):
    source = ["--data", str(runs["root"] / "ae-data")] if method == "autoencoder" else [str(runs["root"] / "feat")]
    assert main(["train", *source, "--method", method, "--out", str(tmp_path / "run"), option, value, "-q"]) == 2
    err = _one_line_error(capsys)
    assert f"{option} (" in err and expected in err and not (tmp_path / "run").exists()


# 5. predict's outputs


@pytest.mark.filterwarnings("ignore:.*no video; using black frames")
def test_predict_names_outputs_uniquely_and_inside_out(runs, tmp_path, capsys):
    a = _clip(tmp_path / "a" / "clip.mp4", seconds=3, tone=None, seed=1)
    b = _clip(tmp_path / "b" / "clip.mp4", seconds=4, tone=(1, 3), seed=2)
    sound = tmp_path / "c" / "clip.wav"
    sound.parent.mkdir()
    wavfile.write(sound, 16_000, (3000 * np.sin(np.arange(32_000) / 5)).astype(np.int16))
    out = tmp_path / "pred"
    out.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    names = output_names([a, b, sound])
    (out / f"{names[0]}.jsonl").symlink_to(outside)  # a planted link is replaced, not followed
    assert main(["predict", str(runs["avarnet"]), str(a), str(b), str(sound), "--out", str(out), "--json", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    preds = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in the output")) for line in lines]
    assert [p["path"] for p in preds] == [str(a), str(b), str(sound)]
    assert len({p["records"] for p in preds}) == 3 and len({p["plot"] for p in preds}) == 3
    for pred in preds:
        records = [json.loads(line) for line in open(pred["records"])]
        assert [r["time"] for r in records] == [s["time"] for s in pred["steps"]]
        assert Path(pred["records"]).parent == out and open(pred["plot"], "rb").read(4) == b"\x89PNG"
    assert [len(p["steps"]) for p in preds] == [3, 4, 2]
    assert [(p["video_missing"], p["audio_missing"]) for p in preds] == [(False, False), (False, False), (True, False)]
    assert outside.read_text() == "keep" and not (out / f"{names[0]}.jsonl").is_symlink()
    assert output_names([sound, b, a]) == names[::-1]  # a file's names do not depend on the order


def test_output_names_of_hostile_file_names_stay_inside_the_directory(tmp_path):
    paths = ["../../etc/passwd", "/", "a/..", "a/.hidden.mp4", "x/.mp4", "b/ä$b c.mp4", "b/ä_b_c.mp4",
             "c/CLIP.mp4", "d/clip.mkv", "d/clip.mkv", "e/" + "n" * 300 + ".mp4"]
    names = output_names(paths)
    assert len(set(n.lower() for n in names)) == len(paths)
    for name in names:
        assert name and not name.startswith(".") and len(name) < 100
        assert (tmp_path / f"{name}.jsonl").resolve().parent == tmp_path.resolve()
    assert output_names(paths) == names


def test_predictor_refuses_non_finite_features(runs):
    run = load_run(runs["avarnet"])
    video, audio = np.zeros((5, 1280)), np.zeros((5, 192))
    video[2, 7] = np.nan
    with pytest.raises(ValueError, match="video features hold NaN"):
        run.step_probabilities(video, audio)
