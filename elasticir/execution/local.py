"""The local executor (`--executor local`, the default): everything in this process, on the encoder's device.

Points are searched in order here; when the work allows it (PointWork.overlap), each point's scoring (run dict,
ir-measures, run file: CPU work in Python that would otherwise serialise behind the searches) goes to worker
processes, overlapped with the next points' searches (on a GPU the searches take milliseconds and scoring
would dominate). The processes are forked per PointWork, so they inherit its data (query ids, doc ids, qrels)
without pickling it; on one core, or where fork is missing, one thread scores instead. The executor owns the
pools it opens and close() shuts down any still open.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor as FuturesExecutor
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial

from elasticir.execution.base import Executor, PointResults, PointWork
from elasticir.progress import progress

# searched points whose hits wait for a scoring process: more only holds more hits in memory (a funnel group's
# or a grid cell's hits are queries x k ids and scores), fewer would leave the scoring processes idle
MAX_WAITING_POINTS = 8
MAX_SCORING_PROCESSES = 4

# Set only inside a forked scoring process, by its initializer: the scoring context its PointWork's
# prepare_scoring built there. The process ends with its pool (at the end of run_points or at close()).
_CHILD_SCORING: dict = {}


def _init_scoring_process(prepare_scoring, data) -> None:
    _CHILD_SCORING["scoring"] = prepare_scoring(data)


def _score_in_child(score, point, searched):
    return score(point, searched, _CHILD_SCORING["scoring"])


class LocalExecutor(Executor):
    """This process: the stores and texts encoded by `encoder`, points searched on its device."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.device = str(encoder.device)
        self._pools: set[FuturesExecutor] = set()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"local executor: this process, on {self.device}"

    def encode_store(self, store, layers: Sequence[int], *, batch_size: int, show_progress: bool = True,
                     desc: str = "encoding") -> bool:
        return store.ensure(layers, batch_size=batch_size, show_progress=show_progress, desc=desc)

    def encode_texts(self, texts, layers, *, batch_size: int, prompt: str = "", show_progress: bool = True,
                     desc: str = "encoding"):
        return self.encoder.encode(texts, layers, batch_size=batch_size, show_progress=show_progress, desc=desc,
                                   prompt=prompt)

    def run_points(self, work: PointWork, *, show_progress: bool = True, desc: str = "points",
                   unit: str = "point") -> PointResults:
        prepared = work.prepare(work.data, self.device)
        bar = progress(work.points, desc=desc, unit=unit, enabled=show_progress)
        if not work.overlap:
            scoring = work.prepare_scoring(work.data)
            return PointResults([work.run_one(point, prepared, scoring) for point in bar])
        with self._scoring_pool(work) as (pool, score):
            pending, results, waited = [], [], 0.0
            for point in bar:
                pending.append(pool.submit(score, point, work.search(point, prepared)))
                started = time.perf_counter()
                while len(pending) - len(results) > MAX_WAITING_POINTS:  # bounded memory: hits waiting for scoring
                    results.append(pending[len(results)].result())
                waited += time.perf_counter() - started
            started = time.perf_counter()
            results += [future.result() for future in pending[len(results):]]
            return PointResults(results, waited + time.perf_counter() - started)

    @contextmanager
    def _scoring_pool(self, work: PointWork):
        """(pool, score function) for one run_points call; the pool is registered with this executor while
        open (so close() can shut it down) and shut down when the call ends."""
        workers = min(MAX_SCORING_PROCESSES, (os.cpu_count() or 1) - 1)
        if workers < 1 or "fork" not in mp.get_all_start_methods():
            pool = ThreadPoolExecutor(max_workers=1)
            score = partial(_score_here, work.score, work.prepare_scoring(work.data))
        else:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork"),
                                       initializer=_init_scoring_process, initargs=(work.prepare_scoring, work.data))
            score = partial(_score_in_child, work.score)
        with self._lock:
            self._pools.add(pool)
        try:
            yield pool, score
        finally:
            with self._lock:
                self._pools.discard(pool)
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools), set()
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


def _score_here(score, scoring, point, searched):
    return score(point, searched, scoring)
