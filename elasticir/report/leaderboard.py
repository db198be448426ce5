"""Compare leaderboards side by side: Markdown for reading, HTML for looking.

`render_leaderboards(paths)` validates every leaderboard.json (default: the committed ones under
`leaderboards/`) and renders:
  * the full model (deepest layer, full width) of every run, one column per dataset, with BM25 baselines;
  * per run, its diagonal (its own pair list, rows) on every dataset (columns): pair lists differ per model,
    so they are never mixed in one table;
  * per dataset and run, every (layer, dim) cell as a layer x dim table, beside its heatmap (HTML).
Values are bold only where a column compares two runs or more. A run on a smoke-test subset is labelled
"subset" and never bolded against, or ranked with, full runs. The HTML page is self-contained (inline CSS,
heatmaps as inline PNG data, no scripts, no external resources) and every table fits the page width.
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from elasticir.cells import Cell
from elasticir.config import check_output_dir
from elasticir.errors import ElasticIRError
from elasticir.results.references import references_html
from elasticir.results.schema import Leaderboard, load_leaderboard
from elasticir.results.store import resolve_path

MISSING = "–"
DEFAULT_FOLDER = Path("leaderboards")


# ----------------------------------------------------------------------------------------------- loading


def _default_files(folder: Path = DEFAULT_FOLDER) -> list[Path]:
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise ElasticIRError(f"no leaderboard files given and none under {folder}/; pass leaderboard.json files "
                             "or run directories")
    return files


def _load_leaderboards(paths: Iterable[str | Path] | None = None) -> list[tuple[Path, Leaderboard]]:
    """Validate every file (an ElasticIRError names the first bad one); no paths: the committed ones."""
    loaded = []
    for path in _default_files() if paths is None or not list(paths) else paths:
        path = resolve_path(path)
        try:
            loaded.append((path, load_leaderboard(path)))
        except ElasticIRError:
            raise
        except (OSError, UnicodeDecodeError) as exc:
            raise ElasticIRError(f"{path}: cannot read leaderboard file: {exc}") from None
    if not loaded:
        raise ElasticIRError("no leaderboard files given")
    return loaded


# ----------------------------------------------------------------------------------------------- tables


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[tuple[str, list[float | None]]]  # (label, one value per column)
    kinds: list[str]  # "run", "subset" or "baseline", per row
    corner: str = "run"
    compare: bool = True  # False: the rows are not competitors (e.g. one run's layers): nothing is bold
    run: int | None = None  # index of the run a per-run table belongs to (its heatmap sits beside it)
    dataset: str | None = None

    def best(self) -> list[str | None]:
        """The formatted best value of each column compared across two rows or more (subset rows never count)."""
        out = []
        for j in range(len(self.columns)):
            values = [row[1][j] for row, kind in zip(self.rows, self.kinds)
                      if kind != "subset" and row[1][j] is not None and not math.isnan(row[1][j])]
            out.append(_fmt(max(values)) if self.compare and len(values) >= 2 else None)
        return out


def _fmt(value: float | None) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.4f}"


def _labels(sources: Sequence[tuple[Path, Leaderboard]]) -> list[str]:
    """Model names (hub id, else folder name), "(subset)" for smoke runs; duplicates get the run id, and the same
    run given twice gets its file name, so no two rows read alike."""
    boards = [board for _, board in sources]
    names = [(board.model.hub_id or Path(board.model.name).name if Path(board.model.name).is_absolute()
              else board.model.hub_id or board.model.name) + (" (subset)" if board.subset else "")
             for board in boards]
    names = [name if names.count(name) == 1 else f"{name} [{board.run_id.rsplit('-', 1)[-1]}]"
             for name, board in zip(names, boards)]
    names = [name if names.count(name) == 1 else f"{name} ({path.parent.name}/{path.name})"
             for name, (path, _) in zip(names, sources)]
    return [name if names.count(name) == 1 else f"{name} #{names[:k + 1].count(name)}"  # the same file twice
            for k, name in enumerate(names)]


def _datasets(boards: Sequence[Leaderboard]) -> list[tuple[str, str, str]]:
    """(dataset, task, main metric) in first-seen order; one dataset must keep its task and metric everywhere."""
    seen: dict[str, tuple[str, str]] = {}
    for board in boards:
        for record in board.datasets:
            metric = board.main_metric.get(record.task)
            if metric is None:
                raise ElasticIRError(f"run {board.run_id}: no main metric recorded for task {record.task!r}")
            if seen.setdefault(record.name, (record.task, metric)) != (record.task, metric):
                raise ElasticIRError(f"dataset {record.name!r} is {seen[record.name]} in one run and "
                                     f"{(record.task, metric)} in another; cannot compare them")
    return [(name, task, metric) for name, (task, metric) in seen.items()]


def _values(board: Leaderboard, dataset: str, metric: str) -> dict[tuple[int, int], float]:
    return {(c.layer, c.dim): c.metrics[metric] for c in board.results  # the float32 points of a precision axis
            if c.dataset == dataset and metric in c.metrics and c.precision in (None, "float32")
            and c.doc_layer is None}  # and the grid's own (L, L) points of an asymmetric grid


def _baselines(boards: Sequence[Leaderboard], dataset: str, metric: str) -> list[tuple[str, float, bool]]:
    """Distinct baselines of a dataset (the same BM25 recorded by several runs is shown once): (label, value,
    on a subset)."""
    rows: dict[tuple, str] = {}
    for board in boards:
        for baseline in board.baselines:
            if baseline.dataset != dataset or metric not in baseline.metrics:
                continue
            value = baseline.metrics[metric]
            subset = json.dumps(board.subset, sort_keys=True) if board.subset else ""
            key = (baseline.name, json.dumps(baseline.params, sort_keys=True, default=str), round(value, 6), subset)
            label = f"BM25 ({baseline.name})" if "bm25" in baseline.name.lower() else baseline.name
            rows.setdefault(key, label + (" (subset)" if subset else ""))
    labels = list(rows.values())
    return [(label if labels.count(label) == 1 else f"{label} {params}", value, bool(subset))
            for (_name, params, value, subset), label in rows.items()]


def _cell_name(cell: tuple[int, int]) -> str:
    return str(Cell(*cell))


def _full_model_table(boards, labels, datasets) -> Table:
    columns = [f"{name} ({metric})" for name, _task, metric in datasets]
    rows, kinds = [], []
    for label, board in zip(labels, boards):
        full = (board.model.num_layers, board.model.hidden_size)
        rows.append((label, [_values(board, name, metric).get(full) for name, _t, metric in datasets]))
        kinds.append("subset" if board.subset else "run")
    baseline_rows: dict[str, list[float | None]] = {}
    baseline_kind: dict[str, str] = {}
    for j, (name, _task, metric) in enumerate(datasets):
        for label, value, subset in _baselines(boards, name, metric):
            baseline_rows.setdefault(label, [None] * len(datasets))[j] = value
            baseline_kind[label] = "subset" if subset else "baseline"
    rows += list(baseline_rows.items())
    kinds += [baseline_kind[label] for label in baseline_rows]
    return Table("Full model (deepest layer, full width)", columns, rows, kinds)


def _build_tables(boards: Sequence[Leaderboard], labels: Sequence[str] | None = None) -> list[Table]:
    """The full-model comparison, then per run its diagonal, then per dataset and run its layer x dim grid."""
    labels = list(labels or [board.model.name for board in boards])
    datasets = _datasets(boards)
    tables = [_full_model_table(boards, labels, datasets)]
    for k, (label, board) in enumerate(zip(labels, boards)):
        values = {name: _values(board, name, metric) for name, _t, metric in datasets}
        mine = [(name, metric) for name, _t, metric in datasets if values[name]]
        pairs = [tuple(p) for p in board.grid.pairs if any(tuple(p) in values[name] for name, _m in mine)]
        if pairs:
            rows = [(_cell_name(p), [values[name].get(p) for name, _m in mine]) for p in pairs]
            tables.append(Table(f"{label}: diagonal (its pair list)", [f"{n} ({m})" for n, m in mine], rows,
                                ["run"] * len(rows), corner="cell", compare=False, run=k))
    for name, _task, metric in datasets:
        for k, (label, board) in enumerate(zip(labels, boards)):
            values = _values(board, name, metric)
            if not values:
                continue
            layers = sorted({layer for layer, _ in values})
            dims = sorted({dim for _, dim in values})
            rows = [(f"L{layer}", [values.get((layer, dim)) for dim in dims]) for layer in layers]
            tables.append(Table(f"{name} — {metric}: {label}", [f"d{dim}" for dim in dims], rows,
                                ["run"] * len(rows), corner="layer \\ dim", compare=False, run=k, dataset=name))
    return tables


# ----------------------------------------------------------------------------------------------- rendering

NOTE = ("Main metric per dataset. Bold: the best value of a column that compares two runs or more (subset runs "
        "never count). BM25 baselines do not depend on the cell. \"subset\": a smoke-test run on a sample of the "
        "queries and corpus, not comparable with full runs.")


def _runs_rows(sources: Sequence[tuple[Path, Leaderboard]], labels: Sequence[str]) -> list[list[str]]:
    rows = []
    for (path, board), label in zip(sources, labels):
        grid = f"L {','.join(map(str, board.grid.layers))} × d {','.join(map(str, board.grid.dims))}"
        subset = (f"subset: {board.subset.get('limit_queries')} queries, {board.subset.get('limit_corpus')} docs"
                  if board.subset else "full")
        rows.append([label, board.run_id, board.model.weights_sha256[:12], grid, subset,
                     f"{board.created_at:%Y-%m-%d %H:%M}", str(path)])
    return rows


RUNS_HEADER = ["run", "run id", "weights sha256", "grid", "data", "created", "file"]


_MD_SPECIAL = "\\`*_[]|~"  # Markdown punctuation a name could turn into emphasis, code, links or table cells


def md_text(text: object) -> str:
    """A name as literal Markdown text: HTML special characters as entities (a name is never raw HTML), Markdown
    punctuation backslash-escaped (so `|` cannot split a table cell, nor `*` or `[..](..)` format), and line
    breaks as spaces (a table row is one line). Used for every name the leaderboard tables show."""
    text = html.escape(str(text), quote=False).replace("\r", " ").replace("\n", " ")
    return "".join(f"\\{ch}" if ch in _MD_SPECIAL else ch for ch in text)


def _markdown(tables: Sequence[Table], sources: Sequence[tuple[Path, Leaderboard]], labels: Sequence[str]) -> str:
    lines = ["# elasticir leaderboard", "", NOTE, ""]
    for table in tables:
        best = table.best()
        lines += [f"## {md_text(table.title)}", "", f"| {table.corner} | "
                  + " | ".join(md_text(c) for c in table.columns) + " |", "|---|" + "---:|" * len(table.columns)]
        for (label, values), kind in zip(table.rows, table.kinds):
            shown = [f"**{_fmt(v)}**" if v is not None and kind != "subset" and _fmt(v) == b else _fmt(v)
                     for v, b in zip(values, best)]
            name = md_text(label)
            lines.append(f"| {f'*{name}*' if kind == 'baseline' else name} | " + " | ".join(shown) + " |")
        lines.append("")
    lines += ["## Runs", "", "| " + " | ".join(RUNS_HEADER) + " |", "|---" * len(RUNS_HEADER) + "|"]
    for row in _runs_rows(sources, labels):
        cells = [md_text(cell) for cell in row]
        cells[2] = f"`{row[2]}`"  # the sha256 prefix: hex digits in a code span
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5rem;color:#222;max-width:100%}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}h3{font-size:.95rem;margin:.2rem 0 .4rem}
table{border-collapse:collapse;font-size:.85rem;max-width:100%}
th,td{border:1px solid #ccc;padding:.2rem .45rem}
th{background:#f2f2f2;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{font-weight:bold;background:#e8f4e8}tr.baseline td,tr.baseline th{font-style:italic;color:#555}
tr.subset th,tr.subset td{color:#8a5a00}
td.wrap{word-break:break-all;font-size:.75rem}
.pair{display:flex;flex-wrap:wrap;gap:1rem 1.5rem;align-items:flex-start;margin-bottom:1.2rem}
.pair figure{margin:0}.pair img{max-width:100%;height:auto;width:340px}
.runs{display:flex;flex-wrap:wrap;gap:1.5rem}
p.note{color:#555;font-size:.85rem;max-width:60rem}code{font-size:.8rem}
"""


def _html_table(table: Table, e=html.escape) -> str:
    best = table.best()
    parts = [f'<table><thead><tr><th>{e(table.corner)}</th>'
             + "".join(f"<th>{e(c)}</th>" for c in table.columns) + "</tr></thead><tbody>"]
    for (label, values), kind in zip(table.rows, table.kinds):
        cells = []
        for value, b in zip(values, best):
            bold = value is not None and kind != "subset" and _fmt(value) == b
            cells.append(f'<td class="num{" best" if bold else ""}">'
                         f'{"<b>" if bold else ""}{e(_fmt(value))}{"</b>" if bold else ""}</td>')
        parts.append(f'<tr class="{kind}"><th scope="row">{e(label)}</th>{"".join(cells)}</tr>')
    parts.append("</tbody></table>")
    return "".join(parts)


def _heatmap_png(board: Leaderboard, dataset: str, metric: str, title: str) -> bytes:
    """A run's layer x dim heatmap of one dataset as PNG bytes (the report's own heatmap, PNG only)."""
    from elasticir.report import figures  # lazy: matplotlib, only when a page is rendered

    values = _values(board, dataset, metric)
    frame = pd.Series(values).unstack().sort_index().sort_index(axis=1)
    with tempfile.TemporaryDirectory() as folder:
        (png,) = figures.heatmap(frame, Path(folder) / "heatmap", title=title, colorbar_label=metric,
                                 pairs=[tuple(p) for p in board.grid.pairs], formats=("png",),
                                 marks=[(a.layer, a.dim) for a in board.anomalies if a.dataset == dataset])
        return png.read_bytes()


def _html(tables: Sequence[Table], sources: Sequence[tuple[Path, Leaderboard]], labels: Sequence[str]) -> str:
    e = html.escape
    boards = [board for _, board in sources]
    metrics = {name: metric for name, _t, metric in _datasets(boards)}
    parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             '<title>elasticir leaderboard</title>', f'<style>{CSS}</style></head><body>',
             '<h1>elasticir leaderboard</h1>', f'<p class="note">{e(NOTE)}</p>']
    diagonal = [t for t in tables if t.run is not None and t.dataset is None]
    grids = [t for t in tables if t.dataset is not None]
    parts.append(f"<h2>{e(tables[0].title)}</h2>{_html_table(tables[0])}")
    if diagonal:
        parts.append('<h2>Diagonal of each run</h2><div class="runs">')
        parts += [f"<div><h3>{e(t.title)}</h3>{_html_table(t)}</div>" for t in diagonal]
        parts.append("</div>")
    for dataset in dict.fromkeys(t.dataset for t in grids):
        parts.append(f"<h2>{e(dataset)} — {e(metrics[dataset])}, every (layer, dim) cell</h2>")
        for table in (t for t in grids if t.dataset == dataset):
            board, label = boards[table.run], labels[table.run]
            image = base64.b64encode(_heatmap_png(board, dataset, metrics[dataset], f"{label}: {dataset}")).decode()
            parts.append(f'<div class="pair"><div><h3>{e(label)}</h3>{_html_table(table)}</div>'
                         f'<figure><img alt="{e(label)} {e(dataset)} layer x dim heatmap" '
                         f'src="data:image/png;base64,{image}"></figure></div>')
    parts += references_html(boards, list(labels))  # published numbers for each run
    parts.append("<h2>Runs</h2><table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in RUNS_HEADER)
                 + "</tr></thead><tbody>")
    for row in _runs_rows(sources, labels):
        parts.append("<tr>" + "".join(f'<td class="{"wrap" if j in (1, 6) else ""}">{e(cell)}</td>'
                                      for j, cell in enumerate(row)) + "</tr>")
    parts.append("</tbody></table></body></html>")
    return "\n".join(parts) + "\n"


def render_leaderboards(paths: Iterable[str | Path] | None = None, *, page: bool = True) -> tuple[str, str]:
    """(Markdown, self-contained HTML) comparing the runs' main metric per dataset and cell; `page=False` skips
    the HTML (its heatmaps take a moment each) and returns "" for it."""
    sources = _load_leaderboards(paths)
    labels = _labels(sources)
    tables = _build_tables([board for _, board in sources], labels)
    return _markdown(tables, sources, labels), _html(tables, sources, labels) if page else ""


def write_leaderboards(paths: Iterable[str | Path] | None, out_dir: str | Path) -> tuple[Path, Path]:
    """Write leaderboard.md and leaderboard.html into out_dir."""
    out_dir = Path(out_dir)
    blocker = next((p for p in [out_dir, *out_dir.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:  # before rendering: a wrong --out costs nothing
        raise ElasticIRError(f"--out {out_dir}: {blocker} is a file, not a folder; --out is the folder that gets "
                             "leaderboard.md and leaderboard.html: choose a folder")
    markdown, page = render_leaderboards(paths)
    check_output_dir(out_dir)
    (out_dir / "leaderboard.md").write_text(markdown)
    (out_dir / "leaderboard.html").write_text(page)
    return out_dir / "leaderboard.md", out_dir / "leaderboard.html"
