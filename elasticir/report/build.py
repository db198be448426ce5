"""One call from run directories to a paper report: figures (PDF + PNG), tables (LaTeX + Markdown), CSVs and
report.md with a caption for every figure.

    write_report(run_dir, out_dir, baseline_dir=None, cost="flops") -> list[Path]

With a baseline, the run is compared with it at the cells both grids have (only those; the report says which),
with paired tests over queries / pairs and Holm's correction per dataset (significance.py). A baseline grid
(cells from several models, baselines.py) is costed per cell with its member's own architecture, and the paper
table gives every run a row block with marks against a chosen reference run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from elasticir.cells import Cell
from elasticir.data.beir import judged_query_texts
from elasticir.data.sts import load_sts
from elasticir.encoders.cost import EncoderShape, cell_costs, encode_flops_per_token, mean_token_length
from elasticir.errors import ElasticIRError
from elasticir.evaluation.significance import compare_mean, compare_runs, describe
from elasticir.report import figures, tables
from elasticir.report.anomalies import marks_for, write_anomaly_section
from elasticir.report.asymmetric import write_asymmetric_section
from elasticir.report.check import write_check_section
from elasticir.report.encoder_precision import write_encoder_precision_facet
from elasticir.report.funnels import write_funnel_section
from elasticir.report.precision import write_precision_facet
from elasticir.report.rundir import RunData, load_run, unique_labels

COSTS = ("flops", "latency", "bytes")
DEFAULT_SEQ_LEN = 32
CURVE_SEQ_LEN = 128  # the fixed length of the diagonal curves' x axis (FLOPs per token barely depend on it)


# --- costs ----------------------------------------------------------------------------------------------------
def _shape(run: RunData, notes: list[str]) -> EncoderShape:
    shape = EncoderShape.from_folder(run.board.model.path)
    if shape is None:
        model = run.board.model
        notes.append(f"{run.label}: model folder {model.path} not readable; FLOPs assume a BERT layer with "
                     f"feed-forward width 4H = {4 * model.hidden_size}.")
        shape = EncoderShape(model.num_layers, model.hidden_size, 4 * model.hidden_size)
    return shape


def _texts(run: RunData, dataset: str) -> list[str]:
    """The texts a cell encodes per example: STS sentences; retrieval test queries (those with qrels)."""
    record = next(d for d in run.board.datasets if d.name == dataset)
    paths = [Path(f.path) for f in record.files]
    try:
        if record.task == "sts":
            pairs = load_sts(paths[0])
            return list(pairs.sentence1) + list(pairs.sentence2)
        queries = next(p for p in paths if p.name.startswith("queries"))
        return judged_query_texts(queries, next((p for p in paths if p.suffix == ".tsv"), None))
    except (OSError, StopIteration, IndexError, ElasticIRError):
        return []  # no files recorded, or the data moved or changed since the run: the caller falls back to a stated default length


def _n_docs(run: RunData, dataset: str) -> int | None:
    """The corpus size the part recorded (documents searched, after any subset). Leaderboards written before it
    was recorded lack it: for those only, it is inferred from a flat index's bytes (4 d bytes per vector; the
    backend named in the table says which cells are flat), else counted in the corpus file."""
    record = next(d for d in run.board.datasets if d.name == dataset)
    if record.n_docs is not None:
        return record.n_docs
    rows = run.table(dataset)
    if "index_bytes" in rows and "backend" in rows:
        flat = rows[rows.backend.astype(str).str.contains("torch|Flat", regex=True)]
        if len(flat):
            row = flat.iloc[0]
            return int(np.rint(row.index_bytes / (4 * row.dim)))
    corpus = next((Path(f.path) for f in record.files if Path(f.path).name.startswith("corpus")), None)
    try:
        with open(corpus, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except (OSError, TypeError):
        return None


def cost_table(run: RunData, notes: list[str]) -> pd.DataFrame:
    """Per dataset and cell: analytic FLOPs / params (cost.py) next to the measured costs of the run. A baseline
    grid's cell costs what its own member model costs (that model's layers, width and tokenizer)."""
    shape = _shape(run, notes) if not run.members else None
    frames = []
    for dataset in run.datasets:
        lengths: dict[str, float] = {}
        n_docs = _n_docs(run, dataset) if run.tasks[dataset] == "retrieval" else None
        rows = []
        for layer, dim in run.grid_cells:
            member = run.members.get(Cell(layer, dim))
            tokenizer = member.path if member else run.board.model.path
            if tokenizer not in lengths:
                lengths[tokenizer] = _length(run, dataset, tokenizer, notes)
            own_shape, own_layer, own_dim, pooling = ((shape, layer, dim, run.board.model.pooling) if not member
                                                      else (_member_shape(member), *member.source, member.pooling))
            costs = cell_costs(own_shape, own_layer, own_dim, seq_len=max(1, round(lengths[tokenizer])),
                               n_docs=n_docs, pooling=pooling or run.board.model.pooling)
            rows.append({"dataset": dataset, "layer": layer, "dim": dim, "mean_tokens": lengths[tokenizer],
                         "n_docs": n_docs, **costs})
        frames.append(pd.DataFrame(rows))
    table = pd.concat(frames, ignore_index=True)
    measured = [c for c in ("index_bytes", "build_s", "search_qps", "latency_p50_ms", "latency_p95_ms")
                if c in run.cells.columns]
    if measured:
        table = table.merge(run.cells[["dataset", "layer", "dim", *measured]], on=["dataset", "layer", "dim"], how="left")
    return table.assign(run=run.label)


def _length(run: RunData, dataset: str, tokenizer: str, notes: list[str]) -> float:
    length = mean_token_length(_texts(run, dataset), tokenizer, run.board.model.max_length)
    if length is None:
        notes.append(f"{run.label} {dataset}: texts or tokenizer not readable; FLOPs use {DEFAULT_SEQ_LEN} tokens.")
        return DEFAULT_SEQ_LEN
    return length


def _member_shape(member) -> EncoderShape:
    """A baseline member's own architecture, as recorded in the leaderboard (4H feed-forward when unrecorded)."""
    return EncoderShape(member.num_layers, member.hidden_size, member.intermediate_size or 4 * member.hidden_size,
                        member.vocab_size or 30522)


def _cost_axis(cost: str, task: str, costs: pd.DataFrame) -> tuple[np.ndarray, str, str] | None:
    """(x values, axis label, caption phrase) of a cost for one dataset's cells, or None when not measured."""
    if cost == "flops":
        if task == "retrieval":
            n_docs = costs.n_docs.iloc[0]
            docs = f"exact search over {int(n_docs):,} docs" if pd.notna(n_docs) else "search not counted"
            phrase = (f"analytic matmul FLOPs per query: encoding a {costs.mean_tokens.iloc[0]:.0f}-token query "
                      f"(mean test-query length) with L layers + {docs} (2dN)")
            return costs.query_flops.to_numpy() / 1e9, "GFLOPs per query", phrase
        return (costs.encode_flops.to_numpy() / 1e9, "GFLOPs per sentence",
                f"analytic matmul FLOPs to encode one {costs.mean_tokens.iloc[0]:.0f}-token sentence (mean length)")
    if task != "retrieval":
        return None
    if cost == "latency" and "latency_p50_ms" in costs and costs.latency_p50_ms.notna().any():
        return (costs.latency_p50_ms.to_numpy(), "search latency p50 (ms)",
                "measured single-query search latency (median; query encoding not included)")
    if cost == "bytes" and "index_bytes" in costs and costs.index_bytes.notna().any():
        return (costs.index_bytes.to_numpy() / 2**20, "index size (MiB)", "measured index bytes")
    return None


# --- report -----------------------------------------------------------------------------------------------------
class _Writer:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.paths: list[Path] = []
        self.sections: list[str] = []

    def figure(self, paths: list[Path], caption: str) -> None:
        self.paths += paths
        caption_path = paths[0].with_suffix(".caption.txt")
        caption_path.write_text(caption + "\n")
        self.paths.append(caption_path)
        png = paths[-1].relative_to(self.out)
        self.sections.append(f"![{png.stem}]({png})\n\n*{png.stem}*: {caption}\n")

    def table(self, stem: str, latex: str, markdown: str, title: str) -> None:
        tex_path, md_path = self.out / "tables" / f"{stem}.tex", self.out / "tables" / f"{stem}.md"
        tex_path.parent.mkdir(parents=True, exist_ok=True)
        tex_path.write_text(latex)
        md_path.write_text(markdown)
        self.paths += [tex_path, md_path]
        self.sections.append(f"### {title}\n\n{markdown}\n")

    def text(self, text: str) -> None:
        self.sections.append(text + "\n")


def _mean_grid(run: RunData, datasets: Sequence[str]) -> pd.DataFrame:
    return sum(run.grid(d) for d in datasets) / len(datasets)


@dataclass
class _Report:
    """What every section of one report reads: the runs, the comparison with the baseline, and the writer."""

    run: RunData
    baseline: RunData | None
    runs: list[RunData]
    writer: _Writer
    notes: list[str]
    costs: dict[str, pd.DataFrame]
    alpha: float
    comparison: pd.DataFrame | None = None
    sig_note: str = ""

    @property
    def tag(self) -> str:
        """" (subset)" in figure titles when a smoke-test subset run is in them."""
        return " (subset)" if any(r.board.subset for r in self.runs) else ""

    @property
    def fig_dir(self) -> Path:
        return self.writer.out / "figures"

    @property
    def compared(self) -> bool:
        return self.comparison is not None and not self.comparison.empty


def write_report(run_dir: str | Path, out_dir: str | Path, baseline_dir: str | Path | None = None,
                 cost: str = "flops", *, extra_runs: Sequence[str | Path] = (), test: str = "ttest",
                 alpha: float = 0.05, n_resamples: int = 2000, seed: int = 0,
                 reference: str | None = None) -> list[Path]:
    """Write the report of `run_dir` (optionally against `baseline_dir`) into `out_dir`; return every file.

    cost: the x axis of the Pareto plots: "flops" (analytic, every dataset), "latency" (measured search p50) or
    "bytes" (measured index size); the last two exist for retrieval only. `extra_runs` are overlaid on the Pareto
    and diagonal figures and get a row block each in the paper table, whose significance marks compare every
    method with `reference` (a run's label or directory; default: the baseline, else the run). test: "ttest" or
    "randomization" for retrieval (STS always uses the paired bootstrap).
    """
    if cost not in COSTS:
        raise ElasticIRError(f"cost must be one of {', '.join(COSTS)}; got {cost!r}")
    report = _open_report(run_dir, baseline_dir, extra_runs, Path(out_dir), alpha)
    _write_header(report)
    write_check_section(report.run, report.writer)  # published references for this model
    _compare_with_baseline(report, test=test, n_resamples=n_resamples, seed=seed)
    _write_heatmaps(report)
    write_precision_facet(report.run, report.writer, report.fig_dir, report.tag)  # only runs with --precisions
    write_encoder_precision_facet(report.run, report.writer, report.fig_dir, report.tag)  # --encoder-precisions
    write_asymmetric_section(report.run, report.writer, report.fig_dir, report.tag,  # only asymmetric runs
                             report.costs[report.run.label], _shape(report.run, report.notes))
    _write_differences(report)
    _write_pareto(report, cost)
    write_funnel_section(report.run, report.writer, report.fig_dir, report.tag)  # only runs with funnels
    _write_diagonal(report)
    _write_tables(report)
    _write_paper_table(report, reference, test=test, n_resamples=n_resamples, seed=seed)
    return _finish(report)


def _open_report(run_dir, baseline_dir, extra_runs, out: Path, alpha: float) -> _Report:
    """Load the runs (distinct labels), create the output folders and write every run's cost table."""
    run = load_run(run_dir)
    baseline = load_run(baseline_dir) if baseline_dir else None
    runs = [run] + ([baseline] if baseline else []) + [load_run(r) for r in extra_runs]
    unique_labels(runs)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    report = _Report(run, baseline, runs, _Writer(out), notes, {r.label: cost_table(r, notes) for r in runs}, alpha)
    cost_path = out / "costs.csv"
    pd.concat(report.costs.values(), ignore_index=True).to_csv(cost_path, index=False)
    report.writer.paths.append(cost_path)
    return report


def _write_header(report: _Report) -> None:
    run, model = report.run, report.run.board.model
    report.writer.text(
        f"# Report: {run.label}\n\nRun `{run.board.run_id}` ({run.dir}); model {model.name} "
        f"({model.num_layers} layers x {model.hidden_size} dims, {model.pooling} pooling, weights sha256 "
        f"{model.weights_sha256[:12]}); grid layers {list(run.board.grid.layers)} x dims "
        f"{list(run.board.grid.dims)}; pair list {' '.join(map(str, run.pairs))}.")
    for other in report.runs:
        if other.board.subset:
            report.writer.text(f"**{other.label} is a smoke-test subset** ({other.board.subset}): its numbers are "
                               "not comparable with full-data runs.")
    for other in report.runs:
        if other.members:
            report.writer.text(f"**{other.label} is a baseline grid**: each cell is the model named here, evaluated "
                               "at its own cell with the same protocol (costs are that model's own):\n\n"
                               "| cell | model | weights sha256 | shape | its cell |\n|---|---|---|---|---|\n"
                               + "\n".join(f"| {cell} | {m.hub_id or Path(m.name).name} | {m.weights_sha256[:12]} | "
                                           f"{m.num_layers} x "
                                           f"{m.hidden_size} | {Cell(*m.source)} |"
                                           for cell, m in sorted(other.members.items())))
    outside = [p for p in run.pairs if p not in run.pairs_in_grid()]
    if outside:
        report.notes.append(f"{run.label}: pair-list cells {', '.join(map(str, outside))} are not in the evaluated "
                            "grid (not outlined, not in the diagonal).")


def _compare_with_baseline(report: _Report, *, test: str, n_resamples: int, seed: int) -> None:
    """Paired tests at the cells both grids have (significance.csv); notes say what could not be compared."""
    run, baseline, notes = report.run, report.baseline, report.notes
    if baseline is None:
        return
    shared = sorted(set(run.grid_cells) & set(baseline.grid_cells))
    shared_data = [d for d in run.datasets if d in baseline.tasks]
    if not shared or not shared_data:
        notes.append(f"{run.label} and {baseline.label} share no cells or datasets: no comparison.")
        return
    only_run = len(run.grid_cells) - len(shared)
    only_base = len(baseline.grid_cells) - len(shared)
    notes.append(f"Comparison with {baseline.label} ({baseline.board.run_id}): only the {len(shared)} "
                 f"cells both grids have are compared ({only_run} cells of {run.label} and {only_base} of "
                 f"{baseline.label} have no counterpart); datasets {', '.join(shared_data)}.")
    comparison = compare_runs(run, baseline, test=test, alpha=report.alpha, n_resamples=n_resamples, seed=seed)
    report.comparison, report.sig_note = comparison, describe(comparison, report.alpha)
    sig_path = report.writer.out / "significance.csv"
    comparison.to_csv(sig_path, index=False)
    report.writer.paths.append(sig_path)
    missing = comparison[comparison.p.isna()].dataset.unique()
    if len(missing):
        notes.append(f"No per-query / per-pair files for {', '.join(missing)}: those cells are not tested.")


def _write_heatmaps(report: _Report) -> None:
    """One layer x dim heatmap per dataset, then the means over each task's datasets (and over all)."""
    run, writer = report.run, report.writer
    flagged = write_anomaly_section(run, writer)  # marked "!" on the heatmaps, listed in report.md
    writer.text("## Layer x dim grids")
    for dataset in run.datasets:
        metric = run.metric(dataset)
        paths = figures.heatmap(run.grid(dataset), report.fig_dir / f"heatmap_{dataset}",
                                title=f"{run.label}: {dataset}", colorbar_label=metric, pairs=run.pairs,
                                marks=marks_for(flagged, dataset))
        writer.figure(paths, f"{run.label} on {dataset} ({run.tasks[dataset]}, {run.n_examples(dataset)} "
                             f"{'queries' if run.tasks[dataset] == 'retrieval' else 'pairs'}): {metric} of every "
                             f"cell (layer L runs the first L layers, d keeps the first d dims). Outlined: the "
                             f"pair-list (diagonal) cells, the ones an SRL-style model trains.")
    groups = {f"STS mean ({run.board.main_metric.get('sts', '')})": [d for d in run.datasets if run.tasks[d] == "sts"],
              f"retrieval mean ({run.board.main_metric.get('retrieval', '')})":
                  [d for d in run.datasets if run.tasks[d] == "retrieval"]}
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    if len(run.datasets) > 1 and len(set(run.tasks.values())) > 1:
        groups["mean of main metrics"] = run.datasets
    for name, members in groups.items():
        stem = "heatmap_mean-" + ("all" if name.startswith("mean of") else name.split()[0].lower())
        paths = figures.heatmap(_mean_grid(run, members), report.fig_dir / stem, title=f"{run.label}: {name}",
                                colorbar_label=name, pairs=run.pairs)
        writer.figure(paths, f"{run.label}: unweighted mean over {', '.join(members)} of each dataset's main "
                             "metric (Spearman for STS, nDCG@10 for retrieval). An average hides per-dataset "
                             "collapses: see the per-dataset heatmaps. Outlined: pair-list cells.")


def _write_differences(report: _Report) -> None:
    """Difference heatmaps (run - baseline) per dataset with significance marks, and their mean."""
    if not report.compared:
        return
    run, baseline, comparison, writer = report.run, report.baseline, report.comparison, report.writer
    layers, dims = list(run.board.grid.layers), list(run.board.grid.dims)
    writer.text(f"## {run.label} minus {baseline.label}")
    for dataset, rows in comparison.groupby("dataset", sort=False):
        diff = rows.pivot(index="layer", columns="dim", values="diff").reindex(index=layers, columns=dims)
        diff = diff.dropna(how="all").dropna(axis=1, how="all")  # only layers / dims the baseline has
        sig = rows.pivot(index="layer", columns="dim", values="significant")
        tested = bool(rows.p.notna().any())
        legend = (f"Difference {run.label} \u2212 {baseline.label} in {rows.metric.iloc[0]} (blue: {run.label} "
                  + (f"better). * = significant ({describe(rows, report.alpha)}). Only cells both grids have are "
                     "shown and tested." if tested else "better). No significance test: per-query / per-pair values "
                     "are missing (e.g. a published leaderboard JSON), so these are differences only. Only cells "
                     "both grids have are shown."))
        paths = figures.diff_heatmap(diff, sig, report.fig_dir / f"diff_{dataset}",
                                     title=f"{dataset}: {run.label} \u2212 {baseline.label}",
                                     colorbar_label=f"\u0394 {rows.metric.iloc[0]}", legend=legend, pairs=run.pairs)
        n_sig = int(rows.significant.sum())
        writer.figure(paths, legend + (f" {n_sig} of {len(rows)} shared cells significant ({rows.test.iloc[0]})."
                                       if tested else ""))
    if comparison.dataset.nunique() > 1:
        _write_mean_difference(report, layers, dims)


def _write_mean_difference(report: _Report, layers: list[int], dims: list[int]) -> None:
    """The mean over datasets of the differences, marked where a stratified paired bootstrap (every dataset
    resampled on its own) finds the mean difference significant after Holm over the cells."""
    run, baseline, comparison = report.run, report.baseline, report.comparison
    mean = comparison.groupby(["layer", "dim"])["diff"].mean().unstack().reindex(index=layers, columns=dims)
    mean = mean.dropna(how="all").dropna(axis=1, how="all")
    tested = compare_mean(run, baseline, datasets=list(comparison.dataset.unique()), alpha=report.alpha)
    if tested.empty:
        sig, how = mean.notna() & False, "No significance marks: per-query / per-pair values are missing."
    else:
        sig = tested.pivot(index="layer", columns="dim", values="significant")
        how = (f"* = significant: two-sided stratified paired bootstrap of the mean difference (each dataset's "
               f"pairs / queries resampled on their own), p < {report.alpha} after Holm over the {len(tested)} "
               f"cells; {int(tested.significant.sum())} significant.")
        path = report.writer.out / "significance_mean.csv"
        tested.to_csv(path, index=False)
        report.writer.paths.append(path)
    legend = (f"Mean over {comparison.dataset.nunique()} datasets of the difference {run.label} \u2212 "
              f"{baseline.label} in each dataset's main metric (blue: {run.label} better). {how} Only cells both "
              "grids have are shown.")
    paths = figures.diff_heatmap(mean, sig, report.fig_dir / "diff_mean", title=f"mean: {run.label} \u2212 "
                                 f"{baseline.label}", colorbar_label="\u0394 mean of main metrics", legend=legend,
                                 pairs=run.pairs)
    report.writer.figure(paths, legend)


def _write_pareto(report: _Report, cost: str) -> None:
    """Per dataset: every cell of every run at its cost, each run's Pareto front connected, BM25 dashed."""
    run = report.run
    report.writer.text(f"## Effectiveness vs cost ({cost})")
    for dataset in run.datasets:
        task = run.tasks[dataset]
        series, phrase, xlabel = [], None, None
        for r in report.runs:
            if dataset not in r.tasks:
                continue
            c = report.costs[r.label][report.costs[r.label].dataset == dataset].reset_index(drop=True)
            axis = _cost_axis(cost, task, c)
            if axis is None:
                continue
            x, xlabel, phrase = axis
            cells = [Cell(int(layer), int(dim)) for layer, dim in zip(c.layer, c.dim)]
            series.append({"label": r.label, "cost": x, "value": [r.value(dataset, cell) for cell in cells],
                           "cells": cells, "full": None if r.members else r.full_cell})  # a grid has no full model
        if not series:
            report.notes.append(f"{dataset}: no {cost} cost recorded for {task} cells; no Pareto plot "
                                "(use --cost flops).")
            continue
        bm25 = (run.bm25(dataset) or {}).get(run.metric(dataset))
        caption = (f"{dataset}: {run.metric(dataset)} against cost ({phrase}); every cell of every run is a point, "
                   f"each run's Pareto-optimal cells (costs within 1% count as equal) are connected and labelled L,d "
                   f"where space allows; stars: full models"
                   + (f"; dashed line: BM25 (pyserini, flat, {bm25:.4f}; no dense cost)" if bm25 else "") + ".")
        paths = figures.pareto(series, report.fig_dir / f"pareto_{dataset}_{cost}", title=dataset + report.tag, xlabel=xlabel,
                               ylabel=run.metric(dataset), reference={"BM25": bm25} if bm25 else None,
                               log_x=True)
        report.writer.figure(paths, caption + (" Subset runs are smoke tests on sampled data." if report.tag else ""))


def _write_diagonal(report: _Report) -> None:
    """Each run's pair-list cells, small to large, against analytic encoder FLOPs per token."""
    run, panels = report.run, []
    sts = [d for d in run.datasets if run.tasks[d] == "sts"]
    for dataset in run.datasets + (["STS mean"] if len(sts) > 1 else []):
        series = []
        members = sts if dataset == "STS mean" else [dataset]
        for r in report.runs:
            if not all(d in r.tasks for d in members):
                continue
            cells = r.pairs_in_grid()
            x = [_flops_per_token(r, cell) / 1e6 for cell in cells]
            y = [float(np.mean([r.value(d, cell) for d in members])) for cell in cells]
            series.append({"label": r.label, "x": x, "y": y, "cells": cells})
        bm25 = (run.bm25(dataset) or {}).get(run.metric(dataset)) if dataset in run.tasks else None
        panels.append({"title": dataset + report.tag, "ylabel": "mean Spearman" if dataset == "STS mean" else run.metric(dataset),
                       "series": series, "reference": {"BM25": bm25} if bm25 else None})
    if panels:
        paths = figures.diagonal_curves(panels, report.fig_dir / "diagonal",
                                        xlabel=f"encoder MFLOPs per token (n={CURVE_SEQ_LEN})")
        report.writer.figure(paths, "Each run's pair-list (diagonal) cells, small to large, against analytic encoder "
                                    f"FLOPs per token ({CURVE_SEQ_LEN}-token sequences; the dim d does not change "
                                    "encoder FLOPs); points labelled L,d; dashed: BM25.")


def _flops_per_token(run: RunData, cell: Cell) -> float:
    """Encoder FLOPs per token of a cell: the run's model cut at L, or a baseline member's own model."""
    member = run.members.get(cell)
    if member is None:
        return encode_flops_per_token(_shape(run, []), cell[0], CURVE_SEQ_LEN, run.board.model.pooling)
    return encode_flops_per_token(_member_shape(member), member.source[0], CURVE_SEQ_LEN,
                                  member.pooling or run.board.model.pooling)


def _write_tables(report: _Report) -> None:
    """Per-dataset grid tables, the diagonal table and (with a baseline) the comparison table."""
    run, comparison, writer, alpha = report.run, report.comparison, report.writer, report.alpha
    writer.text("## Tables")
    for dataset in run.datasets:
        own = comparison[comparison.dataset == dataset] if report.compared else None
        latex, markdown = tables.grid_table(run, dataset, own, describe(own, alpha) if own is not None else "")
        writer.table(f"grid_{dataset}", latex, markdown, f"{dataset} grid")
    latex, markdown = tables.diagonal_table(report.runs, run.datasets, comparison, report.sig_note)
    writer.table("diagonal", latex, markdown, "Diagonal (pair-list) cells")
    if report.compared:
        latex, markdown = tables.comparison_table(comparison, run.label, report.baseline.label)
        writer.table("comparison", latex, markdown,
                     f"{run.label} vs {report.baseline.label} at shared cells ({report.sig_note})")


def _write_paper_table(report: _Report, reference: str | None, *, test: str, n_resamples: int, seed: int) -> None:
    """Rows = the run's pair-list cells, columns = datasets + average, one row block per method; arrows against
    the reference method (per dataset: the report's paired tests, Holm over the pair cells; average: the
    stratified bootstrap of the mean, Holm over the pair cells)."""
    run, runs = report.run, report.runs
    ref = _find_reference(report, reference)
    cells, datasets = run.pairs_in_grid(), run.datasets
    if not cells:
        return
    average = "average" if len(datasets) > 1 else None
    blocks, marks = {}, {}
    for method in runs:
        values = pd.DataFrame({d: [method.value(d, c) if d in method.tasks else np.nan for c in cells]
                               for d in datasets}, index=[str(c) for c in cells])
        if average:
            values[average] = values[datasets].mean(axis=1, skipna=False)
        blocks[method.label] = values
        if method is not ref:
            marks[method.label] = _paper_marks(method, ref, cells, datasets, average, test=test, alpha=report.alpha,
                                               n_resamples=n_resamples, seed=seed)
    caption = (f"Pair-list cells per method ({', '.join(f'{d}: {run.metric(d)}' for d in datasets)}"
               + ("; average: unweighted mean of the datasets" if average else "") + "); bold = best method at "
               f"that cell; \u2191/\u2193 = significantly better/worse than {ref.label} at the same cell (paired "
               f"tests over pairs / queries, Holm over the {len(cells)} pair cells, p < {report.alpha}; average: "
               "stratified paired bootstrap of the mean)."
               + ("" if all(r.has_examples for r in runs) else " Runs loaded from a leaderboard JSON have no "
                  "per-pair / per-query values: their cells cannot be tested and carry no marks."))
    latex, markdown = tables.paper_table(blocks, marks, ref.label, caption)
    report.writer.table("paper", latex, markdown, f"Paper table (reference: {ref.label})")


def _find_reference(report: _Report, reference: str | None) -> RunData:
    if reference is None:
        return report.baseline or report.run
    for r in report.runs:
        if reference in (r.label, str(r.dir), r.board.run_id) or Path(reference).resolve() == r.dir.resolve():
            return r
    raise ElasticIRError(f"--reference {reference}: not one of the report's runs "
                         f"({', '.join(r.label for r in report.runs)}); give a label or run directory")


def _paper_marks(method: RunData, ref: RunData, cells, datasets, average, **options) -> pd.DataFrame:
    """Arrows per (column, cell) where `method` differs significantly from `ref`."""
    comparison = compare_runs(method, ref, test=options["test"], alpha=options["alpha"],
                              n_resamples=options["n_resamples"], seed=options["seed"], cells=cells)
    marks = pd.DataFrame("", index=[str(c) for c in cells], columns=list(datasets) + ([average] if average else []))
    if comparison.empty:
        return marks
    rows = comparison[comparison.significant]
    if average:
        mean = compare_mean(method, ref, datasets=list(datasets), alpha=options["alpha"],
                            n_resamples=options["n_resamples"], seed=options["seed"], cells=cells)
        if not mean.empty:
            rows = pd.concat([rows, mean[mean.significant].assign(dataset=average)])
    for r in rows.itertuples():
        marks.at[str(Cell(r.layer, r.dim)), r.dataset] = tables.UP if r.diff > 0 else tables.DOWN
    return marks


def _finish(report: _Report) -> list[Path]:
    """The notes section and report.md itself; every written file."""
    writer = report.writer
    if report.notes:
        writer.text("## Notes\n\n" + "\n".join(f"- {n}" for n in dict.fromkeys(report.notes)))
    path = writer.out / "report.md"
    path.write_text("\n".join(writer.sections))
    writer.paths.append(path)
    return writer.paths
