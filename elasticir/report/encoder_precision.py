"""The encoder-precision facet of a report: what a faster encoder costs, cell by cell.

Per dataset and encoder precision, the difference to float32 of every (layer, dim) cell with its paired test
(per-query values for retrieval, per-pair bootstrap of Spearman for STS, Holm over the cells), and one Pareto plot
of every (cell, encoder precision) point against its measured encode time (the latency probe times every precision
side by side). Only runs evaluated with --encoder-precisions have it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from elasticir.cells import Cell
from elasticir.evaluation.significance import compare_runs, describe
from elasticir.report import figures
from elasticir.report.rundir import RunData, encoder_precision_run


def precisions_of(run: RunData) -> list[str]:
    """The run's encoder precisions, the reference first, in the order it ran them."""
    names = list(dict.fromkeys(run.encoder_points.encoder_precision.fillna("float32")))
    return ["float32"] + [p for p in names if p != "float32"]


def _encode_ms(run: RunData) -> dict[tuple[str, int], float]:
    """(encoder precision, layer) -> measured ms per text of an encode to that layer."""
    return {(r.encoder_precision or "float32", r.layer): r.ms_per_text for r in run.board.encode_latency}


def _encode_cost_series(run: RunData, dataset: str, metric: str) -> list[dict]:
    """Pareto series, one per encoder precision: x = measured ms per text to the cell's layer, y = the metric."""
    cost, series = _encode_ms(run), []
    for precision in precisions_of(run):
        points = encoder_precision_run(run, precision).cells if precision != "float32" else run.cells
        rows = points[points.dataset == dataset]
        series.append({"label": precision, "cost": np.array([cost.get((precision, int(r.layer)), np.nan)
                                                             for r in rows.itertuples()]),
                       "value": rows[metric].to_numpy(), "full": run.full_cell,
                       "cells": [Cell(int(r.layer), int(r.dim)) for r in rows.itertuples()]})
    return series


def write_encoder_precision_facet(run: RunData, writer, fig_dir: Path, tag: str = "", *, alpha: float = 0.05) -> None:
    """Difference heatmaps per (dataset, encoder precision) with their paired tests, and the encode-cost Pareto
    plot per dataset."""
    if run.encoder_points is None:
        return
    precisions = precisions_of(run)
    writer.text(f"## Encoder precision axis ({', '.join(precisions)})")
    speed = _encode_ms(run)
    full = run.board.model.num_layers
    for precision in precisions[1:]:
        if (precision, full) in speed and ("float32", full) in speed:
            writer.text(f"Full-model encode at {precision}: {speed[('float32', full)] / speed[(precision, full)]:.2f}x "
                        f"the float32 speed ({speed[(precision, full)]:.2f} vs {speed[('float32', full)]:.2f} ms per "
                        "text, timed side by side).")
        comparison = compare_runs(encoder_precision_run(run, precision), run, alpha=alpha)
        for dataset, rows in comparison.groupby("dataset", sort=False):
            metric = rows.metric.iloc[0]
            diff = rows.pivot(index="layer", columns="dim", values="diff").sort_index()
            significant = rows.pivot(index="layer", columns="dim", values="significant").sort_index()
            legend = (f"{dataset}: {metric} at encoder precision {precision} minus float32, every cell (blue: "
                      f"{precision} better). * = significant ({describe(rows, alpha)}).")
            paths = figures.diff_heatmap(diff, significant, fig_dir / f"encoder_{precision}_{dataset}",
                                         title=f"{run.label}: {dataset}, encoder {precision} \u2212 float32" + tag,
                                         colorbar_label=f"\u0394 {metric}", legend=legend, pairs=run.pairs, digits=4)
            worst = rows.loc[rows["diff"].idxmin()]
            where = f"at ({int(worst.layer)}, {int(worst.dim)})"
            lowest = (f"Largest loss {worst['diff']:+.4f} {where}" if worst["diff"] < 0
                      else f"No cell loses; the smallest difference is {worst['diff']:+.4f} {where}")
            writer.figure(paths, legend + f" {lowest}; full cell {float(diff.loc[full].iloc[-1]):+.4f}.")
    for dataset in run.datasets:
        metric = run.metric(dataset)
        series = _encode_cost_series(run, dataset, metric)
        if not any(np.isfinite(s["cost"]).any() for s in series):
            continue  # no latency probe (--latency-texts 0): no measured encode cost to plot against
        paths = figures.pareto(series, fig_dir / f"pareto_{dataset}_encoder_precision",
                               title=f"{dataset}: cells x encoder precisions" + tag,
                               xlabel="measured encode time to the cell's layer (ms per text)", ylabel=metric,
                               log_x=True)
        writer.figure(paths, f"{dataset}: {metric} of every (L, d, encoder precision) point against its measured "
                             "encode time; each precision's Pareto front connected; stars: the full cell.")
