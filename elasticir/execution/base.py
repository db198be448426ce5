"""The executor contract: what an evaluation asks of the place its work runs.

An evaluation (STS, a retrieval grid, funnels) never loops over its points itself: it hands an executor the
stores to encode, the texts to encode in memory, and its per-point work as a PointWork. Execution sits below
evaluation, so the work arrives as module-level functions (pickled by reference: a Ray worker imports
elasticir and finds them) and plain data (paths, ids, qrels, settings); an executor never imports evaluation.

A new executor implements the five methods of Executor (subclassing it gives the context-manager methods) and
is returned by elasticir.execution.executor_for; nothing in the evaluations changes.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from elasticir.encoders.store import EmbeddingStore


def _no_scoring(data) -> None:
    """PointWork's default prepare_scoring: nothing beyond `prepare` is needed."""


def _searched_as_result(point, searched, scoring):
    """PointWork's default score: `search` computed the whole result."""
    return searched


@dataclass(frozen=True)
class PointWork:
    """Independent points (grid cells, funnel groups) and how to compute each one's result.

    For every point an executor computes `score(point, search(point, prepared), scoring)`, where `prepared =
    prepare(data, device)` and `scoring = prepare_scoring(data)` are built once per worker process (opening
    the layer memmaps, building an index, parsing the qrels) and reused for all its points. `search` is the
    device work; `score` is CPU work that, when `overlap` is set, an executor may run elsewhere (the local
    executor's scoring processes) while the next point is searched. Results come back in `points` order.
    `key` names this work on workers that keep `prepared` between points: a fresh token per PointWork, so a
    worker never reuses another dataset's context (an id() of the data could be reused once it is freed)."""

    points: Sequence
    data: Any
    prepare: Callable[[Any, str], Any]
    search: Callable[[Any, Any], Any]
    prepare_scoring: Callable[[Any], Any] = _no_scoring
    score: Callable[[Any, Any, Any], Any] = _searched_as_result
    overlap: bool = False
    key: str = field(default_factory=lambda: secrets.token_hex(8))

    def run_one(self, point, prepared, scoring):
        """The result of one point, search and score in this process."""
        return self.score(point, self.search(point, prepared), scoring)


@dataclass
class PointResults:
    """What run_points returns: a result per point, in order, and the seconds the caller waited for scoring
    after the last search (the part of the scoring the executor could not overlap; 0 where it does not
    split the two)."""

    results: list
    score_wait_s: float = 0.0


@runtime_checkable
class Executor(Protocol):
    """Where a run's work runs: this process, a Ray cluster, or one `--shard i/n` slice of the encoding.
    One executor per run (or notebook call), closed at its end: it owns every pool, actor and cluster
    connection it started, and nothing of it outlives close()."""

    def encode_store(self, store: EmbeddingStore, layers: Sequence[int], *, batch_size: int,
                     show_progress: bool = True, desc: str = "encoding") -> bool:
        """Encode the rows `store` lacks at `layers` (what EmbeddingStore.ensure cuts into pieces); True if
        anything was encoded."""
        ...

    def encode_texts(self, texts: Sequence[str], layers: Sequence[int], *, batch_size: int, prompt: str = "",
                     show_progress: bool = True, desc: str = "encoding") -> dict[int, np.ndarray]:
        """{layer: [len(texts), width]} in memory, as ElasticEncoder.encode gives it (STS sentences)."""
        ...

    def run_points(self, work: PointWork, *, show_progress: bool = True, desc: str = "points",
                   unit: str = "point") -> PointResults:
        """Every point of `work` (see PointWork), results in its order."""
        ...

    def describe(self) -> str:
        """One line for the log: what runs where."""
        ...

    def close(self) -> None:
        """Release what this executor started (pools, actors, a cluster it started); idempotent."""
        ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
