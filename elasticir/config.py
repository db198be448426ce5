"""The run configuration, split by concern: each part owns its fields' help, its validators and its share of
the run id.

A run is described by seven parts (what encodes, which cells, how retrieval searches, where the work runs,
which subset, where outputs go, which datasets). The command line is generated from their fields
(elasticir.cli), so an option is declared once, here: its help is the field's description, its flag the field's
name. The parts nest, but a RunConfig is read, built, copied and recorded through the flat field names it had
before the split (`config.batch_size`, `RunConfig(batch_size=8)`, YAML files, leaderboards' recorded configs),
so old files still load and leaderboards do not change (see Grouped).

Checks that need no machine state are validators here; those that do (a device present, a Ray cluster
answering, an output folder writable, a dataset name, an index string FAISS parses) are `check(config)`, which
the runner calls before any model is loaded. Both raise ElasticIRError naming the flag, or leave a pydantic
error that elasticir.cli_support formats the same way, so a wrong flag costs seconds, not an evaluation.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from elasticir.errors import ElasticIRError
from elasticir.model_lookup import DEFAULT_MODEL
from elasticir.network import probe_address, require_ray
from elasticir.sharding import parse_shard

DEFAULT_STS = ("stsbenchmark", "sts12", "sickr")
DEFAULT_RETRIEVAL = ("scifact",)


def option(default: Any = None, help: str = "", *, flags: tuple[str, ...] = (), cli: bool = True,
           **constraints) -> Any:
    """A config field and its command-line option in one declaration: `help` is the option's help text,
    `flags` replaces the flag derived from the field name (e.g. to add `-m`), `cli=False` keeps it YAML-only."""
    extra = {"flags": list(flags)} if flags else {}
    if not cli:
        extra["cli"] = False
    return Field(default, description=help, json_schema_extra=extra or None, **constraints)


def group_type(field) -> type[Grouped] | None:
    """The sub-model class of a field that is a group of options, else None."""
    kind = field.annotation
    return kind if isinstance(kind, type) and issubclass(kind, Grouped) else None


@functools.cache
def leaf_fields(kind: type[BaseModel]) -> dict[str, Any]:
    """Every option of a config, however deeply its groups nest: flat name -> pydantic FieldInfo."""
    leaves: dict[str, Any] = {}
    for name, field in kind.model_fields.items():
        group = group_type(field)
        found = leaf_fields(group) if group else {name: field}
        if clash := set(found) & set(leaves):
            raise TypeError(f"{kind.__name__}: option name(s) {sorted(clash)} appear in two groups")
        leaves |= found
    return leaves


@functools.cache
def _owners(kind: type[BaseModel]) -> dict[str, str]:
    """Each flat option name -> the field of `kind` that holds it (its group, or itself)."""
    owners = {}
    for name, field in kind.model_fields.items():
        group = group_type(field)
        owners |= dict.fromkeys(leaf_fields(group) if group else (name,), name)
    return owners


class Grouped(BaseModel):
    """A config made of groups (sub-models, to any depth) and plain fields that reads and writes flat.

    In: flat keys are routed into their groups (a group may also be given whole, as a mapping); an unknown key
    stays at the top, where extra="forbid" names it. Out: `model_dump` is flat, in `RECORDED_ORDER` (the order
    the keys had before the split) then any newer field. Attribute reads and `model_copy(update=...)` take the
    flat names too, so code that used one flat config works unchanged.
    """

    model_config = ConfigDict(extra="forbid")
    RECORDED_ORDER: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _route_flat_keys(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        owners = _owners(cls)
        routed: dict[str, Any] = {}
        for key, value in values.items():  # groups given whole first, so flat keys refine them
            if key in cls.model_fields:
                routed[key] = (value.model_dump() if isinstance(value, BaseModel)
                               else dict(value) if isinstance(value, dict) else value)
        for key, value in values.items():
            owner = owners.get(key)
            if owner is None:
                routed[key] = value  # unknown: refused by extra="forbid", under its own name
            elif owner != key and isinstance(routed.setdefault(owner, {}), dict):
                routed[owner][key] = value
        return routed

    @model_serializer(mode="wrap")
    def _flat(self, handler) -> dict[str, Any]:
        nested, flat = handler(self), {}
        for name, field in type(self).model_fields.items():
            if group_type(field) and isinstance(nested.get(name), dict):
                flat |= nested[name]  # already flat: the group serialised itself
            elif name in nested:
                flat[name] = nested[name]
        order = [key for key in self.RECORDED_ORDER if key in flat]
        return {key: flat[key] for key in order} | {k: v for k, v in flat.items() if k not in order}

    def __getattr__(self, name: str) -> Any:
        owner = _owners(type(self)).get(name)
        if owner is None or owner == name:
            return super().__getattr__(name)
        return getattr(getattr(self, owner), name)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False):
        """A copy; `update` takes flat names and is validated like any config."""
        if not update:
            return super().model_copy(deep=deep)
        return type(self).model_validate(self.model_dump() | dict(update))


def _not_empty(flag: str):
    def check(value):
        if value is not None and not value:
            raise ElasticIRError(f"{flag} is empty; give a comma list or leave {flag} out for the default")
        return value
    return check


class EncodeConfig(Grouped):
    """What encodes the texts: the model, how it pools and batches, where it runs, the prompts for every text."""

    model: str = option(DEFAULT_MODEL, "Hub id, local folder, or a folder name under $ELASTICIR_MODELS "
                        "(default: sentence-transformers/all-MiniLM-L6-v2).", flags=("--model", "-m"))
    pooling: str | None = option(None, "Replace the model's Pooling mode: mean, cls, max, lasttoken, "
                                 "weightedmean, mean_sqrt_len_tokens (default: the model's own).")
    max_length: int | None = option(None, "Max tokens (default: the model's own setting).", ge=1)
    batch_size: int = option(64, "Encoding batch size (default 64; the cap, with --max-tokens-per-batch).", ge=1)
    max_tokens_per_batch: int | None = option(None, "Form encoding batches by this many tokens (padded tokens "
                                              "on padded attention) instead of a fixed count.", ge=1)
    device: str | None = option(None, "cpu, cuda, cuda:1 (default: cuda when present).")
    backend: Literal["torch", "onnx"] = option("torch", "torch (default) or onnx (onnxruntime on the CPU, "
                                               "BERT models; same numbers to ~1e-6).")
    # by default each dataset's texts get the model's prompt that MTEB selects for the task (encoders.prompts)
    prompt_name: str | None = option(None, "One of the model's prompts for every text (none: no prompt). "
                                     "Default: the prompt MTEB selects for each dataset's task.")
    trust_remote_code: bool = option(False, "Load a model whose repository ships its own Python code "
                                     "(refused by default).")
    latency_texts: int = option(32, "Texts timed per layer for the measured encode cost, one batch "
                                "(default 32; 0 = skip the probe; --smoke: 0).", ge=0)
    encoder_precisions: list[str] | None = option(
        None, "Encoder precisions, comma list of float32 (the reference, always evaluated first), bfloat16 (GPU, "
        "or a CPU with AVX512-BF16 / AMX: autocast), float16 (GPU), int8 (CPU: ONNX Runtime dynamic "
        "quantization); one point per (layer, dim, encoder precision), each against float32. Default: the "
        "device's own (float32 on the CPU, bfloat16 on a GPU).")

    @field_validator("encoder_precisions")
    @classmethod
    def _reference_first(cls, value: list[str] | None) -> list[str] | None:
        """Known names, none twice, float32 first: the reference every difference is taken against."""
        if value is None:
            return None
        from elasticir.encoders.precision import check_precisions  # lazy: pulls torch

        check_precisions(value)
        return ["float32"] + [p for p in value if p != "float32"]

    def numeric(self) -> dict:
        """Its share of the run id: a prompt name only when given, so runs with the MTEB-selected prompts keep
        their ids (model settings enter through the loaded model, which the runner records); the encoder
        precisions only when there is more than the reference (its dtype is recorded with the model)."""
        part = {"prompt_name": self.prompt_name} if self.prompt_name is not None else {}
        if self.encoder_precisions and len(self.encoder_precisions) > 1:
            part["encoder_precisions"] = list(self.encoder_precisions)
        return part


class GridConfig(Grouped):
    """Which (layer, dim) cells are evaluated and which of them form the reported diagonal."""

    layers: list[int] | None = option(None, "Comma list of layers, e.g. 1,2,6 (default: every layer).")
    dims: list[int] | None = option(None, "Comma list of dims, e.g. 64,384 (default: 32,64,.. up to the width).")
    pairs: list[tuple[int, int]] | None = option(None, "Pair list LAYER:DIM,... (default derived from the "
                                                 "model shape).")

    _layers = field_validator("layers")(_not_empty("--layers"))
    _dims = field_validator("dims")(_not_empty("--dims"))

    def numeric(self) -> dict:
        """Nothing of its own: the grid enters the run id as resolved against the model (the runner's part)."""
        return {}


class RetrievalConfig(Grouped):
    """How retrieval indexes, searches and scores every cell, and what it adds next to the grid."""

    index: str = option("flat", "flat (exact), hnsw, sq8, ivfpq, streamed (exact, streamed from the store in chunks), or a FAISS factory string.")
    flat_backend: Literal["torch", "faiss"] = option("torch", "Exact search backend: torch (matmul+topk) or faiss.")
    precisions: list[str] = option(
        ["float32"], "Retrieval precisions, comma list of float32 (always evaluated, the reference), float16, "
        "int8, binary, binary+rescore (binary Hamming search, then float rescoring of 4x k candidates); one point "
        "per (layer, dim, precision).")
    funnels: list[str] | None = option(
        None, "Funnel retrieval, comma list of L1:d1[:precision]/K/L2:d2 (e.g. 2:64/100/6:384), or auto: every "
        "grid cell x K in 50,100,200,500,1000, stage 2 the full cell.")
    k: int = option(1000, "Retrieval depth (default 1000).", ge=1)
    bm25: bool = option(True, "Add the pyserini BM25 baseline.")
    normalize: bool | None = option(None, "Re-normalise truncated vectors (default: as the model does).")
    query_prompt: str | None = option(None, "Literal prefix for retrieval queries (default: as MTEB selects "
                                      "from the model's prompts).")
    doc_prompt: str | None = option(None, "Literal prefix for retrieval documents (default: as MTEB selects "
                                    "from the model's prompts).")
    latency_samples: int = option(100, "Queries timed one at a time per cell for the search latency "
                                  "(default 100; 0 = skip).", ge=0)
    query_layers: list[int] | None = option(
        None, "Asymmetric retrieval: query layers Lq, each searched against every --doc-layers index at every "
        "dim (default: the grid's layers once --doc-layers is given; neither flag: queries and documents at the "
        "same layer, the plain grid).")
    doc_layers: list[int] | None = option(
        None, "Asymmetric retrieval: document layers Ld, e.g. 6 (documents at full depth, encoded once offline) "
        "(default: the grid's layers once --query-layers is given). One point per (Lq, Ld, dim).")

    _query_layers = field_validator("query_layers")(_not_empty("--query-layers"))
    _doc_layers = field_validator("doc_layers")(_not_empty("--doc-layers"))

    @field_validator("query_layers", "doc_layers")
    @classmethod
    def _sorted_once(cls, value: list[int] | None) -> list[int] | None:
        """Each layer once, ascending: `1,6` and `6,1,1` are one grid, so one run id."""
        return sorted(set(value)) if value else value

    @property
    def asymmetric(self) -> bool:
        return self.query_layers is not None or self.doc_layers is not None

    @field_validator("precisions")
    @classmethod
    def _float32_first(cls, value: list[str]) -> list[str]:
        """float32 is always evaluated, first: the reference every grid table, figure and comparison reads."""
        if not value or len(set(value)) != len(value):
            return value  # empty or with a duplicate: check_precisions refuses it, one rule for every precision
        return ["float32"] + [p for p in value if p != "float32"]

    @field_validator("k")
    @classmethod
    def _k_fits_every_index(cls, k: int) -> int:
        """At most 2^31 - 1: FAISS, torch and Lucene cannot return more (a k beyond the corpus is capped to it
        at search time, index.dense.search_depth)."""
        from elasticir.index.dense import K_MAX  # lazy: pulls torch

        if k > K_MAX:
            raise ElasticIRError(f"--k {k}: larger than {K_MAX} (2^31 - 1), the most any index can return; a k "
                                 f"beyond the corpus returns the whole corpus, so use at most the corpus size")
        return k

    def numeric(self) -> dict:
        """Its share of the run id; precisions, funnels and asymmetric layers only when set, so runs without
        them keep their ids."""
        part = {key: getattr(self, key) for key in ("index", "flat_backend", "k", "normalize", "query_prompt",
                                                    "doc_prompt")}
        if self.precisions != ["float32"]:
            part["precisions"] = list(self.precisions)
        if self.funnels:
            part["funnels"] = list(self.funnels)
        if self.asymmetric:
            part["asymmetric"] = {"query_layers": self.query_layers, "doc_layers": self.doc_layers}
        return {"retrieval": part}


class ScaleConfig(Grouped):
    """Where the work runs and what the embedding store keeps (elasticir.distributed, encoders.store)."""

    executor: Literal["local", "ray"] = option("local", "local (this process) or ray (encoding actors + cell "
                                               "tasks on a Ray cluster; needs the [distributed] extra).")
    ray_address: str | None = option(None, "Ray cluster to join (default: $RAY_ADDRESS, else a local one).")
    workers: int | None = option(None, "Ray encoding actors (default: one per GPU, else one per CPU).", ge=1)
    shard: str | None = option(None, "i/n: encode shard i of n of every corpus into the store and exit (SLURM "
                               "arrays); the plain command then reuses the shards.")
    store_dtype: Literal["float32", "float16"] = option("float32", "Embedding store dtype: float32 (default) or "
                                                        "float16 (half the disk).")

    @model_validator(mode="after")
    def _flags_fit_the_executor(self) -> ScaleConfig:
        """Ray's flags only with Ray; a well-formed shard, and only without Ray (its actors take the shards)."""
        if self.executor != "ray":
            for flag, value in (("--workers", self.workers), ("--ray-address", self.ray_address)):
                if value is not None:
                    raise ElasticIRError(f"{flag} {value} is for the Ray executor and --executor is "
                                         f"{self.executor}; add --executor ray, or leave {flag} out")
        if self.shard is not None:
            parse_shard(self.shard)
            if self.executor == "ray":
                raise ElasticIRError("--shard is for clusters without Ray (one process per shard); with --executor "
                                     "ray the actors take the shards themselves: leave --shard out")
        return self

    def numeric(self) -> dict:
        """Its share of the run id: the store dtype only when not float32, so float32 runs keep their ids."""
        return {"store_dtype": self.store_dtype} if self.store_dtype != "float32" else {}


class SubsetConfig(Grouped):
    """A seeded subset of every dataset (a smoke test), never mixed with full results."""

    limit_queries: int | None = option(None, "Keep N queries (STS: pairs) per dataset, seeded; the run is a "
                                       "subset, never mixed with full results.", ge=1)
    limit_corpus: int | None = option(None, "Keep N documents per corpus: every judged one of the kept queries "
                                      "plus a seeded sample.", ge=1)
    seed: int = option(0, "Random seed of the subset and of every random choice, recorded in the leaderboard.")

    def numeric(self) -> dict:
        """Its share of the run id: the subset only for a subset run, so full runs keep their ids."""
        from elasticir.data.subset import describe  # lazy: pulls numpy

        subset = describe(self.limit_queries, self.limit_corpus, self.seed)
        return {"subset": subset} if subset else {}


class OutputConfig(Grouped):
    """Where data is read from and results go, and how the run is shown: none of it changes a number."""

    data_root: str | None = option(None, "Data root (default: $ELASTICIR_DATA, else ~/.cache/elasticir/data).")
    out: str = option("results", "Folder for run directories (default: results).")
    cache_dir: str | None = option(None, "Embedding (and ONNX) cache, content-keyed and safe to share between "
                                   "runs and nodes (default: OUT/_cache).")
    recompute: bool = option(False, "Recompute datasets an earlier run already finished.")
    show_progress: bool = option(True, "Progress bars.", cli=False)


class DatasetsConfig(Grouped):
    """What the run evaluates: its STS and retrieval datasets, and a baseline to compare with after it."""

    sts: list[str] = option(list(DEFAULT_STS), "STS datasets (default: stsbenchmark,sts12,sickr).")
    retrieval: list[str] = option(list(DEFAULT_RETRIEVAL), "Retrieval datasets (default: scifact).")
    baseline: str | None = option(None, "Baseline SPEC: a run directory (or leaderboard JSON), a train-separate "
                                  "folder, or a YAML mapping cells to models (\"4:256\": MODEL[@L:D]); missing "
                                  "member evaluations are run.")

    @model_validator(mode="after")
    def _something_to_evaluate(self) -> DatasetsConfig:
        if not self.sts and not self.retrieval:
            raise ElasticIRError("no datasets to evaluate: give --datasets (or sts / retrieval in the config)")
        return self


class RunConfig(Grouped):
    """Everything a run needs, by concern; the CLI options and YAML keys are its flat field names."""

    encoder: EncodeConfig = EncodeConfig()
    grid: GridConfig = GridConfig()
    datasets: DatasetsConfig = DatasetsConfig()
    search: RetrievalConfig = RetrievalConfig()
    subset: SubsetConfig = SubsetConfig()
    scale: ScaleConfig = ScaleConfig()
    output: OutputConfig = OutputConfig()

    RECORDED_ORDER: ClassVar[tuple[str, ...]] = (
        "model", "layers", "dims", "pairs", "sts", "retrieval", "index", "flat_backend", "precisions", "funnels",
        "k", "bm25", "normalize", "prompt_name", "query_prompt", "doc_prompt", "trust_remote_code",
        "latency_samples", "latency_texts", "limit_queries", "limit_corpus", "data_root", "out", "cache_dir",
        "batch_size", "max_tokens_per_batch", "max_length", "pooling", "device", "backend", "seed", "recompute",
        "show_progress", "executor", "ray_address", "workers", "shard", "store_dtype", "baseline")

    @model_validator(mode="after")
    def _one_encoder_per_shard(self) -> RunConfig:
        """`--shard` encodes the stores of one encoder; the other encoder precisions' stores are encoded by the
        plain command."""
        if self.shard is not None and self.encoder_precisions and len(self.encoder_precisions) > 1:
            raise ElasticIRError("--shard encodes the reference encoder's stores only; leave --encoder-precisions "
                                 "out of the shard jobs (the plain command with it encodes the other precisions)")
        return self

    @property
    def cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.out) / "_cache"

    def numeric(self, resolved: dict) -> dict:
        """What changes the numbers, the run id's content: `resolved` (the loaded model's settings and the grid
        against it, from the runner) and each part's share; datasets and output paths are no part of it."""
        numeric = dict(resolved)
        for part in (self.search, self.encoder, self.grid, self.scale, self.subset):
            numeric |= part.numeric()
        return numeric


# --- checks that need this machine: called by the runner before any model is loaded ------------------------------

def check_positive(value: int | None, flag: str, *, allow_none: bool = True, minimum: int = 1) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ElasticIRError(f"{flag} {value!r}: must be a whole number >= {minimum}")


def check_device(device: str | None, flag: str = "--device") -> None:
    """A device torch can use here: parseable, and CUDA / MPS only where present (no silent CPU fallback)."""
    if device is None:
        return
    import torch  # lazy: torch only when a device is named; `import elasticir.config` stays light

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ElasticIRError(f"{flag} {device!r} is not a device torch knows; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ElasticIRError(f"{flag} {device}: CUDA is not available on this machine (torch "
                                 f"{torch.__version__}); use --device cpu or leave --device out")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ElasticIRError(f"{flag} {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                                 f"numbered 0..{torch.cuda.device_count() - 1}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ElasticIRError(f"{flag} {device}: MPS is not available on this machine; use --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ElasticIRError(f"{flag} {device}: unsupported device type {parsed.type!r}; use cpu or cuda")


def check_output_dir(path: Path | str, flag: str = "--out") -> Path:
    """Create the output folder if needed and prove a file can be written in it (permissions, read-only
    file systems and a file in the way all fail here, not after the evaluation)."""
    path = Path(path).expanduser()
    blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ElasticIRError(f"{flag} {path}: {blocker} is a file, not a folder; choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ElasticIRError(f"{flag} {path} is not writable ({exc.strerror or exc}); choose another {flag}") from None
    return path


# where a run's dataset names come from: the flag of `run`, of `eval <stage>`, and the YAML key
DATASET_FLAGS = {"sts": "--sts / --datasets (YAML key sts)", "retrieval": "--retrieval / --dataset (YAML key retrieval)"}


def check_dataset_names(config: RunConfig, where: dict[str, str] | None = None) -> None:
    """Every dataset of a run is a name (catalog entry or folder name under the data root), never a path: a
    path would be read from anywhere and the run's parts written next to it, outside --out. `where`: per task,
    where its names came from (default: the flags, DATASET_FLAGS)."""
    from elasticir.data.catalog import check_dataset_name  # lazy: the catalog is ~4% of `elasticir --help`

    for task, flag in DATASET_FLAGS.items():
        for name in getattr(config, task):
            check_dataset_name(name, (where or {}).get(task, flag), config.data_root)


def check_ray(config: RunConfig) -> None:
    """With --executor ray: a cluster answers at the address given (or none is given) and Ray is installed."""
    if config.executor != "ray":
        return
    probe_address(config.ray_address or os.environ.get("RAY_ADDRESS"),
                  "--ray-address" if config.ray_address else "$RAY_ADDRESS")
    require_ray()


def check(config: RunConfig) -> None:
    """What a RunConfig's validators cannot know: the datasets' names, this machine's devices, the Ray
    cluster, writable output folders and (with --dims) an index FAISS can build at every dim."""
    check_dataset_names(config)
    check_device(config.device)
    check_ray(config)
    check_output_dir(config.out)
    if config.cache_dir:
        check_output_dir(config.cache_dir, "cache_dir")
    if config.retrieval and config.dims:  # without --dims the grid (and this check) waits for the model
        from elasticir.index.dense import check_index  # lazy: pulls torch

        check_index(config.index, config.dims, flat_backend=config.flat_backend)
