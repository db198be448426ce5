"""The Ray executor (`--executor ray`): encoding by actors that hold the model, every grid cell a task.

Why Ray: the same code runs as a local cluster on a laptop or in CI, on a multi-GPU node and on a multi-node
cluster (`--ray-address` or the standard RAY_ADDRESS joins one; without either a local one is started).
Ray is an optional extra (`pip install 'elasticir[distributed]'`) and is imported only here, only when asked for.

Encoding: the rows an embedding store lacks are cut into pieces (elasticir.encoders.store); an actor pool (one
actor per GPU with `num_gpus=1`, else CPU actors) takes them, each actor writing its rows in place into the layer
files on the shared store path (multi-node needs one file system that every node mounts at that path) and marking
the piece done. An actor killed mid-piece is restarted by Ray and the piece retried (`max_restarts`,
`max_task_retries`); the rows it had written are simply written again, so the numbers do not change.
Grid: each cell's index build + search + scoring + run file is one task that any free actor of the same pool
takes (they already hold torch and, on a GPU cluster, a GPU each); the task opens the layer memmaps from the store
path itself, so only paths and the cell travel. A cell whose actor dies is retried the same way. Several
datasets of one run proceed concurrently (a driver thread each, see runner.evaluate_or_reuse) on the same pool.

Workers import elasticir as installed on their node (a local cluster's workers start in the driver's folder, so
they import the driver's copy) and get the driver's ELASTICIR_* / HF_* variables.
ELASTICIR_FAULT_EXIT_ONCE=<file> is a fault-injection hook for tests: the first actor that creates <file> exits
(os._exit) after its first written batch, as a killed worker would.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elasticir.errors import ElasticIRError
from elasticir.network import PROBE_TIMEOUT_S, probe_address, require_ray  # noqa: F401 (re-exported)
from elasticir.progress import progress

PIECES_PER_WORKER = 4  # more pieces than workers: a retried piece costs little and slow workers balance out
FAULT_ENV = "ELASTICIR_FAULT_EXIT_ONCE"


@dataclass(frozen=True)
class EncoderSpec:
    """What rebuilds the driver's encoder in a worker process: the same folder and settings, so the same key."""

    path: str
    pooling: str | None  # the --pooling override, None for the model's own Pooling module
    normalize: bool
    max_length: int
    dtype: str
    max_tokens_per_batch: int | None
    backend: str
    onnx_cache: str | None
    trust_remote_code: bool = False

    @classmethod
    def of(cls, encoder) -> EncoderSpec:
        onnx = getattr(encoder, "_onnx", None)
        return cls(encoder.info.path, encoder.pooling_override, encoder.info.normalize, encoder.info.max_length,
                   str(encoder.dtype).removeprefix("torch."), encoder.max_tokens_per_batch, encoder.backend,
                   str(onnx.cache_dir) if onnx else None, encoder.trust_remote_code)

    def build(self, device: str):
        import torch

        from elasticir.encoders import ElasticEncoder

        return ElasticEncoder(self.path, pooling=self.pooling, normalize=self.normalize, max_length=self.max_length,
                              device=device, dtype=getattr(torch, self.dtype), backend=self.backend,
                              max_tokens_per_batch=self.max_tokens_per_batch, onnx_cache=self.onnx_cache,
                              trust_remote_code=self.trust_remote_code)


def _maybe_fault() -> None:
    """The test hook (see the module docstring): exit once, as a worker killed mid-piece."""
    path = os.environ.get(FAULT_ENV)
    if not path:
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(1)


class ShardEncoder:
    """A Ray actor's body: the model, loaded once, encoding pieces into stores or texts into arrays."""

    def __init__(self, spec: EncoderSpec, device: str, threads: int, env: dict[str, str]) -> None:
        import torch

        os.environ.update(env)
        torch.set_num_threads(threads)
        self.device = device
        self.encoder = spec.build(device)

    def ready(self) -> bool:
        return True

    def write(self, folder: str, texts: list[str], piece, prompt: str, batch_size: int) -> int:
        from elasticir.encoders.store import write_rows

        write_rows(Path(folder), self.encoder, texts, piece, prompt=prompt, batch_size=batch_size,
                   after_batch=_maybe_fault)
        return piece.stop - piece.start

    def encode(self, texts: list[str], layers: list[int], batch_size: int, prompt: str = "") -> dict[int, np.ndarray]:
        return self.encoder.encode(texts, layers, batch_size=batch_size, show_progress=False, prompt=prompt)

    def cell(self, docs_dir: str, queries_dir: str, point: tuple, search: dict, context: dict,
             part_dir: str) -> tuple[dict, object]:
        return cell_task(docs_dir, queries_dir, point, {**search, "device": self.device}, context, part_dir)


def cell_task(docs_dir: str, queries_dir: str, point: tuple, search: dict, context: dict,
              part_dir: str) -> tuple[dict, object]:
    """One grid point (layer, dim, precision, labelled?): open the layer memmaps, build, search, score, write the
    run file; (row, per-query values)."""
    import ir_measures

    from elasticir.cells import Cell
    from elasticir.encoders.store import wait_for_layer
    from elasticir.evaluation.retrieval import _search_cell, score_cell
    from elasticir.index.quantized import precision_slug

    layer, dim, precision, labelled = point
    docs, queries = (wait_for_layer(Path(folder), layer) for folder in (docs_dir, queries_dir))
    if docs is None or queries is None:
        raise RuntimeError(f"layer {layer} is no longer stored in {docs_dir} / {queries_dir}")
    row, ids, scores = _search_cell(docs, queries, layer, dim, precision, **search)
    key = context["evaluator_key"]  # not id(qrels): each task unpickles its own copy, and ids are reused
    if _EVALUATORS.get("key") != key:  # parsed once per dataset per worker, not per cell
        _EVALUATORS.update(key=key, evaluator=ir_measures.evaluator(context["measures"], context["qrels"]))
    context = {**context, "evaluator": _EVALUATORS["evaluator"]}
    slug = Cell(layer, dim).slug + precision_slug(precision)
    aggregate, values, seconds = score_cell(context, ids, scores, Path(part_dir) / "runs" / f"{slug}.trec.gz",
                                            f"elasticir-{slug}")
    label = {"precision": precision} if labelled else {}
    row.update(label)
    row.update(aggregate, evaluate_s=seconds)
    return row, values.assign(layer=layer, dim=dim, **label)


_EVALUATORS: dict = {}


class RayExecutor:
    """Encoding actors and cell tasks on a Ray cluster, for one encoder."""

    def __init__(self, encoder, *, address: str | None = None, workers: int | None = None) -> None:
        self.ray = ray = require_ray()
        self.env = {k: v for k, v in os.environ.items() if k.startswith(("ELASTICIR_", "HF_", "TRANSFORMERS_"))}
        if not ray.is_initialized():
            flag = "--ray-address" if address else "$RAY_ADDRESS"
            probe_address(address or os.environ.get("RAY_ADDRESS"), flag)
            try:
                ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                         logging_level="WARNING")
            except ConnectionError as exc:
                raise ElasticIRError(f"--ray-address {address or os.environ.get('RAY_ADDRESS')}: cannot join the "
                                     f"Ray cluster ({exc}); start it with `ray start --head` or leave the "
                                     "address out for a local one") from None
        self.spec = EncoderSpec.of(encoder)
        self.gpu = encoder.device.type == "cuda"
        resources = ray.cluster_resources()
        available = int(resources.get("GPU" if self.gpu else "CPU", 1)) or 1
        self.workers = workers or available
        if self.gpu and self.workers > available:
            raise ElasticIRError(f"--workers {self.workers}: the Ray cluster has {available} GPU(s); give "
                                 f"--workers {available} or fewer, or leave --workers out (one actor per GPU)")
        if self.workers > available:  # CPU actors need >= 1 CPU each: the rest could never be placed (no progress)
            from elasticir.progress import stage

            stage(f"note: --workers {self.workers} is more than the Ray cluster's {available} CPU(s) can place "
                  f"(one CPU per actor); using {available} worker(s)")
            self.workers = available
        self.threads = 1 if self.gpu else max(1, int(resources.get("CPU", 1)) // self.workers)
        self._actors: list = []
        self.startup_s: list[float] = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        kind = "GPU actor(s), num_gpus=1 each" if self.gpu else f"CPU actor(s), {self.threads} torch thread(s) each"
        return f"Ray executor: {self.workers} {kind}"

    def actors(self) -> list:
        with self._lock:  # datasets run in driver threads (see runner.evaluate_or_reuse): one pool for all
            return self._start_actors()

    def _start_actors(self) -> list:
        if not self._actors:
            options = {"num_gpus": 1, "num_cpus": 1} if self.gpu else {"num_cpus": self.threads}
            remote = self.ray.remote(max_restarts=3, max_task_retries=3, **options)(ShardEncoder)
            device = "cuda" if self.gpu else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES: each actor sees its own GPU
            started = time.perf_counter()
            self._actors = [remote.remote(self.spec, device, self.threads, self.env) for _ in range(self.workers)]
            self.ray.get([actor.ready.remote() for actor in self._actors])
            self.startup_s.append(time.perf_counter() - started)  # process start + imports + model load
        return self._actors

    def release(self) -> None:
        """Stop the actors (end of a run: their CPUs / GPUs go back to the cluster)."""
        with self._lock:
            for actor in self._actors:
                self.ray.kill(actor)
            self._actors = []

    def ensure_options(self) -> dict:
        """What EmbeddingStore.ensure needs to encode through the actors."""
        return {"shards": self.workers * PIECES_PER_WORKER, "encode_pieces": self.encode_pieces}

    def encode_pieces(self, store, pieces: list, batch_size: int, *, show_progress: bool = True,
                      desc: str = "encoding") -> None:
        """Every piece of `store` by the actor pool, each actor writing its rows into the store's files."""
        from ray.util import ActorPool

        bar = progress(total=sum(p.stop - p.start for p in pieces), desc=f"{desc} on {self.workers} Ray worker(s)",
                       unit="text", enabled=show_progress)
        pool = ActorPool(self.actors())
        for rows in pool.map_unordered(lambda actor, p: actor.write.remote(
                str(store.dir), list(store.texts[p.start:p.stop]), p, store.prompt, batch_size), pieces):
            bar.update(rows)
        bar.close()

    def encode(self, texts: list[str], layers, *, batch_size: int = 64, show_progress: bool = True,
               desc: str = "encoding", prompt: str = "") -> dict[int, np.ndarray]:
        """{layer: [len(texts), hidden]} as ElasticEncoder.encode gives it, the texts split over the actors."""
        from ray.util import ActorPool

        from elasticir.encoders.store import shard_range

        layers = sorted(set(layers))
        count = min(len(texts), self.workers * PIECES_PER_WORKER) or 1
        ranges = [shard_range(len(texts), i, count) for i in range(count)]
        pool = ActorPool(self.actors())
        parts = list(progress(pool.map(lambda actor, r: actor.encode.remote(list(texts[r[0]:r[1]]), layers,
                                                                            batch_size, prompt), ranges),
                              total=len(ranges), desc=f"{desc} on {self.workers} Ray worker(s)", unit="piece",
                              enabled=show_progress))
        return {layer: np.concatenate([part[layer] for part in parts]) for layer in layers}

    def run_cells(self, docs_dir: Path, queries_dir: Path, grid, search: dict, context: tuple, part_dir: Path, *,
                  precisions: tuple[str, ...] = ("float32",), show_progress: bool = True,
                  desc: str = "cells") -> tuple[list[dict], list]:
        """Every (cell, precision) of the grid as a task of the actor pool; rows and per-query tables in the
        local loop's order."""
        from ray.util import ActorPool

        query_ids, doc_ids, qrels, measures = context
        shared = self.ray.put({"query_ids": query_ids, "doc_ids": doc_ids, "qrels": qrels, "measures": measures,
                               "evaluator_key": secrets.token_hex(8)})  # one per dataset (see cell_task)
        search_ref = self.ray.put(search)
        labelled = tuple(precisions) != ("float32",)
        points = [(layer, dim, p, labelled) for layer, dim in grid.cells for p in precisions]
        bar = progress(total=len(points), desc=desc, unit="cell", enabled=show_progress)
        results = {}
        pool = ActorPool(self.actors())
        for row, values in pool.map_unordered(lambda actor, point: actor.cell.remote(
                str(docs_dir), str(queries_dir), point, search_ref, shared, str(part_dir)), points):
            results[(row["layer"], row["dim"], row.get("precision", "float32"))] = (row, values)
            bar.update(1)
        bar.close()
        ordered = [results[point[:3]] for point in points]
        return [row for row, _ in ordered], [values for _, values in ordered]


_EXECUTORS: dict = {}
_EXECUTORS_LOCK = threading.Lock()


def executor_for(config, encoder) -> RayExecutor | None:
    """None for `--executor local`; else one RayExecutor per (encoder, address, workers) in this process."""
    if getattr(config, "executor", "local") != "ray":
        return None
    with _EXECUTORS_LOCK:  # datasets call this from concurrent driver threads: one executor (one pool) for all
        return _executor_for(config, encoder)


def _executor_for(config, encoder) -> RayExecutor:
    key = (id(encoder), config.ray_address, config.workers)
    if key not in _EXECUTORS or _EXECUTORS[key][0] is not encoder:  # an id is reused once its encoder is gone
        from elasticir.progress import stage

        started = time.perf_counter()
        executor = RayExecutor(encoder, address=config.ray_address, workers=config.workers)
        stage(f"{executor.describe()} (cluster joined in {time.perf_counter() - started:.1f} s)")
        _EXECUTORS[key] = (encoder, executor)
    return _EXECUTORS[key][1]


def release_executors() -> None:
    """Stop every actor this process started (end of a run), keeping the cluster connection."""
    for _, executor in _EXECUTORS.values():
        executor.release()
