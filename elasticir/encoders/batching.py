"""Batches formed by a token budget, tokenized one window ahead, collated padded or packed.

Why a token budget: a fixed count of texts is either too small for short texts (the accelerator idles) or too
large for long ones (memory); a budget of tokens per batch keeps the work per batch even. The count
(`batch_size`) stays as a cap. A padded batch costs `count x longest` tokens; a packed one `sum of lengths`.

Why windows: texts are ordered longest first by characters (free), then tokenized a window at a time in a
background thread (the Rust tokenizer releases the GIL) while the model encodes the previous window; inside a
window the exact token lengths re-sort the texts and size the batches. Tokenizing a whole corpus up front would
be a serial prefix with every id held in memory; a window keeps both bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

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


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    longest = max(len(seq) for seq in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


def pack(sequences: Sequence[Sequence[int]]) -> dict[str, torch.Tensor | int]:
    """One row of all tokens, positions restarting at 0 per sequence, and the boundaries attention and pooling
    need (`cu_seqlens` cumulative lengths, first-token `starts`, per-token `segment_ids`)."""
    lengths = np.array([len(seq) for seq in sequences], dtype=np.int64)
    cu_seqlens = np.concatenate([[0], np.cumsum(lengths)])
    starts = cu_seqlens[:-1]
    total = int(cu_seqlens[-1])
    positions = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
    return {
        "input_ids": torch.from_numpy(np.concatenate([np.asarray(seq, dtype=np.int64) for seq in sequences])[None]),
        "position_ids": torch.from_numpy(positions[None]),
        "cu_seqlens": torch.from_numpy(cu_seqlens.astype(np.int32)),
        "starts": torch.from_numpy(starts),
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
    tokenize: Callable[[list[str]], list[list[int]]],
    *,
    batch_size: int,
    max_tokens: int | None,
    packed: bool,
    window: int,
) -> Iterator[tuple[np.ndarray, list[list[int]]]]:
    """Yield (row indices into `texts`, token id lists) per batch, longest first within each window; the next
    window is tokenized in a background thread while the caller works on this one."""
    order = np.argsort([-len(text) for text in texts], kind="stable")
    windows = [order[start : start + window] for start in range(0, len(order), window)]
    if not windows:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(tokenize, [texts[i] for i in windows[0]])
        for index, rows in enumerate(windows):
            ids = future.result()
            if index + 1 < len(windows):
                future = pool.submit(tokenize, [texts[i] for i in windows[index + 1]])
            lengths = np.array([len(seq) for seq in ids], dtype=np.int64)
            by_length = np.argsort(-lengths, kind="stable")
            for positions in plan_batches(lengths[by_length], batch_size, max_tokens, packed):
                picked = by_length[positions]
                yield rows[picked], [ids[i] for i in picked]
