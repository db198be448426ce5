"""Read a finished run directory (results/<model>-<hash>/) into one object the report modules share."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from elasticir.cells import Cell, Grid
from elasticir.errors import ElasticIRError
from elasticir.io import file_checksum
from elasticir.results.schema import Leaderboard, check_table_values, load_leaderboard
from elasticir.results.store import PartFolder, RunFolder


def read_csv_any(path: Path) -> pd.DataFrame:
    """A CSV whether or not it is really gzipped (runs before per-query files were compressed wrote plain text
    under the .csv.gz name; they still load)."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    return pd.read_csv(path, dtype={"query_id": str}, compression="gzip" if gzipped else None)


@dataclass
class RunData:
    dir: Path
    board: Leaderboard
    cells: pd.DataFrame
    label: str = ""
    _cache: dict = field(default_factory=dict, repr=False)
    points: pd.DataFrame | None = None  # every (cell, precision) point when the run has a precision axis
    asymmetric: pd.DataFrame | None = None  # every (query layer, doc layer, dim[, precision]) point, when any

    encoder_points: pd.DataFrame | None = None  # every (cell[, precision], encoder precision) point, if an axis

    def __post_init__(self) -> None:
        """With --encoder-precisions, `cells` keeps the reference encoder's points and `encoder_points` all of them
        (the encoder-precision facet); with --query-layers / --doc-layers, `asymmetric` keeps every point of the
        run (query layer `layer`, `doc_layer` filled in) and the rest only the grid's own points; then, with
        --precisions, `cells` keeps the float32 points (what every grid figure and table reads, unchanged) and
        `points` all of them (the precision facet)."""
        if "encoder_precision" in self.cells.columns and self.encoder_points is None:
            self.encoder_points = self.cells
            reference = self.cells.encoder_precision.isna() | (self.cells.encoder_precision == "float32")
            self.cells = self.cells[reference].drop(columns="encoder_precision").reset_index(drop=True)
        if "doc_layer" in self.cells.columns and self.asymmetric is None:
            self.asymmetric = self.cells.assign(doc_layer=self.cells.doc_layer.fillna(self.cells.layer).astype(int))
            self.cells = self.cells[self.cells.doc_layer.isna()].drop(columns="doc_layer").reset_index(drop=True)
        if "precision" in self.cells.columns and self.points is None:
            self.points = self.cells
            float32 = self.cells.precision.isna() | (self.cells.precision == "float32")
            self.cells = self.cells[float32].drop(columns="precision").reset_index(drop=True)

    # --- identity -------------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.board.model.name

    @property
    def short_name(self) -> str:
        return self.board.model.name.rstrip("/").split("/")[-1]

    @property
    def full_cell(self) -> Cell:
        """The full model: deepest layer at full width (the reference point of every figure)."""
        return Cell(self.board.model.num_layers, self.board.model.hidden_size)

    @property
    def pairs(self) -> list[Cell]:
        return [Cell(int(layer), int(dim)) for layer, dim in self.board.grid.pairs]

    @property
    def grid_cells(self) -> list[Cell]:
        if self.board.grid.cells is not None:  # a baseline grid: only the cells its members serve
            return [Cell(*cell) for cell in self.board.grid.cells]
        return Grid(tuple(self.board.grid.layers), tuple(self.board.grid.dims)).cells

    @cached_property
    def members(self) -> dict[Cell, object]:
        """A baseline grid's cells -> the MemberRecord of the model serving each (empty for one-model runs)."""
        return {Cell(r.layer, r.dim): r.member for r in self.board.results if r.member is not None}

    @property
    def has_examples(self) -> bool:
        """Whether per-pair / per-query files exist (a run directory, not a published leaderboard JSON)."""
        return any(self.part_dir(d).is_dir() for d in self.datasets)

    def pairs_in_grid(self) -> list[Cell]:
        present = set(self.grid_cells)
        return [p for p in self.pairs if p in present]

    # --- datasets ---------------------------------------------------------------------------------------------
    @cached_property
    def tasks(self) -> dict[str, str]:
        return {d.name: d.task for d in self.board.datasets}

    @property
    def datasets(self) -> list[str]:
        return list(self.tasks)

    def metric(self, dataset: str) -> str:
        return self.board.main_metric[self.tasks[dataset]]

    def n_examples(self, dataset: str) -> int:
        return next(d.n_examples for d in self.board.datasets if d.name == dataset)

    def table(self, dataset: str) -> pd.DataFrame:
        return self.cells[self.cells.dataset == dataset]

    def value(self, dataset: str, cell: Cell, metric: str | None = None) -> float:
        rows = self.table(dataset)
        rows = rows[(rows.layer == cell[0]) & (rows.dim == cell[1])]
        return float(rows[metric or self.metric(dataset)].iloc[0]) if len(rows) else float("nan")

    def grid(self, dataset: str, metric: str | None = None) -> pd.DataFrame:
        """Layer x dim table (rows layers ascending, columns dims ascending) of one metric."""
        rows = self.table(dataset)
        return rows.pivot(index="layer", columns="dim", values=metric or self.metric(dataset)).sort_index()

    def bm25(self, dataset: str) -> dict[str, float] | None:
        for baseline in self.board.baselines:
            if baseline.dataset == dataset and baseline.name.startswith("bm25"):
                return baseline.metrics
        return None

    # --- per-example files (for significance tests) -----------------------------------------------------------
    def part(self, dataset: str) -> PartFolder:
        return RunFolder(self.dir).part(self.tasks[dataset], dataset)

    def part_dir(self, dataset: str) -> Path:
        return self.part(dataset).dir

    def example_file(self, dataset: str, path: Path, *, expected: bool = True) -> Path | None:
        """A per-example file of a part (`path`, one of its PartFolder's), checked: None when the run did not keep it
        (a published leaderboard JSON, or a file the part never wrote); an error when the part's finished mark
        records it (or, for a mark without a record, the part's folder exists and `expected`) but it is missing
        or changed, so a damaged part is not silently reported without its significance tests."""
        folder = RunFolder(self.dir)
        name = folder.part(self.tasks[dataset], dataset).name_of(path)  # as the part's mark records it
        recorded = folder.recorded_files(self.tasks[dataset], dataset)
        fix = (f"re-run the command that produced the {dataset} part into {self.dir.parent} (it recomputes the "
               "part), or report the leaderboard.json alone (no significance tests)")
        if isinstance(recorded, dict):
            if name not in recorded:
                return None
            if not path.is_file():
                raise ElasticIRError(f"{path}: missing, though the finished part {dataset} records it; {fix}")
            if file_checksum(path)["sha256"] != recorded[name]:
                raise ElasticIRError(f"{path}: changed since the part {dataset} was finished (sha256 differs); {fix}")
            return path
        if path.is_file():
            return path
        if expected and self.part_dir(dataset).is_dir():
            raise ElasticIRError(f"{path}: missing from the part folder {self.part_dir(dataset)}; {fix}")
        return None

    def per_query(self, dataset: str, measure: str) -> pd.DataFrame | None:
        """query_id x (layer, dim) table of one measure, or None when the run did not keep per-query values."""
        key = ("pq", dataset, measure)
        if key not in self._cache:
            path = self.example_file(dataset, self.part(dataset).per_query)
            if path is None:
                self._cache[key] = None
            else:
                frame = read_csv_any(path)
                frame = frame[frame.measure == measure]
                if "precision" in frame.columns:  # the grid's tests compare float32 points
                    frame = frame[frame.precision.isna() | (frame.precision == "float32")]
                if "doc_layer" in frame.columns:  # ... of the grid's own (L, L) cells
                    frame = frame[frame.doc_layer.isna()]
                self._cache[key] = frame.pivot_table(index="query_id", columns=["layer", "dim"], values="value")
        return self._cache[key]

    def bm25_per_query(self, dataset: str, measure: str) -> pd.Series | None:
        path = self.example_file(dataset, self.part(dataset).bm25_per_query, expected=self.bm25(dataset) is not None)
        if path is None:
            return None
        frame = read_csv_any(path)
        return frame[frame.measure == measure].set_index("query_id")["value"]

    def pair_scores(self, dataset: str) -> tuple[np.ndarray, np.ndarray, list[Cell]] | None:
        """(cosines [cells, pairs], gold [pairs], cells) of an STS dataset, or None when not kept."""
        path = self.example_file(dataset, self.part(dataset).pair_scores)
        if path is None:
            return None
        with np.load(path) as data:
            return data["cosines"], data["gold"], [Cell(*(int(v) for v in c)) for c in data["cells"]]


def _cells_from_leaderboard(board: Leaderboard) -> pd.DataFrame:
    """The per-cell table a run directory keeps in cells.csv, rebuilt from the leaderboard's results."""
    return pd.DataFrame([{"dataset": c.dataset, "layer": c.layer, "dim": c.dim,
                          **({"precision": c.precision} if c.precision else {}),
                          **({"encoder_precision": c.encoder_precision} if c.encoder_precision else {}),
                          **({"doc_layer": c.doc_layer} if c.doc_layer is not None else {}), **c.metrics, **c.costs}
                         for c in board.results])


def load_run(run_dir: str | Path, label: str | None = None) -> RunData:
    """Validate and load a run directory, or a published leaderboard JSON (then without per-example values, so
    nothing can be tested for significance against it); a clear error when it is neither."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        board = load_leaderboard(run_dir)
        run_dir, cells = run_dir.with_suffix(""), _cells_from_leaderboard(board)  # no part files under it
    else:
        folder = RunFolder(run_dir)
        board = load_leaderboard(folder.leaderboard)
        cells_path = folder.cells
        if not cells_path.is_file():
            raise ElasticIRError(f"{run_dir}: no cells.csv; is this a finished elasticir run directory?")
        cells = pd.read_csv(cells_path)
        check_table_values(cells, cells_path)
    subset = " (subset)" if board.subset else ""  # in every figure title and legend: never read as a full run
    return RunData(run_dir, board, cells, label or board.model.name.rstrip("/").split("/")[-1] + subset)


def unique_labels(runs: list[RunData]) -> None:
    """Make run labels distinct (same model twice: add the run id)."""
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
    for run in runs:
        if seen[run.label] > 1:
            run.label = f"{run.label} [{run.board.run_id.rsplit('-', 1)[-1]}]"


@dataclass
class _EncoderPrecisionRun(RunData):
    """A run's points at one encoder precision other than the reference, read like a run of its own: its cells
    and, from its part folders' `encoder_points` folder, its per-query values (what the paired tests compare)."""

    precision: str = "float32"

    def part(self, dataset: str) -> PartFolder:
        return super().part(dataset).encoder_points(self.precision)


def encoder_precision_run(run: RunData, precision: str) -> _EncoderPrecisionRun:
    """`run` at encoder precision `precision` (float32 points of the index-precision axis only)."""
    points = run.encoder_points[run.encoder_points.encoder_precision == precision].drop(columns="encoder_precision")
    if "precision" in points.columns:
        points = points[points.precision.isna() | (points.precision == "float32")].drop(columns="precision")
    return _EncoderPrecisionRun(run.dir, run.board, points.reset_index(drop=True), f"{run.label} {precision}",
                               precision=precision)
