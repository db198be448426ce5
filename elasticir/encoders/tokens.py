"""Texts to token ids as compact arrays (flat int32 ids + int64 lengths), in forked worker processes for large
inputs on an accelerator.

Why arrays: a fast tokenizer hands back one Python list per text, and building those lists (then tensors from
them) holds the GIL for every token. On a GPU host the main thread needs the GIL to launch the model's kernels,
so that work came straight off the encode loop even from a background thread. Flat ids + lengths cross a
process boundary as two buffers and collate into a batch with a few numpy operations.

Why processes: the Rust tokenizer releases the GIL while it encodes, but the per-token Python objects it
returns do not; in a worker process that cost runs beside the main process instead of inside it. Workers are
forked (the tokenizer is inherited, nothing is imported or pickled but the texts and the arrays) and run only
the `tokenizers` library, single-threaded: a forked child must not touch the parent's thread pools (torch's, or
tokenizers' own rayon pool, which would wait forever for threads that were not forked), so tokenizers'
parallelism is switched off in the environment the children inherit. Where `fork` is unavailable, or the input
is small (a process pool costs more than it saves), tokenization stays in one background thread.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np

PROCESS_MIN_TEXTS = 20_000  # below this a pool's start-up is not worth it (and tests stay in-process)
MAX_WORKERS = 12
WINDOWS_AHEAD = 2  # windows in flight in the process pool, each split across every worker
WORKERS_ENV = "ELASTICIR_TOKENIZE_WORKERS"  # override the automatic worker count (0 = in-process)

TokenArrays = tuple[np.ndarray, np.ndarray]  # (flat int32 ids, int64 length per text)


def standalone_tokenizer(hf_tokenizer, max_length: int):
    """A copy of a fast tokenizer's Rust backend that gives the ids `hf_tokenizer(texts, truncation=True,
    max_length=max_length)` gives (special tokens added, truncated the same way, never padded); None for a slow
    (pure Python) tokenizer. A copy, so the caller's tokenizer settings are never changed under it."""
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_padding()
    copy.enable_truncation(max_length, stride=0, strategy="longest_first",
                           direction=getattr(hf_tokenizer, "truncation_side", "right"))
    return copy


def encode_arrays(tokenizer, texts: list[str]) -> TokenArrays:
    """Token ids of `texts` from a `tokenizers.Tokenizer`, as flat ids + lengths."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # _fast: no character offsets
    ids = [encoding.ids for encoding in encode(texts)]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    return np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum())), lengths


def lists_to_arrays(sequences) -> TokenArrays:
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    return np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum())), lengths


def fork_available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def auto_workers(n_texts: int, device_type: str) -> int:
    """Worker processes for tokenizing `n_texts` for a model on `device_type`: $ELASTICIR_TOKENIZE_WORKERS if
    set; else none for small inputs or a CPU model (there the model's own threads use every core and dwarf
    tokenization), else min(12, cores - 3) (cores left for the main process and the copies to the device)."""
    if not fork_available():
        return 0
    if os.environ.get(WORKERS_ENV, "").strip():
        return max(0, int(os.environ[WORKERS_ENV]))
    if device_type == "cpu" or n_texts < PROCESS_MIN_TEXTS:
        return 0
    return max(1, min(MAX_WORKERS, (os.cpu_count() or 1) - 3))


_WORKER_TOKENIZER = None


def _init_worker(tokenizer) -> None:
    global _WORKER_TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # also set before the fork; repeated for safety
    _WORKER_TOKENIZER = tokenizer


def _encode_in_worker(texts: list[str]) -> TokenArrays:
    return encode_arrays(_WORKER_TOKENIZER, texts)


class _Joined:
    """The parts of one window, tokenized by several workers, as one result (in order)."""

    def __init__(self, parts: list[Future]) -> None:
        self.parts = parts

    def result(self) -> TokenArrays:
        arrays = [part.result() for part in self.parts]
        return np.concatenate([ids for ids, _ in arrays]), np.concatenate([lengths for _, lengths in arrays])


@contextlib.contextmanager
def _no_tokenizers_parallelism() -> Iterator[None]:
    """While the pool forks: the children inherit TOKENIZERS_PARALLELISM=false (no rayon pool in a child, and
    no "process just got forked" warning), and Python's warning about forking a threaded process is silenced
    (the children run no thread the parent owned)."""
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


@contextlib.contextmanager
def window_submitter(tokenize: Callable, standalone=None, workers: int = 0
                     ) -> Iterator[tuple[Callable[[list[str]], Future], int]]:
    """(submit(texts) -> future of token ids, how many windows to keep in flight): `workers` forked processes
    running `standalone` (a `tokenizers.Tokenizer`) when possible, else one thread running `tokenize`.

    In the pool every window is split into one part per worker, so a window is ready after 1/workers of the
    time one worker would take (the first batch comes early) and the pool works on windows in order."""
    if workers > 0 and standalone is not None and fork_available():
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_init_worker, initargs=(standalone,))
        try:
            with _no_tokenizers_parallelism():
                futures = [pool.submit(os.getpid) for _ in range(workers)]  # start every worker now
                for future in futures:
                    future.result()
            def submit(texts: list[str]) -> _Joined:
                size = max(1, -(-len(texts) // workers))
                return _Joined([pool.submit(_encode_in_worker, texts[i : i + size])
                                for i in range(0, len(texts), size)])

            yield submit, WINDOWS_AHEAD
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield (lambda texts: pool.submit(tokenize, texts)), 1
