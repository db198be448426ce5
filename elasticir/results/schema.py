"""The leaderboard JSON: a versioned pydantic schema, so every file can be validated and compared later.

It holds what makes a run reproducible in this field: the exact weights (sha256) and revision, data checksums,
grid, config, library versions, seed, command line, timings and machine, next to every cell's metrics.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer, model_validator

from elasticir.cells import Cell, cell_range_error
from elasticir.errors import ElasticIRError

SCHEMA_VERSION = "1.0"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileRecord(_Strict):
    path: str
    sha256: str
    bytes: int


class ModelRecord(_Strict):
    name: str
    path: str  # where it was loaded from on the machine that ran it (not part of its identity)
    hub_id: str | None = None  # with weights_sha256, the model's identity: what `reproduce` looks for
    revision: str | None
    weights_sha256: str
    num_layers: int
    hidden_size: int
    pooling: str  # the Pooling module's mode(s): mean, cls, lasttoken, max, weightedmean, ... ("cls+mean")
    normalize: bool
    max_length: int
    prompts: dict[str, str] = {}
    dtype: str
    device: str
    training: dict | None = None  # an elasticir-trained model's method, trained cells, base, data, steps, seed
    head: list[str] = []  # modules after Pooling besides a final Normalize (Dense heads, ...)
    similarity: str = "cosine"  # the model's similarity_fn_name: what every cell is scored with
    default_prompt_name: str | None = None


class GridRecord(_Strict):
    layers: list[int]
    dims: list[int]
    pairs: list[tuple[int, int]]
    cells: list[tuple[int, int]] | None = None  # a baseline grid's cells when they do not fill layers x dims


class MemberRecord(_Strict):
    """The model that produced one cell of a baseline grid: its identity, its own shape, and which of its own
    cells (source) stands in for the grid cell."""

    name: str
    path: str | None = None
    hub_id: str | None = None
    weights_sha256: str
    num_layers: int
    hidden_size: int
    intermediate_size: int | None = None
    vocab_size: int | None = None
    pooling: str | None = None
    source: tuple[int, int]
    run_id: str | None = None


class PromptRecord(_Strict):
    name: str | None  # the model's prompt name, None for a literal text (--query-prompt) or no prompt
    text: str


class DatasetRecord(_Strict):
    name: str
    task: Literal["sts", "retrieval"]
    split: str
    n_examples: int
    source: str | None  # what was read: "local sha256:<digest of the files' sha256s>" for a local copy
    official_source: str | None = None  # where the dataset is published (catalog), when known
    files: list[FileRecord]
    # the prompt each side's texts got ("text" for STS, "query"/"document" for retrieval), when any side got
    # one (absent: no prompt anywhere)
    prompts: dict[str, PromptRecord] | None = None
    settings: dict[str, Any] | None = None  # what the command that produced this part ran (reproduce replays it)
    # retrieval: the documents searched (after any subset); absent in leaderboards written before it was recorded
    n_docs: int | None = None


class CellResult(_Strict):
    dataset: str
    layer: int
    dim: int
    precision: str | None = None  # retrieval with --precisions: float32, float16, int8, binary, binary+rescore
    encoder_precision: str | None = None  # with --encoder-precisions: float32 (the reference), bfloat16, int8, ...
    metrics: dict[str, float]
    costs: dict[str, float] = {}  # index bytes, build seconds, search throughput, latency
    member: MemberRecord | None = None  # in a baseline grid: the model this cell comes from
    # an asymmetric point (--query-layers / --doc-layers): documents at this layer, queries at `layer`
    doc_layer: int | None = None

    @model_serializer(mode="wrap")
    def _doc_layer_only_when_set(self, handler) -> dict[str, Any]:
        """`doc_layer` is written only where it differs from `layer`, so leaderboards without an asymmetric
        grid are written as before."""
        data = handler(self)
        if data.get("doc_layer") is None:
            data.pop("doc_layer", None)
        return data


class BaselineResult(_Strict):
    """A non-elastic reference next to the cells, e.g. BM25 (pyserini) on the same queries."""

    dataset: str
    name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    run_file: str | None = None


class FunnelResult(_Strict):
    """A funnel: stage 1 (layer, dim, precision) shortlists k per query, stage 2 (layer, dim) rescores them; its
    metrics, costs (search multiply-adds, Hamming bits, bytes, latency and their ratios to the full cell) and its
    paired test against the full cell (p over queries, Holm-corrected over the dataset's funnels)."""

    dataset: str
    funnel: str
    stage1: dict[str, Any]
    k: int
    stage2: dict[str, int]
    metrics: dict[str, float]
    costs: dict[str, float] = {}
    p_value: float | None = None
    p_holm: float | None = None
    selected: str = ""


class AnomalyRecord(_Strict):
    """A cell flagged after the run (elasticir.report.anomalies): kind and why; its numbers are unchanged."""

    dataset: str
    layer: int
    dim: int
    kind: str
    detail: str


class Timing(_Strict):
    dataset: str
    stage: str
    seconds: float


class EncodeLatency(_Strict):
    """Measured encode speed of a layer-L cell (early exit at L) on the run's device."""

    layer: int
    tokens_per_s: float
    ms_per_text: float
    texts: int
    tokens: int
    device: str
    encoder_precision: str | None = None  # with --encoder-precisions: each precision timed side by side


class MachineRecord(_Strict):
    platform: str
    python: str
    processor: str
    cpu_count: int
    gpu: str | None


class Leaderboard(_Strict):
    schema_version: Literal["1.0"] = SCHEMA_VERSION
    created_at: datetime
    run_id: str
    model: ModelRecord
    config: dict[str, Any]
    grid: GridRecord
    datasets: list[DatasetRecord]
    main_metric: dict[str, str]
    results: list[CellResult]
    baselines: list[BaselineResult] = []
    funnels: list[FunnelResult] = []  # funnel retrieval (eval funnel / funnels in the config); older files: none
    encode_latency: list[EncodeLatency] = []
    notes: list[str] = []
    anomalies: list[AnomalyRecord] = []  # flagged cells (order breaks, NaN, near chance, ...); older files: none
    subset: dict[str, Any] | None = None  # smoke-test limits (queries, corpus, seed); None: the full datasets
    library_versions: dict[str, str]
    seed: int
    command: list[str]
    timings: list[Timing]
    machine: MachineRecord

    @model_validator(mode="after")
    def _consistent(self) -> Leaderboard:
        names = {d.name for d in self.datasets}
        for baseline in self.baselines:
            if baseline.dataset not in names:
                raise ValueError(f"baseline for dataset {baseline.dataset!r} which is not listed under datasets")
        for cell in self.results:
            if cell.dataset not in names:
                raise ValueError(f"result for dataset {cell.dataset!r} which is not listed under datasets")
            if message := cell_range_error(cell.layer, cell.dim, self.model.num_layers, self.model.hidden_size):
                raise ValueError(f"result cell {Cell(cell.layer, cell.dim)}: {message}")
            if cell.doc_layer is not None and (message := cell_range_error(cell.doc_layer, cell.dim,
                                                                           self.model.num_layers,
                                                                           self.model.hidden_size)):
                raise ValueError(f"result cell {Cell(cell.layer, cell.dim)} doc_layer: {message}")
        return self


CORRELATIONS = ("spearman", "pearson")
# ir_measures names: nDCG@10, RR@10, R@100, R(rel=2)@1000, P@5, AP, ...: fractions of a perfect ranking
IR_MEASURE = re.compile(r"^(nDCG|RR|R|P|AP|MAP|Success|Judged|Rprec|Bpref|ERR|infAP|NERR\d*)(\(.*\))?(@\d+)?$")


def metric_bounds(name: str) -> tuple[float, float, str] | None:
    """(low, high, what) a metric of this name can take, or None for a name without known bounds."""
    if name.lower() in CORRELATIONS:
        return -1.0, 1.0, "a correlation"
    if IR_MEASURE.match(name):
        return 0.0, 1.0, "an IR measure"
    return None


def value_error(name: str, value: float, *, count: bool = False) -> str | None:
    """Why `value` cannot be a `name` (a metric; `count`: a cost, size, time or count, never negative)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number"
    if math.isnan(value):
        return None  # an undefined metric (e.g. no relevant document), recorded as such
    if math.isinf(value):
        return f"{value} is not finite"
    if count:
        return f"{value:g} is negative (a count, size or time)" if value < 0 else None
    bounds = metric_bounds(name)
    if bounds and not bounds[0] <= value <= bounds[1]:
        return f"{value:g} is outside [{bounds[0]:g}, {bounds[1]:g}] ({bounds[2]})"
    return None


def _board_values(board: Leaderboard) -> Iterator[tuple[str, str, float, bool]]:
    """(entry, name, value, is a count) of every number of a leaderboard that has a range."""
    for i, cell in enumerate(board.results):
        where = (f"results[{i}] ({cell.dataset} L{cell.layer}{f' docL{cell.doc_layer}' if cell.doc_layer else ''} "
                 f"d{cell.dim}{' ' + cell.precision if cell.precision else ''})")
        yield from ((where, k, v, False) for k, v in cell.metrics.items())
        yield from ((where, k, v, True) for k, v in cell.costs.items())
    for i, baseline in enumerate(board.baselines):
        where = f"baselines[{i}] ({baseline.dataset} {baseline.name})"
        yield from ((where, k, v, False) for k, v in baseline.metrics.items())
    for i, funnel in enumerate(board.funnels):
        where = f"funnels[{i}] ({funnel.dataset} {funnel.funnel})"
        yield from ((where, k, v, False) for k, v in funnel.metrics.items())
        yield from ((where, k, v, True) for k, v in funnel.costs.items())
        for name in ("p_value", "p_holm"):
            if (value := getattr(funnel, name)) is not None:
                yield where, name, value, False
    for i, record in enumerate(board.datasets):
        yield f"datasets[{i}] ({record.name})", "n_examples", record.n_examples, True
    for i, latency in enumerate(board.encode_latency):
        for name in ("tokens_per_s", "ms_per_text", "texts", "tokens"):
            yield f"encode_latency[{i}] (layer {latency.layer})", name, getattr(latency, name), True
    for i, timing in enumerate(board.timings):
        yield f"timings[{i}] ({timing.dataset} {timing.stage})", "seconds", timing.seconds, True


def check_values(board: Leaderboard, path: Path | str) -> None:
    """Refuse a number no run can produce (Spearman 7.5, nDCG -0.2, a negative size), naming file and entry."""
    for where, name, value, count in _board_values(board):
        bounds = (0.0, 1.0, "") if name in ("p_value", "p_holm") else None
        problem = (f"{value:g} is outside [0, 1] (a p-value)" if bounds and not math.isnan(value)
                   and not 0 <= value <= 1 else None) if bounds else value_error(name, value, count=count)
        if problem:
            raise ElasticIRError(f"{path}: {where} {name} = {problem}; the file was edited or damaged: "
                                 "regenerate it by re-running its command, or fix that entry")


def check_table_values(table, path: Path | str) -> None:
    """check_values for a per-cell table (cells.csv): every column whose name has bounds, and the cost columns."""
    cost_columns = ("index_bytes", "build_s", "search_qps", "latency_p50_ms", "latency_p95_ms")
    for column in table.columns:
        count = column in cost_columns
        if not count and metric_bounds(str(column)) is None:
            continue
        for row, value in zip(table.index, table[column]):
            try:
                value = float(value)
            except (TypeError, ValueError):
                problem = f"{value!r} is not a number"
            else:
                problem = value_error(str(column), value, count=count)
            if problem:
                cell = table.loc[row]
                where = " ".join(f"{k} {cell[k]}" for k in ("dataset", "layer", "dim") if k in table.columns)
                raise ElasticIRError(f"{path} row {int(row) + 2} ({where}): {column} = {problem}; the file was edited "
                                     "or damaged: regenerate it by re-running its command, or fix that row")


def load_leaderboard(path: Path) -> Leaderboard:
    """Read and validate a leaderboard JSON file (its schema, then every number against what it can be), with
    a message that names the file."""
    try:
        board = Leaderboard.model_validate_json(Path(path).read_text())
    except FileNotFoundError:
        raise ElasticIRError(f"{path}: no such leaderboard file") from None
    except ValidationError as exc:
        raise ElasticIRError(f"{path} is not a valid elasticir leaderboard (schema {SCHEMA_VERSION}):\n{exc}") from None
    check_names(board, path)
    check_values(board, path)
    return board


def check_names(board: Leaderboard, path: Path | str) -> None:
    """Every dataset name a leaderboard carries is a name, not a path: `reproduce`, `report` and baselines join
    them into paths (part folders, figure files), so a name that climbs out with `..` or is absolute would read
    and write outside the run directory."""
    from elasticir.data.catalog import check_dataset_name

    fix = (f"the file was edited or not written by elasticir; correct that name in {path} or regenerate the "
           "leaderboard with elasticir run")
    named = [(f"datasets[{i}].name", d.name) for i, d in enumerate(board.datasets)]
    named += [(f"results[{i}].dataset", c.dataset) for i, c in enumerate(board.results)]
    named += [(f"baselines[{i}].dataset", b.dataset) for i, b in enumerate(board.baselines)]
    named += [(f"funnels[{i}].dataset", f.dataset) for i, f in enumerate(board.funnels)]
    for task in ("sts", "retrieval"):
        value = board.config.get(task) or []
        named += [(f"config.{task}[{i}]", name) for i, name in enumerate(value if isinstance(value, list) else [value])]
    for where, name in named:
        check_dataset_name(name, f"{path}: {where}", fix=fix)
