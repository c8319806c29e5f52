"""PNG figures for reports: confusion matrix, anomaly score over time or frames, bar chart.

Figures are built on matplotlib's object API with an explicit Agg canvas rather than
``pyplot``, so nothing depends on (or changes) the global backend, no window can open,
and figures are freed when the function returns, even on servers without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_DPI = 120


def plot_confusion(
    confusion: np.ndarray | list[list[int]],
    classes: list[str],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Confusion matrix (rows true, columns predicted) annotated with counts.

    Colour is the row-normalised fraction, so a rare class's errors stand out as much as
    a common one's; a class with no true clips has an all-zero row.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    n = len(classes)
    if counts.shape != (n, n):
        raise ValueError(f"confusion must be [{n}, {n}] for {n} classes, got shape {counts.shape}")
    row_totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)

    side = max(4.0, 0.6 * n + 2.5)
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    for i in range(n):
        for j in range(n):
            # White text on dark cells, black on light, so counts stay readable.
            colour = "white" if fractions[i, j] > 0.5 else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_score_curve(
    times_s: np.ndarray,
    anomaly_score: np.ndarray,
    path: str | Path,
    *,
    class_probs: dict[str, np.ndarray] | None = None,
    top_k: int = 3,
    interval: tuple[float, float] | None = None,
    title: str | None = None,
) -> Path:
    """Anomaly score (0..1) against time in seconds, one value per step.

    ``class_probs`` maps class name to ``[T]`` probabilities aligned with ``times_s``; the
    ``top_k`` classes by mean probability are drawn dashed (leave ``normal`` out of the
    dict if its curve would only mirror the anomaly score). ``interval`` is the true
    anomaly ``(start_s, end_s)``, shaded when given.
    """
    times = np.asarray(times_s, dtype=np.float64)
    score = np.asarray(anomaly_score, dtype=np.float64)
    if times.ndim != 1 or times.shape != score.shape:
        raise ValueError(
            f"times_s and anomaly_score must be 1-D and the same length, got {times.shape} and {score.shape}"
        )
    curves = {name: np.asarray(p, dtype=np.float64) for name, p in (class_probs or {}).items()}
    for name, p in curves.items():
        if p.shape != times.shape:
            raise ValueError(
                f"class_probs['{name}'] has shape {p.shape}, expected {times.shape} like times_s"
            )
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")

    fig = new_figure(9.0, 3.5)
    ax = fig.add_subplot()
    if interval is not None:
        start, end = interval
        ax.axvspan(start, end, color="tab:red", alpha=0.15, label="true anomaly")
    ax.plot(times, score, color="black", linewidth=2.0, label="anomaly score")
    top = sorted(curves, key=lambda name: float(curves[name].mean()), reverse=True)[:top_k]
    for name in top:
        ax.plot(times, curves[name], linestyle="--", linewidth=1.2, label=f"P({name})")
    ax.set_ylim(-0.02, 1.02)
    if times.size:
        ax.set_xlim(times.min(), times.max())
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score / probability")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_step_scores(
    times_s: np.ndarray,
    curves: dict[str, np.ndarray],
    path: str | Path,
    *,
    interval: tuple[float, float] | None = None,
    title: str | None = None,
) -> Path:
    """Several runs' anomaly scores (0..1) of one clip against time in seconds, one value per
    step: ``curves`` maps a legend name to ``[T]`` scores aligned with ``times_s`` (the first
    drawn solid and bold); ``interval`` is the true anomaly ``(start_s, end_s)``, shaded."""
    times = np.asarray(times_s, dtype=np.float64)
    if times.ndim != 1 or not curves:
        raise ValueError("plot_step_scores needs 1-D times and at least one curve")
    for name, values in curves.items():
        if np.shape(values) != times.shape:
            raise ValueError(f"curve '{name}' has shape {np.shape(values)}, expected {times.shape} like times_s")
    fig = new_figure(7.0, 2.8)
    ax = fig.add_subplot()
    if interval is not None:
        ax.axvspan(*interval, color="tab:red", alpha=0.15, label="true anomaly")
    for k, (name, values) in enumerate(curves.items()):
        style = {"color": "black", "linewidth": 1.8} if k == 0 else {"linestyle": "--", "linewidth": 1.4}
        ax.plot(times, np.asarray(values, dtype=np.float64), label=name, marker=".", **style)
    ax.set_ylim(-0.02, 1.02)
    return _finish_line_plot(fig, ax, path, "time (s)", "anomaly score", "upper left", title)


def plot_frame_scores(
    curves: dict[str, np.ndarray],
    labels: np.ndarray,
    path: str | Path,
    *,
    threshold: float | None = None,
    title: str | None = None,
) -> Path:
    """Per-frame anomaly scores (0..1) of one video against frame number, ground truth shaded.

    ``curves`` maps a legend name to ``[N]`` scores (the first is drawn solid and bold, the
    rest dashed); ``labels`` is ``bool [N]``, every run of True frames is shaded; ``threshold``
    draws the decision line on the scores.
    """
    truth = np.asarray(labels, dtype=bool)
    if truth.ndim != 1 or not curves:
        raise ValueError("plot_frame_scores needs 1-D labels and at least one curve")
    frames = np.arange(truth.size)
    for name, values in curves.items():
        if np.shape(values) != truth.shape:
            raise ValueError(f"curve '{name}' has shape {np.shape(values)}, expected {truth.shape} like labels")
    fig = new_figure(7.0, 2.6)
    ax = fig.add_subplot()
    edges = np.flatnonzero(np.diff(np.r_[0, truth.astype(np.int8), 0]))
    for k, (start, stop) in enumerate(zip(edges[::2], edges[1::2])):
        # Half a frame either side so a one-frame anomaly still shows.
        ax.axvspan(start - 0.5, stop - 0.5, color="tab:red", alpha=0.15, label="true anomaly" if k == 0 else None)
    for k, (name, values) in enumerate(curves.items()):
        style = {"color": "black", "linewidth": 1.8} if k == 0 else {"linestyle": "--", "linewidth": 1.0}
        ax.plot(frames, np.asarray(values, dtype=np.float64), label=name, **style)
    if threshold is not None:
        ax.axhline(threshold, color="tab:blue", linewidth=0.8, linestyle=":", label="threshold")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(-0.5, truth.size - 0.5)
    return _finish_line_plot(fig, ax, path, "frame", "anomaly score", "upper left", title)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str | None = None) -> Path:
    """ROC curves on one set of axes: ``curves`` maps a legend name to ``(fpr, tpr)``.

    The first curve is drawn solid and bold, the rest thinner; the chance diagonal is dotted.
    """
    if not curves:
        raise ValueError("plot_roc needs at least one curve")
    fig = new_figure(4.2, 4.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    for k, (name, (fpr, tpr)) in enumerate(curves.items()):
        style = {"color": "black", "linewidth": 1.8} if k == 0 else {"linewidth": 1.0}
        ax.plot(np.asarray(fpr), np.asarray(tpr), label=name, **style)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    return _finish_line_plot(fig, ax, path, "false positive rate", "true positive rate", "lower right", title)


def _finish_line_plot(fig: Figure, ax, path: str | Path, xlabel: str, ylabel: str, legend: str, title: str | None) -> Path:
    """Axis labels, grid, a small legend at ``legend``, the optional title; saved to ``path``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend, fontsize=7, framealpha=0.8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_bars(values: dict[str, float], path: str | Path, title: str, ylabel: str, fmt: str = "%.3f") -> Path:
    """One bar per entry, in dict order, labelled with its value as ``fmt`` writes it (e.g. AUC
    per modality; ``"%d"`` for counts)."""
    if not values:
        raise ValueError("plot_bars needs at least one value")
    names = list(values)
    heights = [float(values[name]) for name in names]

    fig = new_figure(max(4.0, 1.1 * len(names) + 2.0), 3.5)
    ax = fig.add_subplot()
    bars = ax.bar(names, heights, color="tab:blue")
    ax.bar_label(bars, fmt=fmt, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def new_figure(width_in: float, height_in: float) -> Figure:
    """A figure on an Agg canvas of its own: never a window, never pyplot's global state."""
    fig = Figure(figsize=(width_in, height_in), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path
