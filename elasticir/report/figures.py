"""Paper figures (matplotlib, one style, PDF + PNG): layer x dim heatmaps, difference heatmaps with significance
marks, effectiveness-vs-cost Pareto plots and diagonal curves.

Colour choices are colour-blind safe: viridis for values (perceptually uniform, readable in greyscale), the
ColorBrewer RdBu diverging map centred at 0 for differences (blue = the run is better), and the Okabe-Ito palette
plus distinct markers for runs, so no figure relies on colour alone.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colors
from matplotlib.patches import Rectangle

from elasticir.cells import Cell
from elasticir.evaluation.significance import pareto_front

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "h"]
VALUE_CMAP = "viridis"
DIFF_CMAP = "RdBu"
SINGLE_COLUMN = 3.4  # inches (ACL / SIGIR single column)
DOUBLE_COLUMN = 7.0

PAPER_STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "figure.dpi": 100,
    "savefig.dpi": 220,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by every publisher
    "ps.fonttype": 42,
}


@contextmanager
def paper_style():
    with plt.rc_context(PAPER_STYLE):
        yield


def save(fig, stem: Path, formats: Sequence[str] = ("pdf", "png")) -> list[Path]:
    """Write stem.pdf and stem.png (or the given formats); close the figure."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(f".{fmt}") for fmt in formats]
    for path in paths:
        fig.savefig(path)
    plt.close(fig)
    return paths


def fmt_value(value: float, digits: int = 3, signed: bool = False) -> str:
    """Paper-style number: .820 (leading zero dropped for |x| < 1), +.012 / \u2212.034 for differences."""
    if value is None or not np.isfinite(value):
        return "n/a"
    text = f"{abs(value):.{digits}f}"
    if abs(value) < 1:
        text = text.lstrip("0") or "0"
    if value < 0 and float(text) != 0:
        return "\u2212" + text
    return ("+" if signed and float(text) != 0 else "") + text


def _text_colour(rgba) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


def _grid_axes(ax, layers: Sequence[int], dims: Sequence[int],
               labels: tuple[str, str] = ("embedding dim d", "layer L")) -> None:
    ax.set_xticks(range(len(dims)), [str(d) for d in dims])
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _outline(ax, layers, dims, cells, colour="black") -> int:
    """Outline the given cells (white inner line + dark outer line: visible on any background)."""
    drawn = 0
    for layer, dim in cells:
        if layer in layers and dim in dims:
            x, y = list(dims).index(dim), list(layers).index(layer)
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor=colour, lw=2.2, zorder=3))
            ax.add_patch(Rectangle((x - 0.44, y - 0.44), 0.88, 0.88, fill=False, edgecolor="white", lw=0.8, zorder=4))
            drawn += 1
    return drawn


def heatmap(grid: pd.DataFrame, stem: Path, *, title: str, colorbar_label: str, pairs: Sequence = (),
            note: str | None = None, cmap: str = VALUE_CMAP, digits: int = 3,
            formats: Sequence[str] = ("pdf", "png"), marks: Sequence = (),
            axis_labels: tuple[str, str] = ("embedding dim d", "layer L"),
            outline_note: str = "Outlined: pair-list (diagonal) cells.") -> list[Path]:
    """Layer x dim heatmap (layers bottom to top, dims left to right), value printed in every cell, pair-list
    cells outlined, a red "!" in the corner of every (layer, dim) in `marks` (flagged anomalies). `grid`:
    index = layers, columns = dims (or any two axes, named by `axis_labels` (x, y), with `pairs` the (row,
    column) cells to outline and `outline_note` saying what they are)."""
    layers, dims = list(grid.index), list(grid.columns)
    values = grid.to_numpy(dtype=float)
    width = max(SINGLE_COLUMN, 0.62 * len(dims) + 1.4)
    height = 0.36 * len(layers) + 1.2 + (0.25 if note else 0)
    with paper_style():
        fig, ax = plt.subplots(figsize=(width, height))
        finite = values[np.isfinite(values)]
        norm = colors.Normalize(finite.min(), finite.max()) if finite.size else colors.Normalize(0, 1)
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, origin="lower", aspect="auto")
        mapper = plt.get_cmap(cmap)
        for (row, col), value in np.ndenumerate(values):
            colour = _text_colour(mapper(norm(value))) if np.isfinite(value) else "black"
            ax.text(col, row, fmt_value(value, digits), ha="center", va="center", fontsize=7, color=colour, zorder=5)
        _grid_axes(ax, layers, dims, axis_labels)
        outlined = _outline(ax, layers, dims, pairs)
        for layer, dim in marks:
            if layer in layers and dim in dims:
                ax.text(dims.index(dim) + 0.42, layers.index(layer) + 0.4, "!", ha="right", va="top", fontsize=8,
                        fontweight="bold", color="#d62728", zorder=6)
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        bar.set_label(colorbar_label)
        bar.ax.tick_params(labelsize=6)
        ax.set_title(title)
        flagged = any(layer in layers and dim in dims for layer, dim in marks)
        if note or outlined or flagged:
            text = (note + " " if note else "") + (outline_note if outlined else "")
            text += " !: flagged anomaly (values unchanged)." if flagged else ""
            _text_below(fig, ax, _wrap(text.strip(), int(width * 17)))
        return save(fig, stem, formats)


def diff_heatmap(diff: pd.DataFrame, significant: pd.DataFrame, stem: Path, *, title: str, colorbar_label: str,
                 legend: str, pairs: Sequence = (), digits: int = 3) -> list[Path]:
    """Difference heatmap centred at 0 (RdBu: blue = better than the baseline), '*' after significant values,
    grey 'n/a' for cells the baseline does not have. `legend` names the test and the correction."""
    layers, dims = list(diff.index), list(diff.columns)
    values = diff.to_numpy(dtype=float)
    marks = significant.reindex(index=layers, columns=dims).fillna(False).to_numpy(dtype=bool)
    width = max(SINGLE_COLUMN, 0.68 * len(dims) + 1.5)
    height = 0.36 * len(layers) + 1.5
    with paper_style():
        fig, ax = plt.subplots(figsize=(width, height))
        finite = values[np.isfinite(values)]
        half = float(np.max(np.abs(finite))) if finite.size else 0.0
        half = half if half > 0 else 1e-3
        norm = colors.CenteredNorm(vcenter=0.0, halfrange=half)
        ax.set_facecolor("#d9d9d9")
        image = ax.imshow(np.ma.masked_invalid(values), cmap=DIFF_CMAP, norm=norm, origin="lower", aspect="auto")
        mapper = plt.get_cmap(DIFF_CMAP)
        for (row, col), value in np.ndenumerate(values):
            if np.isfinite(value):
                label = fmt_value(value, digits, signed=True) + ("*" if marks[row, col] else "")
                ax.text(col, row, label, ha="center", va="center", fontsize=7, zorder=5,
                        color=_text_colour(mapper(norm(value))), fontweight="bold" if marks[row, col] else "normal")
            else:
                ax.text(col, row, "n/a", ha="center", va="center", fontsize=6.5, color="#555555", zorder=5)
        _grid_axes(ax, layers, dims)
        _outline(ax, layers, dims, pairs)
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        bar.set_label(colorbar_label)
        bar.ax.tick_params(labelsize=6)
        ax.set_title(title)
        _text_below(fig, ax, _wrap(legend, int(width * 17)))
        return save(fig, stem)


def _text_below(fig, ax, text: str) -> None:
    """A legend paragraph under everything the axes draw (tick labels, axis label): a fixed figure position
    would overlap the axis label of a short figure (a grid of one or two layers)."""
    fig.canvas.draw()
    bottom = ax.get_tightbbox(fig.canvas.get_renderer()).y0 / fig.bbox.height
    fig.text(0.01, min(-0.02, bottom - 0.03), text, ha="left", va="top", fontsize=6.5)


def _plain_log_axis(axis) -> None:
    """Log axis with plain tick labels (0.2, 5, 20) instead of 2x10^-1."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    formatter = FuncFormatter(lambda v, _: f"{v:g}")
    # 1-1.5-2-3-5-7 per decade: four or more labelled ticks even when the data span less than one decade; data
    # spanning decades get 1-2-5 (or 1) per decade, so that the labels do not run into each other
    low, high = sorted(abs(v) for v in axis.get_data_interval())
    decades = np.log10(high / low) if low > 0 and np.isfinite(high / low) else 0.0
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1.3 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _line_pixels(ax, lines: Sequence[tuple[Sequence[float], Sequence[float]]], step: float = 2.0) -> list:
    """Points every `step` pixels along each polyline (data coordinates), and along every horizontal or vertical
    reference line drawn on the axes: what a label must not touch."""
    pixels = []
    polylines = [np.column_stack([xs, ys]) for xs, ys in lines if len(xs) > 1]
    for line in ax.get_lines():  # axhline / axvline references, in axes-relative coordinates
        xs, ys = line.get_xdata(), line.get_ydata()
        if line.get_transform() != ax.transData and len(xs) == 2:
            corners = line.get_transform().transform(np.column_stack([xs, ys]))
            polylines.append(ax.transData.inverted().transform(corners))
    for line in polylines:
        points = ax.transData.transform(np.asarray(line, dtype=float))
        for (x0, y0), (x1, y1) in pairwise(points):
            count = max(2, int(np.hypot(x1 - x0, y1 - y0) / step))
            pixels += list(zip(np.linspace(x0, x1, count), np.linspace(y0, y1, count)))
    return pixels


def place_labels(ax, points: list[tuple[float, float, str, str]], fontsize: float = 5.5,
                 occupied: list | None = None, lines: Sequence = (), avoid: Sequence = ()) -> list:
    """Label points without overlaps: try a few offsets around each point, skip a label that fits nowhere.

    points: (x, y, text, colour) in data coordinates; lines: polylines ([xs], [ys]) the labels must not touch
    (reference lines drawn with axhline are found by themselves); avoid: other plotted (x, y) markers a label
    must not cover (many runs' points crowd the cheap end); labels stay inside the axes. Returns the
    occupied boxes (pixels), so several calls (one per run) can share them.
    """
    occupied = [] if occupied is None else occupied
    ax.figure.canvas.draw()  # fix limits and transforms
    scale = ax.figure.dpi / 72.0
    height = fontsize * 1.25 * scale
    frame = ax.get_window_extent()
    obstacles = np.array(_line_pixels(ax, lines) or [(np.nan, np.nan)])
    markers = [ax.transData.transform((x, y)) for x, y, _, _ in points]
    others = markers + [ax.transData.transform(p) for p in avoid if np.all(np.isfinite(p))]
    for (x, y, text, colour), (px, py) in zip(points, markers):
        width = len(text) * fontsize * 0.68 * scale
        for dx, dy in ((4, 2), (4, -8), (-4, 2), (-4, -8), (4, 9), (4, -15), (-4, 9), (-4, -15)):
            left = px + dx * scale if dx > 0 else px + dx * scale - width
            bottom = py + dy * scale
            box = (left, bottom, left + width, bottom + height)
            clash = any(not (box[2] < o[0] or box[0] > o[2] or box[3] < o[1] or box[1] > o[3]) for o in occupied)
            clash = clash or any(box[0] - 3 < mx < box[2] + 3 and box[1] - 3 < my < box[3] + 3 for mx, my in others)
            clash = clash or bool(np.any((obstacles[:, 0] > box[0] - 1) & (obstacles[:, 0] < box[2] + 1)
                                         & (obstacles[:, 1] > box[1] - 1) & (obstacles[:, 1] < box[3] + 1)))
            clash = clash or box[0] < frame.x0 or box[2] > frame.x1 or box[1] < frame.y0 or box[3] > frame.y1
            if not clash:
                occupied.append(box)
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                            color=colour, ha="left" if dx > 0 else "right", va="bottom", zorder=6)
                break
    return occupied


def pareto(series: list[dict], stem: Path, *, title: str, xlabel: str, ylabel: str, reference: dict | None = None,
           note: str | None = None, log_x: bool = True, label_front: bool = True) -> list[Path]:
    """Effectiveness vs cost: every cell of every run a point, each run's Pareto front connected, the full model
    starred, and `reference` (e.g. {"BM25": 0.665}) drawn as horizontal lines.

    series: [{"label", "cost": [...], "value": [...], "cells": [(L, d), ...], "full": (L, d)}]
    """
    with paper_style():
        fig, ax = plt.subplots(figsize=(SINGLE_COLUMN * 1.35, 3.0 + (0.3 if note else 0)))
        to_label, fronts = [], []
        for k, run in enumerate(series):
            colour, marker = OKABE_ITO[k % len(OKABE_ITO)], MARKERS[k % len(MARKERS)]
            cost, value = np.asarray(run["cost"], float), np.asarray(run["value"], float)
            ax.scatter(cost, value, s=12, marker=marker, facecolor="none", edgecolor=colour, lw=0.7, alpha=0.75,
                       zorder=2)
            front = pareto_front(cost, value)
            fronts.append((cost[front], value[front]))
            ax.plot(cost[front], value[front], marker=marker, color=colour, ms=4.5, lw=1.2, zorder=3,
                    label=f"{run['label']} (Pareto front)")
            if run.get("full") in run["cells"]:
                i = run["cells"].index(run["full"])
                ax.scatter([cost[i]], [value[i]], marker="*", s=110, color=colour, edgecolor="black", lw=0.6,
                           zorder=5, label=f"{run['label']} full {Cell(*run['full'])}")
            if label_front:
                to_label += [(cost[i], value[i], f"{run['cells'][i][0]},{run['cells'][i][1]}", colour) for i in front]
        for j, (name, level) in enumerate((reference or {}).items()):
            if level is not None and np.isfinite(level):
                ax.axhline(level, color="#555555", ls=("--", ":", "-.")[j % 3], lw=0.9, zorder=1,
                           label=f"{name} ({fmt_value(level)})")
        if log_x:
            ax.set_xscale("log")
            _plain_log_axis(ax.xaxis)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="major", lw=0.3, color="#cccccc")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2, handletextpad=0.4, columnspacing=1.2)
        ax.margins(x=0.06, y=0.1)  # room for the labels of the extreme points inside the axes
        points = [(c, v) for run in series for c, v in zip(run["cost"], run["value"])]
        place_labels(ax, to_label, lines=fronts, avoid=points)
        if note:
            fig.text(0.01, -0.02, _wrap(note, 80), ha="left", va="top", fontsize=6.5)
        return save(fig, stem)


def _diagonal_labels(series: list[dict]) -> list[tuple]:
    """(x, y, "L,d", colour) point labels. Runs that share one pair list at the same costs (several methods
    trained from one model) get each cell labelled once, above the highest run there, in grey: one label per
    run and cell would pile up on each other."""
    shared = len(series) > 1 and all(run["cells"] == series[0]["cells"] and np.allclose(run["x"], series[0]["x"])
                                     for run in series)
    if shared:
        tops = np.nanmax(np.array([run["y"] for run in series], dtype=float), axis=0)
        return [(x, y, f"{layer},{dim}", "#333333")
                for x, y, (layer, dim) in zip(series[0]["x"], tops, series[0]["cells"])]
    return [(x, y, f"{layer},{dim}", OKABE_ITO[k % len(OKABE_ITO)])
            for k, run in enumerate(series) for x, y, (layer, dim) in zip(run["x"], run["y"], run["cells"])]


def diagonal_curves(panels: list[dict], stem: Path, *, xlabel: str, note: str | None = None) -> list[Path]:
    """Metric along each run's pair list (diagonal) against a cost, one panel per dataset, runs overlaid.

    panels: [{"title", "ylabel", "series": [{"label", "x": [...], "y": [...], "cells": [...]}],
              "reference": {"BM25": value} | None}]
    """
    columns = min(3, len(panels))
    rows = int(np.ceil(len(panels) / columns))
    with paper_style():
        fig, axes = plt.subplots(rows, columns, figsize=(DOUBLE_COLUMN, 2.1 * rows + (0.3 if note else 0)),
                                 squeeze=False)
        panel_labels, panel_lines = [], []
        for ax, panel in zip(axes.flat, panels):
            labels = []
            panel_labels.append(labels)
            panel_lines.append([(run["x"], run["y"]) for run in panel["series"]])
            for k, run in enumerate(panel["series"]):
                colour, marker = OKABE_ITO[k % len(OKABE_ITO)], MARKERS[k % len(MARKERS)]
                ax.plot(run["x"], run["y"], marker=marker, color=colour, label=run["label"])
            labels += _diagonal_labels(panel["series"])
            for j, (name, level) in enumerate((panel.get("reference") or {}).items()):
                if level is not None and np.isfinite(level):
                    ax.axhline(level, color="#555555", ls="--", lw=0.9, label=f"{name} ({fmt_value(level)})")
            ax.set_xscale("log")
            _plain_log_axis(ax.xaxis)
            ax.margins(x=0.1, y=0.15)  # room for the labels of the end points inside the axes
            ax.set_title(panel["title"])
            ax.set_ylabel(panel["ylabel"])
            ax.set_xlabel(xlabel)
            ax.grid(True, lw=0.3, color="#cccccc")
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        handles, labels = [], []
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                if label not in labels:
                    handles.append(handle)
                    labels.append(label)
        ncol = min(4, len(labels))
        fig.legend(handles, labels, loc="upper center", ncol=ncol, bbox_to_anchor=(0.5, 1.0))
        legend_rows = int(np.ceil(len(labels) / max(ncol, 1)))  # keep every legend row above the panel titles
        fig.tight_layout(rect=(0, 0, 1, 1 - (0.075 if rows == 1 else 0.04) * legend_rows))
        for ax, labels, lines in zip(axes.flat, panel_labels, panel_lines):
            place_labels(ax, labels, lines=lines)
        if note:
            fig.text(0.01, -0.01, _wrap(note, 160), ha="left", va="top", fontsize=6.5)
        return save(fig, stem)
