"""``avar`` commands: preparing data: the synthetic benchmark, feature extraction, anonymisation, XD-Violence's lists."""

from __future__ import annotations

import sys
from pathlib import Path

from avar.cli.common import (add_anonymize_options, add_extractor_options, anonymize_config, default_of, emit,
                             extractors_from_args, print_json)
from avar.cli.engine import add_engine_options, engine_from_args, extractor_specs


def cmd_synth(args) -> int:
    from avar.media.synth import synthesize

    summary = synthesize(Path(args.out_dir), seed=args.seed, clips_per_class=args.clips_per_class,
                         seconds=args.seconds, progress=not args.quiet, weak=args.weak,
                         normal_clips=args.normal_clips)
    print(f"wrote {summary.n_clips} clips of {len(summary.classes)} classes to {summary.out_dir}")
    return 0


def cmd_extractors(args) -> int:
    from avar.features import extractor_infos

    infos = extractor_infos()
    if args.json:
        print_json([info.__dict__ for info in infos])
        return 0
    print(f"{'name':20} {'modality':8} {'dim':>5}  {'offline':7}  source / preprocessing")
    for i in infos:
        print(f"{i.name:20} {i.modality:8} {i.dim:>5}  {'yes' if i.offline else 'no':7}  {i.source}\n{'':46}{i.preprocessing}")
    return 0


def cmd_extract(args) -> int:
    from avar.datasets.folders import scan
    from avar.features.cache import extract_dataset, summary_dict

    engine = engine_from_args(args)  # a bad --address fails here, before the data is listed
    listing = scan(args.data_dir, seed=args.seed, splits_csv=args.splits)
    anonymize = anonymize_config(args) if args.anonymize else None
    motion = None if args.motion == "none" else args.motion
    if engine is not None:
        from avar.features.distributed import ExtractorSpec, extract_dataset_ray

        video, audio = extractor_specs(args)
        summary = extract_dataset_ray(listing.entries, args.out, video, audio, engine=engine, step=args.step,
                                      progress=not args.quiet, unlisted=listing.skipped, anonymize=anonymize,
                                      motion=None if motion is None else ExtractorSpec(motion))
    else:
        from avar.features import build_extractor

        video, audio = extractors_from_args(args)
        summary = extract_dataset(listing.entries, args.out, video, audio, step=args.step,
                                  video_weights=args.video_weights, audio_weights=args.audio_weights,
                                  progress=not args.quiet, unlisted=listing.skipped, anonymize=anonymize,
                                  motion=None if motion is None else build_extractor(motion))
    if args.json:
        print_json(summary_dict(summary))
    else:
        print(f"{summary.done} clips extracted, {summary.skipped} already done, {len(summary.failures)} failed -> {summary.out_dir}")
        for failure in summary.failures:
            print(f"  failed: {failure['path']}: {failure['reason']}", file=sys.stderr)
    return 1 if summary.failures else 0


def cmd_xd_violence(args) -> int:
    """``avar xd-violence LISTS_DIR --out DIR``: import the published features, or list the videos for extract."""
    from avar.datasets.xd_violence import XDViolence, import_features, write_splits_csv

    xd = XDViolence.load(args.lists_dir)
    if args.videos:
        path, missing = write_splits_csv(xd, args.videos, Path(args.out) / "splits.csv", val_fraction=args.val_fraction,
                                         seed=args.seed)
        info = {"splits_csv": str(path), "videos": len(xd.videos) - len(missing), "missing": len(missing),
                "next": f"avar extract {args.videos} --splits {path} --out FEATURES_DIR --step {16 / 24!r}"}
    else:
        if not args.rgb:
            raise ValueError("avar xd-violence needs --rgb DIR (the I3D <name>__<crop>.npy files) or --videos DIR")
        summary = import_features(xd, args.rgb, args.audio, args.out, crops=args.crops, val_fraction=args.val_fraction,
                                  seed=args.seed, progress=not args.quiet)
        info = {"features_dir": str(args.out), "clips": summary.clips, "missing_rgb": len(summary.missing_rgb),
                "missing_audio": len(summary.missing_audio)}
    info["counts"] = xd.counts()
    if args.json:
        print_json(info)
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def cmd_anonymize(args) -> int:
    """``avar anonymize INPUT --out OUTPUT``: cover faces and plates in a file or a folder of files."""
    from avar.anonymize.files import anonymize_path, results_json

    config = anonymize_config(args)
    config.build()  # a wrong detector name fails here, before any file is opened
    batch = anonymize_path(args.input, args.out, config.build, mute_speech=args.mute_speech, progress=not args.quiet)
    lines = [f"{r.output}: {r.frames} frames, {r.frames_with_regions} with regions ({r.regions} covered), audio "
             f"{r.audio}, {r.frames / max(r.seconds, 1e-9):.1f} frames/s" for r in batch.results]
    lines += [f"failed: {f['path']}: {f['reason']}" for f in batch.failures]
    emit(args, results_json(batch), "\n".join(lines))
    return 1 if batch.failures else 0


def add_commands(command) -> None:
    """Add this group's subcommands; ``command(name, func, help)`` makes one."""
    from avar.datasets.folders import scan
    from avar.features import DEFAULT_MOTION, EXTRACTORS
    from avar.features.cache import extract_dataset
    from avar.media.synth import synthesize

    motion_extractors = [name for name, cls in EXTRACTORS.items() if cls.modality == "motion"]

    p = command("synth", cmd_synth, "write the built-in synthetic audio-visual benchmark (MP4 files)")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=default_of(synthesize, "seed"))
    p.add_argument("--clips-per-class", type=int, default=default_of(synthesize, "clips_per_class"))
    p.add_argument("--seconds", type=float, help="clip length (default 8, or 30 with --weak)")
    p.add_argument("--weak", action="store_true", help="weakly labelled variant: long clips, the anomaly in 10-30%% of "
                   "each, as many normal clips as anomalous ones; intervals in metadata.json")
    p.add_argument("--normal-clips", type=int, help="--weak: number of normal clips (default: all anomalous clips together)")

    p = command("extractors", cmd_extractors, "list feature extractors")
    p.add_argument("--json", action="store_true")

    p = command("extract", cmd_extract, "decode media and cache per-step features")
    p.add_argument("data_dir", help="DATA_DIR/<class>/<clip>.<ext>, optionally with splits.csv")
    p.add_argument("--out", required=True, help="FEATURES_DIR")
    add_extractor_options(p, default_of(extract_dataset, "step"))
    p.add_argument("--motion", default="none", choices=[*motion_extractors, "none"],
                   help=f"motion extractor: optical flow from frame pairs of the same decoding pass, a third stream "
                        f"beside appearance and sound (e.g. {DEFAULT_MOTION}; default none: off until it is measured "
                        "to help, docs/motion.md)")
    p.add_argument("--seed", type=int, default=default_of(scan, "seed"), help="seed of the stratified split")
    p.add_argument("--splits", help="a splits.csv (path,label,split) instead of DATA_DIR/splits.csv")
    add_anonymize_options(p, switch=True)
    add_engine_options(p)
    p.add_argument("--json", action="store_true")

    p = command("anonymize", cmd_anonymize, "cover faces and licence plates in a video file or every video of a "
                "folder: re-encoded at the source's frame rate, audio copied bit-exact, regions in a JSON sidecar")
    p.add_argument("input", help="a video file or a folder of them")
    p.add_argument("--out", required=True, help="output file or folder (a folder's tree is mirrored)")
    add_anonymize_options(p, switch=False)
    p.add_argument("--mute-speech", action="store_true", help="silence the segments a voice-activity detector "
                   "marks as speech (the audio is then re-encoded)")
    p.add_argument("--json", action="store_true")

    p = command("xd-violence", cmd_xd_violence, "import XD-Violence's published I3D/VGGish features into a feature "
                "cache (test clips carry their frame truth), or write a splits.csv to extract its videos")
    p.add_argument("lists_dir", help="folder with train_videos.txt, test_videos.txt and annotations.txt")
    p.add_argument("--out", required=True, help="FEATURES_DIR to write (or, with --videos, where splits.csv goes)")
    p.add_argument("--rgb", action="append", help="folder of <name>__<crop>.npy I3D files (repeatable: train, test)")
    p.add_argument("--audio", action="append", help="folder of <name>__vggish.npy files (repeatable); none: zero audio")
    p.add_argument("--videos", help="folder of the videos themselves: write OUT/splits.csv for `avar extract`")
    p.add_argument("--crops", default="mean", help="training videos: mean (average the 5 crops, default), all "
                                                   "(one clip per crop) or a crop number 0-4; test videos: mean")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the training list kept for validation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
