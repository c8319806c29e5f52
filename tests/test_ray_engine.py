"""The Ray engine on a local Ray instance: the same cache as the local engine, workers that
die mid-clip, clips that fail twice, the ablation grid as Ray tasks, and a local path that
never imports Ray."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the Ray engine's tests need ray: pip install 'avar[ray]' (`make test` "
                                        "installs it)")

from avar.cli import main  # noqa: E402
from avar.cluster import RayEngine  # noqa: E402
from avar.datasets.folders import discover  # noqa: E402
from avar.experiments.ablate import AblationPlan, run_ablation  # noqa: E402
from avar.features.cache import FeatureSet  # noqa: E402
from avar.features.distributed import ClipWorker, ExtractorSpec, extract_dataset_ray  # noqa: E402
from avar.media.synth import write_av_file  # noqa: E402
from test_ablate import TINY, toy_features  # noqa: E402

OFFLINE = ["--video", "efficientnet-lite0", "--audio", "logmel"]
SPECS = (ExtractorSpec("efficientnet-lite0"), ExtractorSpec("logmel"))
# Same code, same inputs, other processes: the local engine's ONNX Runtime session runs on
# this process's torch threads (2 here), a Ray worker's on one, and ONNX Runtime may then sum
# a convolution's terms in another order. Float32 rounding of that order is ~1e-7 relative;
# the bound leaves room for it and nothing else (features are O(0.1-10)).
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def cluster():
    # Ray's sockets live under its temp dir, whose path must stay short (a socket path holds
    # 107 bytes); its logs go there too, and both go away with the test.
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, logging_level="WARNING")
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def _clip(path, seconds=3, seed=0):
    rng = np.random.default_rng(seed)
    frames = np.clip(rng.normal(60 + 20 * seed, 30, (seconds * 10, 32, 48, 3)), 0, 255).astype(np.uint8)
    audio = (0.1 * rng.standard_normal(seconds * 22_050)).astype(np.float32)
    return write_av_file(path, frames, 10, audio, 22_050)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Six 3-s clips in two classes and one file that is not media."""
    root = tmp_path_factory.mktemp("data")
    for i in range(3):
        _clip(root / "normal" / f"n{i}.mp4", seed=i)
        _clip(root / "fight" / f"f{i}.mp4", seed=3 + i)
    (root / "fight" / "broken.mp4").write_bytes(b"not a video" * 100)
    return root


@pytest.fixture(scope="module")
def local_cache(data, tmp_path_factory):
    """The local engine's cache of ``data``, through the command."""
    out = tmp_path_factory.mktemp("local") / "feat"
    assert main(["extract", str(data), "--out", str(out), *OFFLINE, "-q"]) == 1  # the broken file
    return FeatureSet.open(out)


def _features(cache: FeatureSet) -> dict:
    return {c["clip_id"]: cache.load(c) for c in cache.clips}


def _assert_same_cache(cache: FeatureSet, reference: FeatureSet):
    assert cache.clips == reference.clips
    for key in ("step", "video", "audio", "anonymize"):
        assert cache.manifest[key] == reference.manifest[key]
    ours, theirs = _features(cache), _features(reference)
    for clip_id, features in theirs.items():
        np.testing.assert_allclose(ours[clip_id].video, features.video, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(ours[clip_id].audio, features.audio, rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(ours[clip_id].times, features.times)


def _failures(root) -> list[dict]:
    return json.loads((root / "failures.json").read_text())


def test_ray_engine_writes_the_local_engines_cache(cluster, data, local_cache, tmp_path, capsys):
    out = tmp_path / "feat"
    capsys.readouterr()
    assert main(["extract", str(data), "--out", str(out), *OFFLINE, "--engine", "ray", "--workers", "2", "-q",
                 "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert (summary["done"], summary["skipped"]) == (6, 0)
    assert [f["path"] for f in summary["failures"]] == [str(data / "fight" / "broken.mp4")]
    assert _failures(out) == _failures(local_cache.root)  # the decoder's reason, as locally
    _assert_same_cache(FeatureSet.open(out), local_cache)
    assert FeatureSet.open(out).manifest["runtimes"] == {"video": "onnx", "audio": "numpy"}  # auto, on a CPU


def test_a_cache_begun_by_one_engine_is_finished_by_the_other(cluster, data, local_cache, tmp_path):
    entries = [e for e in discover(data) if "broken" not in e.clip_id]
    by_ray = tmp_path / "ray-first"
    assert extract_dataset_ray(entries[:2], by_ray, *SPECS, progress=False).done == 2
    assert main(["extract", str(data), "--out", str(by_ray), *OFFLINE, "-q"]) == 1
    by_local = tmp_path / "local-first"
    assert main(["extract", str(data), "--out", str(by_local), *OFFLINE, "-q"]) == 1
    (by_local / "clips" / f"{entries[0].clip_id}.safetensors").unlink()
    summary = extract_dataset_ray(entries, by_local, *SPECS, engine=RayEngine(workers=2), progress=False)
    assert (summary.done, summary.skipped) == (1, 5)
    # every entry listed, in the listing's order, whichever engine wrote it
    for root in (by_ray, by_local):
        assert {c["clip_id"] for c in FeatureSet.open(root).clips} == {c["clip_id"] for c in local_cache.clips}
    _assert_same_cache(FeatureSet.open(by_ray), local_cache)


def _dies_while_writing(marker):
    """An actor class whose first clip (of the whole cluster) kills its process after the clip's
    bytes are written to the temporary file and before the rename that publishes them."""

    class DiesWhileWriting(ClipWorker):
        def extract(self, entry, source):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return super().extract(entry, source)
            os.replace = lambda *args, **kwargs: os._exit(1)
            return super().extract(entry, source)

    return DiesWhileWriting


def test_a_worker_killed_mid_clip_loses_no_clip_and_corrupts_nothing(cluster, data, local_cache, tmp_path):
    entries = discover(data)
    out = tmp_path / "feat"
    summary = extract_dataset_ray(entries, out, *SPECS, engine=RayEngine(workers=2), progress=False,
                                  worker=_dies_while_writing(tmp_path / "died"))
    assert (tmp_path / "died").is_file()
    assert summary.done == 6 and [f["path"] for f in summary.failures] == [str(data / "fight" / "broken.mp4")]
    cache = FeatureSet.open(out)
    _assert_same_cache(cache, local_cache)  # every clip present, every file loads, the manifest complete
    # what the dead worker left: one hidden temporary file, never a clip file
    leftovers = [p.name for p in (out / "clips").iterdir() if p.suffix != ".safetensors"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".") and leftovers[0].endswith(".tmp")


def _dies_on(clip_id):
    class DiesOnOneClip(ClipWorker):
        def extract(self, entry, source):
            if entry.clip_id == clip_id:
                os._exit(1)
            return super().extract(entry, source)

    return DiesOnOneClip


def test_a_clip_that_fails_twice_is_listed_with_its_reason(cluster, data, tmp_path):
    entries = [e for e in discover(data) if "broken" not in e.clip_id]
    doomed = entries[1]
    summary = extract_dataset_ray(entries, tmp_path / "feat", *SPECS, engine=RayEngine(workers=2), progress=False,
                                  worker=_dies_on(doomed.clip_id))
    assert summary.done == 5
    assert summary.failures == [{"path": str(doomed.path), "reason": "failed 2 times, last: worker process died "
                                 "(ActorDiedError)"}]
    assert _failures(tmp_path / "feat") == summary.failures
    assert len(FeatureSet.open(tmp_path / "feat").clips) == 5


def _comparable(results: list[dict]) -> list[dict]:
    """A grid's results without what differs between any two runs: the folder and the timing."""
    return [{k: v for k, v in r.items() if k not in ("run_dir", "train_seconds")} for r in results]


def test_ablation_on_ray_gives_the_local_results_and_resumes(cluster, tmp_path):
    features = toy_features(tmp_path / "features")
    plan = AblationPlan(seeds=(0,), epochs=2, heads=("gru",), seq_lens=(10,), head_overrides=TINY, paper=True)
    local = run_ablation(features.root, tmp_path / "local", plan, workers=2, progress=False)
    on_ray = run_ablation(features.root, tmp_path / "ray", plan, workers=2, progress=False, engine=RayEngine())
    assert len(local) == len(plan.cells()) == 5
    assert _comparable(on_ray) == _comparable(local)
    saved = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert _comparable(saved) == _comparable(json.loads((tmp_path / "local" / "results.json").read_text()))

    # interrupted half way: only the missing cells run again
    runs = tmp_path / "ray" / "runs"
    (runs / plan.cells()[0].id / "result.json").unlink()
    kept = {c.id: (runs / c.id / "result.json").stat().st_mtime_ns for c in plan.cells()[1:]}
    again = run_ablation(features.root, tmp_path / "ray", plan, progress=False, engine=RayEngine(workers=1))
    assert _comparable(again) == _comparable(local)
    assert {c: (runs / c / "result.json").stat().st_mtime_ns for c in kept} == kept


def test_user_errors_name_the_fix(cluster, data, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "feat")
    assert main(["extract", str(data), "--out", out, "--engine", "ray", "--address", "no address"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "--address 'no address' is not a Ray address" in error
    monkeypatch.setitem(sys.modules, "ray", None)  # as on a machine without it
    assert main(["extract", str(data), "--out", out, "--engine", "ray"]) == 2
    assert capsys.readouterr().err.strip() == "error: --engine ray needs the ray package: pip install 'avar[ray]'"


def test_the_local_engine_never_imports_ray(data, tmp_path):
    code = ("import sys; from avar.cli import main; "
            f"status = main(['extract', {str(data)!r}, '--out', {str(tmp_path / 'feat')!r}, '--video', "
            "'efficientnet-lite0', '--audio', 'logmel', '-q']); "
            "assert status == 1, status; assert 'ray' not in sys.modules, 'ray was imported'; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split()[-1:] == ["ok"], done.stderr[-2000:]
    assert len(FeatureSet.open(tmp_path / "feat").clips) == 6
