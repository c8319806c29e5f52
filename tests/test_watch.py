"""Watching media step by step: streaming decode, causal and centred records, events, reconnection."""

import json

import av
import numpy as np
import pytest

from avar.datasets.folders import discover
from avar.features import build_extractor
from avar.features.cache import FeatureSet, extract_dataset
from avar.media.decode import iter_steps
from avar.media.synth import write_av_file
from avar.serve.predict import Predictor
from avar.serve.events import EventConfig
from avar.serve.store import EventStore
from avar.serve.watch import Watcher
from avar.methods.avarnet.train import TrainConfig, train_head

FPS, RATE = 10, 22_050


def _clip(path, seconds=6, tone=(2, 4), brightness=40, seed=0, audio_start=0.0):
    rng = np.random.default_rng(seed)
    frames = np.clip(rng.normal(brightness, 20, (seconds * FPS, 32, 48, 3)), 0, 255).astype(np.uint8)
    t = np.arange(int(seconds * RATE)) / RATE
    audio = 0.01 * rng.standard_normal(len(t))
    if tone is not None:
        on = (t >= tone[0]) & (t < tone[1])
        audio[on] += 0.8 * np.sin(2 * np.pi * 1000 * t[on])
        frames[tone[0] * FPS : tone[1] * FPS] = np.clip(frames[tone[0] * FPS : tone[1] * FPS] + 120, 0, 255)
    return write_av_file(path, frames, FPS, audio.astype(np.float32), RATE, audio_start_s=audio_start)


def tone_cache(root, per_class=2, tone=(0, 4)) -> FeatureSet:
    """``root/data``: 4-s clips, ``normal`` quiet and ``tone`` with a bright 1 kHz stretch;
    ``root/feat``: their features (the offline extractors), all in the train split."""
    for i in range(per_class):
        _clip(root / "data" / "normal" / f"n{i}.mp4", seconds=4, tone=None, seed=i)
        _clip(root / "data" / "tone" / f"t{i}.mp4", seconds=4, tone=tone, seed=10 + i)
    entries = discover(root / "data", test_fraction=0, val_fraction=0)
    extract_dataset(entries, root / "feat", build_extractor("efficientnet-lite0"), build_extractor("logmel"), progress=False)
    return FeatureSet.open(root / "feat")


def tone_run(root):
    """A small supervised run on :func:`tone_cache` clips: ``root/run``."""
    head = {"num_stages": 1, "num_layers": 3, "num_f_maps": 8, "attention": False}
    train_head(tone_cache(root), root / "run", TrainConfig(epochs=5, head=head), progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tone_run(tmp_path_factory.mktemp("watch"))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return _clip(tmp_path_factory.mktemp("media") / "scene.mp4")


def _truncate(src, dst, cut):
    """Stream-copy the packets decoded before ``cut`` seconds (no re-encoding)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux():
            if packet.dts is None or packet.size == 0 or packet.stream.index not in streams:
                continue
            if float(packet.dts * packet.time_base) >= cut:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst


def test_iter_steps_hands_steps_over_before_the_stream_ends(media):
    seen = []

    class Spy:
        def __init__(self, path):
            self.c = av.open(path)
            self.streams = self.c.streams

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.c.close()

        def demux(self, *streams):
            for packet in self.c.demux(*streams):
                seen.append(packet.pts is not None and float(packet.pts * packet.time_base))
                yield packet

    firsts = []
    for s in iter_steps(media, 1.0, None, opener=Spy):
        firsts.append(max(t for t in seen if t is not False))
    # Step 0 came out long before the last packet (at ~6 s) was read.
    assert firsts[0] < 2.5 and firsts == sorted(firsts)


def test_causal_records_are_ordered_and_ignore_later_media(run_dir, media, tmp_path):
    watcher = Watcher(run_dir, causal=True)
    full = list(watcher.watch(media))
    assert [r.time for r in full] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert all(r.end == r.time + 1 for r in full)
    short = list(watcher.watch(_truncate(media, tmp_path / "short.mp4", 4.5)))
    assert 4 <= len(short) < len(full)
    for a, b in zip(full[:4], short[:4]):
        assert a.probabilities == b.probabilities, a.time
    # The centred records of those steps do see the later media.
    centred = list(Watcher(run_dir).watch(media))
    assert any(c.probabilities != f.probabilities for c, f in zip(centred, full))


def test_centred_records_equal_predict_when_the_window_covers_the_file(run_dir, media):
    watcher = Watcher(run_dir)
    assert watcher.run.seq_len >= 6
    records = list(watcher.watch(media))
    expected = Predictor(run_dir).predict(media).steps
    assert [(r.time, r.end) for r in records] == [(e.time, e.end) for e in expected]
    for r, e in zip(records, expected):
        assert r.predicted == e.predicted
        for c in e.probabilities:
            assert abs(r.probabilities[c] - e.probabilities[c]) < 1e-4
        assert abs(r.anomaly_score - e.anomaly_score) < 1e-4


def test_events_land_in_store_jsonl_and_thumbnails(run_dir, media, tmp_path):
    # Thresholds at zero: every step is anomalous, so the whole file is one event.
    config = EventConfig(threshold=0.0, release=0.0, min_duration=0.0)
    with EventStore(tmp_path / "events.db") as store:
        watcher = Watcher(run_dir, events=config, store=store, jsonl=tmp_path / "events.jsonl",
                          thumbnails=tmp_path / "thumbs")
        records = list(watcher.watch(media))
        rows = store.query()
        sources = store.sources()
    assert len(rows) == 1 and rows[0]["source"] == str(media)
    assert (rows[0]["start"], rows[0]["end"]) == (0.0, 6.0)
    assert rows[0]["peak_score"] == max(r.anomaly_score for r in records)
    assert [s["kind"] for s in sources] == ["file"]
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["start"], e["end"], e["label"]) for e in lines] == [(0.0, 6.0, rows[0]["label"])]
    thumb = rows[0]["thumbnail"]
    assert thumb == lines[0]["thumbnail"] and open(thumb, "rb").read(2) == b"\xff\xd8"


def test_a_bad_file_in_a_folder_does_not_stop_the_others(run_dir, tmp_path, caplog):
    folder = tmp_path / "cams"
    _clip(folder / "a.mp4", seconds=3)
    (folder / "b.mp4").write_bytes(b"not a video" * 50)
    _clip(folder / "c.mp4", seconds=2, seed=3)
    (folder / "notes.txt").write_text("ignored")
    with EventStore(tmp_path / "events.db") as store:
        watcher = Watcher(run_dir, causal=True, store=store)
        records = list(watcher.watch(folder))
        assert [r.levelname for r in caplog.records if "b.mp4" in r.getMessage()] == ["WARNING"]
        kinds = {s["uri"].rsplit("/", 1)[-1]: s["kind"] for s in store.sources()}
    assert [r.time for r in records] == [0.0, 1.0, 2.0, 0.0, 1.0]
    assert [f["source"] for f in watcher.failures] == [str(folder / "b.mp4")]
    assert kinds["b.mp4"] == "file"  # its kind; why it failed is in its error


def test_a_dropped_stream_is_reopened_and_the_gap_recorded(run_dir, media, tmp_path, caplog):
    opened = []

    class Flaky:
        """The first connection drops after two seconds of packets; later ones play through."""

        def __init__(self, url):
            opened.append(url)
            self.c = av.open(url)
            self.streams = self.c.streams
            self.drop = len(opened) == 1

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.c.close()

        def demux(self, *streams):
            for packet in self.c.demux(*streams):
                if self.drop and packet.pts is not None and packet.pts * packet.time_base > 2.6:
                    raise av.error.FFmpegError(5, "Input/output error")
                yield packet

    with EventStore(tmp_path / "events.db") as store:
        watcher = Watcher(run_dir, causal=True, store=store, opener=Flaky, max_retries=2)
        records = list(watcher.watch(str(media), reconnect=True))
        assert any("reconnecting in 0.5s" in r.getMessage() for r in caplog.records)
        gaps = store.gaps(str(media))
        sources = store.sources()
    assert len(opened) == 2
    times = [r.time for r in records]
    assert times == sorted(times) and len(times) >= 6 + 2
    assert len(gaps) == 1 and sources[0]["gaps"] == 1
    start, end = gaps[0]
    first_run = [r for r in records if r.end <= start]
    assert first_run and first_run[-1].end == start
    assert end - start >= 0.5  # at least the back-off
    assert min(r.time for r in records if r.time >= start + 1e-9) == pytest.approx(end)


def test_a_stream_that_keeps_failing_gives_up(run_dir, media, caplog):
    def broken(url):
        raise av.error.FFmpegError(111, "Connection refused")

    watcher = Watcher(run_dir, opener=broken, max_retries=1)
    with pytest.raises(Exception, match="Connection refused"):
        list(watcher.watch("rtsp://camera.invalid/stream"))
    assert any("reconnecting" in r.getMessage() for r in caplog.records)
    assert watcher.failures and watcher.failures[0]["source"] == "rtsp://camera.invalid/stream"


def test_bench_times_a_trained_run_with_its_own_backbones(run_dir, media):
    from avar.serve.bench import run_bench

    result = run_bench(run_dir, media, runtime="torch", live_steps=1)
    assert result["head"] == "trained avarnet" and result["steps"] == 6
    assert result["backbones"]["video"]["name"] == "efficientnet-lite0"
    assert result["backbones"]["video"]["runtime"] == "torch"
    with pytest.raises(ValueError, match="a run brings its own"):
        run_bench(run_dir, media, video="mobilevit-small")


def test_realtime_paces_a_file_at_its_own_speed(run_dir, tmp_path):
    import time

    clip = _clip(tmp_path / "short.mp4", seconds=2, tone=None)
    watcher = Watcher(run_dir, causal=True)
    t0 = time.monotonic()
    for record in watcher.watch(clip, realtime=True):
        # A record can only exist once its step has "happened" on the file's clock.
        assert time.monotonic() - t0 >= record.end - 0.05
    assert time.monotonic() - t0 >= 2.0


class _Camera:
    """A live source made of a file: packets at their own pace from the moment it is opened (a
    camera paces itself), and optionally, on its first connection, a ``stall`` (no packet for
    that many seconds once the media passes ``at`` s) or a drop (an I/O error at ``at`` s)."""

    def __init__(self, path, stall=0.0, drop=False, at=2.5, first=True):
        self.c = av.open(str(path))
        self.streams = self.c.streams
        self.stall, self.drop, self.at = (stall, drop, at) if first else (0.0, False, at)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.c.close()

    def demux(self, *streams):
        import time

        t0, stalled = time.monotonic(), 0.0
        for packet in self.c.demux(*streams):
            if packet.pts is not None:
                t = float(packet.pts * packet.time_base)
                if t > self.at and self.drop:
                    raise av.error.FFmpegError(5, "Input/output error")
                if t > self.at and self.stall and not stalled:
                    stalled = self.stall
                    time.sleep(self.stall)
                time.sleep(max(0.0, t + stalled - (time.monotonic() - t0)))
            yield packet


def test_many_live_sources_in_one_process_one_stalls_one_drops(run_dir, tmp_path):
    """Three cameras in one watch: the stalled and the dropped one never delay the healthy one,
    and the store keeps the stall and the gap."""
    import time

    clip = _clip(tmp_path / "cam.mp4", seconds=6)
    opened = []

    def opener(url):
        opened.append(url)
        first = opened.count(url) == 1
        return _Camera(clip, stall=3.0 if "stalls" in url else 0.0, drop="drops" in url, first=first)

    uris = ["rtsp://cam/healthy", "rtsp://cam/stalls", "rtsp://cam/drops"]
    arrivals = {u: [] for u in uris}
    history = {u: [] for u in uris}  # each source's states as the store showed them, in order
    with EventStore(tmp_path / "events.db") as store:
        watcher = Watcher(run_dir, causal=True, store=store, opener=opener, max_retries=2, stall_after=1.5)
        watcher.warm_up()
        t0 = time.monotonic()
        for uri, record in watcher.watch_many(uris):
            arrivals[uri].append((time.monotonic() - t0, record))
            for s in store.sources():
                if s["state"] and history[s["uri"]][-1:] != [s["state"]]:
                    history[s["uri"]].append(s["state"])
        gaps = {u: [(g["kind"], g["start"], g["end"]) for g in store.query_gaps(source=u)] for u in uris}
        sources = {s["uri"]: s for s in store.sources()}
    assert watcher.failures == []
    healthy = arrivals["rtsp://cam/healthy"]
    assert [r.time for _, r in healthy] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    # Its pace: each record within 1.5 s of its step's end on its own clock, the stall (3 s,
    # from 2.5 s) and the drop notwithstanding.
    first_at = healthy[0][0] - healthy[0][1].end
    assert all(at - first_at <= r.end + 1.5 for at, r in healthy), [(round(at, 2), r.end) for at, r in healthy]
    assert gaps["rtsp://cam/healthy"] == []
    (stall,) = gaps["rtsp://cam/stalls"]
    assert stall[0] == "stall" and 2.0 <= stall[2] - stall[1] <= 4.0
    def in_order(states, seen):
        rest = iter(seen)
        return all(state in rest for state in states)

    assert in_order(["live", "stalled", "live"], history["rtsp://cam/stalls"]), history
    (drop,) = gaps["rtsp://cam/drops"]
    assert drop[0] == "drop" and drop[2] - drop[1] >= 0.5  # at least the back-off
    assert in_order(["live", "reconnecting", "live"], history["rtsp://cam/drops"]), history
    assert set(history["rtsp://cam/healthy"]) <= {"live", "done"}, history
    assert {u: s["state"] for u, s in sources.items()} == dict.fromkeys(uris, "done")
    assert watcher.source_stats["rtsp://cam/stalls"].stalls == 1
    for uri in uris[1:]:
        times = [r.time for _, r in arrivals[uri]]
        assert times == sorted(times) and len(times) >= 6
        # the records after the hole start where it ends
        after = [t for t in times if t >= gaps[uri][0][1]]
        assert after and after[0] == pytest.approx(gaps[uri][0][2])


def test_a_live_source_the_backbones_cannot_keep_up_with_skips_steps_and_says_which(run_dir, tmp_path):
    """Backbones slower than real time: the source is reported lagging and its oldest waiting
    steps are skipped (stored as gaps of kind skipped) instead of piling up."""
    import time

    clip = _clip(tmp_path / "cam.mp4", seconds=8, tone=None)
    with EventStore(tmp_path / "events.db") as store:
        watcher = Watcher(run_dir, causal=True, store=store, batch=1, lag_after=1.0, skip_after=2.0)
        features = watcher.features

        def slow(frames, audio, pairs=None):
            time.sleep(1.6)  # each step costs more than the second it covers
            return features(frames, audio, pairs)

        watcher.features = slow
        records = [r for _, r in watcher.watch_many([str(clip)], realtime=True)]
        skipped = store.gaps(str(clip), "skipped")
        (source,) = store.sources()
    stats = watcher.source_stats[str(clip)]
    assert stats.skipped >= 1 and stats.lagging >= 1
    assert len(records) + stats.skipped == 8
    assert source["skipped"] == len(skipped) == stats.skipped and source["lagging"] >= 1
    done = {r.time for r in records}
    assert done.isdisjoint(start for start, _ in skipped)
    assert sorted(done | {start for start, _ in skipped}) == [float(i) for i in range(8)]


def test_sources_file_and_the_watch_command_with_many_sources(run_dir, tmp_path, capsys):
    from avar import cli
    from avar.serve.watch import read_sources

    a = _clip(tmp_path / "a.mp4", seconds=3, tone=None)
    b = _clip(tmp_path / "my b.mp4", seconds=2, tone=None, seed=1)
    listing = tmp_path / "sources.txt"
    listing.write_text(f"# cameras\n{a} gate\n\n\"{b}\"\n")
    assert [(s.uri, s.name) for s in read_sources(listing)] == [(str(a), "gate"), (str(b), None)]
    db = tmp_path / "events.db"
    assert cli.main(["watch", str(run_dir), "--sources", str(listing), "--json", "--db", str(db)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((x["source"], x["time"]) for x in lines) == [(str(a), 0.0), (str(a), 1.0), (str(a), 2.0),
                                                                (str(b), 0.0), (str(b), 1.0)]
    with EventStore(db) as store:
        assert {s["uri"]: s["name"] for s in store.sources()} == {str(a): "gate", str(b): None}
    listing.write_text(f"{a} gate extra\n")
    assert cli.main(["watch", str(run_dir), "--sources", str(listing)]) == 2
    assert "sources.txt:1: expected URI or URI NAME, got 3 fields" in capsys.readouterr().err
    assert cli.main(["watch", str(run_dir)]) == 2
    assert "nothing to watch" in capsys.readouterr().err
