"""Batches formed by a token budget, tokenized windows ahead, collated padded or packed.

Why a token budget: a fixed count of texts is either too small for short texts (the accelerator idles) or too
large for long ones (memory); a budget of tokens per batch keeps the work per batch even. The count
(`batch_size`) stays as a cap. A padded batch costs `count x longest` tokens; a packed one `sum of lengths`.

Why windows: texts are ordered longest first by characters (free), then tokenized a window at a time in a
background thread, or for large inputs in worker processes (see `tokens`), while the model encodes the
previous window; inside a window the exact token lengths re-sort the texts and size the batches. Tokenizing a whole corpus up front would
be a serial prefix with every id held in memory; a window keeps both bounded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from elasticir.encoders import tokens
from elasticir.errors import ElasticIRError


def check_budget(max_tokens_per_batch: int | None, max_length: int) -> None:
    if max_tokens_per_batch is not None and max_tokens_per_batch < max_length:
        raise ElasticIRError(
            f"--max-tokens-per-batch {max_tokens_per_batch} is below the max length {max_length}: one longest "
            f"text would not fit; use at least {max_length} (or leave it unset for fixed-size batches)"
        )


def plan_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None, packed: bool) -> list[np.ndarray]:
    """Split positions 0..n-1 of `lengths` (sorted longest first) into consecutive batches within the budget.

    Every batch has at least one text and at most `batch_size`; without a budget, batches are `batch_size` long.
    """
    n = len(lengths)
    if max_tokens is None:
        return [np.arange(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    cumulative = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    batches, start = [], 0
    while start < n:
        if packed:  # the most texts whose summed lengths fit
            count = int(np.searchsorted(cumulative, cumulative[start] + max_tokens, side="right")) - 1 - start
        else:  # the longest text of the batch is its first: count x longest tokens
            count = max_tokens // int(lengths[start])
        count = min(max(count, 1), batch_size, n - start)
        batches.append(np.arange(start, start + count))
        start += count
    return batches


class TokenBatch:
    """The token ids of some texts as one flat array and a length per text (see `tokens` for why arrays).
    Iterating gives each text's ids; `TokenBatch.of` also takes a list of id lists."""

    def __init__(self, ids: np.ndarray, lengths: np.ndarray) -> None:
        self.ids, self.lengths = ids, lengths
        self.offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])

    @classmethod
    def of(cls, sequences) -> TokenBatch:
        if isinstance(sequences, TokenBatch):
            return sequences
        if isinstance(sequences, tuple) and len(sequences) == 2 and isinstance(sequences[1], np.ndarray):
            return cls(*sequences)
        return cls(*tokens.lists_to_arrays(sequences))

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.ids[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:]))

    def take(self, picked: np.ndarray) -> TokenBatch:
        """The texts at positions `picked`, in that order (one gather, no per-text loop)."""
        lengths = self.lengths[picked]
        new_starts = np.cumsum(lengths) - lengths
        source = np.repeat(self.offsets[:-1][picked] - new_starts, lengths) + np.arange(int(lengths.sum()))
        return TokenBatch(self.ids[source], lengths)


def pad(sequences: TokenBatch | Sequence[Sequence[int]], pad_id: int, left: bool = False) -> dict[str, torch.Tensor]:
    """Ids and attention mask padded to the longest sequence, on the right or (decoder tokenizers) the left."""
    batch = TokenBatch.of(sequences)
    longest = int(batch.lengths.max())
    positions = np.arange(longest)[None, :]
    mask = positions >= longest - batch.lengths[:, None] if left else positions < batch.lengths[:, None]
    ids = np.full(mask.shape, pad_id, dtype=np.int64)
    ids[mask] = batch.ids  # row-major: each row's first `length` slots, in order
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask.astype(np.int64))}


def pack(sequences: TokenBatch | Sequence[Sequence[int]]) -> dict[str, torch.Tensor | int]:
    """One row of all tokens, positions restarting at 0 per sequence, and the boundaries attention and pooling
    need (`cu_seqlens` cumulative lengths, first-token `starts`, per-token `segment_ids`)."""
    batch = TokenBatch.of(sequences)
    lengths, cu_seqlens = batch.lengths.astype(np.int64), batch.offsets
    starts = cu_seqlens[:-1]
    total = int(cu_seqlens[-1])
    positions = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
    return {
        "input_ids": torch.from_numpy(batch.ids.astype(np.int64)[None]),
        "position_ids": torch.from_numpy(positions[None]),
        "cu_seqlens": torch.from_numpy(cu_seqlens.astype(np.int32)),
        "starts": torch.from_numpy(starts.copy()),
        "lengths": torch.from_numpy(lengths),
        "segment_ids": torch.from_numpy(np.repeat(np.arange(len(lengths)), lengths)),
        "max_seqlen": int(lengths.max()),
    }


def to_device(batch: dict, device: torch.device) -> dict:
    """Host tensors to `device`; on CUDA through pinned memory with non-blocking copies, so the copy overlaps
    the kernels still running for the previous batch."""
    if device.type != "cuda":
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def iter_batches(
    texts: Sequence[str],
    tokenize: Callable[[list[str]], list[list[int]] | tokens.TokenArrays],
    *,
    batch_size: int,
    max_tokens: int | None,
    packed: bool,
    window: int,
    standalone=None,
    workers: int = 0,
    pretokenized: Callable[[np.ndarray], tokens.TokenArrays] | None = None,
) -> Iterator[tuple[np.ndarray, TokenBatch]]:
    """Yield (row indices into `texts`, their token ids) per batch, longest first within each window.

    Later windows are tokenized meanwhile: by `tokenize` in one background thread, or, with `workers` > 0 and a
    `standalone` tokenizer (`tokens.standalone_tokenizer`), in that many forked processes (two windows in
    flight, each split across them). Both give the same ids, so the same batches in the same order.
    `pretokenized(rows)`, when given (a `token_store.TokenStore`'s `arrays`), reads each window's ids instead of
    tokenizing: the same ids, so again the same batches.
    """
    order = np.argsort([-len(text) for text in texts], kind="stable")
    windows = [order[start : start + window] for start in range(0, len(order), window)]
    if not windows:
        return
    if pretokenized is not None:  # a window is asked for by its rows, else by its texts
        source, request = tokens.window_submitter(pretokenized), (lambda rows: rows)
    else:
        source, request = tokens.window_submitter(tokenize, standalone, workers), (lambda rows: [texts[i] for i in rows])
    with source as (submit, ahead):
        futures = deque(submit(request(rows)) for rows in windows[:ahead])
        for index, rows in enumerate(windows):
            ids = TokenBatch.of(futures.popleft().result())
            if index + ahead < len(windows):
                futures.append(submit(request(windows[index + ahead])))
            by_length = np.argsort(-ids.lengths, kind="stable")
            for positions in plan_batches(ids.lengths[by_length], batch_size, max_tokens, packed):
                picked = by_length[positions]
                yield rows[picked], ids.take(picked)
