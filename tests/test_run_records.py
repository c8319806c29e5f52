"""Typed run records (issue 31): what training records is each method's dataclass, and runs
saved by avar 0.1.0 (``tests/data/runs-0.1.0``, written by ``make_release_runs.py`` at commit
677a38e, when ``config.json`` spread a free dict) load, score as they did, and save again."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from avar.datasets.framefolders import load_video, open_frame_dataset
from avar.features.cache import FeatureSet
from avar.methods.table import METHODS
from avar.runs import load_run
from avar.training.run import TrainingRecord

RELEASE = Path(__file__).parent / "data" / "runs-0.1.0"
EXPECTED = json.loads((RELEASE / "expected.json").read_text())


@pytest.mark.parametrize("name", list(METHODS))
def test_a_run_of_the_last_release_loads_typed_and_scores_as_it_did(tmp_path, name):
    run = load_run(RELEASE / name)
    method = METHODS[name]
    assert isinstance(run, method.run_class()) and isinstance(run.record, TrainingRecord)
    assert type(run.record.train) is type(method.train_config())  # the train config is typed, not a dict
    assert name == "autoencoder" or run.record.best_epoch >= 1 and run.record.params > 0
    assert run.record.numerics["torch"]
    if name == "autoencoder":
        video = load_video(open_frame_dataset(RELEASE / "frames").split("test")[0], 16)
        for key, values in run.frame_errors(video).items():
            np.testing.assert_allclose(values, EXPECTED[name][key], rtol=1e-5, atol=1e-7)
        assert run.record.stream["calibration"]["frames"] > 0 and run.config.epochs == 1
    else:
        features = FeatureSet.open(RELEASE / "features")
        clip = features.load(features.clips[5])
        np.testing.assert_allclose(run.probabilities(clip.video, clip.audio)[0], EXPECTED[name], rtol=1e-5, atol=1e-7)
        assert run.record.thresholds and run.record.event_calibration

    # Saved again, config.json holds the model's keys and the record's fields, nothing else.
    run.save(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    record_keys = {f.name for f in fields(run.record)}
    assert record_keys <= set(saved)
    again = load_run(tmp_path / "again")
    assert again.record == run.record


def test_entries_of_another_version_are_left_out_with_a_note(tmp_path, caplog):
    shutil.copytree(RELEASE / "avaca", tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    config = json.loads(path.read_text())
    config["made_by_a_later_version"] = 1
    config["train"]["a_later_option"] = "x"
    path.write_text(json.dumps(config))
    with caplog.at_level(logging.INFO, logger="avar.training.run"):
        run = load_run(tmp_path / "run")
    assert not hasattr(run.record, "made_by_a_later_version") and not hasattr(run.record.train, "a_later_option")
    assert "made_by_a_later_version" in caplog.text and "a_later_option" in caplog.text


def test_a_damaged_record_is_one_error_naming_the_file(tmp_path):
    shutil.copytree(RELEASE / "avarnet", tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    config = json.loads(path.read_text())
    config["train"]["recipe"] = "no such recipe"
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: not a valid supervised run config.*recipe"):
        load_run(tmp_path / "run")


def test_upgrade_asks_the_method_and_runs_that_need_none_say_so(tmp_path, capsys):
    from avar.cli import main

    shutil.copytree(RELEASE / "avaca", tmp_path / "run")
    before = (tmp_path / "run" / "config.json").read_bytes()
    assert main(["upgrade", str(tmp_path / "run")]) == 0
    assert "nothing to upgrade" in capsys.readouterr().out
    assert (tmp_path / "run" / "config.json").read_bytes() == before
    assert main(["upgrade", str(RELEASE / "autoencoder")]) == 2  # an autoencoder run needs the data it was trained on
    assert "--data DATA_DIR" in capsys.readouterr().err
