"""The figures of ``stackkit report``, drawn by matplotlib on its Agg canvas, returned as PNGs.

Each function takes the numbers from :mod:`stackkit.report.stats` and returns one PNG; nothing
here reads files or knows about HTML.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
ENSEMBLE_COLOR = "#d1495b"
RUN_COLOR = "#30638e"


def figure(nrows: int = 1, ncols: int = 1, figsize=(8, 5), **kw):
    """A Figure on the Agg canvas (no pyplot, no global backend state) and its axes."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kw)


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _annotate(ax, values: np.ndarray, fmt: str, hide_below: float | None = None, cut=0.6):
    for (i, j), v in np.ndenumerate(values):
        if np.isnan(v) or (hide_below is not None and abs(v) < hide_below):
            continue
        color = "white" if v > cut else "black"
        ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7.5, color=color)


def fold_spread(names: list[str], per_fold: list[list[float]], whole: list[float]) -> bytes:
    """One row per model: each fold's macro-F1 as a dot, the whole-vector score as a bar."""
    fig, ax = figure(figsize=(9, 0.45 * len(names) + 1.2))
    y = np.arange(len(names))[::-1]
    for yi, name, folds, score in zip(y, names, per_fold, whole):
        color = ENSEMBLE_COLOR if name.startswith("ensemble") else RUN_COLOR
        ax.scatter(folds, np.full(len(folds), yi), color=color, alpha=0.55, s=28, zorder=3)
        ax.plot([score, score], [yi - 0.3, yi + 0.3], color=color, lw=2.5, zorder=4)
    ax.set_yticks(y, names)
    ax.set_xlabel("macro-F1 (dots: single folds; bar: whole OOF vector)")
    ax.grid(axis="x", alpha=0.3)
    return to_png(fig)


def class_f1_heatmap(classes: list[str], names: list[str], f1: np.ndarray) -> bytes:
    """``f1``: (n_classes, n_models), one column per run and the ensemble last."""
    fig, ax = figure(figsize=(1.1 * len(names) + 3, 0.32 * len(classes) + 1.2))
    ax.imshow(f1, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    _annotate(ax, f1, ".2f", cut=-1)
    for t in ax.texts:  # viridis is dark at 0 and light at 1
        t.set_color("black" if float(t.get_text()) > 0.55 else "white")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_title("F1 per class")
    return to_png(fig)


def confusion(classes: list[str], cm: np.ndarray) -> bytes:
    n = len(classes)
    size = max(5.0, 0.45 * n + 2)
    fig, ax = figure(figsize=(size, size))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    _annotate(ax, cm, ".2f", hide_below=0.005)
    ax.set_xticks(range(n), classes, rotation=60, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, fraction=0.04, label="share of the true class")
    return to_png(fig)


def diversity(names: list[str], corr: np.ndarray, disagree: np.ndarray) -> bytes:
    """Two heatmaps in the same (clustered) run order: error correlation and disagreement."""
    r = len(names)
    side = max(3.5, 0.55 * r + 2)
    fig, axes = figure(1, 2, figsize=(2 * side + 1, side))
    panels = [
        (corr, "error correlation", "RdBu_r", -1, 1),
        (disagree, "disagreement rate", "Oranges", 0, max(0.05, float(disagree.max()))),
    ]
    for ax, (m, title, cmap, lo, hi) in zip(axes, panels):
        m = m.astype(np.float64)  # a copy: the diagonal (a run with itself) is left blank
        np.fill_diagonal(m, np.nan)
        im = ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi)
        _annotate(ax, m, ".2f", cut=hi * 0.75)
        ax.set_xticks(range(r), names, rotation=45, ha="right")
        ax.set_yticks(range(r), names)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return to_png(fig)


def bars(names: list[str], values: list[float], xlabel: str, fmt: str = "+.4f") -> bytes:
    """Horizontal bars, one per run, with the value written at the end of each bar."""
    fig, ax = figure(figsize=(8, 0.4 * len(names) + 1.2))
    y = np.arange(len(names))[::-1]
    v = np.asarray(values, dtype=np.float64)
    colors = [RUN_COLOR if x >= 0 else ENSEMBLE_COLOR for x in v]
    ax.barh(y, v, color=colors)
    ax.axvline(0, color="black", lw=0.8)
    span = float(np.abs(v).max()) or 1.0
    for yi, x in zip(y, v):
        ax.text(x + np.sign(x or 1) * span * 0.02, yi, format(x, fmt), va="center",
                ha="left" if x >= 0 else "right", fontsize=8)  # fmt: skip
    lo = v.min() - span * 0.25 if v.min() < 0 else 0.0
    ax.set_xlim(lo, max(0.0, v.max()) + span * 0.25)
    ax.set_yticks(y, names)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return to_png(fig)


def reliability(curves: dict[str, dict]) -> bytes:
    """``curves``: label -> report_stats.reliability(...); bins with no samples are skipped."""
    fig, (ax, hist) = figure(
        2, 1, figsize=(6.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfectly calibrated")
    for (label, c), color in zip(curves.items(), [ENSEMBLE_COLOR, RUN_COLOR, "#edae49"]):
        keep = c["count"] > 0
        ax.plot(c["confidence"][keep], c["accuracy"][keep], "o-", color=color,
                label=f"{label} (ECE {c['ece']:.3f})")  # fmt: skip
        centers = (c["edges"][:-1] + c["edges"][1:]) / 2
        hist.plot(centers, c["count"] / c["count"].sum(), "o-", color=color, ms=3)
    ax.set_ylabel("accuracy in the bin")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    hist.set_xlabel("confidence (probability of the predicted class)")
    hist.set_ylabel("share of samples")
    hist.set_xlim(0, 1)
    hist.grid(alpha=0.3)
    return to_png(fig)
