"""A finished run, summarised for the terminal: each dataset's grid of its main metric, with the index speed,
quantised points, asymmetric points, baselines and selected funnels beside it.

The command line prints it after a run, on its console `out` (default: stdout; markup off either way, as
paths and dataset names may contain [brackets]).
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from elasticir.cells import Cell

# long output paths stay on one line when piped (rich would wrap them at 80)
STDOUT = Console(soft_wrap=True, markup=False)


def print_outcome(outcome, out: Console = STDOUT) -> None:
    """Each dataset's grid of the main metric, then the costs, precisions, baselines, funnels and notes."""
    board = outcome.leaderboard
    for dataset in board.datasets:
        metric = board.main_metric[dataset.task]
        cells = outcome.cells[outcome.cells.dataset == dataset.name]
        if "encoder_precision" in cells:  # the tables show the reference encoder; its other points below
            _print_encoder_precisions(board, cells, metric, out)
            cells = cells[cells.encoder_precision.fillna("float32") == "float32"]
        paired = None
        if "doc_layer" in cells:  # the grid's own (L, L) points in the table; every point is in cells.csv
            paired, cells = cells, cells[cells.doc_layer.isna()]
        points = cells
        if "precision" in cells:  # the table shows the float32 points; every point is in cells.csv
            cells = cells[cells.precision.fillna("float32") == "float32"]
        grid = cells.pivot(index="layer", columns="dim", values=metric)
        subset = " — SUBSET, not comparable with full runs" if board.subset else ""
        table = Table(title=f"{dataset.name} ({dataset.task}, {metric}, {dataset.n_examples} examples){subset}")
        table.add_column("layer \\ dim", justify="right")
        for dim in grid.columns:
            table.add_column(str(dim), justify="right")
        for layer, row in grid.iterrows():
            table.add_row(str(layer), *(f"{value:.4f}" for value in row))
        out.print(table)
        print_ann_costs(board, cells, out)
        _print_precisions(board, points, metric, out)
        _print_asymmetric(paired, metric, out)
    for baseline in board.baselines:
        shown = ", ".join(f"{name} {value:.4f}" for name, value in baseline.metrics.items())
        out.print(f"{baseline.dataset} {baseline.name}: {shown}")
    _print_funnels(board, out)
    for note in board.notes:
        out.print(f"note: {note}")
    if outcome.skipped:
        out.print(f"reused finished results for: {', '.join(outcome.skipped)} (pass --recompute to redo)")
    out.print(f"per-cell metrics: {outcome.folder.cells}")
    out.print(f"leaderboard:      {outcome.folder.leaderboard}")


def _print_precisions(board, points, metric: str, out: Console = STDOUT) -> None:
    """Quantised points on the diagonal and the full cell, each with its index size against float32's."""
    if "precision" not in points:
        return
    shown = [Cell(*p) for p in board.grid.pairs] + [Cell(board.model.num_layers, board.model.hidden_size)]
    by_point = points.assign(precision=points.precision.fillna("float32")).set_index(["layer", "dim", "precision"])
    for precision in [p for p in dict.fromkeys(by_point.index.get_level_values(2)) if p != "float32"]:
        values = [f"{cell} {by_point.loc[(*cell, precision), metric]:.4f} "
                  f"(float32 {by_point.loc[(*cell, 'float32'), metric]:.4f}, index "
                  f"x{by_point.loc[(*cell, precision), 'index_bytes'] / by_point.loc[(*cell, 'float32'), 'index_bytes']:.3f})"
                  for cell in dict.fromkeys(shown) if (*cell, precision) in by_point.index]
        out.print(f"  {precision} {metric}: " + "; ".join(values))


def _print_asymmetric(points, metric: str, out: Console = STDOUT) -> None:
    """At the full width: each query layer against documents at the deepest layer, next to its symmetric cell
    (the same query encode cost)."""
    if points is None:
        return
    points = points[points.precision.fillna("float32") == "float32"] if "precision" in points else points
    rows = points.assign(doc_layer=points.doc_layer.fillna(points.layer))
    deepest, full = int(rows.doc_layer.max()), int(rows.dim.max())
    by = rows[rows.dim == full].set_index(["layer", "doc_layer"])[metric]
    shown = [f"Lq={int(q)} {by[(q, deepest)]:.4f} (symmetric {by[(q, q)]:.4f})"
             for q in sorted({int(q) for q, _ in by.index}) if q < deepest and (q, deepest) in by and (q, q) in by]
    if shown:
        out.print(f"  documents at layer {deepest}, d={full}, {metric}: " + "; ".join(shown)
                  + f"; cells.csv has all {len(points)} (Lq, Ld, d) points")


def _print_funnels(board, out: Console = STDOUT) -> None:
    """The selected funnels (cheapest within tolerance per stage-1 precision, Pareto front) against the full cell."""
    for f in (f for f in board.funnels if f.selected):
        metric = board.main_metric.get("retrieval", "nDCG@10")
        ratio = f.costs.get("madds_ratio", float("nan"))
        latency = f.costs.get("latency_ratio", float("nan"))
        p = f"p_holm {f.p_holm:.3g}" if f.p_holm is not None else ""
        out.print(f"{f.dataset} funnel {f.funnel}: {metric} {f.metrics.get(metric, float('nan')):.4f}, "
                  f"search multiply-adds x{ratio:.3f}, latency x{latency:.2f} of the full cell {p} [{f.selected}]")


def print_ann_costs(board, cells, out: Console = STDOUT) -> None:
    """Approximate indexes trade quality for speed: show the speed (QPS, p50) next to the quality table."""
    if board.config.get("index", "flat") == "flat" or "search_qps" not in cells:
        return
    shown = {tuple(p) for p in board.grid.pairs} | {(board.model.num_layers, board.model.hidden_size)}
    out.print(f"  {board.config['index']} search speed on the diagonal (every cell: cells.csv):")
    for row in cells.dropna(subset=["search_qps"]).to_dict("records"):
        if (row["layer"], row["dim"]) not in shown:
            continue
        out.print(f"  {Cell(row['layer'], row['dim'])} {board.config['index']}: {row['search_qps']:.0f} QPS, "
                  f"p50 {row.get('latency_p50_ms', float('nan')):.2f} ms")


def _print_encoder_precisions(board, points, metric: str, out: Console = STDOUT) -> None:
    """Per encoder precision other than float32: the diagonal and the full cell against float32, and the full
    model's measured encode speed against float32's (the probe times them side by side)."""
    if "precision" in points:
        points = points[points.precision.fillna("float32") == "float32"]
    by_point = points.assign(encoder_precision=points.encoder_precision.fillna("float32")).set_index(
        ["layer", "dim", "encoder_precision"])
    shown = [Cell(*p) for p in board.grid.pairs] + [Cell(board.model.num_layers, board.model.hidden_size)]
    speed = {(r.encoder_precision, r.layer): r.tokens_per_s for r in board.encode_latency}
    full = board.model.num_layers
    for precision in [p for p in dict.fromkeys(by_point.index.get_level_values(2)) if p != "float32"]:
        values = [f"{cell} {by_point.loc[(*cell, precision), metric]:.4f} "
                  f"({by_point.loc[(*cell, precision), metric] - by_point.loc[(*cell, 'float32'), metric]:+.4f})"
                  for cell in dict.fromkeys(shown) if (*cell, precision) in by_point.index]
        ratio = (f"; encode x{speed[(precision, full)] / speed[('float32', full)]:.2f} the float32 speed"
                 if (precision, full) in speed and ("float32", full) in speed else "")
        out.print(f"  encoder {precision} {metric} (vs float32): " + "; ".join(values) + ratio)
