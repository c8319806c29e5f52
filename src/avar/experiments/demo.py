"""The main job: synthetic media -> features -> three supervised heads and one weakly
supervised model -> evaluation -> one explained clip, both runs' score curves side by side."""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avar.datasets.folders import discover
from avar.methods.avarnet.evaluate import evaluate_run
from avar.methods.avaca.evaluate import evaluate_weak
from avar.features import DEFAULT_AUDIO, DEFAULT_VIDEO, build_extractor
from avar.features.cache import FeatureSet, extract_dataset
from avar.media.synth import synthesize
from avar.serve.predict import predict_files
from avar.plots import plot_bars, plot_step_scores
from avar.methods.avarnet.train import TrainConfig, train_head
from avar.methods.avaca.train import WeakTrainConfig, train_weak
from avar.training.seeding import describe_numerics, numerics

MODALITY_NAMES = {"a": "audio only", "v": "video only", "av": "audio + video (early fusion)"}


@dataclass
class DemoResult:
    out_dir: Path
    results: dict[str, dict]
    """Per modality: the test metrics (``ClassificationReport.to_dict()``) plus ``params``."""
    weak: dict
    """The AVACA run's frame-level test metrics (``WeakDetectionReport.to_dict()``)."""
    report: Path
    seconds: float
    events: int = 0
    """Events the audio + video run found watching the test clips (in ``out_dir/events.db``)."""


def run_demo(
    out_dir: Path | str = "avar-demo",
    *,
    seed: int = 0,
    clips_per_class: int = 24,
    seconds: float = 8.0,
    epochs: int = 50,
    progress: bool = True,
    log=print,
) -> DemoResult:
    started = time.perf_counter()
    out = Path(out_dir)
    data_dir, features_dir = out / "data", out / "features"

    log(f"[1/7] synthesising the benchmark into {data_dir}")
    meta_path = data_dir / "metadata.json"
    if not meta_path.is_file():
        synthesize(data_dir, seed=seed, clips_per_class=clips_per_class, seconds=seconds, progress=progress)
    metadata = json.loads(meta_path.read_text())

    log(f"[2/7] extracting {DEFAULT_VIDEO} + {DEFAULT_AUDIO} features into {features_dir}")
    summary = extract_dataset(
        discover(data_dir, seed=seed),
        features_dir,
        build_extractor(DEFAULT_VIDEO, runtime="auto"),
        build_extractor(DEFAULT_AUDIO),
        progress=progress,
    )
    for failure in summary.failures:
        log(f"  failed: {failure['path']}: {failure['reason']}")
    features = FeatureSet.open(features_dir)

    results = {}
    for modality in ("a", "v", "av"):
        log(f"[3/7] training and evaluating the AVAR-Net head on {MODALITY_NAMES[modality]}")
        run_dir = out / f"run-{modality}"
        run = train_head(features, run_dir, TrainConfig(modality=modality, epochs=epochs, seed=seed), progress=progress)
        report = evaluate_run(run_dir, features_dir, "test")
        results[modality] = {**report.to_dict(), "params": run.record.params, "best_epoch": run.record.best_epoch}

    log("[4/7] training AVACA from video-level labels only (normal or not) and scoring its steps")
    train_weak(features, out / "run-avaca", WeakTrainConfig(seed=seed), progress=progress)
    weak = evaluate_weak(out / "run-avaca", features_dir, "test", plots=False).to_dict()

    log("[5/7] explaining one test clip second by second with both runs")
    clip = _pick_clip(features, metadata, data_dir)
    interval = clip["interval"]
    predictions, _ = predict_files(
        out / "run-av", [clip["path"]], out / "predict",
        intervals={clip["path"]: tuple(interval)} if interval else None, progress=False, runtime="auto",
    )
    weak_steps = predict_files(out / "run-avaca", [clip["path"]], progress=False, runtime="auto")[0][0].steps
    plot_step_scores(
        np.array([s.time for s in weak_steps]),
        {"AVAR-Net (clip labels)": np.array([s.anomaly_score for s in predictions[0].steps]),
         "AVACA (video-level labels)": np.array([s.anomaly_score for s in weak_steps])},
        out / "localisation.png", interval=tuple(interval) if interval else None,
        title=f"{Path(clip['path']).name}: true {clip['label']}",
    )
    log(f"[6/7] watching the test clips with the audio + video run into the event store {out / STORE_NAME}")
    events = watch_into_store(out / "run-av", [c["path"] for c in features.clips if c["split"] == "test"], out)
    log("[7/7] writing the report")
    plot_bars(
        {MODALITY_NAMES[m]: r["accuracy"] for m, r in results.items()},
        out / "accuracy.png", "Test accuracy by modality", "accuracy",
    )
    elapsed = time.perf_counter() - started
    report_path = _write_report(out, results, weak, predictions[0], weak_steps, clip, events, elapsed)
    return DemoResult(out, results, weak, report_path, elapsed, events)


STORE_NAME = "events.db"


def serve_command(out: Path | str) -> str:
    """The command that opens the dashboard on a demo's output."""
    out = Path(out)
    return f"avar serve --db {out / STORE_NAME} --media {out / 'data'} --runs {out}"


def watch_into_store(run_dir: Path, files: list[str], out: Path) -> int:
    """Watch ``files`` with a run as a camera would be, into ``out/events.db`` with thumbnails
    (sources named by absolute path, so the dashboard can play them); returns the events."""
    from avar.serve.store import EventStore
    from avar.serve.watch import Watcher

    with EventStore(out / STORE_NAME) as store:
        watcher = Watcher(run_dir, store=store, thumbnails=out / "thumbnails")
        for path in files:
            for _ in watcher.watch(Path(path).resolve()):
                pass
    return len(watcher.events)


def _pick_clip(features: FeatureSet, metadata: dict, data_dir: Path) -> dict:
    """A test clip of a joint audio-visual class, so the curve shows what fusion adds."""
    joint = set(metadata.get("groups", {}).get("joint", []))
    by_path = {str(data_dir / c["path"]): c for c in metadata["clips"]}
    tests = [c for c in features.clips if c["split"] == "test"]
    chosen = next((c for c in tests if c["label"] in joint), tests[0])
    return {"path": chosen["path"], "label": chosen["label"], "interval": by_path.get(chosen["path"], {}).get("interval")}


def results_table(results: dict[str, dict]) -> str:
    rows = ["| modality | accuracy | precision (macro) | recall (macro) | F1 (macro) | anomaly AUC | params |",
            "|---|---|---|---|---|---|---|"]
    for modality, r in results.items():
        auc = r.get("anomaly_auc")
        rows.append(
            f"| {MODALITY_NAMES[modality]} | {r['accuracy']:.3f} | {r['precision_macro']:.3f} | "
            f"{r['recall_macro']:.3f} | {r['f1_macro']:.3f} | {'n/a' if auc is None else f'{auc:.3f}'} | {r['params']:,} |"
        )
    return "\n".join(rows)


def weak_table(weak: dict) -> str:
    """The AVACA run's test metrics as a Markdown table."""
    def fmt(value):
        return "n/a" if value is None else f"{value:.3f}"
    return "\n".join(["| frame AUC | frame AP | AUC, anomalous clips only | clip AUC |", "|---|---|---|---|",
                      f"| {fmt(weak['frame_auc'])} | {fmt(weak['frame_ap'])} | {fmt(weak['frame_auc_anomalous'])} | "
                      f"{fmt(weak['video_auc'])} |"])


def _write_report(out: Path, results: dict, weak: dict, prediction, weak_steps: list, clip: dict, events: int,
                  elapsed: float) -> Path:
    table = results_table(results)
    interval = clip["interval"]
    steps = "\n".join(
        f"| {s.time:.0f}-{s.end:.0f} s | {s.predicted} | {s.anomaly_score:.2f} | {w.anomaly_score:.2f} |"
        for s, w in zip(prediction.steps, weak_steps)
    )
    markdown = f"""# avar demo

Synthetic audio-visual benchmark (H.264 + AAC files written by `avar synth`), features from
efficientnet-lite0 (video) and logmel (audio) at one step per second, AVAR-Net head
(attention + multi-stage dilated TCN), sequences of 10 steps. Test split, clip level.

{table}

![accuracy by modality](accuracy.png)

## Confusion matrix, audio + video

![confusion](run-av/confusion_test.png)

## One test clip, second by second

`{clip['path']}`: true class **{clip['label']}**, anomaly interval {interval} s;
predicted **{prediction.clip_class}**.

![score curve]({Path(prediction.plot).relative_to(out) if prediction.plot else ''})

## Localisation: clip labels against video-level labels

AVACA (cross-attention, DMIL + center loss) trained on the same clips knowing only whether
each clip is normal; its step scores on the test split, expanded to frames against the true
intervals:

{weak_table(weak)}

The same clip through both runs, true interval shaded:

![localisation](localisation.png)

| step | AVAR-Net predicted | AVAR-Net anomaly score | AVACA anomaly score |
|---|---|---|---|
{steps}

## Review it in the dashboard

The audio + video run watched every test clip as a camera would: {events} events, with
thumbnails and every step's scores, in `{STORE_NAME}`. Open them with

    {serve_command(out)}

and browse http://127.0.0.1:8080/.

Finished in {elapsed:.0f} s ({describe_numerics(numerics())}). The same seed gives the same
figures on the same kind of CPU and may differ by a test clip on another (docs/results.md,
"The demo").
"""
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(_markdown_to_html(markdown))
    return out / "report.md"


def _markdown_to_html(markdown: str) -> str:
    """The report's small Markdown subset (headings, tables, images, paragraphs) as HTML."""
    body, table = [], []

    def flush_table():
        if table:
            cells = [[html.escape(c.strip()) for c in row.strip("|").split("|")] for row in table if not set(row) <= set("|-")]
            head, *rows = cells
            body.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            body.append(f'<p><img src="{html.escape(src.rstrip(")"))}" alt="{html.escape(alt)}" style="max-width:720px"></p>')
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    style = "body{font-family:sans-serif;max-width:860px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>avar demo</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"
