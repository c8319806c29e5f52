"""Fusion that never hurts (issue 11): projected streams, the robust recipe, branch
accuracies and the fusion warning, and the robustness benchmark's data helpers."""

import json

import numpy as np
import pytest

from avar.methods.avarnet.evaluate import evaluate_run
from avar.features.cache import FeatureSet, StepFeatures
from avar.methods.heads import config_from_dict, head_config
from avar.experiments.robustness import (Cell, checks, fold_caches, head_alone_accuracy, held_out, plan_cells,
                                         pooled_logistic_regression, subsample, summarise, uninformative)
from avar.methods.avarnet.train import RECIPES, TrainConfig, fusion_warning, train_head
from avar.methods.avarnet.run import Run
from avar.methods.avarnet.stream_selection import select_streams

EXTRACTORS = {"video": {"name": "toy-video", "version": 1, "dim": 96}, "audio": {"name": "toy-audio", "version": 1, "dim": 8}}
SMALL_HEAD = {"num_stages": 2, "num_layers": 3, "num_f_maps": 16, "attention_dim": 32, "stream_width": 16}


def toy_cache(root, *, per_class=(14, 3, 5), classes=4, steps=6, seed=0) -> FeatureSet:
    """Audio names the class (a centre per class plus noise); video is wide pure noise, the
    case where concatenation lets the useless wide stream drown the useful narrow one."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, 8)) * 1.5
    clips = []
    for label in range(classes):
        for split, count in zip(("train", "val", "test"), per_class):
            for i in range(count):
                clips.append(StepFeatures(
                    clip_id=f"c{label}_{split}_{i}", label=f"class{label}", split=split,
                    video=rng.standard_normal((steps, 96)).astype(np.float32),
                    audio=(centres[label] + rng.standard_normal((steps, 8))).astype(np.float32),
                    times=np.arange(steps, dtype=np.float32)))
    return FeatureSet.create(root, clips, video=EXTRACTORS["video"], audio=EXTRACTORS["audio"])


def test_recipes_fill_unset_fields_and_reject_unknown_names():
    robust, paper = TrainConfig(), TrainConfig(recipe="paper")
    for config, recipe in ((robust, "robust"), (paper, "paper")):
        assert {k: getattr(config, k) for k in RECIPES[recipe]} == RECIPES[recipe]
    assert paper.lr == 1e-2 and paper.select == "accuracy" and not paper.refit
    assert TrainConfig(lr=5e-4).lr == 5e-4  # an explicit value wins over the recipe
    with pytest.raises(ValueError, match="recipe must be one of"):
        TrainConfig(recipe="fast")
    with pytest.raises(ValueError, match="select must be one of"):
        TrainConfig(select="best")


def test_runs_saved_before_projection_load_as_concatenation():
    old = head_config("mtcn", video_dim=5, audio_dim=4, num_classes=3, stream_fusion="concat").to_dict()
    for key in ("stream_fusion", "stream_width", "modality_dropout"):
        old.pop(key)
    assert config_from_dict("mtcn", old).stream_fusion == "concat"
    late = head_config("gru", video_dim=5, audio_dim=4, num_classes=3, fusion="late").to_dict()
    assert late["branch"]["stream_fusion"] == "projected"  # saved explicitly from now on
    late["branch"].pop("stream_fusion")
    assert config_from_dict("late", late).branch["stream_fusion"] == "concat"


def test_fusion_warning_names_the_better_stream():
    assert fusion_warning({"av": 0.9, "a": 0.9, "v": 0.5}, "run") is None
    assert fusion_warning(None, "run") is None
    message = fusion_warning({"av": 0.6, "a": 0.85, "v": 0.3}, "runs/x: validation")
    assert "0.600 < audio alone 0.850" in message and "--modality a" in message


def test_fused_head_keeps_what_the_narrow_useful_stream_knows(tmp_path, one_torch_thread):
    """96-d noise video beside 8-d informative audio: the fused head (robust defaults, both
    streams kept) must stay within a few points of audio alone, report both branches, and evaluate must agree."""
    cache = toy_cache(tmp_path / "cache")
    accuracy = {}
    for modality in ("a", "av"):
        config = TrainConfig(modality=modality, epochs=30, min_steps=120, head=SMALL_HEAD, select_streams=False)
        run = train_head(cache, tmp_path / modality, config, progress=False)
        accuracy[modality] = evaluate_run(tmp_path / modality, cache.root, "test").accuracy
    assert accuracy["a"] >= 0.9
    assert accuracy["av"] >= accuracy["a"] - 0.05, accuracy
    branches = run.record.val_branch_accuracy
    assert set(branches) == {"av", "a", "v"} and branches["a"] >= 0.75 and branches["v"] <= 0.6
    report = evaluate_run(tmp_path / "av", cache.root, "test")
    assert report.branch_accuracy["av"] == report.accuracy
    assert report.branch_accuracy["a"] >= 0.9
    saved = json.loads((tmp_path / "av" / "eval_test.json").read_text())
    assert saved["branch_accuracy"] == report.branch_accuracy
    history = json.loads((tmp_path / "av" / "history.json").read_text())
    assert any(r.get("refit") for r in history) and "val_loss_smoothed" in history[0]
    assert Run.load(tmp_path / "av").config.stream_fusion == "projected"


def test_stream_selection_leaves_out_a_stream_that_carries_nothing(tmp_path, one_torch_thread):
    """Cross-validation on train + val sees that the noise video says nothing: the head asked
    for audio + video trains on audio alone (the same model as --modality a), says so in the
    run, and the run still predicts from both streams' features."""
    cache = toy_cache(tmp_path / "cache", per_class=(8, 2, 3))
    choice = select_streams(cache.split("train") + cache.split("val"))
    assert choice.modality == "a" and choice.cv_accuracy["a"] >= 0.9 and choice.cv_accuracy["v"] < 0.5
    assert choice.chance == 0.25 and "video stream carries no class information" in choice.reason
    runs = {m: train_head(cache, tmp_path / m, TrainConfig(modality=m, epochs=4, min_steps=0, head=SMALL_HEAD),
                          progress=False) for m in ("a", "av")}
    assert runs["av"].config.modality == "a" and runs["av"].record.train.modality == "av"
    assert runs["av"].record.stream_selection["modality"] == "a"
    assert runs["a"].record.stream_selection is None  # only asked for with both streams
    clip = cache.split("test")[0]
    loaded = {m: Run.load(tmp_path / m) for m in runs}
    for scores in ("step_probabilities", "clip_probabilities"):
        np.testing.assert_array_equal(getattr(loaded["av"], scores)(clip.video, clip.audio),
                                      getattr(loaded["a"], scores)(clip.video, clip.audio))
    kept = train_head(cache, tmp_path / "kept", TrainConfig(epochs=1, min_steps=0, head=SMALL_HEAD, select_streams=False),
                      progress=False)
    assert kept.config.modality == "av" and kept.record.stream_selection is None
    assert TrainConfig(recipe="paper").select_streams is False


def test_stream_selection_keeps_both_streams_when_each_adds_something(tmp_path):
    """Each stream names half of the classes (the built-in benchmark's design): both are kept;
    with too few labelled clips to cross-validate, both are kept and the reason says so."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 8)) * 2
    clips = []
    for label in range(4):
        for i in range(8):
            # audio tells {0,1} from {2,3}; video tells {0,2} from {1,3}
            audio = centres[label // 2] + rng.standard_normal((5, 8))
            video = np.tile(centres[2 + label % 2], 12)[None, :96] + rng.standard_normal((5, 96))
            clips.append(StepFeatures(clip_id=f"c{label}_{i}", label=f"class{label}", split="train",
                                      video=video.astype(np.float32), audio=audio.astype(np.float32),
                                      times=np.arange(5, dtype=np.float32)))
    choice = select_streams(clips)
    assert choice.modality == "av" and choice.cv_accuracy["av"] > max(choice.cv_accuracy["a"], choice.cv_accuracy["v"])
    assert choice.folds == 5
    tiny = select_streams([c for c in clips if c.clip_id.endswith("_0")])
    assert tiny.modality == "av" and tiny.cv_accuracy is None and "nothing to cross-validate" in tiny.reason


def test_a_stream_at_chance_is_kept_only_when_both_clearly_beat_the_other_alone(tmp_path, monkeypatch):
    """The rule on the cross-validated figures: video at chance is left out unless the
    regression on both beats audio alone by more than MARGIN (0.05)."""
    import sklearn.model_selection

    cache = toy_cache(tmp_path / "cache")  # 4 classes, 68 labelled clips
    labelled = cache.split("train") + cache.split("val")
    for both, expected in ((0.58, "a"), (0.644, "av")):
        scores = iter([0.544, 0.089, both])  # audio, video, both
        monkeypatch.setattr(sklearn.model_selection, "cross_val_score", lambda *a, **k: np.array([next(scores)]))
        assert select_streams(labelled).modality == expected


def test_concatenated_head_reports_no_branches(tmp_path, one_torch_thread):
    cache = toy_cache(tmp_path / "cache", per_class=(6, 2, 2))
    config = TrainConfig(epochs=3, min_steps=0, recipe="paper", head={**SMALL_HEAD, "stream_fusion": "concat"})
    run = train_head(cache, tmp_path / "run", config, progress=False)
    assert run.record.val_branch_accuracy is None
    assert evaluate_run(tmp_path / "run", cache.root, "test").branch_accuracy is None


def test_subsample_keeps_per_class_counts_and_splits_like_discover(tmp_path):
    cache = toy_cache(tmp_path / "cache", per_class=(14, 3, 7))  # 24 per class
    small = subsample(cache, tmp_path / "small", per_class=12, seed=1)
    for label in cache.classes:
        splits = [c["split"] for c in small.clips if c["label"] == label]
        assert len(splits) == 12
        assert (splits.count("test"), splits.count("val"), splits.count("train")) == (3, 2, 7)
    original = {c.clip_id: c for c in cache.split("train") + cache.split("val") + cache.split("test")}
    for clip in small.split("train"):
        assert np.array_equal(clip.audio, original[clip.clip_id].audio)
    again = subsample(cache, tmp_path / "again", per_class=12, seed=1)
    assert [c["clip_id"] for c in again.clips] == [c["clip_id"] for c in small.clips]


def test_uninformative_moves_one_stream_to_other_clips_of_the_same_split(tmp_path):
    cache = toy_cache(tmp_path / "cache", per_class=(6, 2, 3))
    shuffled = uninformative(cache, tmp_path / "shuffled", "audio", seed=0)
    before = {c["clip_id"]: cache.load(c) for c in cache.clips}
    moved = 0
    for record in shuffled.clips:
        clip, source = shuffled.load(record), before[record["clip_id"]]
        assert np.array_equal(clip.video, source.video)  # the other stream is untouched
        donors = [c for c in before.values() if c.split == clip.split and np.array_equal(c.audio, clip.audio)]
        assert len(donors) == 1
        moved += donors[0].clip_id != clip.clip_id
    assert moved > 0.7 * len(shuffled.clips)
    # the audio no longer names the class: a regression on it drops to about chance
    assert pooled_logistic_regression(cache, "a") >= 0.9
    assert pooled_logistic_regression(shuffled, "a") <= 0.6
    with pytest.raises(ValueError, match="'video' or 'audio'"):
        uninformative(cache, tmp_path / "x", "depth", seed=0)


def test_summary_and_checks_report_mean_std_and_the_targets():
    results = [{"cache": f"s{s}-n12-clean", "head": "mtcn", "modality": m, "accuracy": acc}
               for s in (0, 1) for m, acc in (("a", 0.6), ("v", 0.5), ("av", 0.9 + 0.02 * s))]
    results += [{"cache": f"s{s}-n12-video-shuffled", "head": "mtcn", "modality": "av", "accuracy": 0.55}
                for s in (0, 1)]
    table = summarise(results, [{"cache": "s0-n12-clean", "modality": "av", "accuracy": 0.8}])
    row = table["12"]["clean"]["mtcn"]["av"]
    assert row["mean"] == pytest.approx(0.91) and row["std"] == pytest.approx(0.01) and row["n"] == 2
    assert table["12"]["clean"]["logreg"]["av"]["mean"] == 0.8
    verdicts = {c["check"]: c["pass"] for c in checks(table)}
    assert verdicts["fused >= best single - 0.02"]
    assert not verdicts["video-shuffled: fused within 0.03 of audio alone"]  # 0.55 < 0.6 - 0.03
    assert verdicts["fused >= 0.90 (test split)"] and verdicts["std of fused over seeds <= 0.03 (test split)"]
    results[5]["accuracy"] = 0.98  # seeds 0.90 and 0.98: mean 0.94, std 0.04
    results[2]["heldout_accuracy"], results[5]["heldout_accuracy"] = 0.85, 0.87
    verdicts = {c["check"]: c["pass"] for c in checks(summarise(results))}
    assert verdicts["fused >= 0.90 (test split)"] and not verdicts["std of fused over seeds <= 0.03 (test split)"]
    held = summarise(results, field="heldout_accuracy")
    assert list(held["12"]["clean"]["mtcn"]) == ["av"] and held["12"]["clean"]["mtcn"]["av"]["mean"] == pytest.approx(0.86)
    verdicts = {c["check"]: c["pass"] for c in checks(held, "held-out clips")}
    assert verdicts == {"fused >= 0.90 (held-out clips)": False, "std of fused over seeds <= 0.03 (held-out clips)": True}


def test_auto_runtime_at_prediction_reuses_the_one_the_training_features_came_from(tmp_path, one_torch_thread):
    cache = toy_cache(tmp_path / "cache", per_class=(3, 1, 1))
    run = train_head(cache, tmp_path / "run", TrainConfig(epochs=1, min_steps=0, head=SMALL_HEAD), progress=False)
    assert run.record.feature_runtimes is None  # a cache made by FeatureSet.create records none
    run.extractors = {"video": {"name": "efficientnet-lite0"}, "audio": {"name": "logmel"}}
    run.record.feature_runtimes = {"video": "torch", "audio": "numpy"}
    video, _, motion = run.build_extractors(runtime="auto")
    assert motion is None  # the cache has no motion stream
    assert video.runtime == "torch"  # auto alone would pick ONNX Runtime for this backbone
    run.record.feature_runtimes = None
    assert run.build_extractors(runtime="auto")[0].runtime == "onnx"


def test_cells_of_a_shared_cache_keep_one_run_per_seed():
    ids = [Cell("fight-dev", "mtcn", "av", seed).id for seed in (0, 1, 2)]
    assert len(set(ids)) == 3
    cells = plan_cells((0, 1), (6,), heads=("mtcn",))
    assert len({c.id for c in cells}) == len(cells) == 2 * (3 + 2)


def test_pooled_linear_is_the_regression_as_arrays(tmp_path):
    from avar.methods.avarnet.clip_blend import PooledLinear
    from avar.methods.avarnet.stream_selection import pooled_design, pooled_regression

    cache = toy_cache(tmp_path / "cache", per_class=(6, 1, 3))
    fit, test = cache.split("train"), cache.split("test")
    for classes, modality in ((cache.classes, "av"), (["class0", "class1"], "a")):
        used = [c for c in fit if c.label in classes]
        x, balance = pooled_design(used, modality)
        reference = pooled_regression(0, balance).fit(x, [c.label for c in used])
        linear = PooledLinear.fit(used, classes + ["never-seen"], modality)
        ours = np.stack([linear.probabilities(c.video, c.audio) for c in test])
        theirs = reference.predict_proba(pooled_design(test, modality)[0])
        np.testing.assert_allclose(ours[:, :len(classes)], theirs, atol=1e-6)
        assert ours[:, -1].max() < 1e-9  # a class without labelled clips


def test_clip_blend_averages_head_and_regression_and_travels_with_the_run(tmp_path, one_torch_thread):
    # One epoch: a head that has learnt little beside a regression that separates the audio
    # centres; the average keeps what the regression knows.
    cache = toy_cache(tmp_path / "cache", per_class=(8, 2, 3))
    run = train_head(cache, tmp_path / "run", TrainConfig(epochs=1, min_steps=0, head=SMALL_HEAD, select_streams=False),
                     progress=False)
    assert run.record.clip_blend == {"head_weight": 0.5, "pooling": ["mean", "max", "change"]} and run.blend is not None
    loaded = Run.load(tmp_path / "run")
    np.testing.assert_allclose(loaded.blend.coef, run.blend.coef)
    clip = cache.split("test")[0]
    blended = loaded.clip_probabilities(clip.video, clip.audio)
    linear, loaded.blend = loaded.blend, None
    head_only = loaded.clip_probabilities(clip.video, clip.audio)
    np.testing.assert_allclose(blended, 0.5 * head_only + 0.5 * linear.probabilities(clip.video, clip.audio), atol=1e-9)
    head_labels = [loaded.classes[int(np.argmax(loaded.clip_probabilities(c.video, c.audio)))] for c in cache.split("test")]
    assert head_alone_accuracy(tmp_path / "run", cache.root) == pytest.approx(
        np.mean([label == c.label for label, c in zip(head_labels, cache.split("test"))]))
    report = evaluate_run(tmp_path / "run", cache.root, "test")
    assert report.accuracy >= 0.75 and max(report.branch_accuracy["a"], report.branch_accuracy["v"]) <= 0.5  # chance: 0.25
    paper = train_head(cache, tmp_path / "paper", TrainConfig(recipe="paper", epochs=2, head=SMALL_HEAD), progress=False)
    assert paper.record.clip_blend is None and paper.blend is None
    off = train_head(cache, tmp_path / "off", TrainConfig(epochs=2, min_steps=0, head=SMALL_HEAD, clip_blend=1),
                     progress=False)
    assert off.record.clip_blend is None and Run.load(tmp_path / "off").blend is None
    for bad in (1.5, -0.1, True, "half"):
        with pytest.raises(ValueError, match="clip-blend"):
            TrainConfig(clip_blend=bad)


def test_pooled_features_add_the_mean_change_between_steps():
    from avar.methods.avarnet.stream_selection import pooled_features

    video = np.array([[0.0, 1.0], [2.0, 1.0], [1.0, 4.0]], np.float32)
    audio = np.array([[5.0], [5.0], [8.0]], np.float32)
    x = pooled_features(video, audio, "av")
    np.testing.assert_allclose(x, [1, 2, 6, 2, 4, 8, 1.5, 1.5, 1.5])  # mean | max | mean |step-to-step change|
    np.testing.assert_allclose(pooled_features(video, audio, "a", ("mean", "max")), [6, 8])
    np.testing.assert_array_equal(pooled_features(video[:1], audio[:1], "v")[4:], [0, 0])  # one step: no change


def test_a_run_saved_before_the_change_statistic_keeps_scoring(tmp_path, one_torch_thread):
    from avar.methods.avarnet.clip_blend import PooledLinear
    from avar.methods.avarnet.stream_selection import LEGACY_POOLING

    cache = toy_cache(tmp_path / "cache", per_class=(6, 1, 3))
    run = train_head(cache, tmp_path / "run", TrainConfig(epochs=1, min_steps=0, head=SMALL_HEAD, select_streams=False),
                     progress=False)
    fit = cache.split("train") + cache.split("val")
    run.blend = PooledLinear.fit(fit, run.classes, "av", stats=LEGACY_POOLING)
    run.record.clip_blend = {"head_weight": 0.5}  # what such runs recorded: no pooling
    run.save(tmp_path / "run", keep=True)
    loaded = Run.load(tmp_path / "run")
    assert loaded.blend.stats == LEGACY_POOLING and loaded.blend.coef.shape[1] == 2 * (96 + 8)
    clip = cache.split("test")[0]
    np.testing.assert_allclose(loaded.blend.probabilities(clip.video, clip.audio),
                               run.blend.probabilities(clip.video, clip.audio), atol=1e-9)


def test_the_robust_recipe_trains_a_compact_mtcn_whose_dilations_fit_the_window():
    from avar.methods.avarnet.train import recipe_head

    assert recipe_head(TrainConfig()) == {"num_stages": 2, "num_layers": 4, "num_f_maps": 32}
    assert recipe_head(TrainConfig(seq_len=16))["num_layers"] == 4  # dilation 8 still reaches inside 16 steps
    assert recipe_head(TrainConfig(seq_len=17))["num_layers"] == 5
    assert recipe_head(TrainConfig(seq_len=1))["num_layers"] == 1
    assert recipe_head(TrainConfig(head={"num_f_maps": 64, "attention": False})) == {
        "num_stages": 2, "num_layers": 4, "num_f_maps": 64, "attention": False}
    assert recipe_head(TrainConfig(recipe="paper")) == {}
    assert recipe_head(TrainConfig(head_type="bigru", head={"hidden": 8})) == {"hidden": 8}


def test_held_out_clips_are_the_rest_of_the_full_set_all_in_test(tmp_path):
    full = toy_cache(tmp_path / "full", per_class=(6, 2, 4))
    chosen = subsample(full, tmp_path / "n4", 4, seed=1)
    held = held_out(full, chosen, tmp_path / "held")
    ids = lambda fs: {c["clip_id"] for c in fs.clips}  # noqa: E731
    assert ids(held) | ids(chosen) == ids(full) and not ids(held) & ids(chosen)
    assert {c["split"] for c in held.clips} == {"test"} and len(held.clips) == len(full.clips) - 4 * len(full.classes)
    assert held_out(full, full, tmp_path / "none") is None


def test_datasets_name_recordings_and_the_cache_keeps_them(tmp_path):
    from avar.datasets.folders import discover

    for name in ("fight/a1.mp4", "fight/a2.mp4", "normal/b1.mp4", "normal/c1.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sources.csv").write_text("path,source\nfight/a1.mp4,cam-a\nfight/a2.mp4,cam-a\nnormal/b1.mp4,cam-b\n")
    groups = {e.clip_id: e.group for e in discover(tmp_path)}
    assert groups == {"fight__a1.mp4": "cam-a", "fight__a2.mp4": "cam-a", "normal__b1.mp4": "cam-b",
                      "normal__c1.mp4": None}
    (tmp_path / "splits.csv").write_text("path,label,split,group\nfight/a1.mp4,fight,train,x\n"
                                         "normal/b1.mp4,normal,test,\n")
    assert {e.clip_id: e.group for e in discover(tmp_path)} == {"fight__a1.mp4": "x", "normal__b1.mp4": "cam-b"}
    (tmp_path / "sources.csv").write_text("clip,camera\nfight/a1.mp4,a\n")
    with pytest.raises(ValueError, match="sources.csv: expected header path,source"):
        discover(tmp_path)
    (tmp_path / "sources.csv").write_text("path,source\n../x.mp4,a\n")
    with pytest.raises(ValueError, match=r"sources.csv:2: .*relative to DATA_DIR"):
        discover(tmp_path)
    clip = StepFeatures("c", "fight", "train", np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32),
                        np.arange(2.0), group="cam-a")
    cache = FeatureSet.create(tmp_path / "cache", [clip], video=EXTRACTORS["video"], audio=EXTRACTORS["audio"])
    assert FeatureSet.open(cache.root).split("train")[0].group == "cam-a"


def test_stream_selection_keeps_a_recording_on_one_side_of_every_fold():
    # Eight recordings, each of one class (as fight-dev's source videos are); the audio names
    # the recording, not the class, so it only looks informative when a recording's clips sit
    # on both sides of a fold. The video names the class.
    rng = np.random.default_rng(0)
    signature = rng.standard_normal((8, 6)) * 3
    clips = []
    for group in range(8):
        label = "fight" if group % 2 else "normal"
        for i in range(6):
            clips.append(StepFeatures(
                f"g{group}_{i}", label, "train",
                video=(rng.standard_normal((4, 5)) + (1.5 if group % 2 else -1.5)).astype(np.float32),
                audio=(signature[group] + 0.3 * rng.standard_normal((4, 6))).astype(np.float32),
                times=np.arange(4.0), group=f"rec{group}"))
    grouped = select_streams(clips)
    assert grouped.modality == "v" and grouped.cv_accuracy["a"] < 0.75, grouped.reason
    assert "folds of whole recordings (8)" in grouped.reason
    for clip in clips:
        clip.group = None
    ungrouped = select_streams(clips)
    assert ungrouped.cv_accuracy["a"] > 0.9  # each recording's other clips are in the training folds


def test_pooled_regression_gives_each_stream_an_equal_share():
    from avar.methods.avarnet.stream_selection import POOLING, stream_balance

    weights = stream_balance(96, 8, "av")
    per_stat = weights.reshape(len(POOLING), -1)
    np.testing.assert_allclose(per_stat, per_stat[:1].repeat(len(POOLING), 0))  # the same for every statistic
    video, audio = per_stat[0, :96], per_stat[0, 96:]
    np.testing.assert_allclose([(video ** 2).sum(), (audio ** 2).sum()], [52, 52])  # half of 96 + 8 each
    np.testing.assert_array_equal(stream_balance(96, 8, "v"), np.ones(96 * len(POOLING)))


def test_balanced_regression_hears_the_narrow_stream_through_the_wide_noise(tmp_path):
    # Audio (8 dims) names the class, video (96 dims) is noise: unweighted, the standardised
    # noise takes most of the L2 budget; balanced, the audio keeps half of it.
    from avar.methods.avarnet.stream_selection import pooled_design, pooled_regression

    cache = toy_cache(tmp_path / "cache", per_class=(4, 0, 20), steps=3, seed=1)
    fit, test = cache.split("train"), cache.split("test")
    x, balance = pooled_design(fit, "av")
    y, x_test, y_test = [c.label for c in fit], pooled_design(test, "av")[0], [c.label for c in test]
    balanced = pooled_regression(0, balance).fit(x, y).score(x_test, y_test)
    plain = pooled_regression(0).fit(x, y).score(x_test, y_test)
    assert balanced >= plain + 0.1


def test_fold_caches_score_every_labelled_clip_once_by_runs_that_never_saw_its_recording(tmp_path):
    rng = np.random.default_rng(1)
    clips = [StepFeatures(f"g{g}_{i}_{split}", "fight" if g % 2 else "normal", split,
                          rng.standard_normal((3, 96)).astype(np.float32), rng.standard_normal((3, 8)).astype(np.float32),
                          np.arange(3.0), group=f"rec{g}")
             for g in range(10) for i, split in enumerate(("train", "train", "val", "test"))]
    cache = FeatureSet.create(tmp_path / "real", clips, video=EXTRACTORS["video"], audio=EXTRACTORS["audio"])
    names = fold_caches(cache, tmp_path, "real")
    assert names == [f"real-fold{k}" for k in range(5)]
    held = []
    for name in names:
        fold = FeatureSet.open(tmp_path / name)
        test = fold.split("test")
        seen = {c.group for c in fold.split("train") + fold.split("val")}
        assert test and not seen & {c.group for c in test}  # whole recordings held out
        assert {c.label for c in test} == {"fight", "normal"}  # stratified
        held += [c.clip_id for c in test]
    labelled = sorted(c.clip_id for c in clips if c.split != "test")
    assert sorted(held) == labelled  # each labelled clip once; the original test clips in none
    # the labelled clips' own split is kept where they are not held out
    fold0 = {c.clip_id: c.split for c in (FeatureSet.open(tmp_path / names[0]).split("val"))}
    assert all(cid.endswith("_val") for cid in fold0)
    assert fold_caches(cache, tmp_path, "real") == names  # a rerun keeps the caches it finds
    # another seed draws other folds (the benchmark scores each seed's runs on its own draw)
    other = fold_caches(cache, tmp_path, "real-s1", seed=1)
    draws = [[sorted({c.group for c in FeatureSet.open(tmp_path / n).split("test")}) for n in ns] for ns in (names, other)]
    assert sorted(draws[0]) != sorted(draws[1])
    assert sorted(c.clip_id for n in other for c in FeatureSet.open(tmp_path / n).split("test")) == labelled


def test_video_motion_is_the_trailing_mean_and_mean_change_of_the_steps_before():
    from avar.features.pooling import motion_steps

    x = np.random.default_rng(0).standard_normal((7, 3))
    y = motion_steps(x, 3)
    for t in range(7):
        w = x[max(0, t - 2) : t + 1]  # the last 3 steps, fewer at the start
        change = np.abs(np.diff(w, axis=0)).mean(0) if t else np.zeros(3)
        np.testing.assert_allclose(y[t], np.hstack([w.mean(0), change]), atol=1e-5)
    later = x.copy()
    later[4:] = 0  # later steps leave the earlier ones as they were
    np.testing.assert_allclose(motion_steps(later, 3)[:4], y[:4], atol=1e-6)
    assert motion_steps(x[:0], 3).shape == (0, 6)
    for bad in (1, -2, True, 2.5):
        with pytest.raises(ValueError, match="video-motion"):
            TrainConfig(video_motion=bad)


def test_video_motion_lets_a_head_tell_moving_clips_from_still_ones(tmp_path, one_torch_thread):
    # Every clip shows its own random scene; in "moving" clips it changes from step to step, in
    # "still" ones it holds. What a clip looks like says nothing; how it moves says everything.
    rng = np.random.default_rng(0)
    clips = []
    for label in ("still", "moving"):
        for split, count in (("train", 12), ("val", 3), ("test", 6)):
            for i in range(count):
                scene = rng.standard_normal(96)
                drift = rng.standard_normal((8, 96)) * (2.0 if label == "moving" else 0.0)
                clips.append(StepFeatures(clip_id=f"{label}_{split}_{i}", label=label, split=split,
                                          video=(scene + drift).astype(np.float32),
                                          audio=rng.standard_normal((8, 8)).astype(np.float32),
                                          times=np.arange(8, dtype=np.float32)))
    cache = FeatureSet.create(tmp_path / "cache", clips, video=EXTRACTORS["video"], audio=EXTRACTORS["audio"])
    for motion in (0, 3):  # the head alone (no clip blend, whose pooled change would see the motion too)
        config = TrainConfig(modality="v", epochs=3, min_steps=200, clip_blend=1, head=SMALL_HEAD, video_motion=motion)
        train_head(cache, tmp_path / f"run{motion}", config, progress=False)
    assert evaluate_run(tmp_path / "run0", cache.root, "test").accuracy <= 0.75  # chance: 0.5
    assert evaluate_run(tmp_path / "run3", cache.root, "test").accuracy >= 0.9
    run = Run.load(tmp_path / "run3")
    assert run.video_motion == 3 and run.config.video_dim == 2 * 96 and Run.load(tmp_path / "run0").video_motion == 0
    clip = cache.split("test")[0]
    assert run.step_probabilities(clip.video, clip.audio).shape == (8, 2)  # raw 96-d features in, as extracted
    config = json.loads((tmp_path / "run3" / "config.json").read_text())
    config["video_motion"] = 1
    (tmp_path / "run3" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json.*video-motion"):
        Run.load(tmp_path / "run3")
