"""Cells a reader would miss: flagged, never changed.

A grid of (layer, dim) cells has an expected shape: a deeper layer or a wider dim scores at least as well as the
cell before it in its column or row. A cell that breaks that order by more than its noise (a paired bootstrap
over the run's own per-query / per-pair values, so a drop within sampling noise is not flagged) is usually an
evaluation fault, like the Starbucks README's Quora 0.0178 at (10, 512) against 0.7808 one size down, which
drags a BEIR average from about 0.38 to 0.32. Also flagged: NaN or constant scores, cells near chance, a full
model below BM25, and an order break large enough to move its task's mean over datasets by itself. The flags
go to the leaderboard (`anomalies`), report.md and the heatmaps (a mark on the cell); no number is altered.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from elasticir.cells import Cell
from elasticir.evaluation.significance import _resample_weights, bootstrap_spearman
from elasticir.report.rundir import RunData

N_RESAMPLES = 200  # enough for a 95% band's width; the runner pays it after every run
STS_CHANCE = 0.1  # |Spearman| below this: no better than a random encoder
RETRIEVAL_CHANCE = 0.02  # nDCG@10 / RR@10 below this: the ranking is near random
MEAN_SHIFT = 0.04  # an order break that moves its task's mean over datasets by more than this (Starbucks: 0.06)
MIN_DROP = 0.01  # a smaller drop is never worth a reader's attention, however significant
FIXED_BAND = 0.05  # without per-example values (a published table): only drops larger than this are flagged


@dataclass(frozen=True)
class Anomaly:
    dataset: str
    layer: int
    dim: int
    kind: str  # nan, constant, order, near-chance, below-bm25, moves-mean
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def _bootstrap(run: RunData, dataset: str, n_resamples: int, seed: int) -> tuple[list[Cell], np.ndarray] | None:
    """(cells, [cells, n_resamples] metric on paired resamples of the dataset's examples), None when not kept."""
    if run.tasks[dataset] == "sts":
        kept = run.pair_scores(dataset)
        if kept is None:
            return None
        cosines, gold, cells = kept
        return cells, bootstrap_spearman(cosines, gold, n_resamples, seed)
    table = run.per_query(dataset, run.metric(dataset))
    if table is None or table.empty:
        return None
    table = table.dropna()
    weights = _resample_weights(np.random.default_rng(seed), len(table), n_resamples)
    return [Cell(int(c[0]), int(c[1])) for c in table.columns], table.to_numpy().T @ weights / len(table)


def _constant(run: RunData, dataset: str) -> set[Cell]:
    """Cells whose similarity scores (STS) or per-query values (retrieval) do not vary at all."""
    if run.tasks[dataset] == "sts":
        kept = run.pair_scores(dataset)
        return {cell for cell, row in zip(kept[2], kept[0]) if np.nanstd(row) < 1e-9} if kept else set()
    table = run.per_query(dataset, run.metric(dataset))
    if table is None or len(table) < 2:
        return set()
    return {Cell(int(c[0]), int(c[1])) for c in table.columns if np.nanstd(table[c].to_numpy()) < 1e-12}


def _band(boot, a: int | None, b: int | None, drop: float) -> tuple[bool, str] | None:
    """(whether the drop of cell a below cell b is outside the noise, how the band was set): the paired
    bootstrap's 95% interval of the difference when the dataset kept per-example values, else (a published
    table) the fixed band; None when a cell has no bootstrap row."""
    if boot is None:
        return drop > FIXED_BAND, f"no per-example values: fixed band {FIXED_BAND}"
    if a is None or b is None:
        return None
    low, high = np.nanquantile(boot[1][a] - boot[1][b], [0.025, 0.975])
    return bool(high < 0), f"noise band +-{(high - low) / 2:.4f}"


def _order_breaks(run: RunData, dataset: str, boot, n_datasets: int) -> list[Anomaly]:
    """Each cell against the cell one layer shallower and the one one dim narrower in the grid: flagged when it
    scores lower by at least MIN_DROP and the paired bootstrap's 95% band of the difference lies wholly below 0
    (without per-example values: when it is lower by more than FIXED_BAND). One flag per cell, its larger drop."""
    grid = run.grid(dataset)
    layers, dims = list(grid.index), list(grid.columns)
    rows = {cell: i for i, cell in enumerate(boot[0])} if boot else {}
    found = []
    for li, layer in enumerate(layers):
        for di, dim in enumerate(dims):
            value = grid.iloc[li, di]
            breaks = []
            for before in ([(layers[li - 1], dim)] if li else []) + ([(layer, dims[di - 1])] if di else []):
                drop = float(grid.loc[before[0], before[1]] - value)
                if not np.isfinite(value) or not drop >= MIN_DROP:
                    continue
                band = _band(boot, rows.get(Cell(layer, dim)), rows.get(Cell(*before)), drop)
                if band is not None and band[0]:
                    breaks.append((drop, before, band[1]))
            if not breaks:
                continue
            drop, before, how = max(breaks)
            found.append(Anomaly(dataset, layer, dim, "order", f"{value:.4f} is {drop:.4f} below "
                                 f"{'the shallower' if before[1] == dim else 'the narrower'} cell L{before[0]} "
                                 f"d{before[1]} ({how})" + (" and below the other neighbour" if len(breaks) > 1 else "")))
            if n_datasets > 1 and drop / n_datasets > MEAN_SHIFT:
                found.append(Anomaly(dataset, layer, dim, "moves-mean", f"this cell alone moves the "
                                     f"{run.tasks[dataset]} mean over {n_datasets} datasets by {drop / n_datasets:.4f}"))
    return found


def _level_flags(run: RunData, dataset: str) -> list[Anomaly]:
    """NaN cells, cells near chance, and a full model below BM25 (from the cell values alone)."""
    grid, metric = run.grid(dataset), run.metric(dataset)
    sts = run.tasks[dataset] == "sts"
    found = []
    for layer in grid.index:
        for dim in grid.columns:
            value = float(grid.loc[layer, dim])
            if math.isnan(value):
                found.append(Anomaly(dataset, int(layer), int(dim), "nan", f"{metric} is NaN"))
            elif (abs(value) if sts else value) < (STS_CHANCE if sts else RETRIEVAL_CHANCE):
                found.append(Anomaly(dataset, int(layer), int(dim), "near-chance",
                                     f"{metric} {value:.4f} is near chance (< {STS_CHANCE if sts else RETRIEVAL_CHANCE})"))
    bm25 = (run.bm25(dataset) or {}).get(metric)
    full = run.value(dataset, run.full_cell)
    if bm25 is not None and np.isfinite(full) and full < bm25:
        found.append(Anomaly(dataset, *run.full_cell, "below-bm25", f"full model {metric} {full:.4f} < BM25 {bm25:.4f}"))
    return found


def find_anomalies(run: RunData, *, n_resamples: int = N_RESAMPLES, seed: int = 0) -> list[Anomaly]:
    """Every flag of a run: per dataset, its level flags, order breaks and constant cells (the last only where
    the run kept per-example values; a published leaderboard JSON's order breaks use the fixed band)."""
    found: list[Anomaly] = []
    per_task = {task: sum(1 for d in run.datasets if run.tasks[d] == task) for task in set(run.tasks.values())}
    for dataset in run.datasets:
        found += _level_flags(run, dataset)
        boot = _bootstrap(run, dataset, n_resamples, seed) if run.has_examples else None
        if boot is not None:
            found += [Anomaly(dataset, c[0], c[1], "constant", "every score is the same")
                      for c in sorted(_constant(run, dataset))]
        found += _order_breaks(run, dataset, boot, per_task[run.tasks[dataset]])
    return found


def marks_for(anomalies: list[Anomaly], dataset: str) -> set[tuple[int, int]]:
    """The cells of one dataset to mark on its heatmap."""
    return {(a.layer, a.dim) for a in anomalies if a.dataset == dataset}


def markdown_section(anomalies: list[Anomaly], has_examples: bool) -> str:
    lines = ["## Anomalies", ""]
    if not has_examples:
        lines.append(f"No per-query / per-pair values kept: order breaks use a fixed band ({FIXED_BAND}), constant "
                     "scores are not tested.")
    if not anomalies:
        return "\n".join(lines + ["None flagged."])
    lines += ["Flagged, not changed (marked with ! on the heatmaps):", "", "| dataset | cell | kind | detail |",
              "|---|---|---|---|"]
    lines += [f"| {a.dataset} | L{a.layer} d{a.dim} | {a.kind} | {a.detail} |" for a in anomalies]
    return "\n".join(lines)


def write_anomaly_section(run: RunData, writer) -> list[Anomaly]:
    """Add the anomalies section to a report; the flags, for the heatmaps' marks."""
    anomalies = find_anomalies(run)
    writer.text(markdown_section(anomalies, run.has_examples))
    return anomalies
