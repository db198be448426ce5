"""The Ray executor (`--executor ray`): encoding by actors that hold the model, every point a task.

Why Ray: the same code runs as a local cluster on a laptop or in CI, on a multi-GPU node and on a multi-node
cluster (`--ray-address` or the standard RAY_ADDRESS joins one; without either a local one is started).
Ray is an optional extra (`pip install 'elasticir[distributed]'`) and is imported only here, only when asked for.
The cluster is joined at the first piece of work (a run whose parts are all reused never starts one) and
released by close(): the actors are stopped, and a cluster this executor started (ray.init without an address)
is shut down; a joined one is only disconnected from. A Ray session the caller had started is left as it was.

Encoding: the rows an embedding store lacks are cut into pieces (elasticir.encoders.store); an actor pool (one
actor per GPU with `num_gpus=1`, else CPU actors) takes them, each actor writing its rows in place into the layer
files on the shared store path (multi-node needs one file system that every node mounts at that path) and marking
the piece done. An actor killed mid-piece is restarted by Ray and the piece retried (`max_restarts`,
`max_task_retries`); the rows it had written are simply written again, so the numbers do not change.
Points (grid cells, funnel groups; see execution.base.PointWork): each is one task that any free actor of the
same pool takes (they already hold torch and, on a GPU cluster, a GPU each). The work's functions and data are
put in the object store once; an actor fetches them at its first point of that work, prepares its context
(opens the layer memmaps from the store path, parses the qrels) and keeps it until the work is done, so only
the key and the point travel per task. A task whose actor dies is retried the same way. Several datasets of
one run proceed concurrently (a driver thread each, see runner.evaluate_or_reuse) on the same pool.

Workers import elasticir as installed on their node (a local cluster's workers start in the driver's folder, so
they import the driver's copy) and get the driver's ELASTICIR_* / HF_* variables.
ELASTICIR_FAULT_EXIT_ONCE=<file> is a fault-injection hook for tests: the first actor that creates <file> exits
(os._exit) after its first written batch, as a killed worker would.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from elasticir.encoders import ElasticEncoder
from elasticir.encoders.store import shard_range, write_rows
from elasticir.errors import ElasticIRError
from elasticir.execution.base import Executor, PointResults, PointWork
from elasticir.network import probe_address, require_ray
from elasticir.progress import progress, stage

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
    """A Ray actor's body: the model, loaded once, encoding pieces into stores or texts into arrays, and
    running points of the PointWorks in flight (their prepared contexts kept by key until forgotten)."""

    def __init__(self, spec: EncoderSpec, device: str, threads: int, env: dict[str, str]) -> None:
        os.environ.update(env)
        torch.set_num_threads(threads)
        self.device = device
        self.encoder = spec.build(device)
        self.works: dict[str, tuple] = {}

    def ready(self) -> bool:
        return True

    def write(self, folder: str, texts: list[str], piece, prompt: str, batch_size: int) -> int:
        write_rows(Path(folder), self.encoder, texts, piece, prompt=prompt, batch_size=batch_size,
                   after_batch=_maybe_fault)
        return piece.stop - piece.start

    def encode(self, texts: list[str], layers: list[int], batch_size: int, prompt: str = "") -> dict[int, np.ndarray]:
        return self.encoder.encode(texts, layers, batch_size=batch_size, show_progress=False, prompt=prompt)

    def point(self, key: str, boxed: list, index: int, point) -> tuple[int, object]:
        """(index, result) of one point of the work `key`; `boxed` holds the work's object ref, in a list so
        that Ray does not fetch it for every task (only at this actor's first point of the work)."""
        if key not in self.works:
            import ray

            work: PointWork = ray.get(boxed[0])
            self.works[key] = (work, work.prepare(work.data, self.device), work.prepare_scoring(work.data))
        work, prepared, scoring = self.works[key]
        return index, work.run_one(point, prepared, scoring)

    def forget(self, key: str) -> None:
        self.works.pop(key, None)


class RayExecutor(Executor):
    """Encoding actors and point tasks on a Ray cluster, for one encoder and one run."""

    def __init__(self, encoder, *, address: str | None = None, workers: int | None = None) -> None:
        self.ray = require_ray()
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.flag = "--ray-address" if address else "$RAY_ADDRESS"
        self.requested = workers
        self.env = {k: v for k, v in os.environ.items() if k.startswith(("ELASTICIR_", "HF_", "TRANSFORMERS_"))}
        self.spec = EncoderSpec.of(encoder)
        self.gpu = encoder.device.type == "cuda"
        self.workers = self.threads = 0  # known once the cluster is joined (_connect)
        self.started_ray = False  # this executor called ray.init (and so ends the session at close)
        self._actors: list = []
        self.startup_s: list[float] = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        if not self.workers:
            return "Ray executor (cluster not joined yet)"
        kind = "GPU actor(s), num_gpus=1 each" if self.gpu else f"CPU actor(s), {self.threads} torch thread(s) each"
        return f"Ray executor: {self.workers} {kind}"

    def _connect(self) -> None:
        """Join (or start) the cluster and size the pool, once; under the lock."""
        if self.workers:
            return
        ray, started = self.ray, time.perf_counter()
        if not ray.is_initialized():
            probe_address(self.address, self.flag)
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level="WARNING")
            except ConnectionError as exc:
                raise ElasticIRError(f"--ray-address {self.address}: cannot join the Ray cluster ({exc}); start it "
                                     "with `ray start --head` or leave the address out for a local one") from None
            self.started_ray = True
        resources = ray.cluster_resources()
        available = int(resources.get("GPU" if self.gpu else "CPU", 1)) or 1
        workers = self.requested or available
        if self.gpu and workers > available:
            raise ElasticIRError(f"--workers {workers}: the Ray cluster has {available} GPU(s); give "
                                 f"--workers {available} or fewer, or leave --workers out (one actor per GPU)")
        if workers > available:  # CPU actors need >= 1 CPU each: the rest could never be placed (no progress)
            stage(f"note: --workers {workers} is more than the Ray cluster's {available} CPU(s) can place "
                  f"(one CPU per actor); using {available} worker(s)")
            workers = available
        self.threads = 1 if self.gpu else max(1, int(resources.get("CPU", 1)) // workers)
        self.workers = workers
        stage(f"{self.describe()} (cluster joined in {time.perf_counter() - started:.1f} s)")

    def actors(self) -> list:
        with self._lock:  # datasets run in driver threads (see runner.evaluate_or_reuse): one pool for all
            self._connect()
            if not self._actors:
                options = {"num_gpus": 1, "num_cpus": 1} if self.gpu else {"num_cpus": self.threads}
                remote = self.ray.remote(max_restarts=3, max_task_retries=3, **options)(ShardEncoder)
                device = "cuda" if self.gpu else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES: each actor sees its own GPU
                started = time.perf_counter()
                self._actors = [remote.remote(self.spec, device, self.threads, self.env) for _ in range(self.workers)]
                self.ray.get([actor.ready.remote() for actor in self._actors])
                self.startup_s.append(time.perf_counter() - started)  # process start + imports + model load
            return self._actors

    def close(self) -> None:
        """Stop the actors (their CPUs / GPUs go back to the cluster) and end the Ray session if this executor
        began it: a local cluster it started stops, a joined cluster is disconnected from."""
        with self._lock:
            for actor in self._actors:
                self.ray.kill(actor)
            self._actors = []
            if self.started_ray and self.ray.is_initialized():
                self.ray.shutdown()
            self.started_ray = False

    def encode_store(self, store, layers, *, batch_size: int, show_progress: bool = True,
                     desc: str = "encoding") -> bool:
        """The store's missing rows cut into more pieces than actors, each piece written by an actor."""
        with self._lock:
            self._connect()  # the pool's size cuts the pieces; its actors start only if a piece is missing
        return store.ensure(layers, batch_size=batch_size, show_progress=show_progress, desc=desc,
                            shards=self.workers * PIECES_PER_WORKER, encode_pieces=self._encode_pieces)

    def _encode_pieces(self, store, pieces: list, batch_size: int, *, show_progress: bool = True,
                       desc: str = "encoding") -> None:
        from ray.util import ActorPool

        bar = progress(total=sum(p.stop - p.start for p in pieces), desc=f"{desc} on {self.workers} Ray worker(s)",
                       unit="text", enabled=show_progress)
        pool = ActorPool(self.actors())
        for rows in pool.map_unordered(lambda actor, p: actor.write.remote(
                str(store.dir), list(store.texts[p.start:p.stop]), p, store.prompt, batch_size), pieces):
            bar.update(rows)
        bar.close()

    def encode_texts(self, texts, layers, *, batch_size: int, prompt: str = "", show_progress: bool = True,
                     desc: str = "encoding") -> dict[int, np.ndarray]:
        """{layer: [len(texts), hidden]} as ElasticEncoder.encode gives it, the texts split over the actors."""
        from ray.util import ActorPool

        layers = sorted(set(layers))
        actors = self.actors()
        count = min(len(texts), len(actors) * PIECES_PER_WORKER) or 1
        ranges = [shard_range(len(texts), i, count) for i in range(count)]
        pool = ActorPool(actors)
        parts = list(progress(pool.map(lambda actor, r: actor.encode.remote(list(texts[r[0]:r[1]]), layers,
                                                                            batch_size, prompt), ranges),
                              total=len(ranges), desc=f"{desc} on {self.workers} Ray worker(s)", unit="piece",
                              enabled=show_progress))
        return {layer: np.concatenate([part[layer] for part in parts]) for layer in layers}

    def run_points(self, work: PointWork, *, show_progress: bool = True, desc: str = "points",
                   unit: str = "point") -> PointResults:
        """Every point a task of the actor pool (search and score in one task); results in the work's order."""
        from ray.util import ActorPool

        actors = self.actors()
        boxed = [self.ray.put(work)]
        results: dict[int, object] = {}
        bar = progress(total=len(work.points), desc=desc, unit=unit, enabled=show_progress)
        try:
            pool = ActorPool(actors)
            for index, result in pool.map_unordered(lambda actor, item: actor.point.remote(work.key, boxed, *item),
                                                    list(enumerate(work.points))):
                results[index] = result
                bar.update(1)
        finally:
            bar.close()
            self.ray.get([actor.forget.remote(work.key) for actor in actors])
        return PointResults([results[index] for index in range(len(work.points))])
