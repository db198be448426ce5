"""The funnel section of a report: funnels and single cells on the same Pareto axes (search multiply-adds per
query; measured latency), and a table of the selected funnels with their paired test against the full cell.

Reads funnels.csv of each retrieval part (written by evaluation.funnel); runs without funnels are unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from elasticir.report import figures
from elasticir.report.precision import precision_rank
from elasticir.results.store import PartFolder

AXES = {"search_madds": ("thousand search multiply-adds per query", ("analytic: N d1 + K d2 (binary stage 1: K d2 only, its "
                         "N d1 Hamming bit operations not counted)")),
        "latency_p50_ms": ("search latency p50 (ms)", "measured one query at a time, query encoding excluded")}


def _load_funnels(part: PartFolder) -> pd.DataFrame | None:
    path = part.funnels
    return pd.read_csv(path) if path.is_file() else None


def _funnel_series(table: pd.DataFrame, cells: pd.DataFrame, metric: str, cost: str, n_docs: int) -> list[dict]:
    """Pareto series: the float32 single cells (exact search over the corpus), then one per stage-1 precision.
    Points are labelled 'L1:d1,K' (funnels) or 'L,d' (cells); the star is the full cell."""
    full_row = table[table.selected == "full cell"].iloc[0]
    full = (int(full_row.layer2), int(full_row.dim2))
    scale = 1e-3 if cost == "search_madds" else 1.0  # thousands: short tick labels
    single_cost = (cells.dim * n_docs * scale).to_numpy(float) if cost == "search_madds" else cells.latency_p50_ms.to_numpy()
    series = [{"label": "single cells (float32)", "cost": single_cost, "value": cells[metric].to_numpy(),
               "cells": [(int(r.layer), int(r.dim)) for r in cells.itertuples()], "full": full}]
    funnels = table[table.selected != "full cell"]
    for precision in sorted(funnels.precision1.unique(), key=precision_rank):
        rows = funnels[funnels.precision1 == precision]
        series.append({"label": f"funnels, stage 1 {precision}", "cost": rows[cost].to_numpy(float) * scale,
                       "value": rows[metric].to_numpy(), "full": None,
                       "cells": [(f"{r.layer1}:{r.dim1}", int(r.K)) for r in rows.itertuples()]})
    return series


def _selected_table(table: pd.DataFrame, metric: str) -> str:
    """Markdown: the full cell and the selected funnels with quality, cost ratios and the paired test."""
    rows = table[table.selected.fillna("") != ""]
    lines = [(f"| funnel | {metric} | Δ vs full | p (Holm) | search madds | x full | latency p50 ms | x full "
             "(side by side) | selected |"), "|:--|---:|---:|---:|---:|---:|---:|---:|:--|"]
    for r in rows.to_dict("records"):
        p = "" if pd.isna(r.get("p_holm")) else f"{r['p_holm']:.3g}"
        latency = r.get("latency_p50_ms", np.nan)
        full_latency = r.get("full_latency_p50_ms", np.nan)
        lines.append(f"| {r['funnel']} | {r[metric]:.4f} | {r[f'delta_{metric}']:+.4f} | {p} | "
                     f"{r['search_madds']:,.0f} | {r['madds_ratio']:.3f} | "
                     f"{latency if pd.notna(latency) else full_latency:.2f} | {r.get('latency_ratio', np.nan):.2f} | "
                     f"{r['selected']} |")
    return "\n".join(lines)


def write_funnel_section(run, writer, fig_dir: Path, tag: str = "") -> None:
    """Per retrieval dataset with funnels: two Pareto plots (multiply-adds, latency) and the selected table."""
    found = [(d, _load_funnels(run.part(d))) for d in run.datasets if run.tasks[d] == "retrieval"]
    found = [(d, t) for d, t in found if t is not None]
    if not found:
        return
    writer.text("## Funnel retrieval (shortlist K with a small cell, rescore with the full cell)")
    for dataset, table in found:
        metric, cells = run.metric(dataset), run.table(dataset)
        n_docs = int(table[table.selected == "full cell"].K.iloc[0])
        for cost, (xlabel, phrase) in AXES.items():
            if cost == "latency_p50_ms" and "latency_p50_ms" not in cells:
                continue
            paths = figures.pareto(_funnel_series(table, cells, metric, cost, n_docs),
                                   fig_dir / f"funnel_{dataset}_{cost.split('_')[0]}", title=f"{dataset}: funnels"
                                   + tag, xlabel=xlabel, ylabel=metric, log_x=True)
            writer.figure(paths, f"{dataset}: {metric} of every funnel (labelled L1:d1,K; stage 2 the full cell) "
                                 f"and every float32 single cell (L,d) against {xlabel} ({phrase}); each series' "
                                 "Pareto front connected; star: the full cell."
                                 + (" Single cells' latency is the grid's own measurement, taken at another time "
                                    "than the funnels'; the table's latency ratios are measured side by side."
                                    if cost == "latency_p50_ms" else ""))
        writer.text(f"### {dataset}: selected funnels\n\n" + _selected_table(table, metric))
