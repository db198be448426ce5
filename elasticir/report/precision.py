"""The precision facet of a report: one heatmap per precision, and every (L, d, precision) point on one Pareto
plot with the index size as its cost (what quantisation buys), plus a table of the points.

Only runs evaluated with --precisions have it; float32-only reports are unchanged (RunData.points is None).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from elasticir.cells import Cell
from elasticir.report import figures

PRECISION_ORDER = ("float32", "float16", "int8", "binary+rescore", "binary")


def precisions_of(points: pd.DataFrame) -> list[str]:
    found = [p if isinstance(p, str) else "float32" for p in points.precision.unique()]
    return sorted(set(found), key=lambda p: PRECISION_ORDER.index(p) if p in PRECISION_ORDER else 99)


def precision_grid(points: pd.DataFrame, precision: str, metric: str) -> pd.DataFrame:
    """Layer x dim table of one metric at one precision."""
    rows = points[points.precision.fillna("float32") == precision]
    return rows.pivot(index="layer", columns="dim", values=metric).sort_index()


def bytes_series(points: pd.DataFrame, metric: str, full: Cell) -> list[dict]:
    """Pareto series, one per precision: x = index MiB, y = the metric."""
    series = []
    for precision in precisions_of(points):
        rows = points[points.precision.fillna("float32") == precision]
        series.append({"label": precision, "cost": (rows.index_bytes / 2**10).to_numpy(),
                       "value": rows[metric].to_numpy(), "full": full,
                       "cells": [Cell(int(r.layer), int(r.dim)) for r in rows.itertuples()]})
    return series


def points_table(points: pd.DataFrame, metric: str) -> str:
    """Markdown: every point with its metric, index bytes and search p50, best first."""
    shown = points.assign(precision=points.precision.fillna("float32")).sort_values(metric, ascending=False)
    lines = [f"| layer | dim | precision | {metric} | index MiB | search p50 (ms) |", "|---:|---:|:--|---:|---:|---:|"]
    for r in shown.to_dict("records"):
        lines.append(f"| {r['layer']} | {r['dim']} | {r['precision']} | {r[metric]:.4f} | "
                     f"{r['index_bytes'] / 2**20:.3f} | {r.get('latency_p50_ms', np.nan):.2f} |")
    return "\n".join(lines)


def write_precision_facet(run, writer, fig_dir: Path, tag: str = "") -> None:
    """Heatmaps per precision and the bytes Pareto plot per retrieval dataset of a run with a precision axis."""
    points_all = run.points
    if points_all is None:
        return
    writer.text("## Precision axis (float32, float16, int8, binary)")
    for dataset in run.datasets:
        points = points_all[points_all.dataset == dataset]
        if run.tasks[dataset] != "retrieval" or points.empty:
            continue
        metric = run.metric(dataset)
        for precision in [p for p in precisions_of(points) if p != "float32"]:  # float32: the grid heatmap
            slug = precision.replace("+", "-")
            paths = figures.heatmap(precision_grid(points, precision, metric),
                                    fig_dir / f"heatmap_{dataset}_{slug}", title=f"{run.label}: {dataset}, {precision}"
                                    + tag, colorbar_label=metric, pairs=run.pairs)
            writer.figure(paths, f"{run.label} on {dataset}: {metric} of every cell with {precision} embeddings "
                                 "(int8: sentence-transformers scalar quantisation, ranges from the corpus; binary: "
                                 "sign bits, Hamming search; binary+rescore: float rescoring of 4x k Hamming "
                                 "candidates). Outlined: pair-list cells.")
        paths = figures.pareto(bytes_series(points, metric, run.full_cell), fig_dir / f"pareto_{dataset}_precision",
                               title=f"{dataset}: cells x precisions" + tag, xlabel="index size (KiB)",
                               ylabel=metric, log_x=True)
        writer.figure(paths, f"{dataset}: {metric} against the measured index size of every (L, d, precision) "
                             "point; each precision's Pareto front connected, labelled L,d; stars: the full cell.")
        writer.text(f"### {dataset}: every point\n\n" + points_table(points, metric))
