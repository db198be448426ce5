"""Checks of a run's flags and output location that run before any model is loaded or text encoded.

A wrong flag must cost seconds, not an evaluation: each check names the flag, the value and the fix, and raises
ElasticIRError (one `error:` line and exit status 2 on the command line).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from elasticir.errors import ElasticIRError


def check_positive(value: int | None, flag: str, *, allow_none: bool = True, minimum: int = 1) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ElasticIRError(f"{flag} {value!r}: must be a whole number >= {minimum}")


def check_k(k: int | None, flag: str = "--k") -> None:
    """A retrieval depth every index can take: >= 1 and <= 2^31 - 1 (a k beyond the corpus is capped to it at
    search time, index.dense.search_depth; beyond 2^31 FAISS, torch and Lucene cannot represent it)."""
    from elasticir.index.dense import K_MAX

    check_positive(k, flag, allow_none=False)
    if k > K_MAX:
        raise ElasticIRError(f"{flag} {k}: larger than {K_MAX} (2^31 - 1), the most any index can return; a k "
                             f"beyond the corpus returns the whole corpus, so use at most the corpus size")


def check_device(device: str | None, flag: str = "--device") -> None:
    """A device torch can use here: parseable, and CUDA / MPS only where present (no silent CPU fallback)."""
    if device is None:
        return
    import torch

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


def check_run_config(config) -> None:
    """Every flag of a RunConfig that can be checked without the model or the data."""
    check_k(config.k)
    check_positive(config.batch_size, "--batch-size", allow_none=False)
    check_positive(config.max_length, "--max-length")
    check_positive(config.max_tokens_per_batch, "--max-tokens-per-batch")
    check_positive(config.limit_queries, "--limit-queries")
    check_positive(config.limit_corpus, "--limit-corpus")
    check_positive(config.latency_samples, "latency_samples", allow_none=False, minimum=0)
    check_positive(config.latency_texts, "latency_texts", allow_none=False, minimum=0)
    for flag, values in (("--layers", config.layers), ("--dims", config.dims)):
        if values is not None and not values:
            raise ElasticIRError(f"{flag} is empty; give a comma list or leave {flag} out for the default")
    if not config.sts and not config.retrieval:
        raise ElasticIRError("no datasets to evaluate: give --datasets (or sts / retrieval in the config)")
    check_dataset_names(config)
    check_device(config.device)
    check_scale(config)
    check_output_dir(config.out)
    if config.cache_dir:
        check_output_dir(config.cache_dir, "cache_dir")
    if config.retrieval and config.dims:  # without --dims the grid (and this check) waits for the model
        from elasticir.index.dense import check_index

        check_index(config.index, config.dims, flat_backend=config.flat_backend)


# where a run's dataset names come from: the flag of `run`, of `eval <stage>`, and the YAML key
DATASET_FLAGS = {"sts": "--sts / --datasets (YAML key sts)", "retrieval": "--retrieval / --dataset (YAML key retrieval)"}


def check_dataset_names(config, where: dict[str, str] | None = None) -> None:
    """Every dataset of a run is a name (catalog entry or folder name under the data root), never a path: a
    path would be read from anywhere and the run's parts written next to it, outside --out. `where`: per task,
    where its names came from (default: the flags, DATASET_FLAGS)."""
    from elasticir.data.catalog import check_dataset_name

    for task, flag in DATASET_FLAGS.items():
        for name in getattr(config, task):
            check_dataset_name(name, (where or {}).get(task, flag), config.data_root)


def check_scale(config) -> None:
    """The executor, shard and worker flags: Ray installed when asked for, a well-formed shard, no shard with Ray."""
    check_positive(config.workers, "--workers")
    if config.executor != "ray":
        for flag, value in (("--workers", config.workers), ("--ray-address", config.ray_address)):
            if value is not None:
                raise ElasticIRError(f"{flag} {value} is for the Ray executor and --executor is "
                                     f"{config.executor}; add --executor ray, or leave {flag} out")
    if config.executor == "ray":
        import os

        from elasticir.execution.ray import require_ray
        from elasticir.network import probe_address

        probe_address(config.ray_address or os.environ.get("RAY_ADDRESS"),
                      "--ray-address" if config.ray_address else "$RAY_ADDRESS")
        require_ray()
    if config.shard is not None:
        from elasticir.sharding import parse_shard

        parse_shard(config.shard)
        if config.executor == "ray":
            raise ElasticIRError("--shard is for clusters without Ray (one process per shard); with --executor "
                                 "ray the actors take the shards themselves: leave --shard out")
