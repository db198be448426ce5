"""The asymmetric facet of a report: queries at (Lq, d) against documents at (Ld, d).

Documents are encoded once, offline, so their depth is free at query time; a query's depth is its encode
latency. Per retrieval dataset: a query layer x doc layer heatmap per dim, a Pareto plot of every point
against the query's cost (analytic FLOPs; measured encode latency of Lq layers), and the question the grid is
run for: at the same query cost, do deep documents (Ld = the deepest) beat the symmetric cell (Ld = Lq)?
Only runs evaluated with --query-layers / --doc-layers have it (RunData.asymmetric); other reports are
unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from elasticir.cells import Cell
from elasticir.encoders.cost import EncoderShape, cell_costs
from elasticir.evaluation.significance import holm, paired_ttest
from elasticir.report import figures
from elasticir.report.figures import fmt_value
from elasticir.report.rundir import read_csv_any

ALPHA = 0.05


def float32_points(run, dataset: str) -> pd.DataFrame:
    """Every (Lq, Ld, d) point of one dataset at float32 (a precision axis keeps its own facet)."""
    rows = run.asymmetric[run.asymmetric.dataset == dataset]
    if "precision" in rows:
        rows = rows[rows.precision.isna() | (rows.precision == "float32")]
    return rows


def layer_grid(points: pd.DataFrame, dim: int, metric: str) -> pd.DataFrame:
    """Query layer x doc layer table of one metric at one dim."""
    rows = points[points.dim == dim]
    return rows.pivot(index="layer", columns="doc_layer", values=metric).sort_index().sort_index(axis=1)


def deep_against_symmetric(points: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (Lq, d) with Lq below the deepest doc layer: the metric with documents at the deepest layer, with
    documents at Lq (the symmetric cell, the same query encode cost) and their difference."""
    deepest = int(points.doc_layer.max())
    by = points.set_index(["layer", "doc_layer", "dim"])[metric]
    rows = []
    for (layer, dim) in sorted({(int(q), int(d)) for q, d in zip(points.layer, points.dim)}):
        if layer < deepest and (layer, deepest, dim) in by.index and (layer, layer, dim) in by.index:
            deep, same = float(by[(layer, deepest, dim)]), float(by[(layer, layer, dim)])
            rows.append({"query_layer": layer, "dim": dim, "doc_layer": deepest, "deep_docs": deep,
                         "symmetric": same, "diff": deep - same})
    return pd.DataFrame(rows)


def per_query_points(run, dataset: str, measure: str) -> pd.DataFrame | None:
    """query_id x (layer, doc_layer, dim) values of one measure at float32, or None without per-query files."""
    path = run.example_file(dataset, run.part(dataset).per_query)
    if path is None:
        return None
    frame = read_csv_any(path)
    frame = frame[frame.measure == measure]
    if "precision" in frame:
        frame = frame[frame.precision.isna() | (frame.precision == "float32")]
    frame = frame.assign(doc_layer=frame.doc_layer.fillna(frame.layer).astype(int))
    return frame.pivot_table(index="query_id", columns=["layer", "doc_layer", "dim"], values="value")


def add_tests(compared: pd.DataFrame, values: pd.DataFrame | None) -> pd.DataFrame:
    """A paired t-test over queries of each deep-documents point against its symmetric cell, Holm-corrected
    over the comparisons; no columns added without per-query values."""
    if values is None or compared.empty:
        return compared
    p = [paired_ttest(values[(r.query_layer, r.doc_layer, r.dim)], values[(r.query_layer, r.query_layer, r.dim)])[1]
         for r in compared.itertuples()]
    adjusted = holm(p)
    return compared.assign(p=p, p_holm=adjusted, significant=adjusted < ALPHA)


def query_costs(points: pd.DataFrame, shape: EncoderShape, costs: pd.DataFrame, pooling: str,
                latency: dict[int, float]) -> pd.DataFrame:
    """Each point's query cost: analytic FLOPs of encoding one mean-length test query with Lq layers plus the
    exact search at d (the cost table's convention), and the measured encode ms per text of Lq layers."""
    tokens = float(costs.mean_tokens.iloc[0]) if len(costs) else 32.0
    n_docs = costs.n_docs.iloc[0] if len(costs) and pd.notna(costs.n_docs.iloc[0]) else None
    flops = [cell_costs(shape, int(q), int(d), seq_len=max(1, round(tokens)), n_docs=n_docs,
                        pooling=pooling)["query_flops"] for q, d in zip(points.layer, points.dim)]
    return points.assign(query_gflops=np.asarray(flops) / 1e9, encode_ms=points.layer.map(latency))


def _series(points: pd.DataFrame, metric: str, cost: str, full: Cell) -> list[dict]:
    """Pareto series: the symmetric cells and documents at the deepest layer (the other pairs are in the
    heatmaps; their labels Lq,d would not say their Ld)."""
    deepest = int(points.doc_layer.max())
    groups = [("symmetric (Ld = Lq)", points.layer == points.doc_layer),
              (f"documents at Ld = {deepest}", (points.doc_layer == deepest) & (points.layer != deepest))]
    series = []
    for label, mask in groups:
        rows = points[mask]
        if len(rows):
            series.append({"label": label, "cost": rows[cost].to_numpy(float), "value": rows[metric].to_numpy(float),
                           "cells": [Cell(int(q), int(d)) for q, d in zip(rows.layer, rows.dim)],
                           "full": full if label.startswith("symmetric") else None})
    return series


def _verdict(compared: pd.DataFrame, metric: str, dims: list[int]) -> str:
    """One paragraph answering the question at equal query cost, overall and at the full and smallest dim."""
    if compared.empty:
        return "No (Lq, deepest Ld, d) point has a symmetric counterpart in this grid."
    wins = int((compared["diff"] > 0).sum())
    tested = ""
    if "significant" in compared:
        up = int((compared.significant & (compared["diff"] > 0)).sum())
        down = int((compared.significant & (compared["diff"] < 0)).sum())
        tested = (f" Significantly higher in {up}, lower in {down} (paired t-test over queries, Holm over the "
                  f"{len(compared)} comparisons, p < {ALPHA}; * in the table).")
    parts = [(f"Documents at Ld = {int(compared.doc_layer.iloc[0])} against the symmetric cell of the same query "
              f"encode cost (Lq, Lq, d): {metric} higher in {wins} of {len(compared)} (Lq, d) points, mean difference "
              f"{fmt_value(compared['diff'].mean(), 4, signed=True)}.{tested}")]
    for dim in dict.fromkeys((max(dims), min(dims))):
        rows = compared[compared.dim == dim]
        if len(rows):
            shown = ", ".join(f"Lq={int(r.query_layer)} {fmt_value(r.deep_docs, 4)} vs {fmt_value(r.symmetric, 4)}"
                              for r in rows.itertuples())
            parts.append(f"d={dim}: {shown}.")
    return " ".join(parts)


def _mark(row) -> str:
    return "*" if getattr(row, "significant", False) else ""


def _markdown(compared: pd.DataFrame) -> str:
    header = "| Lq | d | deep docs | symmetric | diff |\n|---|---|---|---|---|\n"
    return header + "\n".join(f"| {int(r.query_layer)} | {int(r.dim)} | {r.deep_docs:.4f} | {r.symmetric:.4f} | "
                              f"{r.diff:+.4f}{_mark(r)} |" for r in compared.itertuples()) + "\n"


def _latex(compared: pd.DataFrame, dataset: str, metric: str) -> str:
    lines = ["\\begin{table}[t]", "\\centering", "\\small", "\\begin{tabular}{rrrrr}", "\\toprule",
             "$L_q$ & $d$ & deep docs & symmetric & $\\Delta$ \\\\", "\\midrule"]
    lines += [f"{int(r.query_layer)} & {int(r.dim)} & {fmt_value(r.deep_docs)} & {fmt_value(r.symmetric)} & "
              f"{fmt_value(r.diff, signed=True).replace(chr(0x2212), '$-$')}{_mark(r)} \\\\" for r in compared.itertuples()]
    caption = (f"{dataset}: {metric} of queries at (L$_q$, d) against documents at the deepest layer and against "
               "documents at L$_q$ (the symmetric cell of the same query cost); * significant (paired t-test over "
               "queries, Holm over the comparisons).")
    lines += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{caption}}}",
              f"\\label{{tab:asymmetric-{dataset}}}".replace("_", "-"), "\\end{table}", ""]
    return "\n".join(lines)


def write_asymmetric_section(run, writer, fig_dir: Path, tag: str, costs: pd.DataFrame, shape: EncoderShape) -> None:
    """Heatmaps per dim, Pareto plots against query cost and the deep-documents table per retrieval dataset."""
    if run.asymmetric is None:
        return
    writer.text("## Asymmetric grid: queries at (Lq, d), documents at (Ld, d)")
    latency = {e.layer: e.ms_per_text for e in run.board.encode_latency}
    for dataset in [d for d in run.datasets if run.tasks[d] == "retrieval"]:
        points, metric = float32_points(run, dataset), run.metric(dataset)
        if points.empty:
            continue
        dims = sorted(int(d) for d in points.dim.unique())
        for dim in dims:
            grid = layer_grid(points, dim, metric)
            paths = figures.heatmap(grid, fig_dir / f"asymmetric_{dataset}_d{dim}", title=f"{run.label}: {dataset}, "
                                    f"d={dim}{tag}", colorbar_label=metric, axis_labels=("document layer Ld",
                                                                                         "query layer Lq"),
                                    pairs=[(q, q) for q in grid.index if q in grid.columns],
                                    outline_note="Outlined: Lq = Ld, the symmetric cells of the plain grid.")
            writer.figure(paths, f"{run.label} on {dataset}: {metric} of queries encoded with Lq layers searched "
                                 f"against documents encoded with Ld layers, both cut to d={dim}. Rows: query depth "
                                 "(what a query costs online); columns: document depth (encoded once, offline).")
        _write_pareto(run, writer, fig_dir, tag, dataset, metric,
                      query_costs(points, shape, costs[costs.dataset == dataset], run.board.model.pooling, latency))
        compared = add_tests(deep_against_symmetric(points, metric), per_query_points(run, dataset, metric))
        writer.text(_verdict(compared, metric, dims))
        if not compared.empty:
            writer.table(f"asymmetric_{dataset}", _latex(compared, dataset, metric), _markdown(compared),
                         f"{dataset}: deep documents vs the symmetric cell at the same query cost")


def _write_pareto(run, writer, fig_dir: Path, tag: str, dataset: str, metric: str, points: pd.DataFrame) -> None:
    """Every point against its query's analytic FLOPs and, when measured, its query's encode latency."""
    axes = [("query_gflops", "flops", "GFLOPs per query", ("analytic matmul FLOPs per query: encoding a "
             f"{dataset} test query of mean length with Lq layers + exact search at d"))]
    probe = run.board.encode_latency
    if probe and points.encode_ms.notna().all():
        tokens = sum(e.tokens for e in probe) / max(1, sum(e.texts for e in probe))
        axes.append(("encode_ms", "latency", "encode ms per text (Lq layers)", (
            f"encode milliseconds per text of Lq layers as the run's latency probe measured them, on {probe[0].texts} "
            f"texts of {tokens:.0f} tokens on average ({probe[0].device}; the probe encodes the run's first dataset's "
            "documents, usually longer than queries, so the layers' ratios carry over, not the absolute times; the "
            "search at d is not included)")))
    for column, slug, xlabel, phrase in axes:
        series = _series(points, metric, column, run.full_cell)
        paths = figures.pareto(series, fig_dir / f"pareto_{dataset}_asymmetric_{slug}",
                               title=f"{run.label} on {dataset}: deep documents vs symmetric{tag}", xlabel=xlabel,
                               ylabel=metric, log_x=True)
        writer.figure(paths, f"{dataset}: {metric} of the symmetric points (Lq, Lq, d) and of queries at (Lq, d) "
                             f"against documents at the deepest layer, against the query's cost ({phrase}); "
                             "each series' Pareto front connected and labelled Lq,d; documents cost nothing at "
                             "query time, so a point left of and above the symmetric front is a gain.")
