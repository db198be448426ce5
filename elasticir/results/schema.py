"""The leaderboard JSON: a versioned pydantic schema, so every file can be validated and compared later.

It holds what makes a run reproducible in this field: the exact weights (sha256) and revision, data checksums,
grid, config, library versions, seed, command line, timings and machine, next to every cell's metrics.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

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


class CellResult(_Strict):
    dataset: str
    layer: int
    dim: int
    precision: str | None = None  # retrieval with --precisions: float32, float16, int8, binary, binary+rescore
    metrics: dict[str, float]
    costs: dict[str, float] = {}  # index bytes, build seconds, search throughput, latency
    member: MemberRecord | None = None  # in a baseline grid: the model this cell comes from


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
        return self


def load_leaderboard(path: Path) -> Leaderboard:
    """Read and validate a leaderboard JSON file, with a message that names the file."""
    try:
        board = Leaderboard.model_validate_json(Path(path).read_text())
    except FileNotFoundError:
        raise ElasticIRError(f"{path}: no such leaderboard file") from None
    except ValidationError as exc:
        raise ElasticIRError(f"{path} is not a valid elasticir leaderboard (schema {SCHEMA_VERSION}):\n{exc}") from None
    check_names(board, path)
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
