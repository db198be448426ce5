"""The precision facet of a report: one heatmap per precision, and every (L, d, precision) point on one Pareto
plot with the index size as its cost (what quantisation buys), plus a table of the points.

Only runs evaluated with --precisions have it; float32-only reports are unchanged (RunData.points is None).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from elasticir.cells import Cell
from elasticir.index import precisions as registry
from elasticir.report import figures, tables


def precision_rank(precision: str) -> int:
    """A precision's place in report order (the registry's); one the registry does not know comes last."""
    order = registry.report_order()
    return order.index(precision) if precision in order else len(order)


def precisions_of(points: pd.DataFrame) -> list[str]:
    found = [p if isinstance(p, str) else "float32" for p in points.precision.unique()]
    return sorted(set(found), key=precision_rank)


def _precision_grid(points: pd.DataFrame, precision: str, metric: str) -> pd.DataFrame:
    """Layer x dim table of one metric at one precision."""
    rows = points[points.precision.fillna("float32") == precision]
    return rows.pivot(index="layer", columns="dim", values=metric).sort_index()


def _bytes_series(points: pd.DataFrame, metric: str, full: Cell) -> list[dict]:
    """Pareto series, one per precision: x = index MiB, y = the metric."""
    series = []
    for precision in precisions_of(points):
        rows = points[points.precision.fillna("float32") == precision]
        series.append({"label": precision, "cost": (rows.index_bytes / 2**10).to_numpy(),
                       "value": rows[metric].to_numpy(), "full": full,
                       "cells": [Cell(int(r.layer), int(r.dim)) for r in rows.itertuples()]})
    return series


def _points_tables(points: pd.DataFrame, metric: str, dataset: str) -> list[tuple[str, str, str]]:
    """(stem, LaTeX, Markdown) of two cell x precision tables: the metric (best cell per precision bold) and the
    measured index size in KiB."""
    shown = points.assign(precision=points.precision.fillna("float32"),
                          cell=[str(Cell(int(a), int(b))) for a, b in zip(points.layer, points.dim)])
    order = precisions_of(points)
    values = shown.pivot(index="cell", columns="precision", values=metric)[order]
    cells = sorted(values.index, key=Cell.parse)
    size = (shown.pivot(index="cell", columns="precision", values="index_bytes")[order] / 2**10).loc[cells]
    label = f"tab:precision-{dataset}".replace("_", "-")
    quality = tables.render(values.loc[cells], row_header="cell", digits=4, label=label,
                            caption=f"{dataset}: {metric} of every (cell, precision) point; bold: best cell per "
                                    "precision.")
    sizes = tables.render(size, row_header="cell", bold=size.astype(bool) & False, digits=0, label=label + "-bytes",
                          caption=f"{dataset}: measured index size (KiB) of every (cell, precision) point.")
    return [(f"precision_{dataset}", *quality), (f"precision_bytes_{dataset}", *sizes)]


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
            slug = registry.lookup(precision).slug
            paths = figures.heatmap(_precision_grid(points, precision, metric),
                                    fig_dir / f"heatmap_{dataset}_{slug}", title=f"{run.label}: {dataset}, {precision}"
                                    + tag, colorbar_label=metric, pairs=run.pairs)
            writer.figure(paths, f"{run.label} on {dataset}: {metric} of every cell with {precision} embeddings "
                                 "(int8: sentence-transformers scalar quantisation, ranges from the corpus; binary: "
                                 "sign bits, Hamming search; binary+rescore: float rescoring of 4x k Hamming "
                                 "candidates). Outlined: pair-list cells.")
        paths = figures.pareto(_bytes_series(points, metric, run.full_cell), fig_dir / f"pareto_{dataset}_precision",
                               title=f"{dataset}: cells x precisions" + tag, xlabel="index size (KiB)",
                               ylabel=metric, log_x=True)
        writer.figure(paths, f"{dataset}: {metric} against the measured index size of every (L, d, precision) "
                             "point; each precision's Pareto front connected, labelled L,d; stars: the full cell.")
        for stem, latex, markdown in _points_tables(points, metric, dataset):
            writer.table(stem, latex, markdown, f"{dataset}: every (cell, precision) point")
