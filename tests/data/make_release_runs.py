"""Write ``tests/data/runs-0.1.0/``: one tiny run of every method, saved by avar 0.1.0 (commit
677a38e, before run configs were typed), so that ``tests/test_run_records.py`` proves runs of
that release still load. Kept for the record; run from a checkout of that commit:

    python tests/data/make_release_runs.py OUT_DIR
"""

import sys
from pathlib import Path

import cv2
import numpy as np

from avar.features.cache import FeatureSet, StepFeatures
from avar.methods.table import METHODS

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
clips = []
for i in range(12):
    label = "fight" if i % 2 else "normal"
    split = ("train", "train", "train", "val", "test", "test")[i // 2]
    video, audio = rng.standard_normal((8, 6)).astype(np.float32), rng.standard_normal((8, 4)).astype(np.float32)
    if label == "fight":
        video[3:], audio[3:] = video[3:] + 2, audio[3:] - 2
    clips.append(StepFeatures(clip_id=f"c{i:02d}", label=label, split=split, group=f"g{i}", times=np.arange(8.0),
                              video=video, audio=audio))
features = FeatureSet.create(out / "features", clips, video={"name": "test-video", "version": "1", "dim": 6},
                             audio={"name": "test-audio", "version": "1", "dim": 4})
tiny = {"avarnet": dict(epochs=2, seq_len=4, head={"num_stages": 1, "num_layers": 2, "num_f_maps": 8, "attention_dim": 8, "stream_width": 8}),
        "avaca": dict(epochs=2, model={"hidden": 8}, window=4),
        "mil": dict(epochs=2, model={"num_stages": 1, "num_layers": 2, "num_f_maps": 8, "attention_dim": 8, "stream_width": 8}, window=4)}
for name, values in tiny.items():
    METHODS[name].fit(features, out / name, METHODS[name].train_config(**values), progress=False)

frames = out / "frames"
for split, k in (("training", 0), ("training", 1), ("training", 2), ("training", 3), ("testing", 0)):
    folder = frames / split / "frames" / f"{k:02d}"
    folder.mkdir(parents=True)
    for t in range(12):
        image = np.full((16, 16), 40, np.uint8)
        image[6:9, t % 13 : t % 13 + 3] = 220
        cv2.imwrite(str(folder / f"{t:03d}.png"), image)
(frames / "test_frame_labels.csv").write_text("video,num_frames,abnormal_start,abnormal_end\n00,12,,\n")
METHODS["autoencoder"].fit(frames, out / "autoencoder", METHODS["autoencoder"].train_config(
    epochs=1, threads=1, precision="fp32", modality="v",
    video={"frame_size": 16, "encoder_channels": [4, 8], "lstm_channels": [8, 4, 8], "decoder_channels": [8, 4],
           "seq_len": 4}), progress=False)

# What the release's runs score, for the test to compare after loading them with today's code.
import json  # noqa: E402

from avar.datasets.framefolders import load_video, open_frame_dataset  # noqa: E402
from avar.runs import load_run  # noqa: E402

clip = features.load(features.clips[5])
expected = {name: load_run(out / name).probabilities(clip.video, clip.audio)[0].tolist() for name in tiny}
test_video = load_video(open_frame_dataset(frames).split("test")[0], 16)
expected["autoencoder"] = {k: v.tolist() for k, v in load_run(out / "autoencoder").frame_errors(test_video).items()}
(out / "expected.json").write_text(json.dumps(expected))
for name in [*tiny, "autoencoder"]:
    (out / name / "history.json").unlink()
