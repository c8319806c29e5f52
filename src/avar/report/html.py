"""One self-contained HTML page for a run or an ablation directory.

Every figure is embedded as a base64 ``data:`` URI, so the single ``.html`` file can be
mailed or attached to an issue and still shows everything; the same PNGs are also kept in
``<stem>_files/`` next to the page for slides and papers. The page is a plain f-string
template: every string that comes from a file (class names, clip ids, paths, configs) goes
through :func:`html.escape` before it reaches the markup.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from avar.experiments.ablate import HEAD_ORDER, METRICS, MODALITY_LABELS, MODALITY_ORDER, summarise
from avar.methods.avarnet.evaluate import check_compatible, evaluate_run
from avar.features.cache import FeatureSet, StepFeatures
from avar.plots import new_figure, plot_confusion, plot_score_curve, save_figure
from avar.runs import load_run
from avar.methods.avarnet.run import Run
from avar.training.run import FeatureRun
from avar.training.seeding import describe_numerics

REPORT_FILE = "report.html"
METADATA_FILE = "metadata.json"
TSNE_MIN_CLIPS = 10
"""Below this many clips in the split, the t-SNE map uses every split instead."""
_METRIC_NAMES = {"accuracy": "accuracy", "precision_macro": "precision", "recall_macro": "recall", "f1_macro": "F1"}

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
details pre { text-align: left; font-size: 0.85em; margin: 0.3em 0; }
figure { margin: 1em 0; }
img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
"""


class _Html(str):
    """Markup built here, already escaped; every other string is escaped by ``_cell``."""


def _cell(value) -> str:
    return value if isinstance(value, _Html) else html.escape(str(value))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_cell(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _details(summary: str, obj) -> _Html:
    text = json.dumps(obj, indent=1, sort_keys=True)
    return _Html(f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>")


def _figure_html(path: Path, alt: str, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pm(stat: dict) -> str:
    """A mean ± std over seeds, in percent like the paper's tables."""
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def build_report(target: Path | str, out: Path | str | None = None, *, split: str = "test", n_curves: int = 4) -> Path:
    """Write the HTML report of a run directory or an ablation directory; returns its path.

    An ablation directory (it has ``results.json``) gets its tables, an accuracy chart and
    then the run section for its best fused AVAR-Net run; a run directory gets the run
    section alone: metrics, confusion matrix, per-class precision / recall, a t-SNE map of
    the fused clip features and the anomaly score over time of ``n_curves`` ``split`` clips.
    """
    target = Path(target)
    out = Path(out) if out else target / REPORT_FILE
    assets = out.parent / f"{out.stem}_files"
    assets.mkdir(parents=True, exist_ok=True)
    if (target / "results.json").is_file():
        title = f"avar ablation report: {target.name}"
        body = _ablation_section(target, assets, split, n_curves)
    else:
        title = f"avar run report: {target.name}"
        body = _run_section(target, assets, split, n_curves)
    page = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
    out.write_text(page, encoding="utf-8")
    return out


# ---- ablation directory -------------------------------------------------------------------


def _ablation_section(root: Path, assets: Path, split: str, n_curves: int) -> str:
    results = json.loads((root / "results.json").read_text())
    tables_path = root / "tables.json"
    summary = json.loads(tables_path.read_text()) if tables_path.is_file() else summarise(results)
    metric_headers = [_METRIC_NAMES[m] + " %" for m in METRICS]
    parts = [f"<p>{len(results)} runs in {html.escape(str(root))}; test split, mean ± std over seeds.</p>"]

    rows = [
        [head, MODALITY_LABELS[modality], *(_pm(r[m]) for m in METRICS), f"{r['params']:,}",
         f"{r['train_seconds']['mean']:.1f}", ", ".join(map(str, r["seeds"])), _details("config", r["config"])]
        for head, by_modality in summary["table2"].items()
        for modality, r in by_modality.items()
    ]
    parts += ["<h2>Table 2: heads x modality</h2>",
              _table(["head", "modality", *metric_headers, "params", "train s", "seeds", "config"], rows)]
    if summary["table2"]:
        parts.append(_figure_html(_accuracy_chart(summary["table2"], assets / "ablation_accuracy.png"),
                                  "accuracy per head and modality", "Test accuracy per head and modality; error bars are one std over seeds."))

    rows = [[seq_len, *(_pm(r[m]) for m in METRICS), f"{r['params']:,}", f"{r['train_seconds']['mean']:.1f}",
             _details("config", r["config"])] for seq_len, r in summary["table3"].items()]
    parts += ["<h2>Table 3: sequence length, AVAR-Net head, audio + video</h2>",
              _table(["T", *metric_headers, "params", "train s", "config"], rows)]
    rows = [[name, *(_pm(r[m]) for m in METRICS), f"{r['params']:,}", f"{r['train_seconds']['mean']:.1f}",
             _details("config", r["config"])] for name, r in summary["fusion"].items()]
    parts += ["<h2>Early vs late fusion, AVAR-Net head</h2>",
              _table(["fusion", *metric_headers, "params", "train s", "config"], rows)]

    fused = [r for r in results if (r["head"], r["modality"], r["fusion"], r["seq_len"]) == ("mtcn", "av", "early", 10)]
    if not fused:
        parts.append("<p>No fused AVAR-Net run (mtcn, audio + video, early fusion, T = 10) in this grid.</p>")
        return "\n".join(parts)
    best = max(fused, key=lambda r: r["accuracy"])
    # The run's own folder inside the ablation wins, so a moved ablation directory still works.
    own = root / "runs" / best["id"]
    run_dir = own if own.is_dir() else Path(best["run_dir"])
    parts.append(f"<h2>Best fused AVAR-Net run: {html.escape(best['id'])} "
                 f"(seed {best['seed']}, accuracy {best['accuracy']:.3f})</h2>")
    parts.append(_run_section(run_dir, assets, split, n_curves, heading_level=3))
    return "\n".join(parts)


def _accuracy_chart(table2: dict, path: Path) -> Path:
    heads = [h for h in HEAD_ORDER if h in table2]
    modalities = [m for m in MODALITY_ORDER if any(m in table2[h] for h in heads)]
    series = {MODALITY_LABELS[m]: [table2[h][m]["accuracy"]["mean"] if m in table2[h] else np.nan for h in heads]
              for m in modalities}
    errors = {MODALITY_LABELS[m]: [table2[h][m]["accuracy"]["std"] if m in table2[h] else 0.0 for h in heads]
              for m in modalities}
    return _grouped_bars(heads, series, path, "Test accuracy per head and modality", "accuracy", errors)


# ---- run directory ------------------------------------------------------------------------


def _run_section(run_dir: Path, assets: Path, split: str, n_curves: int, heading_level: int = 2) -> str:
    """The section of one run: what its learning regime reports (:data:`SECTIONS`)."""
    run = load_run(run_dir)
    return SECTIONS[run.learning](run, run_dir, assets, split, n_curves, heading_level)


def _features_dir(run: FeatureRun, run_dir: Path) -> Path:
    if not run.record.features_dir:
        raise ValueError(f"{run_dir}: config.json records no features_dir; retrain it with `avar train`")
    return Path(run.record.features_dir)


def _classifier_section(run: FeatureRun, run_dir: Path, assets: Path, split: str, n_curves: int,
                        heading_level: int) -> str:
    """A supervised run: clip-level metrics (``avar evaluate``), confusion, t-SNE and score curves."""
    h = f"h{heading_level}"
    features_dir = _features_dir(run, run_dir)
    eval_path = run_dir / f"eval_{split}.json"
    if not eval_path.is_file():
        evaluate_run(run_dir, features_dir, split)
    report = json.loads(eval_path.read_text())
    features = FeatureSet.open(features_dir)
    check_compatible(run, features)
    train, record = run.record.train, run.record
    prefix = f"{run_dir.name}_{split}"

    summary_rows = [
        ["run", str(run_dir)],
        ["features", str(features_dir)],
        ["head / modality / fusion", f"{train.head_type} / {train.modality} / {train.fusion}"],
        ["sequence length (steps)", run.seq_len],
        ["parameters", f"{record.params or 0:,}"],
        ["best epoch", record.best_epoch or "?"],
        ["train seconds", record.train_seconds or "?"],
        ["trained with", describe_numerics(record.numerics)],
        [f"{split} clips", report["n"]],
        ["accuracy", _num(report["accuracy"])],
        ["precision (macro / weighted)", f"{_num(report['precision_macro'])} / {_num(report['precision_weighted'])}"],
        ["recall (macro / weighted)", f"{_num(report['recall_macro'])} / {_num(report['recall_weighted'])}"],
        ["F1 (macro / weighted)", f"{_num(report['f1_macro'])} / {_num(report['f1_weighted'])}"],
        ["AP / ROC AUC (macro, one-vs-rest)", f"{_num(report['ap_macro'])} / {_num(report['auc_macro'])}"],
        ["anomaly ROC AUC / AP", f"{_num(report['anomaly_auc'])} / {_num(report['anomaly_ap'])}"],
    ]
    per_class = report["per_class"]
    class_rows = [[name, *(_num(per_class[name][k]) for k in ("precision", "recall", "f1")), per_class[name]["support"],
                   _num(per_class[name]["ap"]), _num(per_class[name]["auc"])] for name in report["classes"]]
    parts = [
        f"<{h}>Summary ({html.escape(split)} split)</{h}>",
        _table(["metric", "value"], summary_rows),
        _table(["class", "precision", "recall", "F1", "support", "AP", "AUC"], class_rows),
        f"<{h}>Confusion matrix</{h}>",
        _figure_html(
            plot_confusion(np.array(report["confusion"]), report["classes"], assets / f"{prefix}_confusion.png",
                           title=f"{split} confusion"),
            "confusion matrix", "Rows are true classes, columns predicted; colour is the fraction of the true class."),
        f"<{h}>Per-class precision and recall</{h}>",
        _figure_html(
            _grouped_bars(report["classes"], {k: [per_class[c][k] for c in report["classes"]] for k in ("precision", "recall")},
                          assets / f"{prefix}_per_class.png", f"Per-class precision and recall ({split})", "score"),
            "per-class precision and recall", f"Clip-level precision and recall of every class on the {split} split."),
    ]

    clips = run.read(features.split(split))
    tsne_clips, tsne_scope = (clips, f"the {split} split") if len(clips) >= TSNE_MIN_CLIPS else (
        run.read([features.load(c) for c in features.clips]), "all splits")
    parts.append(f"<{h}>t-SNE of the fused clip features</{h}>")
    if len(tsne_clips) < 3:
        parts.append(f"<p>Too few clips ({len(tsne_clips)}) for a t-SNE map.</p>")
    else:
        path = _tsne_map(run, tsne_clips, assets / f"{prefix}_tsne.png")
        parts.append(_figure_html(path, "t-SNE map of fused clip features",
                                  f"{len(tsne_clips)} clips of {tsne_scope}: mean over steps of the run-normalised "
                                  "[video, audio] features, coloured by true class."))

    parts += _score_curves(run, features, pick_curve_clips(clips, run.classes, n_curves), assets, prefix, h,
                           per_class=True)
    return "\n".join(parts)


def _detector_section(run: FeatureRun, run_dir: Path, assets: Path, split: str, n_curves: int,
                      heading_level: int) -> str:
    """A weakly supervised run: its frame-level metrics (``avar evaluate``) and score curves."""
    from avar.methods.avaca.evaluate import evaluate_weak

    h = f"h{heading_level}"
    features_dir = _features_dir(run, run_dir)
    eval_path = run_dir / f"eval_weak_{split}.json"
    if not eval_path.is_file():
        evaluate_weak(run_dir, features_dir, split, plots=False)
    report = json.loads(eval_path.read_text())
    features = FeatureSet.open(features_dir)
    keys = ("frame_auc", "frame_ap", "frame_ap_xd", "frame_auc_anomalous", "video_auc")
    rows = [["run", str(run_dir)], ["features", str(features_dir)], ["method (weakly supervised)", run.method],
            ["scoring window (steps)", run.seq_len], ["best epoch", run.record.best_epoch or "?"],
            [f"{split} videos (anomalous)", f"{report['n_videos']} ({report['n_anomalous_videos']})"],
            ["frame truth", report["truth"]], *([k, _num(report[k])] for k in keys)]
    parts = [f"<{h}>Summary ({html.escape(split)} split)</{h}>", _table(["metric", "value"], rows)]
    for title, table in (("class group", report["per_group"]), ("class", report["per_class"])):
        if table:
            parts.append(_table([title, "videos", *keys], [[name, m["n_videos"], *(_num(m[k]) for k in keys)]
                                                          for name, m in table.items()]))
    clips = sorted(run.read(features.split(split)), key=lambda c: (c.label == "normal", c.clip_id))
    parts += _score_curves(run, features, clips[:n_curves], assets, f"{run_dir.name}_{split}", h)
    return "\n".join(parts)


def _autoencoder_section(run: FeatureRun, run_dir: Path, assets: Path, split: str, n_curves: int,
                         heading_level: int) -> str:
    """An autoencoder run: its frame-level evaluation (``avar evaluate RUN --data DATA``, run on
    the data it was trained on when not done yet), the ROC and per-video score plots."""
    from avar.methods.autoencoder.evaluate import evaluate_autoencoder

    h = f"h{heading_level}"
    eval_path = run_dir / "eval_frames.json"
    if not eval_path.is_file():
        data = (run.record.data or {}).get("root")
        if not data or not Path(data).is_dir():
            raise ValueError(f"{run_dir}: no eval_frames.json and the training data is not at {data!r}; "
                             f"run `avar evaluate {run_dir} --data DATA_DIR` first")
        evaluate_autoencoder(run_dir, data, progress=False)
    report = json.loads(eval_path.read_text())
    rows = [["run", str(run_dir)], ["data", report["data_dir"]], ["modality", report["modality"]],
            ["test videos / frames (anomalous)", f"{report['n_videos']} / {report['n_frames']} ({report['n_anomalous']})"],
            ["reported scorer", report["score"]], ["frame AUC / EER", f"{_num(report['frame_auc'])} / {_num(report['eer'])}"],
            ["threshold", f"gamma {report['gamma']:.3f} ({report['threshold_source']})"]]
    parts = [f"<{h}>Summary (test videos, pooled frames)</{h}>", _table(["metric", "value"], rows),
             _table(["scorer", "frame AUC", "EER"], [[name, _num(r["auc"]), _num(r["eer"])]
                                                     for name, r in report["scorers"].items()])]
    plots = [Path(p) for p in report.get("plots", []) if Path(p).is_file()]
    roc = [p for p in plots if p.name == "roc.png"]
    parts.append(f"<{h}>Score over time and ROC</{h}>")
    for path in roc + [p for p in plots if p.name != "roc.png"][:n_curves]:
        parts.append(_figure_html(path, path.stem, f"{path.stem}: the reported scorer per frame, true anomaly shaded"
                                  if path.name != "roc.png" else "ROC of every scorer, all test frames pooled"))
    return "\n".join(parts)


def _score_curves(run: FeatureRun, features: FeatureSet, clips: list[StepFeatures], assets: Path, prefix: str,
                  h: str, per_class: bool = False) -> list[str]:
    """The anomaly score over time of ``clips`` as ``avar predict`` scores them, with the true
    interval of synthetic clips shaded (and each anomaly class's probability with ``per_class``)."""
    parts = [f"<{h}>Anomaly score over time</{h}>"]
    # Caches made from published features (FeatureSet.create) record no media path.
    media = {c["clip_id"]: Path(c["path"]) for c in features.clips if c.get("path")}
    for clip in clips:
        step_probs, clip_probs = run.probabilities(clip.video, clip.audio)
        predicted = run.classes[int(clip_probs.argmax())]
        interval = known_interval(media[clip.clip_id]) if clip.clip_id in media else None
        path = plot_score_curve(
            clip.times, run.anomaly_score(step_probs), assets / f"{prefix}_curve_{clip.clip_id}.png",
            class_probs={name: step_probs[:, k] for k, name in enumerate(run.classes) if name != "normal"}
            if per_class else None,
            interval=interval, title=f"{clip.clip_id}: true {clip.label}, predicted {predicted}",
        )
        shading = "true anomaly shaded" if interval else "true interval unknown"
        parts.append(_figure_html(path, f"anomaly score of {clip.clip_id}",
                                  f"{clip.clip_id}: true {clip.label}, predicted {predicted} "
                                  f"(p={clip_probs.max():.2f}); {shading}."))
    return parts


SECTIONS = {"supervised": _classifier_section, "weak": _detector_section, "unsupervised": _autoencoder_section}
"""A run's section by its learning regime (:attr:`avar.methods.table.Method.learning`): what a
method reports follows from what it learns from, so a new method of a known regime needs none."""


def pick_curve_clips(clips: list[StepFeatures], classes: list[str], n: int) -> list[StepFeatures]:
    """``n`` clips to draw: one anomalous clip per class first (in ``classes`` order, lowest
    clip id of each), then the other anomalous clips, then normal ones, by clip id."""
    ordered = sorted(clips, key=lambda c: (c.label == "normal", c.clip_id))
    first_of_class: dict[str, StepFeatures] = {}
    for clip in ordered:
        if clip.label != "normal":
            first_of_class.setdefault(clip.label, clip)
    chosen = [first_of_class[name] for name in classes if name in first_of_class]
    taken = {c.clip_id for c in chosen}
    return (chosen + [c for c in ordered if c.clip_id not in taken])[:n]


def known_interval(media_path: Path) -> tuple[float, float] | None:
    """The true anomaly ``(start_s, end_s)`` of a synthetic clip from its ``metadata.json``.

    The metadata sits in the dataset root, above ``<class>/<clip>``, so the search starts at
    the media file's grandparent and walks up; None when there is no metadata, the clip is
    not listed, or it is a normal clip.
    """
    start = media_path.parent.parent
    for folder in (start, *start.parents):
        meta = folder / METADATA_FILE
        if meta.is_file():
            clips = json.loads(meta.read_text()).get("clips", [])
            relative = media_path.relative_to(folder).as_posix()
            for clip in clips:
                if clip.get("path") == relative and clip.get("interval"):
                    start_s, end_s = clip["interval"]
                    return float(start_s), float(end_s)
            return None
    return None


# ---- figures ------------------------------------------------------------------------------


def _grouped_bars(groups: list[str], series: dict[str, list[float]], path: Path, title: str, ylabel: str,
                  errors: dict[str, list[float]] | None = None) -> Path:
    """Bars of every series side by side within each group, with optional error bars."""
    fig = new_figure(max(5.0, 0.5 * len(groups) * len(series) + 2.5), 3.8)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name,
               yerr=None if errors is None else errors[name], capsize=3)
    ax.set_xticks(x, groups, rotation=30 if len(groups) > 6 else 0, ha="right" if len(groups) > 6 else "center")
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.8)
    fig.tight_layout()
    return save_figure(fig, path)


def fused_clip_features(run: Run, clips: list[StepFeatures]) -> np.ndarray:
    """``[N, dv + da]``: each clip's run-normalised ``[video, audio]`` steps, averaged over time."""
    rows = []
    for clip in clips:
        video, audio = run.normalise(clip.video, clip.audio)
        rows.append(np.concatenate([video, audio], axis=1).mean(axis=0))
    return np.stack(rows)


def _tsne_map(run: Run, clips: list[StepFeatures], path: Path) -> Path:
    features = fused_clip_features(run, clips)
    tsne = TSNE(n_components=2, init="pca", random_state=0, perplexity=min(30, len(clips) - 1))
    # torch and scikit-learn each bring their own libgomp; with both loaded, t-SNE's OpenMP
    # gradient spins against torch's idle pool and 24 clips took 50 s instead of 0.1 s.
    with threadpool_limits(limits=1, user_api="openmp"):
        points = tsne.fit_transform(features)
    labels = np.array([c.label for c in clips])
    fig = new_figure(6.5, 5.0)
    ax = fig.add_subplot()
    for k, name in enumerate(c for c in run.classes if c in set(labels)):
        mine = labels == name
        # Ten colours in the cycle; past ten classes the marker keeps them apart.
        ax.scatter(points[mine, 0], points[mine, 1], s=18, color=f"C{k % 10}", marker="o^s"[k // 10 % 3], label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("t-SNE of fused clip features")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), framealpha=0.8)
    fig.tight_layout()
    return save_figure(fig, path)
