"""``avar`` commands: using a trained run of any method: files, streams, events, timing, ONNX export."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from avar.cli.common import (RUNTIME_HELP, add_anonymize_options, anonymize_config, default_of, print_json,
                             runtime_choices)


def cmd_predict(args) -> int:
    from avar.serve.predict import predict_files

    predictions, failures = predict_files(args.run_dir, args.media, args.out, progress=not args.quiet,
                                          runtime=args.runtime)
    if args.json:
        for p in predictions:
            print(json.dumps(p.to_dict(), allow_nan=False))
    else:
        for p in predictions:
            peak = max(p.steps, key=lambda s: s.anomaly_score)
            print(f"{p.path}: {p.clip_class} (p={p.clip_probabilities[p.clip_class]:.2f}); "
                  f"peak anomaly score {peak.anomaly_score:.2f} at {peak.time:.0f}-{peak.end:.0f} s ({peak.predicted})")
            for s in p.steps:
                print(f"  {s.time:7.1f}-{s.end:<7.1f} {s.predicted:16} anomaly {s.anomaly_score:.2f}")
            for e in p.events:
                print(f"  event {e['start']:.1f}-{e['end']:.1f} s: {e['label']} (peak {e['peak_score']:.2f})")
        if args.out:
            print(f"step records and plots in {args.out}")
    for failure in failures:
        print(f"failed: {failure['path']}: {failure['reason']}", file=sys.stderr)
    return 1 if failures else 0


def _class_thresholds(items: list[str], classes: list[str], normal: str | None) -> dict[str, float]:
    """``--class-threshold CLASS=P`` options as ``{class: P}``, checked against the run's classes."""
    anomalies = [c for c in classes if c != normal]
    thresholds = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--class-threshold {item!r}: expected CLASS=P, e.g. --class-threshold "
                             f"{anomalies[0] if anomalies else 'fight'}=0.8")
        try:
            p = float(value)
        except ValueError:
            p = float("nan")
        if not 0.0 <= p <= 1.0:  # NaN fails too
            raise ValueError(f"--class-threshold {item!r}: P must be a probability in [0, 1], e.g. {name}=0.8")
        if name not in anomalies:
            why = "is the normal class, which never opens an event" if name == normal else "is not a class of this run"
            raise ValueError(f"--class-threshold {item!r}: {name!r} {why}; use one of {', '.join(anomalies)}")
        thresholds[name] = p
    return thresholds


def cmd_watch(args) -> int:
    from avar.serve.events import EventConfig
    from avar.serve.store import EventStore
    from avar.serve.watch import Source, Watcher, read_sources
    from avar.runs import load_run

    if args.idle_timeout is not None and not args.follow:
        raise ValueError("--idle-timeout only applies with --follow; add --follow or drop --idle-timeout")
    if args.idle_timeout is not None and not args.idle_timeout > 0:
        raise ValueError(f"--idle-timeout {args.idle_timeout}: pass a positive number of seconds, e.g. 10")
    if args.db and Path(args.db).is_dir():
        raise ValueError(f"--db {args.db} is a folder; pass the event store's file name, e.g. "
                         f"--db {Path(args.db) / 'events.db'}")
    run = load_run(args.run_dir)
    thresholds = _class_thresholds(args.class_threshold, run.classes,
                                   run.classes[run.normal_index] if run.normal_index is not None else None)
    given = {"threshold": args.threshold, "release": args.release, "min_duration": args.min_duration}
    try:
        config = EventConfig(**{**(run.record.thresholds or {}), **{k: v for k, v in given.items() if v is not None}},
                             class_thresholds=thresholds)
    except ValueError as exc:
        raise ValueError(f"{exc}; adjust --threshold, --release, --min-duration or --class-threshold") from exc
    sources = [Source(uri) for uri in args.sources] + (read_sources(args.sources_file) if args.sources_file else [])
    if not sources:
        raise ValueError("nothing to watch: pass one or more SOURCE (file, folder, URL, device) or --sources FILE")
    idle_timeout = default_of(Watcher.watch, "idle_timeout") if args.idle_timeout is None else args.idle_timeout
    store = EventStore(args.db) if args.db else None
    try:
        watcher = Watcher(run, causal=args.causal, events=config, store=store,
                          jsonl=args.jsonl, thumbnails=args.thumbnails, runtime=args.runtime, batch=args.batch,
                          anonymize=anonymize_config(args) if args.anonymize else None, lag_after=args.lag_after,
                          skip_after=args.skip_after, stall_after=args.stall_after)
        options = dict(realtime=args.realtime, follow=args.follow, idle_timeout=idle_timeout)
        # One source keeps the plain record lines and raises its failure (exit status 2, one line);
        # many are tagged by source, and a failed one is listed at the end.
        if len(sources) == 1:
            records = ((sources[0].uri, r) for r in watcher.watch(sources[0].uri, **options))
        else:
            records = watcher.watch_many(sources, **options)
        names = {s.uri: s.name or s.uri for s in sources}
        for uri, record in records:
            if args.json:
                print(json.dumps({**({"source": uri} if len(sources) > 1 else {}), **record.__dict__}), flush=True)
            elif not args.quiet:
                tag = f"{names.get(uri, uri)}  " if len(sources) > 1 else ""
                print(f"{tag}{record.time:9.1f}-{record.end:<9.1f} {record.predicted:16} anomaly "
                      f"{record.anomaly_score:.2f}", flush=True)
    finally:
        if store is not None:
            store.close()
    if not args.json:
        for e in watcher.events:
            print(f"event {e.label} {e.start:.1f}-{e.end:.1f} s peak {e.peak_score:.2f} ({e.source})")
    for uri, stats in watcher.source_stats.items():
        if stats.skipped or stats.stalls or stats.lagging:
            print(f"{uri}: {stats.steps} steps, {stats.skipped} skipped to keep up, fell behind {stats.lagging} "
                  f"time(s), stalled {stats.stalls} time(s)", file=sys.stderr)
    for failure in watcher.failures:
        print(f"failed: {failure['source']}: {failure['reason']}", file=sys.stderr)
    return 1 if watcher.failures else 0


def cmd_events(args) -> int:
    """``avar events DB``: list stored events (``--gaps``: stream gaps) as a table, or JSON lines with ``--json``."""
    from avar.serve.store import EventStore

    if args.gaps:
        if args.label is not None or args.min_score is not None:
            raise ValueError("--label and --min-score filter events, not gaps; drop them or drop --gaps")
        with EventStore(args.db, create=False) as store:
            gaps = store.query_gaps(source=args.source, since=args.since, until=args.until, limit=args.limit)
        if args.json:
            for g in gaps:
                print(json.dumps(g, allow_nan=False))
        elif not gaps:
            print(f"no gaps in {args.db} match")
        else:
            print(f"{'start':>9} {'end':>9} {'lost':>8} {'kind':8} source")
            for g in gaps:
                print(f"{g['start']:>9.2f} {g['end']:>9.2f} {g['end'] - g['start']:>8.2f} {g['kind']:8} {g['source']}")
        return 0
    with EventStore(args.db, create=False) as store:
        rows = store.query(label=args.label, source=args.source, since=args.since, until=args.until,
                           min_score=args.min_score, limit=args.limit)
    if args.json:
        for r in rows:
            print(json.dumps(r, allow_nan=False))
        return 0
    if not rows:
        print(f"no events in {args.db} match")
        return 0
    print(f"{'id':>5} {'start':>9} {'end':>9} {'label':16} {'peak':>5} {'at':>9}  source")
    for r in rows:
        print(f"{r['id']:>5} {r['start']:>9.2f} {r['end']:>9.2f} {r['label']:16} {r['peak_score']:>5.2f} "
              f"{r['peak_time']:>9.2f}  {r['source']}")
    return 0


def cmd_bench(args) -> int:
    from avar.serve.bench import max_streams, run_bench, run_streams
    from avar.serve.watch import read_sources

    models = dict(video=args.video, audio=args.audio, random_weights=args.random_weights, runtime=args.runtime,
                  motion=args.motion)
    many = dict(sources=read_sources(args.sources) if args.sources else None, seconds=args.seconds,
                batch=args.batch, causal=not args.centred)
    if args.max_streams:
        if args.streams is not None:
            raise ValueError("--max-streams searches the number of streams itself; drop --streams")
        if args.sources:
            raise ValueError("--max-streams runs copies of one clip (--media); drop --sources")
        del many["sources"]
        result = max_streams(args.run, args.media, limit=args.max_streams, **models, **many,
                             progress=lambda t: print(json.dumps(t), file=sys.stderr, flush=True))
        if args.json:
            print_json(result)
        else:
            for t in result["trials"]:
                print(f"{t['streams']:4d} streams: {'holds' if t['holds_realtime'] else 'falls behind'} real time, "
                      f"worst p95 latency {t['worst_stream_latency_p95_ms']} ms, {t['skipped']} steps skipped, "
                      f"{t['steps_per_second']:.1f} steps/s, CPU {100 * t['process_cpu_share']:.0f}%")
            print(f"max streams in real time (p95 <= {result['max_latency_ms']:.0f} ms, nothing skipped): "
                  f"{result['max_streams']}")
        return 0
    if args.streams is not None or args.sources:
        count = args.streams if args.streams is not None else len(many["sources"])
        result = run_streams(count, args.run, args.media, **models, **many)
        if args.json:
            print_json(result)
            return 0
        for r in result["per_stream"]:
            print(f"{r['source']:24} {r['steps']:5d} steps  {r['steps_per_second']:6.2f}/s  p50 {r['latency_p50_ms']} ms"
                  f"  p95 {r['latency_p95_ms']} ms  skipped {r['skipped']}")
        share = ", ".join(f"{k} {100 * v:.0f}%" for k, v in result["stage_busy_share"].items())
        print(f"{result['streams']} streams: {'hold' if result['holds_realtime'] else 'do not hold'} real time; "
              f"{result['steps_per_second']:.1f} steps/s in all, p95 {result['latency_p95_ms']} ms, "
              f"{result['skipped']} skipped; busy: {share}; CPU {100 * result['process_cpu_share']:.0f}% of "
              f"{result['cpus']} cores; peak {result['peak_rss_mb']:.0f} MB")
        return 0
    result = run_bench(args.run, args.media, **models, batch=args.batch, causal=not args.centred)
    if args.json:
        print_json(result)
        return 0
    b = result["backbones"]
    print(f"media      {result['media']} ({result['steps']} steps of {result['step_s']:g} s)")
    print(f"backbones  video {b['video']['name']} [{b['video']['runtime']}], audio {b['audio']['name']} "
          f"[{b['audio']['runtime']}], head {result['head']}, {result['threads']} threads")
    print(f"throughput {result['steps_per_second']:.2f} steps/s ({result['realtime_factor']:.1f}x real time)")
    print(f"latency    p50 {result['latency_p50_ms']:.0f} ms, p95 {result['latency_p95_ms']:.0f} ms (live pacing)")
    print(f"per step   decode {result['decode_ms_per_step']:.1f} ms, video {result['video_ms_per_step']:.1f} ms, "
          f"audio {result['audio_ms_per_step']:.1f} ms, head {result['head_ms_per_step']:.1f} ms (stages overlap)")
    print(f"memory     peak {result['peak_rss_mb']:.0f} MB resident")
    return 0


def cmd_export(args) -> int:
    from avar.features import build_extractor
    from avar.features.runtime import calibration_batch
    from avar.runs import load_run

    if args.run:
        backbones = list(load_run(args.run).build_extractors(runtime="torch")[:2])  # motion has no network
    else:
        backbones = [build_extractor(name, weights) for name, weights in
                     ((args.video, args.video_weights), (args.audio, args.audio_weights)) if name]
    if not backbones:
        raise ValueError("nothing to export: pass --run RUN_DIR or --video/--audio NAME")
    for backbone in backbones:
        if not hasattr(backbone, "export_onnx"):
            print(f"{backbone.name}: plain numpy, nothing to export")
            continue
        out = Path(args.out) if args.out else None
        path = backbone.onnx_path(out)
        if path.is_file() and not args.force:
            print(f"{backbone.name}: {path} (already exported)")
        else:
            backbone.export_onnx(path)
            print(f"{backbone.name}: {path}")
        if args.int8:
            calibration = calibration_batch(backbone, args.int8)
            path = backbone.int8_path(calibration, out)
            if path.is_file() and not args.force:
                print(f"{backbone.name}: {path} (int8, already calibrated on these {len(calibration)} steps)")
                continue
            backbone.quantize_int8(path, calibration)
            print(f"{backbone.name}: {path} (int8, calibrated on {len(calibration)} steps)")
    return 0


def cmd_serve(args) -> int:
    import os

    from avar.serve.dashboard.app import DashboardConfig, make_server

    token = args.token or os.environ.get("AVAR_TOKEN") or None
    config = DashboardConfig(db=Path(args.db), runs=Path(args.runs) if args.runs else None, media=args.media,
                             thumbnails=args.thumbnails, uploads=args.uploads, token=token, host=args.host,
                             allowed_hosts=args.allowed_host, max_upload_mb=args.max_upload_mb)
    server = make_server(config, args.port, log_level="warning" if args.quiet else "info")
    print(f"avar dashboard on http://{args.host}:{args.port}/ (store {config.db}); Ctrl-C stops it", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn shuts down cleanly first, then passes Ctrl-C on
        pass
    return 0


def add_commands(command) -> None:
    """Add this group's subcommands; ``command(name, func, help)`` makes one."""
    from avar.features import DEFAULT_AUDIO, DEFAULT_VIDEO
    from avar.serve.bench import run_bench, run_streams
    from avar.serve.watch import Watcher

    RUNTIME_CHOICES = runtime_choices()
    p = command("predict", cmd_predict, "per-step classes and anomaly scores of media files")
    p.add_argument("run_dir")
    p.add_argument("media", nargs="+")
    p.add_argument("--out", help="write <stem>.jsonl, <stem>.png and predictions.json here")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
    p.add_argument("--json", action="store_true", help="one JSON object per file on stdout")

    p = command("watch", cmd_watch, "stream a file, folder, URL or device through a run: a record per step, events")
    p.add_argument("run_dir")
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="media file, folder of files, rtsp://... / http://... URL, or device; several are watched at "
                   "once in one process, their steps batched through the backbones together")
    p.add_argument("--sources", dest="sources_file", metavar="FILE",
                   help="more sources, one a line: URI or URI NAME (# comments)")
    p.add_argument("--causal", action="store_true", help="use only past steps (record as soon as a step ends)")
    p.add_argument("--realtime", action="store_true", help="pace files at their own speed")
    p.add_argument("--db", help="SQLite event store to write events and sources to")
    p.add_argument("--jsonl", help="append events to this JSON-lines file")
    p.add_argument("--thumbnails", help="directory for event thumbnails (JPEG)")
    p.add_argument("--threshold", type=float, help="anomaly score that opens an event (default: the run's, else "
                   "0.5; an autoencoder run's is 0.99, reached by 1%% of normal steps)")
    p.add_argument("--release", type=float, help="score below which an event closes (default: the run's, else 0.4)")
    p.add_argument("--min-duration", type=float, help="seconds; shorter events are dropped (default 1)")
    p.add_argument("--class-threshold", action="append", default=[], metavar="CLASS=P",
                   help="per-class opening threshold in [0, 1] on the probability of CLASS, one of the run's "
                   "anomaly classes (repeatable)")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
    batch = default_of(Watcher, "batch")
    p.add_argument("--batch", type=int, default=batch,
                   help=f"most steps per backbone call when decoding runs ahead (default {batch})")
    p.add_argument("--follow", action="store_true",
                   help="keep reading a file that is still being written (MPEG-TS, Matroska, fragmented MP4; "
                   "a folder's last file) as it grows")
    for name, what in (("lag_after", "a live source this many seconds behind is 'lagging'"),
                       ("skip_after", "past this many seconds behind, a live source's oldest steps are skipped "
                                      "(stored as gaps of kind skipped)"),
                       ("stall_after", "a live source that delivers nothing this long is 'stalled'; the hole is "
                                       "stored as a gap of kind stall")):
        default = default_of(Watcher, name)
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=default, metavar="SECONDS",
                       help=f"{what} (default {default:g})")
    idle = default_of(Watcher.watch, "idle_timeout")
    p.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                   help=f"with --follow: stop once the file has not grown for this long (default {idle:g})")
    add_anonymize_options(p, switch=True)
    p.add_argument("--json", action="store_true", help="one JSON step record per line")

    p = command("events", cmd_events, "list anomaly events (or stream gaps) kept in an event store")
    p.add_argument("db", help="the event store (SQLite file)")
    p.add_argument("--gaps", action="store_true",
                   help="list gaps instead of events: stretches without records (kind drop: a dropped stream; "
                   "stall: nothing came; skipped: a step skipped to keep up)")
    p.add_argument("--label", help="only this anomaly class")
    p.add_argument("--source", help="only this source URI")
    p.add_argument("--since", type=float, help="only events (gaps) starting at or after SECONDS")
    p.add_argument("--until", type=float, help="only events (gaps) starting before SECONDS")
    p.add_argument("--min-score", type=float, help="only events whose peak score is at least X")
    p.add_argument("--limit", type=int, help="at most N events (gaps)")
    p.add_argument("--json", action="store_true", help="one JSON object per event (gap)")

    p = command("bench", cmd_bench, "throughput, latency and memory of the streaming pipeline on this machine (paper Table 4)")
    p.add_argument("--run", help="RUN_DIR to time (default: a random head of the default shape)")
    p.add_argument("--media", help="media file (default: the standard clip, 60 s 1280x720 25 fps H.264 + AAC 48 kHz)")
    p.add_argument("--video", help=f"video backbone when no --run is given (default {DEFAULT_VIDEO})")
    p.add_argument("--audio", help=f"audio backbone when no --run is given (default {DEFAULT_AUDIO})")
    p.add_argument("--motion", help="motion extractor when no --run is given (default: none; e.g. flow-hist)")
    p.add_argument("--random-weights", action="store_true", help="build the backbones untrained (timing needs no weights)")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
    p.add_argument("--batch", type=int, default=default_of(run_bench, "batch"))
    p.add_argument("--centred", action="store_true", help="centred windows instead of causal ones")
    p.add_argument("--streams", type=int, metavar="N",
                   help="N live streams in one process (copies of --media, or the first N of --sources), each "
                   "paced at its own speed: per-stream steps/s, latency, skipped steps")
    p.add_argument("--sources", metavar="FILE", help="with --streams: the streams to run, one URI a line")
    p.add_argument("--max-streams", type=int, nargs="?", const=64, metavar="LIMIT",
                   help="find the most copies of --media held in real time (p95 latency <= 2 s, no step skipped), "
                   "up to LIMIT (default 64)")
    seconds = default_of(run_streams, "seconds")
    p.add_argument("--seconds", type=float, default=seconds,
                   help=f"with --streams/--max-streams: seconds of media per stream (default {seconds:g})")
    p.add_argument("--json", action="store_true")

    p = command("export", cmd_export, "export backbones to ONNX, cached next to their weights (used by --runtime onnx/int8/auto)")
    p.add_argument("--run", help="export the backbones of this RUN_DIR")
    p.add_argument("--video", help="a video backbone to export")
    p.add_argument("--audio", help="an audio backbone to export")
    p.add_argument("--video-weights")
    p.add_argument("--audio-weights")
    p.add_argument("--out", help="folder for the ONNX files (default: next to the weights, else ~/.cache/avar/onnx)")
    p.add_argument("--force", action="store_true", help="export again even if the file exists")
    p.add_argument("--int8", nargs="+", metavar="MEDIA", help="also quantise to int8 (--runtime int8 then runs it), "
                   "calibrated on the first 16 steps of each MEDIA file: footage like the cameras' own")

    from avar.serve.dashboard.app import DashboardConfig

    p = command("serve", cmd_serve, "web dashboard: events, sources, media with score curves, live updates, uploads")
    p.add_argument("--db", default="events.db", help="the event store avar watch --db writes (default events.db)")
    p.add_argument("--runs", help="a run directory or a folder of them, offered on the 'analyse a file' page")
    p.add_argument("--media", action="append", default=[], metavar="DIR",
                   help="folder whose files may be played (repeatable); a source's media is served only from these")
    p.add_argument("--thumbnails", help="event thumbnails folder (default: thumbnails beside the store)")
    p.add_argument("--uploads", help="where uploaded files are kept (default: uploads beside the store)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                   "any other needs a token)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a name requests may give in their Host header besides the --host address and localhost "
                   "(repeatable): the DNS name or proxy users open the dashboard by; any other is refused")
    p.add_argument("--token", help="required on every request (also AVAR_TOKEN); open the dashboard as "
                   "http://HOST:PORT/?token=TOKEN")
    limit = default_of(DashboardConfig, "max_upload_mb")
    p.add_argument("--max-upload-mb", type=float, default=limit, help=f"largest upload accepted (default {limit:g})")
