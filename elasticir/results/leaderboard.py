"""Compare leaderboards side by side, and re-run one to check that it reproduces.

`render_leaderboards(paths)` validates every leaderboard.json and renders Markdown and a self-contained HTML page
(inline CSS, no scripts, no external resources) with, per dataset and its main metric:
  * the full model (deepest layer, full width) of every run, one column per dataset;
  * the diagonal: the grid.pairs cells that were evaluated;
  * every (layer, dim) cell.
Rows are runs (model, plus the run id when one model appears in several runs) and BM25 baselines; the best
value of each column is bold.

`reproduce(path)` re-runs the recorded config into a fresh folder (recompute, no shared cache) and lists every
metric, of every cell and baseline, that moved by more than the tolerance; changed weights or data files are
flagged explicitly. Costs and timings are machine-dependent and not compared.
"""

from __future__ import annotations

import html
import json
import math
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from elasticir.cells import Cell
from elasticir.errors import ElasticIRError
from elasticir.results.schema import Leaderboard, load_leaderboard

MISSING = "–"


# ----------------------------------------------------------------------------------------------- loading


def _resolve(path: str | Path) -> Path:
    """A leaderboard.json, or a run directory holding one."""
    path = Path(path)
    return path / "leaderboard.json" if path.is_dir() else path


def load_leaderboards(paths: Iterable[str | Path]) -> list[tuple[Path, Leaderboard]]:
    """Validate every file (an ElasticIRError names the first bad one)."""
    loaded = []
    for path in paths:
        path = _resolve(path)
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
    kinds: list[str]  # "run" or "baseline", per row

    def best(self) -> list[str | None]:
        """The formatted best (highest) value of each column compared across two rows or more; ties all bold."""
        out = []
        for j in range(len(self.columns)):
            values = [row[1][j] for row in self.rows if row[1][j] is not None and not math.isnan(row[1][j])]
            out.append(_fmt(max(values)) if len(values) >= 2 else None)
        return out


def _fmt(value: float | None) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.4f}"


def _labels(boards: Sequence[Leaderboard]) -> list[str]:
    names = [Path(board.model.name).name if Path(board.model.name).is_absolute() else board.model.name
             for board in boards]
    return [name if names.count(name) == 1 else f"{name} [{board.run_id}]" for name, board in zip(names, boards)]


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
    return {(c.layer, c.dim): c.metrics[metric] for c in board.results if c.dataset == dataset and metric in c.metrics}


def _baselines(boards: Sequence[Leaderboard], dataset: str, metric: str) -> list[tuple[str, float]]:
    """Distinct baselines of a dataset (the same BM25 recorded by several runs is shown once)."""
    rows: dict[tuple, str] = {}
    for board in boards:
        for baseline in board.baselines:
            if baseline.dataset != dataset or metric not in baseline.metrics:
                continue
            value = baseline.metrics[metric]
            key = (baseline.name, json.dumps(baseline.params, sort_keys=True, default=str), round(value, 6))
            rows.setdefault(key, f"BM25 ({baseline.name})" if "bm25" in baseline.name.lower() else baseline.name)
    labels = list(rows.values())
    out = []
    for (name, _params, value), label in rows.items():
        out.append((label if labels.count(label) == 1 else f"{label} {_params}", value))
    return out


def _cell_name(cell: tuple[int, int]) -> str:
    return str(Cell(*cell))


def build_tables(boards: Sequence[Leaderboard]) -> list[Table]:
    labels = _labels(boards)
    datasets = _datasets(boards)
    tables = []

    # 1. the full model of each run, one column per dataset
    columns = [f"{name} ({metric})" for name, _task, metric in datasets]
    rows, kinds = [], []
    for label, board in zip(labels, boards):
        full = (board.model.num_layers, board.model.hidden_size)
        rows.append((label, [_values(board, name, metric).get(full) for name, _t, metric in datasets]))
        kinds.append("run")
    baseline_rows: dict[str, list[float | None]] = {}
    for j, (name, _task, metric) in enumerate(datasets):
        for label, value in _baselines(boards, name, metric):
            baseline_rows.setdefault(label, [None] * len(datasets))[j] = value
    rows += list(baseline_rows.items())
    kinds += ["baseline"] * len(baseline_rows)
    tables.append(Table("Full model (deepest layer, full width)", columns, rows, kinds))

    # 2. per dataset: the diagonal (grid.pairs) and every cell
    for name, _task, metric in datasets:
        values = [_values(board, name, metric) for board in boards]
        baselines = _baselines(boards, name, metric)
        pairs = sorted({tuple(p) for board, v in zip(boards, values) for p in board.grid.pairs if tuple(p) in v})
        cells = sorted({cell for v in values for cell in v})
        for title, chosen in ((f"{name} — {metric}, diagonal (grid pairs)", pairs),
                              (f"{name} — {metric}, every (layer, dim) cell", cells)):
            if not chosen:
                continue
            rows = [(label, [v.get(c) for c in chosen]) for label, v in zip(labels, values)
                    if any(c in v for c in chosen)]
            kinds = ["run"] * len(rows)
            rows += [(label, [value] * len(chosen)) for label, value in baselines]
            kinds += ["baseline"] * len(baselines)
            tables.append(Table(title, [_cell_name(c) for c in chosen], rows, kinds))
    return tables


# ----------------------------------------------------------------------------------------------- rendering


def _markdown(tables: Sequence[Table], sources: Sequence[tuple[Path, Leaderboard]]) -> str:
    lines = ["# elasticir leaderboard", "",
             "Main metric per dataset; best per column in **bold**; BM25 baselines do not depend on the cell.", ""]
    for table in tables:
        best = table.best()
        lines += [f"## {table.title}", "", "| run | " + " | ".join(table.columns) + " |",
                  "|---|" + "---:|" * len(table.columns)]
        for (label, values), kind in zip(table.rows, table.kinds):
            shown = [f"**{_fmt(v)}**" if v is not None and _fmt(v) == b else _fmt(v) for v, b in zip(values, best)]
            name = label.replace("|", "\\|")
            lines.append(f"| {f'*{name}*' if kind == 'baseline' else name} | " + " | ".join(shown) + " |")
        lines.append("")
    lines += ["## Runs", "", "| run | run id | weights sha256 | grid | created | file |", "|---|---|---|---|---|---|"]
    for (path, board), label in zip(sources, _labels([b for _, b in sources])):
        grid = f"L {','.join(map(str, board.grid.layers))} × d {','.join(map(str, board.grid.dims))}"
        lines.append(f"| {label} | {board.run_id} | `{board.model.weights_sha256[:12]}` | {grid} | "
                     f"{board.created_at:%Y-%m-%d %H:%M} | {path} |")
    return "\n".join(lines) + "\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:2rem}
.wrap{overflow-x:auto}
table{border-collapse:collapse;font-size:.85rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;white-space:nowrap}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{font-weight:bold;background:#e8f4e8}tr.baseline td{font-style:italic;color:#555}
p.note{color:#666;font-size:.85rem}code{font-size:.8rem}
"""


def _html(tables: Sequence[Table], sources: Sequence[tuple[Path, Leaderboard]]) -> str:
    e = html.escape
    parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
             '<title>elasticir leaderboard</title>', f'<style>{CSS}</style></head><body>',
             '<h1>elasticir leaderboard</h1>',
             ('<p class="note">Main metric per dataset; best per column in bold; BM25 baselines (italic) do not '
              'depend on the cell.</p>')]
    for table in tables:
        best = table.best()
        parts.append(f'<h2>{e(table.title)}</h2><div class="wrap"><table><thead><tr><th>run</th>'
                     + "".join(f"<th>{e(c)}</th>" for c in table.columns) + "</tr></thead><tbody>")
        for (label, values), kind in zip(table.rows, table.kinds):
            cells = []
            for value, b in zip(values, best):
                bold = value is not None and _fmt(value) == b
                cells.append(f'<td class="num{" best" if bold else ""}">'
                             f'{"<b>" if bold else ""}{e(_fmt(value))}{"</b>" if bold else ""}</td>')
            parts.append(f'<tr class="{kind}"><th scope="row">{e(label)}</th>{"".join(cells)}</tr>')
        parts.append("</tbody></table></div>")
    parts.append('<h2>Runs</h2><div class="wrap"><table><thead><tr><th>run</th><th>run id</th>'
                 '<th>weights sha256</th><th>grid</th><th>created</th><th>file</th></tr></thead><tbody>')
    for (path, board), label in zip(sources, _labels([b for _, b in sources])):
        grid = f"L {','.join(map(str, board.grid.layers))} × d {','.join(map(str, board.grid.dims))}"
        parts.append(f"<tr><td>{e(label)}</td><td>{e(board.run_id)}</td>"
                     f"<td><code>{e(board.model.weights_sha256[:12])}</code></td><td>{e(grid)}</td>"
                     f"<td>{board.created_at:%Y-%m-%d %H:%M}</td><td>{e(str(path))}</td></tr>")
    parts.append("</tbody></table></div></body></html>")
    return "\n".join(parts) + "\n"


def render_leaderboards(paths: Iterable[str | Path]) -> tuple[str, str]:
    """(Markdown, self-contained HTML) comparing the runs' main metric per dataset and cell."""
    sources = load_leaderboards(paths)
    tables = build_tables([board for _, board in sources])
    return _markdown(tables, sources), _html(tables, sources)


def write_leaderboards(paths: Iterable[str | Path], out_dir: str | Path) -> tuple[Path, Path]:
    """Write leaderboard.md and leaderboard.html into out_dir."""
    markdown, page = render_leaderboards(paths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "leaderboard.md").write_text(markdown)
    (out_dir / "leaderboard.html").write_text(page)
    return out_dir / "leaderboard.md", out_dir / "leaderboard.html"


# ----------------------------------------------------------------------------------------------- reproduce


@dataclass(frozen=True)
class Difference:
    """One way a re-run differs from the recorded leaderboard.

    kind: "metric" (a cell's metric), "baseline" (a baseline's metric), "missing" / "extra" (a cell, metric or
    baseline only on one side), "weights" (model weights sha256), "data" (a data file's sha256), "config" (a
    numeric setting such as dtype or max_length resolved differently).
    """

    kind: str
    dataset: str | None
    layer: int | None
    dim: int | None
    metric: str | None
    recorded: float | str | None
    reproduced: float | str | None

    @property
    def delta(self) -> float | None:
        if isinstance(self.recorded, float) and isinstance(self.reproduced, float):
            return self.reproduced - self.recorded
        return None

    def __str__(self) -> str:
        where = " ".join(part for part in (
            self.dataset, f"({self.layer},{self.dim})" if self.layer is not None else None, self.metric) if part)
        delta = f" (Δ {self.delta:+.2e})" if self.delta is not None else ""
        return f"{self.kind}: {where}: recorded {self.recorded} -> reproduced {self.reproduced}{delta}"


def _close(a: float, b: float, tolerance: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tolerance


def compare_leaderboards(recorded: Leaderboard, reproduced: Leaderboard, *, tolerance: float = 1e-4) -> list[Difference]:
    """Every metric beyond `tolerance`, plus changed weights / data / numeric settings (costs and timings not)."""
    diffs: list[Difference] = []
    if recorded.model.weights_sha256 != reproduced.model.weights_sha256:
        diffs.append(Difference("weights", None, None, None, "weights_sha256", recorded.model.weights_sha256,
                                reproduced.model.weights_sha256))
    new_files = {d.name: d.files for d in reproduced.datasets}
    for record in recorded.datasets:
        files = new_files.get(record.name, [])
        for i, old in enumerate(record.files):
            new = next((f for f in files if Path(f.path).name == Path(old.path).name), files[i] if i < len(files) else None)
            if new is None or new.sha256 != old.sha256:
                diffs.append(Difference("data", record.name, None, None, f"sha256 {Path(old.path).name}", old.sha256,
                                        new.sha256 if new else None))
    old_numeric, new_numeric = recorded.config.get("numeric", {}), reproduced.config.get("numeric", {})
    for key in sorted(set(old_numeric) | set(new_numeric)):
        if key != "weights_sha256" and old_numeric.get(key) != new_numeric.get(key):
            diffs.append(Difference("config", None, None, None, key, str(old_numeric.get(key)),
                                    str(new_numeric.get(key))))

    def compare(kind: str, dataset: str, layer, dim, old: dict[str, float], new: dict[str, float] | None) -> None:
        if new is None:
            diffs.append(Difference("missing", dataset, layer, dim, None, "recorded", None))
            return
        for metric in sorted(set(old) | set(new)):
            if metric not in new or metric not in old:
                diffs.append(Difference("missing" if metric not in new else "extra", dataset, layer, dim, metric,
                                        old.get(metric), new.get(metric)))
            elif not _close(old[metric], new[metric], tolerance):
                diffs.append(Difference(kind, dataset, layer, dim, metric, old[metric], new[metric]))

    new_cells = {(c.dataset, c.layer, c.dim): c.metrics for c in reproduced.results}
    for cell in recorded.results:
        compare("metric", cell.dataset, cell.layer, cell.dim, cell.metrics,
                new_cells.pop((cell.dataset, cell.layer, cell.dim), None))
    for (dataset, layer, dim) in sorted(new_cells):
        diffs.append(Difference("extra", dataset, layer, dim, None, None, "reproduced"))
    new_baselines = {(b.dataset, b.name): b.metrics for b in reproduced.baselines}
    for baseline in recorded.baselines:
        compare("baseline", baseline.dataset, None, None,
                {f"{baseline.name} {k}": v for k, v in baseline.metrics.items()},
                {f"{baseline.name} {k}": v for k, v in new_baselines.pop((baseline.dataset, baseline.name)).items()}
                if (baseline.dataset, baseline.name) in new_baselines else None)
    for dataset, name in sorted(new_baselines):
        diffs.append(Difference("extra", dataset, None, None, name, None, "reproduced"))
    return diffs


def reproduce(path: str | Path, *, tolerance: float = 1e-4, out: str | Path | None = None,
              data_root: str | Path | None = None, device: str | None = None, encoder=None) -> list[Difference]:
    """Re-run the recorded config and return what differs beyond `tolerance` (an empty list: reproduced).

    The run goes to `out` (kept) or a temporary folder (removed afterwards), always with recompute and a cache
    inside that folder, so nothing from the original run is reused. `data_root` / `device` override the recorded
    ones (a run recorded on CPU re-runs on CPU unless `device` says otherwise); `encoder` (an ElasticEncoder) skips loading the model again, e.g. in tests.
    """
    from pydantic import ValidationError

    from elasticir.runner import RunConfig, run

    path = _resolve(path)
    board = load_leaderboard(path)
    values = {k: v for k, v in board.config.items() if k != "numeric"}
    target = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="elasticir-reproduce-"))
    values.update(out=str(target), cache_dir=None, recompute=True)
    if data_root is not None:
        values["data_root"] = str(data_root)
    if device is not None:
        values["device"] = device
    elif values.get("device") is None and board.model.device == "cpu":
        values["device"] = "cpu"  # a CPU run stays on CPU (fp32) even where a GPU would be picked by default
    try:
        config = RunConfig(**values)
    except ValidationError as exc:
        raise ElasticIRError(f"{path}: the recorded config is not a valid run config for this elasticir:\n{exc}") from None
    try:
        outcome = run(config, encoder)
        return compare_leaderboards(board, outcome.leaderboard, tolerance=tolerance)
    finally:
        if out is None:
            shutil.rmtree(target, ignore_errors=True)


def format_differences(differences: Sequence[Difference], tolerance: float = 1e-4) -> str:
    if not differences:
        return f"reproduced: every metric within {tolerance:g} of the recorded value"
    return f"{len(differences)} difference(s) beyond {tolerance:g}:\n" + "\n".join(f"  {d}" for d in differences)
